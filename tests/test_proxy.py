"""
Unit tests for the PROXY protocol listener: the header parser, and the
wrapper in front of the real server protocol on a StringTransport, with a
Clock.  Headers are built here, v2's binary ones with ``struct``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    GREETING,
    PRESENT,
    default_commands,
    too_many_from_address,
)
from commandproto.listeners.proxy import (
    LOCAL,
    V2_SIGNATURE,
    HeaderParser,
    PendingHeaders,
    ProxyHeader,
    ProxyHeaderError,
    ProxyProtocolWrapper,
    ProxyServerEndpoint,
    ProxyWrappingFactory,
)
from commandproto.server import CommandServerFactory
from commandproto.tap import with_backlog

from ._helpers import LogCapture, replies

HAPROXY = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 12345)


def v1(source: str, destination: str, sport: int, dport: int) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode()


def v2(
    command: int = 1,
    family: int = 1,
    protocol: int = 1,
    body: bytes = b"",
    version: int = 2,
) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, family << 4 | protocol])
        + struct.pack("!H", len(body))
        + body
    )


def v2_inet(source: str, destination: str, sport: int, dport: int) -> bytes:
    if ":" in source:
        body = struct.pack(
            "!16s16sHH",
            socket.inet_pton(socket.AF_INET6, source),
            socket.inet_pton(socket.AF_INET6, destination),
            sport,
            dport,
        )
        return v2(family=2, body=body)
    body = struct.pack(
        "!4s4sHH",
        socket.inet_aton(source),
        socket.inet_aton(destination),
        sport,
        dport,
    )
    return v2(family=1, body=body)


def parse_whole(data: bytes) -> tuple[ProxyHeader, bytes] | None:
    return HeaderParser().feed(data)


def parse_bytewise(data: bytes) -> tuple[ProxyHeader, bytes] | None:
    parser = HeaderParser()
    for index in range(len(data)):
        done = parser.feed(data[index : index + 1])
        if done is not None:
            header, rest = done
            return header, rest + data[index + 1 :]
    return None


class ParserTests(SynchronousTestCase):
    """
    One header, v1 or v2, however it is split.
    """

    def test_v1_tcp4_byte_by_byte(self) -> None:
        self.assertEqual(
            parse_bytewise(v1("192.0.2.7", "198.51.100.1", 4242, 12345) + b"Hello\n"),
            (
                ProxyHeader(
                    IPv4Address("TCP", "192.0.2.7", 4242),
                    IPv4Address("TCP", "198.51.100.1", 12345),
                ),
                b"Hello\n",
            ),
        )

    def test_v1_tcp6(self) -> None:
        done = parse_whole(v1("2001:db8::7", "2001:db8::1", 4242, 12345))
        assert done is not None
        self.assertEqual(done[0].source, IPv6Address("TCP", "2001:db8::7", 4242))

    def test_v1_unknown_is_local(self) -> None:
        self.assertEqual(parse_whole(b"PROXY UNKNOWN\r\n"), (LOCAL, b""))
        self.assertEqual(
            parse_whole(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\nx"), (LOCAL, b"x")
        )

    def test_v2_tcp4_byte_by_byte(self) -> None:
        self.assertEqual(
            parse_bytewise(v2_inet("192.0.2.7", "198.51.100.1", 4242, 12345) + b"H"),
            (
                ProxyHeader(
                    IPv4Address("TCP", "192.0.2.7", 4242),
                    IPv4Address("TCP", "198.51.100.1", 12345),
                ),
                b"H",
            ),
        )

    def test_v2_tcp6(self) -> None:
        done = parse_whole(v2_inet("2001:db8::7", "2001:db8::1", 4242, 12345))
        assert done is not None
        self.assertEqual(done[0].source, IPv6Address("TCP", "2001:db8::7", 4242))

    def test_v2_unix(self) -> None:
        body = struct.pack("!108s108s", b"/run/client", b"/run/server")
        done = parse_whole(v2(family=3, body=body))
        assert done is not None
        self.assertEqual(done[0].source, UNIXAddress(b"/run/client"))

    def test_v2_tlvs_are_skipped(self) -> None:
        header = v2_inet("192.0.2.7", "198.51.100.1", 1, 2)
        body = header[16:] + b"\x04\x00\x03abc"
        done = parse_bytewise(v2(family=1, body=body) + b"Hello\n")
        assert done is not None
        self.assertEqual(done[1], b"Hello\n")

    def test_v2_local_is_local(self) -> None:
        self.assertEqual(parse_whole(v2(command=0) + b"x"), (LOCAL, b"x"))

    def test_v2_unspecified_family_is_local(self) -> None:
        self.assertEqual(parse_whole(v2(family=0, protocol=0)), (LOCAL, b""))

    def test_incomplete_is_none(self) -> None:
        header = v2_inet("192.0.2.7", "198.51.100.1", 1, 2)
        self.assertIsNone(parse_whole(header[:-1]))
        self.assertIsNone(parse_whole(b"PROXY TCP4 1.2.3.4"))
        self.assertIsNone(parse_whole(b"\r"))
        self.assertIsNone(parse_whole(b""))

    def assert_invalid(self, data: bytes, reason: str) -> None:
        with self.assertRaises(ProxyHeaderError) as caught:
            parse_bytewise(data)
        self.assertIn(reason, str(caught.exception))

    def test_not_a_header_fails_at_the_first_byte(self) -> None:
        with self.assertRaises(ProxyHeaderError):
            HeaderParser().feed(b"H")

    def test_wrong_signature_fails_early(self) -> None:
        self.assert_invalid(b"PROXZ", "no PROXY signature")
        self.assert_invalid(b"\r\n\r\n\x00\r\nQUIT\r", "no PROXY signature")

    def test_v1_too_long(self) -> None:
        self.assert_invalid(b"PROXY TCP4 " + b"1" * 200, "longer than 107")

    def test_v1_bad_address(self) -> None:
        self.assert_invalid(b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "bad address")
        self.assert_invalid(b"PROXY TCP4 ::1 ::2 1 2\r\n", "bad address")

    def test_v1_zone_id_with_control_characters_rejected(self) -> None:
        self.assert_invalid(
            b"PROXY TCP6 fe80::1%\x1b[2J ::1 4242 12345\r\n", "bad address"
        )
        done = parse_whole(b"PROXY TCP6 fe80::1%eth0 ::1 4242 12345\r\n")
        assert done is not None
        self.assertEqual(done[0].source, IPv6Address("TCP", "fe80::1%eth0", 4242))

    def test_v1_bad_port(self) -> None:
        self.assert_invalid(b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "bad port")
        self.assert_invalid(b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "bad port")

    def test_v1_missing_fields(self) -> None:
        self.assert_invalid(b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "two addresses")

    def test_v1_unknown_protocol(self) -> None:
        self.assert_invalid(b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "unknown v1")

    def test_v1_needs_crlf(self) -> None:
        self.assert_invalid(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "CRLF")

    def test_v1_not_ascii(self) -> None:
        self.assert_invalid(b"PROXY TCP4 \xff\r\n", "not ASCII")

    def test_v2_wrong_version(self) -> None:
        self.assert_invalid(v2(version=1), "version 1")

    def test_v1_exactly_107_bytes_accepted(self) -> None:
        header = b"PROXY UNKNOWN " + b"x" * (107 - 16) + b"\r\n"
        self.assertEqual(len(header), 107)
        self.assertEqual(parse_whole(header + b"H"), (LOCAL, b"H"))
        self.assertEqual(parse_bytewise(header + b"H"), (LOCAL, b"H"))

    def test_v1_108_bytes_rejected(self) -> None:
        header = b"PROXY UNKNOWN " + b"x" * (108 - 16) + b"\r\n"
        self.assert_invalid(header, "longer than 107")
        with self.assertRaises(ProxyHeaderError):
            parse_whole(header)

    def test_v2_wrong_version_fails_before_its_body(self) -> None:
        # The fixed part says a 200-byte body follows: no need to wait for it.
        fixed = v2(version=1, body=b"\x00" * 200)[:16]
        with self.assertRaises(ProxyHeaderError) as caught:
            HeaderParser().feed(fixed)
        self.assertIn("version 1", str(caught.exception))

    def test_v2_unix_destination(self) -> None:
        body = struct.pack("!108s108s", b"/run/client", b"/run/server")
        done = parse_bytewise(v2(family=3, body=body))
        assert done is not None
        self.assertEqual(
            done[0],
            ProxyHeader(UNIXAddress(b"/run/client"), UNIXAddress(b"/run/server")),
        )

    def test_v2_unknown_command(self) -> None:
        self.assert_invalid(v2(command=2), "unknown v2 command")

    def test_v2_datagram(self) -> None:
        self.assert_invalid(v2(protocol=2, body=b"\0" * 12), "non-stream")

    def test_v2_short_addresses(self) -> None:
        self.assert_invalid(v2(family=1, body=b"\0" * 11), "too short")

    def test_v2_unknown_family(self) -> None:
        self.assert_invalid(v2(family=4, body=b"\0" * 12), "unknown v2 address family")


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, IAddress]:
    """
    A v1 or v2 header for random addresses, and the source address it names.
    """
    addresses = draw(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)))
    sport, dport = draw(ports), draw(ports)
    build = draw(st.sampled_from([v1, v2_inet]))
    source, destination = addresses
    kind = IPv6Address if ":" in source else IPv4Address
    expected = kind("TCP", str(ipaddress.ip_address(source)), sport)
    return build(source, destination, sport, dport), expected


class ParserPropertyTests(SynchronousTestCase):
    """
    Any split of any header and what follows it gives the same result.
    """

    @given(headers(), st.binary(max_size=64), st.data())
    def test_any_split(
        self, header: tuple[bytes, IAddress], rest: bytes, data: st.DataObject
    ) -> None:
        raw, source = header
        stream = raw + rest
        cuts = sorted(
            data.draw(st.lists(st.integers(0, len(stream)), max_size=len(raw)))
        )
        parser = HeaderParser()
        done = None
        start = 0
        for cut in [*cuts, len(stream)]:
            done = parser.feed(stream[start:cut])
            if done is not None:
                parsed, tail = done
                self.assertEqual(parsed.source, source)
                self.assertEqual(tail + stream[cut:], rest)
                return
            start = cut
        self.fail("no header parsed")

    @given(st.binary(max_size=120))
    def test_garbage_never_raises_anything_else(self, data: bytes) -> None:
        with contextlib.suppress(ProxyHeaderError):
            parse_bytewise(data)


class ProxyTransport(StringTransport):
    """
    A StringTransport whose peer is HAProxy.
    """

    def __init__(self) -> None:
        super().__init__(hostAddress=HOST, peerAddress=HAPROXY)


def proxied(
    clock: Clock | None = None, **settings: object
) -> tuple[ProxyProtocolWrapper, ProxyTransport, CommandServerFactory, Clock]:
    """
    One connection through a PROXY wrapper to a server of the built-in
    commands.
    """
    clock = clock or Clock()
    server = CommandServerFactory(default_commands(), clock=clock, **settings)  # type: ignore[arg-type]
    factory = ProxyWrappingFactory(server, clock, 5.0)
    protocol = factory.buildProtocol(HAPROXY)
    assert protocol is not None
    transport = ProxyTransport()
    protocol.makeConnection(transport)
    return protocol, transport, server, clock


def feed_bytewise(protocol: ProxyProtocolWrapper, data: bytes) -> None:
    for index in range(len(data)):
        protocol.dataReceived(data[index : index + 1])


CLIENT = v1("192.0.2.7", "127.0.0.1", 4242, 12345)


class WrapperTests(SynchronousTestCase):
    """
    The server behind the wrapper sees the client, never HAProxy.
    """

    def setUp(self) -> None:
        self.log = LogCapture(self)

    def test_header_byte_by_byte_then_served(self) -> None:
        protocol, transport, _, _ = proxied()
        feed_bytewise(protocol, CLIENT + b"Hello\nAre you there?\n")
        self.assertEqual(transport.value(), replies(GREETING, PRESENT))

    def test_connection_made_sees_the_client(self) -> None:
        protocol, _, server, _ = proxied()
        self.assertEqual(server.connections, set())
        protocol.dataReceived(CLIENT)
        (connection,) = server.connections
        self.assertEqual(connection.peer, "tcp:192.0.2.7:4242")
        self.assertIn("[1] connection from tcp:192.0.2.7:4242", self.log.messages())
        self.assertEqual(protocol.getPeer(), IPv4Address("TCP", "192.0.2.7", 4242))
        self.assertEqual(protocol.getHost(), IPv4Address("TCP", "127.0.0.1", 12345))

    def test_v2_header_and_request_in_one_read(self) -> None:
        protocol, transport, server, _ = proxied()
        protocol.dataReceived(v2_inet("2001:db8::7", "::1", 4242, 12345) + b"Hello\n")
        self.assertEqual(transport.value(), replies(GREETING))
        (connection,) = server.connections
        self.assertEqual(connection.peer, "tcp6:[2001:db8::7]:4242")

    def test_per_address_limit_counts_the_client(self) -> None:
        clock = Clock()
        server = CommandServerFactory(
            default_commands(), clock=clock, max_connections_per_address=1
        )
        factory = ProxyWrappingFactory(server, clock, 5.0)
        outcomes = []
        for source in ("192.0.2.7", "192.0.2.8", "192.0.2.7"):
            protocol = factory.buildProtocol(HAPROXY)
            assert protocol is not None
            transport = ProxyTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(v1(source, "127.0.0.1", 1, 2))
            outcomes.append(transport.value())
        self.assertEqual(outcomes, [b"", b"", replies(too_many_from_address(1))])

    def test_local_is_served_as_itself(self) -> None:
        protocol, transport, server, _ = proxied()
        protocol.dataReceived(v2(command=0) + b"Are you there?\n")
        self.assertEqual(transport.value(), replies(PRESENT))
        (connection,) = server.connections
        self.assertEqual(connection.peer, "tcp:127.0.0.1:40000")

    def test_the_proxys_own_connection_is_one_debug_line(self) -> None:
        protocol, transport, server, _ = proxied()
        protocol.dataReceived(v2(command=0) + b"Are you there?\n")
        protocol.connectionLost()
        self.assertEqual(transport.value(), replies(PRESENT))
        lines = [
            (event["log_level"].name, formatEvent(event))
            for event in self.log.events
            if "conn" in event
        ]
        self.assertEqual(
            lines,
            [
                (
                    "debug",
                    "[1] connection from tcp:127.0.0.1:40000 closed: "
                    "Connection was closed cleanly. (the proxy's own)",
                )
            ],
        )
        self.assertEqual(server.connections, set())

    def test_a_v1_header_naming_its_own_connection_is_the_proxys(self) -> None:
        # HAProxy's v1 health check: no LOCAL in version 1, so its header
        # names the check's own connection.
        protocol, _, _, _ = proxied()
        protocol.dataReceived(v1("127.0.0.1", "127.0.0.1", 40000, 12345))
        self.assertTrue(protocol.proxy_local)
        protocol.connectionLost()
        levels = [
            event["log_level"].name for event in self.log.events if "conn" in event
        ]
        self.assertEqual(levels, ["debug"])

    def test_a_relayed_client_is_logged_at_info(self) -> None:
        protocol, _, _, _ = proxied()
        protocol.dataReceived(CLIENT)
        protocol.connectionLost()
        levels = [
            event["log_level"].name for event in self.log.events if "conn" in event
        ]
        self.assertEqual(levels, ["info", "info"])

    def test_half_close_keeps_every_reply(self) -> None:
        protocol, transport, _, _ = proxied()
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.dataReceived(CLIENT + b"Hello\nAre you there?")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), replies(GREETING, PRESENT))
        self.assertTrue(transport.disconnecting)

    def test_no_header_in_time_closes_once_logged(self) -> None:
        protocol, transport, server, clock = proxied()
        protocol.dataReceived(CLIENT[:10])
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            [m for m in self.log.messages() if "PROXY" in m],
            ["no PROXY header from tcp:127.0.0.1:40000 within 5s: closing"],
        )
        protocol.connectionLost()
        self.assertEqual(server.connections, set())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_header_in_time_cancels_the_timer(self) -> None:
        protocol, _, _, clock = proxied(idle_timeout=None)
        protocol.dataReceived(CLIENT)
        self.assertEqual(
            [call for call in clock.getDelayedCalls() if call.getTime() == 5.0], []
        )

    def test_invalid_header_one_line_and_closed(self) -> None:
        protocol, transport, server, _ = proxied()
        protocol.dataReceived(b"Hello\n")
        protocol.dataReceived(b"Hello\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(
            self.log.messages(),
            ["invalid PROXY header from tcp:127.0.0.1:40000: no PROXY signature"],
        )
        protocol.connectionLost()
        self.assertEqual(server.connections, set())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_header_text_is_never_a_format_string(self) -> None:
        """
        A header that is a ``twisted.logger`` format string is logged as
        text: nothing in it is looked up or padded.
        """
        protocol, transport, _, _ = proxied()
        protocol.dataReceived(b"PROXY {peer:>1000000000} 1 2 3 4\r\n")
        self.assertTrue(transport.disconnecting)
        (message,) = self.log.messages()
        self.assertIn("{peer:>1000000000}", message)
        self.assertLess(len(message), 200)
        (event,) = self.log.events
        self.assertNotIn("1000000000", event["log_format"])

    def test_header_cannot_read_attributes_into_the_log(self) -> None:
        protocol, _, _, _ = proxied()
        protocol.dataReceived(
            b"PROXY {log_logger.__init__.__globals__[cast]} 1 2 3 4\r\n"
        )
        (message,) = self.log.messages()
        self.assertIn("{log_logger.__init__.__globals__[cast]}", message)
        self.assertNotIn("function", message)

    def test_zone_id_control_characters_are_escaped(self) -> None:
        protocol, _, _, _ = proxied()
        protocol.dataReceived(b"PROXY TCP6 fe80::1%\x1b[2J ::1 4242 12345\r\n")
        for message in self.log.messages():
            self.assertNotIn("\x1b", message)

    def test_end_of_input_before_header(self) -> None:
        protocol, transport, _, _ = proxied()
        protocol.dataReceived(b"PROXY ")
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.log.messages(),
            ["connection from tcp:127.0.0.1:40000 ended before its PROXY header"],
        )

    def test_closed_after_serving_logs_the_client(self) -> None:
        protocol, _, server, _ = proxied()
        protocol.dataReceived(CLIENT)
        protocol.connectionLost()
        self.assertEqual(server.connections, set())
        self.assertIn(
            "[1] connection from tcp:192.0.2.7:4242 closed: "
            "Connection was closed cleanly.",
            self.log.messages(),
        )


class PendingHeaderTests(SynchronousTestCase):
    """
    Connections that have not sent their PROXY header are counted and
    capped, as TLS handshakes are: past the cap the oldest is dropped.
    """

    def setUp(self) -> None:
        self.log = LogCapture(self)
        self.clock = Clock()
        self.server = CommandServerFactory(default_commands(), clock=self.clock)
        self.pending = PendingHeaders(2)
        self.factory = ProxyWrappingFactory(self.server, self.clock, 5.0, self.pending)

    def connect(self) -> tuple[ProxyProtocolWrapper, ProxyTransport]:
        protocol = self.factory.buildProtocol(HAPROXY)
        assert protocol is not None
        transport = ProxyTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_counted_until_the_header_arrives(self) -> None:
        first, _ = self.connect()
        first.dataReceived(b"PROXY TCP4 1.")
        self.assertEqual(len(self.pending), 1)
        first.dataReceived(CLIENT[len(b"PROXY TCP4 1.") :])
        self.assertEqual(len(self.pending), 0)

    def test_oldest_dropped_past_the_cap(self) -> None:
        first, first_transport = self.connect()
        _, second_transport = self.connect()
        third, third_transport = self.connect()
        self.assertEqual(
            [first_transport.disconnected, second_transport.disconnected],
            [True, False],
        )
        self.assertFalse(third_transport.disconnecting)
        self.assertEqual(len(self.pending), 2)
        self.assertEqual(
            [m for m in self.log.messages() if "PROXY" in m],
            [
                "dropped tcp:127.0.0.1:40000 before its PROXY header: too many "
                "PROXY headers pending"
            ],
        )
        # The dropped connection's loss is no trouble, and the others serve.
        first.connectionLost()
        third.dataReceived(CLIENT + b"Hello\n")
        self.assertEqual(third_transport.value(), replies(GREETING))
        self.assertEqual(len(self.pending), 1)

    def test_closed_or_rejected_leave_the_count(self) -> None:
        first, _ = self.connect()
        second, _ = self.connect()
        first.connectionLost()
        second.dataReceived(b"nonsense\n")
        self.assertEqual(len(self.pending), 0)

    def test_timed_out_leaves_the_count(self) -> None:
        self.connect()
        self.clock.advance(5)
        self.assertEqual(len(self.pending), 0)

    def test_listeners_share_one_cap(self) -> None:
        other = ProxyWrappingFactory(self.server, self.clock, 5.0, self.pending)
        _, first_transport = self.connect()
        self.connect()
        protocol = other.buildProtocol(HAPROXY)
        assert protocol is not None
        protocol.makeConnection(ProxyTransport())
        self.assertTrue(first_transport.disconnected)

    def test_cap_of_zero_rejected(self) -> None:
        self.assertRaises(ValueError, PendingHeaders, 0)


class EndpointTests(SynchronousTestCase):
    """
    ``proxy:`` in front of any server endpoint string.
    """

    def test_parses(self) -> None:
        endpoint = serverFromString(
            MemoryReactor(), "proxy:tcp:12345:interface=127.0.0.1:backlog=7"
        )
        assert isinstance(endpoint, ProxyServerEndpoint)
        assert isinstance(endpoint.inner, TCP4ServerEndpoint)
        self.assertEqual(endpoint.inner._interface, "127.0.0.1")
        self.assertEqual(endpoint.inner._backlog, 7)

    def test_listens_through_the_wrapper(self) -> None:
        reactor = MemoryReactor()
        endpoint = serverFromString(reactor, "proxy:tcp:12345")
        server = CommandServerFactory(default_commands(), clock=Clock())
        endpoint.listen(server)
        (port,) = reactor.tcpServers
        wrapper = port[1]
        assert isinstance(wrapper, ProxyWrappingFactory)
        self.assertIs(wrapper.wrappedFactory, server)

    def test_needs_an_endpoint(self) -> None:
        with self.assertRaises(ValueError):
            serverFromString(MemoryReactor(), "proxy:")

    def test_backlog_goes_inside(self) -> None:
        self.assertEqual(with_backlog("proxy:tcp:12345"), "proxy:tcp:12345:backlog=511")
