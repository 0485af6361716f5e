"""
The line codec: how a byte stream becomes lines and lines become bytes.

This is the only place that knows the framing rules, and it does no I/O:
the server, the client's connection and the client's standard input all frame
with ``LineFramer`` and encode with ``encode_line``.

Rules:
  - a line ends with LF; a CR right before the LF is part of the terminator,
    so both LF and CRLF end a line;
  - lines we send end with CRLF (what telnet and most line protocols expect);
  - text is UTF-8;
  - a line's length is counted in bytes without its terminator, and a line
    longer than the limit is reported once and then discarded up to its
    terminator, however the bytes are split.
"""

from __future__ import annotations

import enum
from typing import cast

LF = b"\n"
CRLF = b"\r\n"
CR = b"\r"

DEFAULT_MAX_LINE_LENGTH = 16384
"""
The default limit on a line's length in bytes, terminator excluded (the same
as ``twisted.protocols.basic.LineReceiver.MAX_LENGTH``).
"""


class Overlong(enum.Enum):
    """
    The marker ``LineFramer.feed`` yields in place of a line that is too long.
    """

    LINE = "overlong line"


OVERLONG = Overlong.LINE

Frame = bytes | Overlong
_Frames = list[Frame]


def is_one_line(text: str) -> bool:
    """
    Tell whether ``text`` arrives as exactly one line once encoded: it holds
    no LF, and does not end with the CR that would join the terminator (a CR
    elsewhere is content).
    """
    return "\n" not in text and not text.endswith("\r")


def escape_controls(text: str) -> str:
    """
    Make a text safe to show on a terminal or in one log line: control and
    other unprintable characters (newlines, ESC, NUL) become Python escapes
    (``\\x1b``), never interpreted.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def encode_line(text: str) -> bytes:
    """
    Encode one line for the wire.

    :param text: the line, without a terminator.
    :returns: its UTF-8 bytes followed by CRLF.
    """
    return text.encode() + CRLF


def decode_line(line: bytes) -> str:
    """
    Decode one framed line.

    :param line: a line as ``LineFramer`` yields it (terminator removed).
    :returns: the text.
    :raises UnicodeDecodeError: if the line is not valid UTF-8.
    """
    return line.decode()


class LineFramer:
    """
    Split a byte stream into lines, holding at most one partial line of at
    most ``max_length`` (plus a CR) bytes in between.

    :ivar max_length: the longest line accepted, in bytes, terminator
        excluded.
    """

    def __init__(self, max_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        self.max_length = max_length
        self._partial = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        """
        The number of bytes held back as the start of an unfinished line.
        """
        return len(self._partial)

    def feed(self, data: bytes) -> list[Frame]:
        """
        Take the next bytes of the stream.

        :param data: any number of bytes, split anywhere.
        :returns: the lines completed by ``data``, in order, terminators
            removed; each line over the limit appears once as ``OVERLONG``, as
            soon as it is known to be too long.
        """
        if self._partial:
            data = self._partial + data
            self._partial = b""
        elif (
            not self._discarding
            and data.endswith(LF)
            and data.count(LF) == 1
            and len(data) <= self.max_length + 1
        ):
            # One whole line, the commonest read of a request/response client.
            return [data[:-2] if data.endswith(CRLF) else data[:-1]]
        if self._discarding:
            end = data.find(LF)
            if end < 0:
                return []
            data = data[end + 1 :]
            self._discarding = False
        if CR not in data:
            raw = data.split(LF)
            tail = raw.pop()
        elif data.count(CRLF) == data.count(LF):
            # Every line ends with CRLF (telnet, most clients): one split.
            raw = data.split(CRLF)
            tail = raw.pop()
        else:
            raw = data.split(LF)
            tail = raw.pop()
            raw = [line[:-1] if line.endswith(CR) else line for line in raw]
        limit = self.max_length
        lines: list[Frame]
        # No line can be longer than the data it came in.
        if len(data) > limit and raw and max(map(len, raw)) > limit:
            lines = [line if len(line) <= limit else OVERLONG for line in raw]
        else:
            lines = cast(_Frames, raw)
        if len(tail) > limit and not (len(tail) == limit + 1 and tail.endswith(CR)):
            lines.append(OVERLONG)
            self._discarding = True
        else:
            self._partial = tail
        return lines

    def finish(self) -> bytes | None:
        """
        Take the end of the stream.

        :returns: the last line if the stream ended without a terminator
            after it, else ``None``.
        """
        tail, self._partial = self._partial, b""
        self._discarding = False
        if tail.endswith(CR):
            tail = tail[:-1]
        return tail or None
