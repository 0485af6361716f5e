"""
The load tester: ``python -m commandproto.bench`` and the
``commandproto-bench`` console script.
"""

from __future__ import annotations

from .runner import main

__all__ = ["main"]
