"""
commandproto: a small line-based command server and client on Twisted, and a
framework for line-based command services.

The public API: the command table and what handlers use (``Rest``,
``Session``, ``CommandError``, ``Reply``), the line codec and the server
factory.  Test helpers live in :mod:`commandproto.testing`.
"""

from ._codec import DEFAULT_MAX_LINE_LENGTH, LineFramer, decode_line, encode_line
from ._commands import (
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
from ._server import CommandServerFactory, CommandServerProtocol
from ._version import __version__ as __version__

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
    "LineFramer",
    "Reply",
    "Rest",
    "Session",
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
