"""
The packaging is in ``setup.cfg``.  This file adds one option: with
``COMMANDPROTO_MYPYC=1`` in the environment, the I/O-free modules of the
server's read path are compiled with mypyc, an optional accelerator with the
same behaviour (see ``docs/howto/accelerator.rst``).  Without it, the
install is pure Python, as the README's commands give it.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

COMPILED = [
    "commandproto/server/dispatch.py",
    "commandproto/server/answering.py",
    "commandproto/server/replies.py",
    "commandproto/wire/codec.py",
]
"""
The modules compiled: no I/O, no Twisted adapter, no class that code
outside them subclasses (mypyc's classes cannot be subclassed by
interpreted ones).
"""

if os.environ.get("COMMANDPROTO_MYPYC") == "1":
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit(
            "COMMANDPROTO_MYPYC=1 needs mypy in the build environment: "
            "pip install 'mypy>=1.10' mypy-zope, then pip install "
            "--no-build-isolation ."
        )
    setup(ext_modules=mypycify(COMPILED))
else:
    setup()
