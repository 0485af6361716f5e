"""
``python -m commandproto.client``.
"""

from .cli import main

main()
