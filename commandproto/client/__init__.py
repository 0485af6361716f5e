"""
The client: the library (:func:`connect`, :class:`Client`, :class:`Pool`,
on Twisted; :mod:`commandproto.asyncio` for asyncio) and the command-line
client (``python -m commandproto.client``, the ``commandproto`` console
script) built on it.

``main`` and ``Pool`` are imported on first use, so that the command-line
client starts as fast as ever.  ``connect`` and ``Client`` are imported now:
``connect`` is also the name of a submodule (:mod:`.connect`, the
command-line tools' connection options), and binding the function after
that submodule is loaded is what keeps ``commandproto.client.connect`` the
function (``from commandproto.client.connect import ...`` still reaches the
module).  They import nothing the command-line client does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .connection import Client, connect

if TYPE_CHECKING:
    from .cli import main
    from .pool import Pool

_EXPORTS = {"main": "cli", "Pool": "pool"}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'commandproto.client' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"commandproto.client.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["Client", "Pool", "connect", "main"]
