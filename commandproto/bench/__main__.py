"""
``python -m commandproto.bench``.
"""

from .runner import main

main()
