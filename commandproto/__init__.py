"""
commandproto: a small line-based command server and client on Twisted, and a
framework for line-based command services.

The public API: the command table and what handlers use (``Rest``,
``Session``, ``CommandError``, ``Reply``), the line codec, the server
factory, and what the client library raises (``ReplyError``...; the client
itself is :mod:`commandproto.client` on Twisted and
:mod:`commandproto.asyncio`).  Test helpers live in :mod:`commandproto.testing`.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:
    from .client.errors import (
        ConnectionClosed,
        ProtocolError,
        ReplyError,
        ServerRefused,
        UnknownCommand,
    )
    from .commands.table import (
        CLOSING,
        GREETING,
        PRESENT,
        UNKNOWN_COMMAND,
        Command,
        CommandError,
        CommandTable,
        Reply,
        Rest,
        Session,
        constant,
        default_commands,
        format_help,
        help_command,
        is_error_reply,
        parse_help,
        with_builtins,
    )
    from .server.factory import CommandServerFactory
    from .server.protocol import CommandServerProtocol
    from .wire.codec import (
        DEFAULT_MAX_LINE_LENGTH,
        LineFramer,
        decode_line,
        encode_line,
    )

# Where each public name lives.  Imported on first use: ``commandproto`` is
# imported by every one of its modules, the client's too, which must start
# fast and has no use for the server.
_EXPORTS = {
    "DEFAULT_MAX_LINE_LENGTH": "wire.codec",
    "LineFramer": "wire.codec",
    "decode_line": "wire.codec",
    "encode_line": "wire.codec",
    "CommandServerFactory": "server.factory",
    "CommandServerProtocol": "server.protocol",
    "ConnectionClosed": "client.errors",
    "ProtocolError": "client.errors",
    "ReplyError": "client.errors",
    "ServerRefused": "client.errors",
    "UnknownCommand": "client.errors",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'commandproto' has no attribute {name!r}")
    from importlib import import_module

    module = import_module(f"commandproto.{_EXPORTS.get(name, 'commands.table')}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


__all__ = [
    "CLOSING",
    "DEFAULT_MAX_LINE_LENGTH",
    "GREETING",
    "PRESENT",
    "UNKNOWN_COMMAND",
    "Command",
    "CommandError",
    "CommandServerFactory",
    "CommandServerProtocol",
    "CommandTable",
    "ConnectionClosed",
    "LineFramer",
    "ProtocolError",
    "Reply",
    "ReplyError",
    "Rest",
    "ServerRefused",
    "Session",
    "UnknownCommand",
    "constant",
    "decode_line",
    "default_commands",
    "encode_line",
    "format_help",
    "help_command",
    "is_error_reply",
    "parse_help",
    "with_builtins",
]
