"""
commandproto's version: the one place it is written.

``setup.cfg`` reads it (``version = attr: commandproto._version.__version__``,
which setuptools evaluates without importing the package), and
``commandproto.__version__`` and every tool's ``--version`` print it.
"""

__version__ = "0.1.0"
