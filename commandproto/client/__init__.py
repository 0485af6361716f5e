"""
The client: the command-line client (``python -m commandproto.client``, the
``commandproto`` console script) and what it is built from.
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
