"""
Accepting connections when the process is out of file descriptors: wait a
moment and accept again, rather than reset every client that is waiting.

When ``accept()`` fails with ``EMFILE``, Twisted's TCP port closes a spare
descriptor it keeps, accepts every connection waiting in the listen backlog
and closes each at once (its "EMFILE recovery"): in a burst of clients past
the descriptor limit, every one still in the backlog is reset, its request
unread, though a moment later, once the refused clients before it are
closed, it would have been served or told why.  :class:`PacedPort` instead
stops accepting for :data:`PAUSE` seconds and leaves them in the backlog,
where the kernel holds them (nginx does the same).

:class:`PacedReactor` is the reactor as the listening endpoints see it: its
``listenTCP`` and ``listenSSL`` make a :class:`PacedPort`; everything else is
the reactor's own.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, cast

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime
from twisted.logger import Logger

from .direct import DirectServer

log = Logger()

PAUSE = 0.1
"""
Seconds a port stops accepting after ``accept()`` ran out of descriptors:
long enough not to spin, short beside a client's patience (a refused client
being told why frees its descriptor within a second).
"""

WARN_EVERY = 10.0
"""
Seconds between two warnings that the process is out of descriptors.
"""

_OUT_OF_DESCRIPTORS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)
_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
# A connection that went away before it was accepted, or that a firewall
# rule refused: the next one may be fine.
_SKIP = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO})


class PacedPort(tcp.Port):
    """
    A TCP port that, out of descriptors, stops accepting for a moment and
    leaves the waiting clients in the backlog.
    """

    transport = DirectServer
    """
    Its connections send each reply at once when nothing is waiting before it.
    """

    _resume: IDelayedCall | None = None
    _warned: float | None = None
    pauses = 0
    """How many times it ran out of descriptors (for tests and logs)."""

    def doRead(self) -> None:
        """
        Accept as many waiting connections as Twisted's port would (up to
        ``numberAccepts``, which grows while the backlog stays full).
        """
        accepted = 0
        for _ in range(self.numberAccepts):
            try:
                skt, address = self.socket.accept()
            except OSError as e:
                if e.errno in _AGAIN:
                    break
                if e.errno in _SKIP:
                    continue
                if e.errno in _OUT_OF_DESCRIPTORS:
                    self._pause(e.errno)
                    break
                log.failure("accept() failed on {port}", port=self._realPortNumber)
                break
            accepted += 1
            try:
                self._serve(skt, address)
            except Exception:
                log.failure("could not start a connection from {peer}", peer=address)
        # Scale the accept loop with the traffic, as Twisted's port does.
        if accepted == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, accepted)

    def _serve(self, skt: socket.socket, address: Any) -> None:
        if len(address) == 4:
            # IPv6: keep the scope id, as Twisted's port does.
            host = socket.getnameinfo(
                address, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
            )
            address = (host[0], *address[1:])
        factory = self.factory
        assert factory is not None
        protocol = factory.buildProtocol(self._buildAddr(address))  # type: ignore[no-untyped-call]
        if protocol is None:
            skt.close()
            return
        session = self.sessionno
        self.sessionno = session + 1
        transport = self.transport(skt, protocol, address, self, session, self.reactor)
        protocol.makeConnection(transport)

    def _pause(self, code: int) -> None:
        self.pauses += 1
        clock = cast(IReactorTime, self.reactor)
        now = clock.seconds()
        if self._warned is None or now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warn(
                "out of file descriptors ({error}): accepting again in "
                "{seconds}s; clients wait in the listen backlog (raise the "
                "open-file limit or lower --max-connections)",
                error=errno.errorcode.get(code, str(code)),
                seconds=PAUSE,
            )
        self.stopReading()  # type: ignore[no-untyped-call]
        if self._resume is None:
            self._resume = clock.callLater(PAUSE, self._accept_again)

    def _accept_again(self) -> None:
        self._resume = None
        if self.connected and not self.disconnecting:
            self.startReading()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Any) -> None:
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class PacedReactor:
    """
    A reactor whose TCP (and TLS over TCP) listeners are :class:`PacedPort`;
    every other attribute is the reactor's own.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(
        self,
        port: int,
        factory: IProtocolFactory,
        backlog: int = 50,
        interface: str = "",
    ) -> PacedPort:
        listening = PacedPort(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,  # noqa: N803 (the name IReactorSSL gives it)
        backlog: int = 50,
        interface: str = "",
    ) -> PacedPort:
        # As Twisted's reactors do: TLS in memory over a TCP port.
        from twisted.protocols.tls import TLSMemoryBIOFactory

        listening = self.listenTCP(
            port,
            TLSMemoryBIOFactory(contextFactory, False, factory),
            backlog,
            interface,
        )
        listening._type = "TLS"
        return listening
