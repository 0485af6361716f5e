"""
A connection's input side, with no I/O: the bytes read but not yet
answered, framed into lines a batch at a time, and whether to go on reading.

Input that cannot be answered yet is held as the raw bytes it arrived as, so
that a flood of short lines held back costs its size, not an object per
line, and it is framed when its turn comes: at most :data:`BATCH` lines per
connection per reactor turn, so that one pipelining client cannot keep the
others waiting.  Reading stops past :data:`HOLD_LIMIT` bytes held (and, as
the connection decides, while the client does not read its replies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..wire.codec import LF, Frame, LineFramer

BATCH = 1024
"""
The most lines of one connection answered in one reactor turn (and written
with one write); the rest wait for the next turn, so that a client that
pipelines a flood is noticed (and paused) within one batch and does not keep
other clients waiting.
"""

HOLD_LIMIT = 65536
"""
Bytes of input held unanswered past which the server stops reading a
connection (one read of the socket is at most 64 KiB).
"""


def is_flood(data: bytes) -> bool:
    """
    Whether one read holds more than a batch of lines: it is answered a
    batch per reactor turn rather than at once.
    """
    return len(data) > BATCH and data.count(LF) > BATCH


class Reader(Protocol):
    """
    What turns reading on and off (a connection's I/O).
    """

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Intake:
    """
    One connection's input not yet answered.

    :ivar framer: splits bytes into lines, keeping a partial last line.
    :ivar held: bytes read but not yet framed.
    :ivar frames: lines framed but not yet started (at most one batch).
    :ivar reading: whether the client's socket is being read.
    """

    # Made for each connection: no more than it needs.
    __slots__ = ("framer", "frames", "held", "reading")

    def __init__(self, max_line_length: int) -> None:
        self.framer = LineFramer(max_line_length)
        self.held = b""
        self.frames: Sequence[Frame] = ()
        self.reading = True

    @property
    def pending(self) -> bool:
        """
        Whether any input waits to be answered.
        """
        return bool(self.held or self.frames)

    def hold(self, data: bytes) -> None:
        """
        Keep a read, raw, until its turn.
        """
        self.held += data

    def take_batch(self) -> Sequence[Frame]:
        """
        The next lines to answer: those framed and kept back, else at most
        :data:`BATCH` lines framed from the input held.
        """
        frames = self.frames
        if frames:
            self.frames = ()
            return frames
        held = self.held
        if is_flood(held):
            cut = -1
            for _ in range(BATCH):
                cut = held.find(LF, cut + 1)
            self.held = held[cut + 1 :]
            return self.framer.feed(held[: cut + 1])
        self.held = b""
        return self.framer.feed(held)

    def keep(self, frames: Sequence[Frame]) -> None:
        """
        Keep lines that could not be started yet, for the next turn.
        """
        self.frames = frames

    def end(self) -> None:
        """
        The client ended its input: a last line without a terminator is a
        line too.
        """
        held = self.held
        if (not held.endswith(LF)) if held else self.framer.buffered:
            self.held = held + LF

    def drop(self) -> None:
        """
        Forget the input not yet answered.
        """
        self.held = b""
        self.frames = ()

    def has_room(self, queued: int, max_unanswered: int) -> bool:
        """
        Whether to read more while this much is unanswered: under
        :data:`HOLD_LIMIT` bytes held, and under ``max_unanswered`` lines
        counting the ``queued`` replies not yet sent.
        """
        held = self.held
        return (
            len(held) <= HOLD_LIMIT
            and held.count(LF) + len(self.frames) + queued < max_unanswered
        )

    def read(self, wanted: bool, reader: Reader) -> None:
        """
        Read from the client, or stop, as ``wanted``; only a change reaches
        the transport.
        """
        if wanted is not self.reading:
            self.reading = wanted
            if wanted:
                reader.resume_reading()
            else:
                reader.pause_reading()
