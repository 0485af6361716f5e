"""
The PROXY protocol (versions 1 and 2) for listeners behind HAProxy: the
``proxy:`` endpoint prefix, a wrapper that reads the header before the
server's protocol sees the connection, and an I/O-free header parser.

Twisted's ``haproxy:`` wrapper has gaps that break the server's promises, so
this is a wrapper of our own:

  - it provides ``IHalfCloseableProtocol``: a client's half-close through
    HAProxy still gets every reply;
  - the wrapped protocol is connected only once the header is read, so its
    ``connectionMade`` (its log lines, ``--max-connections-per-ip``) already
    sees the client's address and port (Twisted issue 12501);
  - a header that does not arrive within a few seconds closes the
    connection, with one log line;
  - a header split across reads, however finely, is fine (Twisted issue
    8287);
  - a connection without a valid header gets one log line and is closed,
    never a traceback;
  - ``LOCAL`` connections (HAProxy's own health checks) and v1 ``UNKNOWN``
    ones are served as themselves.

The protocol is HAProxy's: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
import sys
from dataclasses import dataclass
from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from ..wire.addresses import describe_address
from ..wire.codec import escape_controls

log = Logger()

PROXY = "proxy"
"""The endpoint prefix."""

DEFAULT_HEADER_TIMEOUT = 5.0
"""
Seconds a connection may take to send its PROXY header (HAProxy sends it at
once, with the connection's first bytes).
"""

V1_SIGNATURE = b"PROXY "
V1_MAX_LENGTH = 107
"""The longest v1 header, its CRLF included (the specification's bound)."""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = struct.Struct("!12sBBH")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_V2_UNIX = struct.Struct("!108s108s")


class ProxyHeaderError(Exception):
    """
    The bytes are not a PROXY protocol header; the message says why.
    """


@dataclass(frozen=True)
class ProxyHeader:
    """
    What a PROXY header says about the connection.

    :ivar source: the client's address, or ``None`` for a connection that is
        its own (a ``LOCAL`` command, an ``UNKNOWN`` or unspecified family):
        the connection's own addresses apply.
    :ivar destination: the address the client connected to, or ``None``.
    """

    source: IAddress | None
    destination: IAddress | None


LOCAL = ProxyHeader(None, None)


class HeaderParser:
    """
    Reads one PROXY header, v1 or v2, from bytes fed in pieces of any size.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """
        Take the next bytes of the connection.

        :returns: ``None`` while the header is incomplete; then the header and
            the bytes that followed it.
        :raises ProxyHeaderError: as soon as the bytes cannot be a header.
        """
        buffer = self._buffer = self._buffer + data
        if buffer[:1] == V1_SIGNATURE[:1]:
            return self._feed_v1(buffer)
        if buffer[:1] == V2_SIGNATURE[:1]:
            return self._feed_v2(buffer)
        if not buffer:
            return None
        raise ProxyHeaderError("no PROXY signature")

    def _feed_v1(self, buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        if not (buffer.startswith(V1_SIGNATURE) or V1_SIGNATURE.startswith(buffer)):
            raise ProxyHeaderError("no PROXY signature")
        end = buffer.find(b"\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(buffer) >= V1_MAX_LENGTH:
                raise ProxyHeaderError(f"v1 header longer than {V1_MAX_LENGTH} bytes")
            return None
        if buffer[end - 1 : end] != b"\r":
            raise ProxyHeaderError("v1 header ends without CRLF")
        self._buffer = b""
        return parse_v1(buffer[: end - 1]), buffer[end + 1 :]

    def _feed_v2(self, buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
        if not (buffer.startswith(V2_SIGNATURE) or V2_SIGNATURE.startswith(buffer)):
            raise ProxyHeaderError("no PROXY signature")
        if len(buffer) < _V2_FIXED.size:
            return None
        _, version_command, _, length = _V2_FIXED.unpack_from(buffer)
        if version_command >> 4 != 2:
            raise ProxyHeaderError(f"v2 header of version {version_command >> 4}")
        end = _V2_FIXED.size + length
        if len(buffer) < end:
            return None
        self._buffer = b""
        return parse_v2(buffer[:end]), buffer[end:]


def _host(
    text: str, family: type[ipaddress.IPv4Address | ipaddress.IPv6Address]
) -> str:
    # ipaddress takes any text as an IPv6 zone id (fe80::1%\x1b[2J): it
    # would reach the log, and whoami, raw.
    if not text.isprintable():
        raise ProxyHeaderError(f"bad address {text!r}")
    try:
        return str(family(text))
    except ValueError:
        raise ProxyHeaderError(f"bad address {text!r}") from None


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise ProxyHeaderError(f"bad port {text!r}")
    return int(text)


def parse_v1(line: bytes) -> ProxyHeader:
    """
    Parse a v1 header line, without its CRLF.

    :raises ProxyHeaderError: if it is not one.
    """
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 header is not ASCII") from None
    fields = text.split(" ")
    if fields[0] != "PROXY" or len(fields) < 2:
        raise ProxyHeaderError("no PROXY signature")
    family = fields[1]
    if family == "UNKNOWN":
        # The sender could not say (or it is a health check): the
        # connection is its own.
        return LOCAL
    if family not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"unknown v1 protocol {family!r}")
    if len(fields) != 6:
        raise ProxyHeaderError("v1 header needs two addresses and two ports")
    _, _, source, destination, source_port, destination_port = fields
    if family == "TCP4":
        return ProxyHeader(
            IPv4Address(
                "TCP", _host(source, ipaddress.IPv4Address), _port(source_port)
            ),
            IPv4Address(
                "TCP",
                _host(destination, ipaddress.IPv4Address),
                _port(destination_port),
            ),
        )
    return ProxyHeader(
        IPv6Address("TCP", _host(source, ipaddress.IPv6Address), _port(source_port)),
        IPv6Address(
            "TCP",
            _host(destination, ipaddress.IPv6Address),
            _port(destination_port),
        ),
    )


def parse_v2(header: bytes) -> ProxyHeader:
    """
    Parse a whole v2 header (its TLVs are ignored).

    :raises ProxyHeaderError: if it is not one.
    """
    signature, version_command, family_protocol, length = _V2_FIXED.unpack_from(header)
    if signature != V2_SIGNATURE:
        raise ProxyHeaderError("no PROXY signature")
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"v2 header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command == 0:
        return LOCAL
    if command != 1:
        raise ProxyHeaderError(f"unknown v2 command {command}")
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family == 0:
        return LOCAL
    if protocol != 1:
        raise ProxyHeaderError(f"v2 header for a non-stream protocol ({protocol})")
    body = header[_V2_FIXED.size :]
    try:
        if family == 1:
            source, destination, sport, dport = _V2_INET.unpack_from(body)
            return ProxyHeader(
                IPv4Address("TCP", str(ipaddress.IPv4Address(source)), sport),
                IPv4Address("TCP", str(ipaddress.IPv4Address(destination)), dport),
            )
        if family == 2:
            source, destination, sport, dport = _V2_INET6.unpack_from(body)
            return ProxyHeader(
                IPv6Address("TCP", str(ipaddress.IPv6Address(source)), sport),
                IPv6Address("TCP", str(ipaddress.IPv6Address(destination)), dport),
            )
        if family == 3:
            source, destination = _V2_UNIX.unpack_from(body)
            return ProxyHeader(
                UNIXAddress(source.split(b"\x00", 1)[0]),
                UNIXAddress(destination.split(b"\x00", 1)[0]),
            )
    except struct.error:
        raise ProxyHeaderError(
            f"v2 header too short for its addresses ({length} bytes)"
        ) from None
    raise ProxyHeaderError(f"unknown v2 address family {family}")


DEFAULT_MAX_PENDING = 1000
"""
How many connections may await their PROXY header at once unless told
otherwise (as ``--max-handshakes`` for TLS).
"""


class PendingHeaders:
    """
    The connections of one or more ``proxy:`` listeners that have not sent
    their PROXY header yet, capped as TLS handshakes are: past the cap the
    oldest is dropped, as an honest HAProxy sends its header at once and the
    connection that has waited longest is the likeliest to be an attack.

    Until its header arrives a connection is not the server's (it counts
    against no connection limit), so without this cap a flood of half
    headers could take every descriptor.

    :ivar limit: how many may be pending at once.
    """

    def __init__(self, limit: int = DEFAULT_MAX_PENDING) -> None:
        if limit < 1:
            raise ValueError("the pending PROXY header limit must be at least 1")
        self.limit = limit
        # In the order they connected: a dict, so the oldest is first.
        self._pending: dict[ProxyProtocolWrapper, None] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def begin(self, connection: ProxyProtocolWrapper) -> None:
        """
        A connection starts waiting for its header; if the cap is reached,
        the oldest waiting is dropped first.
        """
        while len(self._pending) >= self.limit:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            oldest.drop("too many PROXY headers pending")
        self._pending[connection] = None

    def end(self, connection: ProxyProtocolWrapper) -> None:
        """
        A connection's header arrived, or it was rejected or closed.
        """
        self._pending.pop(connection, None)


@implementer(IHalfCloseableProtocol)
class ProxyProtocolWrapper(ProtocolWrapper):
    """
    Reads a connection's PROXY header, then connects the wrapped protocol,
    whose transport this is, with the client's addresses as ``getPeer`` and
    ``getHost``.

    :ivar header: the connection's header, once read.
    """

    factory: ProxyWrappingFactory
    header: ProxyHeader | None = None
    _timer: IDelayedCall | None = None

    def makeConnection(self, transport: ITransport) -> None:
        # ProtocolWrapper would connect the wrapped protocol now; it waits
        # for the header instead.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        self.factory.registerProtocol(self)
        self._parser: HeaderParser | None = HeaderParser()
        timeout = self.factory.header_timeout
        if timeout is not None:
            self._timer = self.factory.clock.callLater(timeout, self._too_slow)
        self.factory.pending.begin(self)

    def _peer_text(self) -> str:
        assert self.transport is not None
        return describe_address(self.transport.getPeer())

    def dataReceived(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            # Only after a rejected header: whatever follows is dropped.
            return
        try:
            done = parser.feed(data)
        except ProxyHeaderError as e:
            log.warn(
                "invalid PROXY header from {peer}: {why}",
                peer=self._peer_text(),
                why=escape_controls(str(e)),
            )
            self._reject()
            return
        if done is None:
            return
        self._parser = None
        self._stop_timer()
        self.factory.pending.end(self)
        self.header, rest = done
        # From now on bytes go straight to the wrapped protocol.
        self.dataReceived = self.wrappedProtocol.dataReceived  # type: ignore[method-assign]
        self.wrappedProtocol.makeConnection(cast(ITransport, self))
        if rest and not self.disconnecting:
            self.wrappedProtocol.dataReceived(rest)

    def _reject(self) -> None:
        """
        Close the connection, once its caller has logged why.
        """
        self._parser = None
        self._stop_timer()
        self.factory.pending.end(self)
        assert self.transport is not None
        self.transport.loseConnection()

    def drop(self, why: str) -> None:
        """
        Give up waiting for this connection's header: log why and abort it
        (its descriptor is wanted now, not after a graceful close).
        """
        log.warn(
            "dropped {peer} before its PROXY header: {why}",
            peer=self._peer_text(),
            why=why,
        )
        self._parser = None
        self._stop_timer()
        self.factory.pending.end(self)
        assert self.transport is not None
        cast(ITCPTransport, self.transport).abortConnection()

    def _too_slow(self) -> None:
        self._timer = None
        log.warn(
            "no PROXY header from {peer} within {timeout:g}s: closing",
            peer=self._peer_text(),
            timeout=self.factory.header_timeout,
        )
        self._reject()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    @property
    def proxy_local(self) -> bool:
        """
        Whether the proxy made this connection for itself rather than
        relaying a client's: HAProxy's health checks, which send a version 2
        ``LOCAL`` header, or a version 1 header naming the check's own
        connection (its source is the proxy's end of this very connection).
        The server logs such connections at debug.
        """
        header = self.header
        if header is None:
            return False
        if header is LOCAL:
            return True
        assert self.transport is not None
        return header.source == self.transport.getPeer()

    def getPeer(self) -> IAddress:
        if self.header is not None and self.header.source is not None:
            return self.header.source
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        if self.header is not None and self.header.destination is not None:
            return self.header.destination
        assert self.transport is not None
        return self.transport.getHost()

    def readConnectionLost(self) -> None:
        if self.header is None:
            if self._parser is not None:
                log.warn(
                    "connection from {peer} ended before its PROXY header",
                    peer=self._peer_text(),
                )
                self._reject()
            return
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            cast(IHalfCloseableProtocol, self.wrappedProtocol).readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.header is not None and IHalfCloseableProtocol.providedBy(
            self.wrappedProtocol
        ):
            cast(IHalfCloseableProtocol, self.wrappedProtocol).writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_timer()
        self._parser = None
        self.factory.pending.end(self)
        if self.header is not None:
            super().connectionLost(reason)
        else:
            # The wrapped protocol never saw the connection.
            self.factory.unregisterProtocol(self)


class ProxyWrappingFactory(WrappingFactory[ProxyProtocolWrapper]):
    """
    Wraps each of a factory's connections in :class:`ProxyProtocolWrapper`.

    :ivar clock: times the header.
    :ivar header_timeout: seconds to wait for the header, or ``None``.
    :ivar pending: the connections awaiting their header, capped.
    """

    protocol = ProxyProtocolWrapper
    noisy = False

    def __init__(
        self,
        wrapped: IProtocolFactory,
        clock: IReactorTime,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        pending: PendingHeaders | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.clock = clock
        self.header_timeout = header_timeout
        self.pending = PendingHeaders() if pending is None else pending

    def buildProtocol(self, addr: IAddress) -> ProxyProtocolWrapper | None:  # type: ignore[override]
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return ProxyProtocolWrapper(self, cast(IProtocol, wrapped))


@implementer(IStreamServerEndpoint)
class ProxyServerEndpoint:
    """
    A listener whose connections each start with a PROXY header: the
    ``proxy:`` prefix in front of another server endpoint.

    For a TLS listener the header comes before the TLS handshake (HAProxy in
    ``mode tcp`` passes TLS through), so the PROXY wrapper goes under TLS.

    :ivar inner: the endpoint it wraps.
    :ivar header_timeout: seconds to wait for a connection's header, or
        ``None``.
    :ivar pending: the connections awaiting their header, capped; several
        listeners may share one.
    """

    def __init__(
        self,
        inner: IStreamServerEndpoint,
        clock: IReactorTime,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        pending: PendingHeaders | None = None,
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.header_timeout = header_timeout
        self.pending = PendingHeaders() if pending is None else pending

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        from twisted.internet.endpoints import SSL4ServerEndpoint

        inner = self.inner
        if isinstance(inner, SSL4ServerEndpoint):
            from ..listeners.halfclose import from_ssl_endpoint

            inner = from_ssl_endpoint(inner)
        # Only a TLS listener has imported the TLS module (an optional extra).
        halfclose = sys.modules.get("commandproto.listeners.halfclose")
        if halfclose is not None and isinstance(inner, halfclose.TLSServerEndpoint):
            factory = halfclose.HalfCloseTLSFactory(inner._options, False, factory)
            inner = inner._tcp
        return inner.listen(
            ProxyWrappingFactory(factory, self.clock, self.header_timeout, self.pending)
        )


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ProxyServerParser:
    """
    Parses ``proxy:`` server endpoint strings: ``proxy:`` and then any server
    endpoint string (``proxy:tcp:12345:interface=127.0.0.1``).
    """

    prefix = PROXY

    def parseStreamServer(  # type: ignore[override]
        self, reactor: IReactorTime, *args: object, **kwargs: object
    ) -> ProxyServerEndpoint:
        from twisted.internet.endpoints import quoteStringArgument, serverFromString

        inner = ":".join(
            [quoteStringArgument(str(arg)) for arg in args]
            + [
                f"{quoteStringArgument(str(key))}={quoteStringArgument(str(value))}"
                for key, value in kwargs.items()
            ]
        )
        if not inner:
            raise ValueError("proxy: needs an endpoint after it (proxy:tcp:12345)")
        return ProxyServerEndpoint(serverFromString(reactor, inner), reactor)
