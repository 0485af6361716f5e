"""
HTTP listeners that share the reactor with the command server (``--metrics``,
``--dashboard``), bounded so that nothing their clients do costs the
commands more than one request's work:

- one request per connection (``Connection: close``), so a client that
  pipelines requests and never reads gets one response, not one per request
  rendered in a single reactor turn (Twisted's ``HTTPChannel`` replays every
  buffered request as soon as the first is done);
- each connection is closed a deadline after it opened, whatever its client
  does (Twisted's idle timeout would let a byte now and then extend it);
- at most so many at once; more are closed on accept;
- no access log.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Site


class BoundedChannel(http.HTTPChannel):
    """
    An HTTP connection that answers one request, then closes; and closes
    anyway at its deadline.

    :ivar deadline: the call that aborts it, while it runs.
    :ivar kept: no longer the site's to count or close (a WebSocket that took
        the connection over counts itself).
    """

    deadline: IDelayedCall | None = None
    kept = False

    def checkPersistence(self, request: http.Request, version: bytes) -> bool:
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        return False

    def keep(self) -> None:
        """
        The connection outlives its deadline and its site's count (it became
        something else, which bounds itself).
        """
        self.kept = True
        self._stop_deadline()

    def _stop_deadline(self) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()
        self.deadline = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline()
        if not self.kept:
            cast(BoundedSite, self.site).release()  # type: ignore[attr-defined]
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class BoundedSite(Site):
    """
    A site whose connections are bounded in number and lifetime.

    :ivar open: connections open now.
    :ivar max_connections: the most open at once.
    """

    noisy = False
    protocol = BoundedChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: Resource,
        clock: IReactorTime,
        *,
        max_connections: int,
        deadline: float,
    ) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]
        self._clock = clock
        self.max_connections = max_connections
        self._deadline = deadline
        self.open = 0
        self.timeOut = None

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:  # type: ignore[override]
        if self.open >= self.max_connections:
            return None
        channel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        assert isinstance(channel, BoundedChannel)
        self.open += 1
        channel.deadline = self._clock.callLater(self._deadline, self._expire, channel)
        return channel

    def release(self) -> None:
        """
        A connection it counted has closed.
        """
        self.open -= 1

    @staticmethod
    def _expire(channel: BoundedChannel) -> None:
        channel.deadline = None
        if channel.transport is not None:
            cast(ITCPTransport, channel.transport).abortConnection()

    def log(self, request: http.Request) -> None:
        pass
