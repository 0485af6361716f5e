"""
A connection's timers, each with one meaning and its own name, in place of
``TimeoutMixin``'s one timer whose meaning depended on other state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall

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
