"""
commandproto: a small line-based command server and client on Twisted.

The public API: the command table, the line codec and the server factory.
"""

from ._codec import DEFAULT_MAX_LINE_LENGTH, LineFramer, decode_line, encode_line
from ._commands import (
    CLOSING,
    GREETING,
    PRESENT,
    UNKNOWN_COMMAND,
    Command,
    CommandTable,
    Reply,
    constant,
    default_commands,
    format_help,
    help_command,
    is_error_reply,
    parse_help,
)
from ._server import CommandServerFactory, CommandServerProtocol

__all__ = [
    "CLOSING",
    "DEFAULT_MAX_LINE_LENGTH",
    "GREETING",
    "PRESENT",
    "UNKNOWN_COMMAND",
    "Command",
    "CommandServerFactory",
    "CommandServerProtocol",
    "CommandTable",
    "LineFramer",
    "Reply",
    "constant",
    "decode_line",
    "default_commands",
    "encode_line",
    "format_help",
    "help_command",
    "is_error_reply",
    "parse_help",
]
