"""
TLS server connections whose clients may close their sending side first
(TLS 1.3, RFC 8446 section 6.1), for the ``ssl:`` and ``mtls:`` listeners.

Imported only when a TLS listener is built: TLS is an optional extra.
"""

from __future__ import annotations

from typing import cast

from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTCP,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class HalfCloseTLSProtocol(TLSMemoryBIOProtocol):
    """
    A TLS server connection whose client may close its sending side first
    (TLS 1.3, RFC 8446 section 6.1): its ``close_notify`` (or a TCP FIN)
    becomes ``readConnectionLost`` for the wrapped protocol, which answers
    what it was sent and then closes, sending our ``close_notify`` after the
    last reply.

    Twisted's own TLS layer answers a ``close_notify`` with its own at once
    and closes, dropping the replies still to come (the TLS 1.2 rule; see
    Twisted issue 5341).
    """

    _peer_closed = False
    _tcp_read_ended = False

    def _flushReceiveBIO(self) -> None:
        if self._peer_closed or not IHalfCloseableProtocol.providedBy(
            self.wrappedProtocol
        ):
            if not self._peer_closed:
                super()._flushReceiveBIO()
            return
        while not self._lostTLSConnection:
            try:
                data = self._tlsConnection.recv(2**15)
            except WantReadError:
                break
            except ZeroReturnError:
                # The client's close_notify: it has sent all it will.
                self._peer_ended()
                break
            except Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
        self._flushSendBIO()

    def _peer_ended(self) -> None:
        if not self._peer_closed:
            self._peer_closed = True
            cast(IHalfCloseableProtocol, self.wrappedProtocol).readConnectionLost()

    def readConnectionLost(self) -> None:
        """
        TCP end of input: a client that closed without ``close_notify`` has
        sent all it will too (whatever arrived is answered).
        """
        self._tcp_read_ended = True
        if not self._handshakeDone:
            self._tcp().loseConnection()
            return
        self._peer_ended()

    def writeConnectionLost(self) -> None:
        pass

    def _shutdownTLS(self) -> None:
        super()._shutdownTLS()
        tcp = self._tcp()
        if self._tcp_read_ended and not getattr(tcp, "disconnecting", False):
            # No close_notify will come to complete the exchange.
            tcp.loseConnection()

    def _tcp(self) -> ITCPTransport:
        return cast(ITCPTransport, self.transport)


class HalfCloseTLSFactory(TLSMemoryBIOFactory):
    """
    Wraps a server factory's protocols in :class:`HalfCloseTLSProtocol`.
    """

    protocol = HalfCloseTLSProtocol


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    TLS over TCP, as Twisted's ``ssl:`` endpoint, with
    :class:`HalfCloseTLSProtocol` connections.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        port: int,
        options: IOpenSSLServerConnectionCreator,
        backlog: int = 50,
        interface: str = "",
    ) -> None:
        self._tcp = TCP4ServerEndpoint(reactor, port, backlog, interface)
        self._options = options

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        tls = HalfCloseTLSFactory(self._options, False, factory)
        return cast(Deferred[IListeningPort], self._tcp.listen(tls))


def from_ssl_endpoint(endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """
    The same listener as Twisted's ``ssl:`` endpoint ``endpoint``, with
    connections whose clients may half-close; any other endpoint unchanged.
    """
    if not isinstance(endpoint, SSL4ServerEndpoint):
        return endpoint
    return TLSServerEndpoint(
        endpoint._reactor,
        endpoint._port,
        endpoint._sslContextFactory,
        endpoint._backlog,
        endpoint._interface,
    )
