"""
A connection's timers, each with one meaning and its own name, in place of
``TimeoutMixin``'s one timer whose meaning depended on other state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall

from ..wire.codec import LF
from .settings import Settings

#: The names a connection's timers go by.
IDLE = "idle"
"""No whole line for ``idle_timeout`` seconds (``--idle-timeout``)."""
LINE = "line"
"""A line has been arriving for ``line_timeout`` seconds (``--line-timeout``)."""
HANDSHAKE = "handshake"
"""A TLS handshake has taken ``handshake_timeout`` seconds."""
LINGER = "linger"
"""A graceful close has not finished in time: abort it."""
TURN = "turn"
"""The next reactor turn, to answer the next batch of held input."""

NAMES = (IDLE, LINE, HANDSHAKE, LINGER, TURN)


class Scheduler(Protocol):
    """
    What calls a function later (a connection's I/O, over
    ``IReactorTime.callLater``).
    """

    def schedule(
        self, delay: float, function: Callable[[], None], /
    ) -> IDelayedCall: ...


class LineTimeout(Protocol):
    """
    What a line that takes too long to arrive calls (a connection's
    :class:`~commandproto.server.closing.Closer`).
    """

    def line_too_slow(self) -> None: ...


_LF_BYTE = LF[0]


class Timers:
    """
    At most one pending call per name.

    Made for each connection, so it keeps only what is running: a timer that
    is not running costs nothing but its slot.
    """

    __slots__ = ("_scheduler", *NAMES)

    idle: IDelayedCall | None
    line: IDelayedCall | None
    handshake: IDelayedCall | None
    linger: IDelayedCall | None
    turn: IDelayedCall | None

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        for name in NAMES:
            setattr(self, name, None)

    def start(self, name: str, delay: float, function: Callable[[], None]) -> None:
        """
        Call ``function`` in ``delay`` seconds, in place of any call pending
        under ``name``.

        Cancelled and started anew rather than moved: the reactor finds a
        call moved sooner by a linear search of all its timers.
        """
        self.cancel(name)
        setattr(self, name, self._scheduler.schedule(delay, self._fire(name, function)))

    def _fire(self, name: str, function: Callable[[], None]) -> Callable[[], None]:
        def fire() -> None:
            setattr(self, name, None)
            function()

        return fire

    def running(self, name: str) -> bool:
        """
        Whether a call is pending under ``name``.
        """
        return getattr(self, name) is not None

    def cancel(self, name: str) -> None:
        """
        Forget the call pending under ``name``, if any.
        """
        call: IDelayedCall | None = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    def cancel_all(self) -> None:
        """
        Forget every pending call.
        """
        for name in NAMES:
            self.cancel(name)

    def watch(self, data: bytes, settings: Settings, closer: LineTimeout) -> None:
        """
        Keep the idle and line timers for a read: only whole lines are
        activity (a line that trickles in for ever does not keep a
        connection alive), and a line may take ``line_timeout`` to arrive.
        """
        # (The byte as an int: ``b"\n" in data`` first tries the bytes as an
        # int and formats an error, ten times slower.)
        if _LF_BYTE in data:
            idle = self.idle
            if idle is not None:
                idle.reset(settings.idle_timeout)  # type: ignore[arg-type]
            if self.line is not None or data[-1] != _LF_BYTE:
                self._watch_line(data, settings, closer)
        else:
            self._watch_line(data, settings, closer)

    def _watch_line(self, data: bytes, settings: Settings, closer: LineTimeout) -> None:
        """
        Time the line that is arriving: a read that ends in the middle of a
        line starts the line's timer (or keeps it, if the same line goes on);
        a read that ends a line stops it.
        """
        timeout = settings.line_timeout
        if timeout is None:
            return
        if data[-1:] == LF:
            self.cancel(LINE)
        elif self.line is None or LF in data:
            # A line started, or a new one started in this read.
            self.start(LINE, timeout, closer.line_too_slow)
