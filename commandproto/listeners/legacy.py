"""
The seed's wire format, served beside ours: ``--legacy-listen``.

The seed's blocking server treats what one ``recv`` returns as one command
and sends each reply with no line end; its clients (the blog post's among
them) send a command with no line end and take what one ``recv`` returns as
the reply.  A legacy listener speaks that format in front of the ordinary
server protocol, so the commands, the limits, the logging, backpressure and
the drain at shutdown are the same objects as on a framed listener:

  - each read from the client becomes one request line (a trailing CRLF, LF
    or CR dropped; a line break inside the read cannot be part of any
    command, so it is kept as a CR rather than split the read into two
    requests and two replies);
  - each reply goes out without its CRLF.

A client of this format sends its next command only after the reply to the
last (the seed's client does), so reads and replies pair up; that is the
format's own limit, not one we add.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from ..wire.codec import CR, CRLF, LF
from ..wire.endpoints import AnnouncedEndpoint

log = Logger()


def legacy_request(data: bytes) -> bytes:
    """
    The request line that one read in the seed's format stands for.

    :param data: what one read of the socket returned.
    :returns: one line, LF-terminated, for the ordinary server protocol.
    """
    if data.endswith(CRLF):
        data = data[:-2]
    elif data.endswith(LF) or data.endswith(CR):
        data = data[:-1]
    return data.replace(LF, CR) + LF


def legacy_replies(data: bytes) -> bytes:
    """
    What the server protocol wrote, in the seed's format: every reply's
    CRLF removed (a reply holds no LF, so every CRLF is a line end).
    """
    return data.replace(CRLF, b"")


@implementer(IHalfCloseableProtocol)
class LegacyConnection(ProtocolWrapper):
    """
    One connection in the seed's format: the transport of an ordinary
    server protocol, translating each way.
    """

    def dataReceived(self, data: bytes) -> None:
        self.wrappedProtocol.dataReceived(legacy_request(data))

    def write(self, data: bytes) -> None:
        self.transport.write(legacy_replies(data))  # type: ignore[union-attr]

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def readConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.wrappedProtocol).readConnectionLost()

    def writeConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.wrappedProtocol).writeConnectionLost()


class LegacyFactory(WrappingFactory):
    """
    Wraps the server's factory (one for every listener, so the connection
    limit counts every client) in :class:`LegacyConnection`.
    """

    protocol = LegacyConnection
    noisy = False


@implementer(IStreamServerEndpoint)
class LegacyServerEndpoint:
    """
    Listen on an endpoint in the seed's format, logging the address.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = AnnouncedEndpoint(endpoint, _announce)

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        legacy = LegacyFactory(factory)  # type: ignore[no-untyped-call]
        return self._endpoint.listen(legacy)


def _announce(address: str) -> None:
    log.info("listening on {address} (the seed's wire format)", address=address)
