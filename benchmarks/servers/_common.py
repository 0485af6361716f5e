"""
What the reference servers share: their command line, and the replies,
taken from commandproto's command table and codec so that every server
speaks exactly the same protocol.
"""

from __future__ import annotations

import argparse
import sys

from commandproto.commands.table import CommandTable, default_commands
from commandproto.wire.codec import encode_line

TABLE: CommandTable = default_commands()


def answer(line: bytes) -> tuple[bytes, bool]:
    """
    Answer one request line, as commandproto's table does.

    :param line: the line, its terminator (LF or CRLF) removed.
    :returns: the encoded reply, and whether to close the connection after it.
    """
    reply = TABLE.dispatch(line.decode("utf-8", "replace"))
    return encode_line(reply.text), reply.close


def strip_terminator(line: bytes) -> bytes:
    """
    Remove a line's LF or CRLF terminator.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


def parse_port(description: str) -> int:
    """
    Parse a reference server's command line.

    :returns: the loopback TCP port to listen on (0: the OS picks).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    return int(parser.parse_args().port)


def announce(port: int) -> None:
    """
    Tell whoever started us which port we listen on.
    """
    print(f"listening on {port}", flush=True)
    sys.stdout.flush()
