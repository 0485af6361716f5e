"""
Unit tests for the defences against abusive clients: the line timeout, the
per-address limit, TLS handshakes kept apart from connections, refusals that
close at once, log hygiene, the listen backlog and the daemon's signals.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableDescriptor, ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from commandproto import tap
from commandproto.commands.table import (
    CLOSING,
    GREETING,
    CommandTable,
    idle_timeout_reply,
    line_took_too_long,
    too_many_connections,
    too_many_from_address,
    with_builtins,
)
from commandproto.ops.signals import SignalService, reopen_log_files
from commandproto.server import (
    DEFAULT_SEND_BUFFER,
    REFUSAL_LINGER,
    REFUSAL_RESERVE,
    CommandServerFactory,
    CommandServerProtocol,
    address_key,
    describe_address,
)
from commandproto.wire.codec import escape_controls as escape

from ._helpers import InMemoryServer, LogCapture, replies


class LineTimeoutTests(SynchronousTestCase):
    """
    A line must arrive whole within --line-timeout of its first byte.
    """

    def setUp(self) -> None:
        LogCapture(self)
        self.server = InMemoryServer(line_timeout=10, idle_timeout=300)
        self.protocol, self.transport = self.server.connect()

    def test_trickled_line_is_cut_off(self) -> None:
        for byte in b"Hello":
            self.protocol.dataReceived(bytes([byte]))
            self.server.clock.advance(1.9)
        self.assertFalse(self.transport.disconnecting)
        self.server.clock.advance(0.5)
        self.assertEqual(self.transport.value(), replies(line_took_too_long(10)))
        self.assertTrue(self.transport.disconnecting)

    def test_a_trickler_that_keeps_sending_loses_its_slot_within_a_second(
        self,
    ) -> None:
        """
        Closed for its line timeout, a client that goes on sending and never
        reads does not hold its slot for the close's usual 10 seconds.
        """
        aborted: list[bool] = []
        self.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        self.protocol.dataReceived(b"Hel")
        self.server.clock.advance(10)
        self.assertTrue(self.transport.disconnecting)
        self.protocol.dataReceived(b"more and more")
        self.server.clock.advance(0.9)
        self.assertEqual(aborted, [])
        self.server.clock.advance(0.1)
        self.assertEqual(aborted, [True])

    def test_an_idle_client_loses_its_slot_within_a_second(self) -> None:
        aborted: list[bool] = []
        self.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        self.server.clock.advance(300)
        self.assertTrue(self.transport.disconnecting)
        self.server.clock.advance(1)
        self.assertEqual(aborted, [True])

    def test_whole_lines_in_pieces_are_fine(self) -> None:
        for _ in range(10):
            self.protocol.dataReceived(b"Hel")
            self.server.clock.advance(5)
            self.protocol.dataReceived(b"lo\n")
            self.server.clock.advance(5)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), replies(GREETING) * 10)

    def test_each_line_gets_its_own_time(self) -> None:
        self.protocol.dataReceived(b"Hel")
        self.server.clock.advance(9)
        # One line ends and the next begins in one read.
        self.protocol.dataReceived(b"lo\nHel")
        self.server.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.server.clock.advance(1)
        self.assertEqual(
            self.transport.value(), replies(GREETING, line_took_too_long(10))
        )

    def test_lines_already_read_are_answered_first(self) -> None:
        self.protocol.pauseProducing()
        self.protocol.dataReceived(b"Hello\nHel")
        self.server.clock.advance(10)
        self.assertEqual(self.transport.value(), b"")
        self.protocol.resumeProducing()
        self.assertEqual(
            self.transport.value(), replies(GREETING, line_took_too_long(10))
        )

    def test_timer_stops_once_the_line_ends(self) -> None:
        self.protocol.dataReceived(b"Hel")
        self.protocol.dataReceived(b"lo\n")
        self.assertEqual(
            [call.getTime() for call in self.server.clock.getDelayedCalls()], [300]
        )


class PerAddressTests(SynchronousTestCase):
    """
    One address may hold at most --max-connections-per-ip connections.
    """

    def connect_from(
        self, server: InMemoryServer, address: Any
    ) -> tuple[CommandServerProtocol, StringTransport]:
        return server.connect(StringTransport(peerAddress=address))

    def test_over_the_limit_is_refused(self) -> None:
        LogCapture(self)
        server = InMemoryServer(max_connections_per_address=2)
        client = IPv4Address("TCP", "10.0.0.1", 1)
        self.connect_from(server, client)
        self.connect_from(server, client)
        _, refused = self.connect_from(server, client)
        self.assertEqual(refused.value(), replies(too_many_from_address(2)))
        _, other = self.connect_from(server, IPv4Address("TCP", "10.0.0.2", 1))
        self.assertFalse(other.disconnecting)

    def test_slot_freed_when_gone(self) -> None:
        LogCapture(self)
        server = InMemoryServer(max_connections_per_address=1)
        client = IPv4Address("TCP", "10.0.0.1", 1)
        protocol, _ = self.connect_from(server, client)
        protocol.connectionLost()
        _, again = self.connect_from(server, client)
        self.assertFalse(again.disconnecting)

    def test_ipv6_counts_by_64_network(self) -> None:
        self.assertEqual(
            address_key(IPv6Address("TCP", "2001:db8:1:2:aaaa::1", 1)),
            address_key(IPv6Address("TCP", "2001:db8:1:2:bbbb::2", 1)),
        )
        self.assertNotEqual(
            address_key(IPv6Address("TCP", "2001:db8:1:2::1", 1)),
            address_key(IPv6Address("TCP", "2001:db8:1:3::1", 1)),
        )

    def test_ipv4_mapped_counts_as_ipv4(self) -> None:
        self.assertEqual(
            address_key(IPv6Address("TCP", "::ffff:10.0.0.1", 1)), "10.0.0.1"
        )

    def test_unix_sockets_are_not_counted(self) -> None:
        self.assertIsNone(address_key(UNIXAddress(b"/tmp/x")))


@implementer(ISSLTransport)
class TLSTransport(StringTransport):  # type: ignore[misc]
    """
    A transport that says it is TLS, whose handshake the test completes.
    """

    def getPeerCertificate(self) -> None:
        return None


class HandshakeTests(SynchronousTestCase):
    """
    A TLS connection counts as a connection only once its handshake is done.
    """

    def setUp(self) -> None:
        self.logged = LogCapture(self)

    def test_not_a_connection_until_the_handshake(self) -> None:
        server = InMemoryServer(max_connections=1)
        protocol, _ = server.connect(TLSTransport())
        self.assertEqual(server.factory.connections, set())
        protocol.handshakeCompleted()
        self.assertEqual(server.factory.connections, {protocol})

    def test_squatters_do_not_lock_out_plain_clients(self) -> None:
        server = InMemoryServer(max_connections=1)
        for _ in range(5):
            server.connect(TLSTransport())
        _, plain = server.connect()
        self.assertFalse(plain.disconnecting)

    def test_handshake_timeout_aborts(self) -> None:
        server = InMemoryServer(handshake_timeout=5)
        _, transport = server.connect(TLSTransport())
        server.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.factory.handshakes, {})
        self.assertEqual(server.factory.stats.events, {"handshake_timeout": 1})

    def test_handshakes_have_their_own_bound(self) -> None:
        server = InMemoryServer(max_handshakes=2)
        _, oldest = server.connect(TLSTransport())
        second, _ = server.connect(TLSTransport())
        third, transport = server.connect(TLSTransport())
        # The oldest, most likely a squatter, makes room.
        self.assertTrue(oldest.disconnecting)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(list(server.factory.handshakes), [second, third])
        self.assertEqual(server.factory.stats.events, {"handshake_dropped": 1})

    def test_without_a_handshake_timeout_it_counts_against_the_limit(self) -> None:
        """
        ``--handshake-timeout 0`` (no limit) still admits a TLS connection
        once its handshake is done: the third client at a limit of two is
        refused.
        """
        server = InMemoryServer(max_connections=2, handshake_timeout=None)
        admitted = []
        for _ in range(3):
            protocol, transport = server.connect(TLSTransport())
            protocol.handshakeCompleted()
            admitted.append(transport)
        self.assertEqual(len(server.factory.connections), 2)
        self.assertEqual(server.factory.handshakes, {})
        self.assertEqual(admitted[2].value(), replies(too_many_connections(2)))

    def test_without_a_handshake_timeout_the_idle_timeout_applies(self) -> None:
        server = InMemoryServer(handshake_timeout=None, idle_timeout=10)
        protocol, transport = server.connect(TLSTransport())
        protocol.handshakeCompleted()
        server.clock.advance(10)
        self.assertEqual(transport.value(), replies(idle_timeout_reply(10)))
        self.assertTrue(transport.disconnecting)

    def test_without_a_handshake_timeout_it_is_drained(self) -> None:
        server = InMemoryServer(handshake_timeout=None)
        protocol, transport = server.connect(TLSTransport())
        protocol.handshakeCompleted()
        protocol.dataReceived(b"Hello\n")
        drained = server.factory.drain(5)
        self.assertEqual(transport.value(), replies(GREETING, CLOSING))
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost()
        self.assertIsNone(self.successResultOf(drained))

    def test_lost_during_handshake_frees_its_place(self) -> None:
        server = InMemoryServer()
        protocol, _ = server.connect(TLSTransport())
        protocol.connectionLost()
        self.assertEqual(server.factory.handshakes, {})


@implementer(IHalfCloseableDescriptor)
class HalfCloseableTransport(StringTransport):  # type: ignore[misc]
    """
    A transport that can close its sending side alone, as TCP can.
    """

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True


class RefusalTests(SynchronousTestCase):
    """
    A refused client is told why and closed at once: no lingering close
    holds its descriptor.
    """

    def test_refusal_closes_within_a_second(self) -> None:
        LogCapture(self)
        server = InMemoryServer(max_connections=1)
        server.connect()
        refused = HalfCloseableTransport()
        protocol, _ = server.connect(refused)
        self.assertEqual(refused.value(), replies(too_many_connections(1)))
        self.assertTrue(refused.write_closed)
        self.assertEqual(server.factory.refusing, {protocol})
        server.clock.advance(REFUSAL_LINGER)
        self.assertTrue(refused.aborted)

    def test_refusals_past_the_reserve_close_at_once(self) -> None:
        LogCapture(self)
        server = InMemoryServer(max_connections=1)
        server.connect()
        for _ in range(REFUSAL_RESERVE):
            server.connect(HalfCloseableTransport())
        refused = HalfCloseableTransport()
        server.connect(refused)
        self.assertEqual(len(server.factory.refusing), REFUSAL_RESERVE // 2)
        self.assertTrue(refused.disconnecting)
        self.assertFalse(refused.write_closed)


class LogHygieneTests(SynchronousTestCase):
    """
    What a client controls never writes control characters into the log.
    """

    def test_escape(self) -> None:
        self.assertEqual(escape("a\nb\x1b[31m\x00"), "a\\nb\\x1b[31m\\x00")

    def test_printable_text_unchanged(self) -> None:
        self.assertEqual(escape("tcp:127.0.0.1:5 é"), "tcp:127.0.0.1:5 é")

    def test_unix_peer_name_escaped(self) -> None:
        self.assertEqual(
            describe_address(UNIXAddress(b"/tmp/\x1b]0;evil\x07\n")),
            "unix:/tmp/\\x1b]0;evil\\x07\\n",
        )


class BacklogTests(SynchronousTestCase):
    """
    Listeners get a backlog of 511 unless the endpoint string sets one.
    """

    def test_default_added(self) -> None:
        self.assertEqual(tap.with_backlog("tcp:0"), "tcp:0:backlog=511")
        self.assertEqual(
            tap.with_backlog("unix:/tmp/s.sock"), "unix:/tmp/s.sock:backlog=511"
        )

    def test_endpoint_setting_kept(self) -> None:
        self.assertEqual(tap.with_backlog("tcp:0:backlog=7"), "tcp:0:backlog=7")

    def test_other_kinds_untouched(self) -> None:
        self.assertEqual(
            tap.with_backlog("systemd:domain=INET:index=0"),
            "systemd:domain=INET:index=0",
        )


class ImmediateReactor:
    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        f(*args)

    def callWhenRunning(self, f: Callable[..., object], *args: object) -> None:
        f(*args)


class SignalTests(SynchronousTestCase):
    """
    The daemon's signal handlers.
    """

    def setUp(self) -> None:
        self.aborted: list[bool] = []
        self.service = SignalService(
            ImmediateReactor(), lambda: self.aborted.append(True)
        )
        self.addCleanup(self.service.restore)
        self.logged = LogCapture(self)

    def test_hup_usr1_usr2_do_not_end_the_server(self) -> None:
        self.service.startService()
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            handler = signal.getsignal(signum)
            self.assertTrue(callable(handler), signal.Signals(signum).name)
            handler(signum, None)  # type: ignore[misc,operator]
        self.assertEqual(self.aborted, [])
        self.assertEqual(len(self.logged.events), 3)

    def test_second_stop_signal_aborts(self) -> None:
        first: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, frame: first.append(signum))
        self.service.startService()
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)  # type: ignore[misc,operator]
        self.assertEqual((first, self.aborted), ([signal.SIGTERM], []))
        handler(signal.SIGTERM, None)  # type: ignore[misc,operator]
        self.assertEqual((first, self.aborted), ([signal.SIGTERM], [True]))
        self.assertIn("SIGTERM during shutdown", self.logged.messages()[-1])

    def test_an_ignored_sigint_stays_ignored(self) -> None:
        # Started with SIGINT ignored (nohup, a shell's background job): a
        # SIGINT must neither stop the server nor make the next SIGTERM a
        # "second" stop that aborts without stopping.
        first: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, frame: first.append(signum))
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        self.service.startService()
        self.assertEqual(signal.getsignal(signal.SIGINT), signal.SIG_IGN)
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)  # type: ignore[misc,operator]
        self.assertEqual((first, self.aborted), ([signal.SIGTERM], []))

    def test_stop_signal_once_stopping_aborts(self) -> None:
        self.service.startService()
        self.service.stopService()
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)  # type: ignore[misc,operator]
        self.assertEqual(self.aborted, [True])

    def test_restore(self) -> None:
        before = [signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)]
        self.service.startService()
        self.service.restore()
        after = [signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM)]
        self.assertEqual(after, before)

    def test_hup_reopens_log_file(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        log_file = LogFile.fromFullPath(os.path.join(directory, "server.log"))
        self.addCleanup(log_file.close)
        observer = textFileLogObserver(log_file)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        os.rename(log_file.path, log_file.path + ".1")
        self.assertEqual(reopen_log_files(), 1)
        self.assertTrue(os.path.exists(log_file.path))


class UnsolicitedLinesTests(SynchronousTestCase):
    """
    The lines this server sends on its own before closing are recognised by
    the client from the command table.
    """

    def test_per_address_refusal(self) -> None:
        from commandproto.commands.table import TOO_MANY_CONNECTIONS, unsolicited_kind

        self.assertEqual(
            unsolicited_kind(too_many_from_address(1000)), TOO_MANY_CONNECTIONS
        )

    def test_line_timeout(self) -> None:
        from commandproto.commands.table import LINE_TIMEOUT, unsolicited_kind

        self.assertEqual(unsolicited_kind(line_took_too_long(30)), LINE_TIMEOUT)
        self.assertEqual(unsolicited_kind(line_took_too_long(0.5)), LINE_TIMEOUT)


class DefensiveClientTests(SynchronousTestCase):
    """
    The client believes no server that answers more than it asked, and never
    lets a reply drive the terminal.
    """

    def test_more_replies_than_requests_is_a_protocol_error(self) -> None:
        from .test_client import Harness

        harness = Harness()
        harness.type(b"Hello\n")
        harness.client.dataReceived(b"Greetings!\r\n" * 5000)
        harness.pump.flush()
        self.assertEqual(harness.exit_codes, [1])
        self.assertIn("more replies than requests", harness.errors[-1])
        self.assertEqual(harness.stdout.text().count("Greetings!"), 1)

    def control_reply(self, escape: bool) -> str:
        from commandproto.commands.table import CommandTable, with_builtins

        from .test_client import Harness

        table = CommandTable()
        table.command("paint")(lambda: "\x1b[31mred\x07")
        harness = Harness(
            factory=CommandServerFactory(with_builtins(table), clock=Clock()),
            escape_controls=escape,
        )
        harness.type(b"paint\n")
        return harness.stdout.text()

    def test_control_characters_escaped_for_a_terminal(self) -> None:
        self.assertEqual(
            self.control_reply(True), "Server response: \\x1b[31mred\\x07\n"
        )

    def test_control_characters_kept_for_a_pipe(self) -> None:
        self.assertEqual(
            self.control_reply(False), "Server response: \x1b[31mred\x07\n"
        )


class SendBufferTests(SynchronousTestCase):
    """
    Each connection's kernel send buffer is bounded, so that backpressure
    starts soon after a client stops reading.
    """

    def connected_socket(self, **settings: Any) -> socket.socket:
        import socket as socket_module

        left, right = socket_module.socketpair()
        self.addCleanup(left.close)
        self.addCleanup(right.close)

        class SocketTransport(StringTransport):
            def getHandle(self) -> socket_module.socket:
                return left

        InMemoryServer(**settings).connect(SocketTransport())
        return left

    def test_bounded_by_default(self) -> None:
        sock = self.connected_socket()
        # Linux doubles what is asked, for its bookkeeping.
        self.assertIn(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            (DEFAULT_SEND_BUFFER, 2 * DEFAULT_SEND_BUFFER),
        )

    def test_kernel_default_kept_when_off(self) -> None:
        import socket as socket_module

        fresh, other = socket_module.socketpair()
        expected = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        fresh.close()
        other.close()
        sock = self.connected_socket(send_buffer=None)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), expected)


class NoDelayTests(SynchronousTestCase):
    """
    TCP connections are served without Nagle's delay, as redis-server's are:
    the last write of a burst of replies must not wait up to 40 ms for the
    client's delayed acknowledgement.
    """

    def tcp_pair(self) -> tuple[socket.socket, socket.socket]:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            client = socket.create_connection(listener.getsockname())
            server, _ = listener.accept()
        self.addCleanup(client.close)
        self.addCleanup(server.close)
        return server, client

    def serve(self, transport: StringTransport) -> None:
        InMemoryServer().connect(transport)

    def test_tcp(self) -> None:
        server, _ = self.tcp_pair()

        class SocketTransport(StringTransport):
            def getHandle(self) -> socket.socket:
                return server

        self.serve(SocketTransport())
        self.assertTrue(server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def test_beneath_a_wrapper(self) -> None:
        # TLS and the PROXY wrapper: the socket is their transport's.
        server, _ = self.tcp_pair()

        class Beneath(StringTransport):
            def getHandle(self) -> socket.socket:
                return server

        class Wrapper(StringTransport):
            transport = Beneath()

            def getHandle(self) -> object:
                return object()

        self.serve(Wrapper())
        self.assertTrue(server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        self.assertIn(
            server.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            (DEFAULT_SEND_BUFFER, 2 * DEFAULT_SEND_BUFFER),
        )


class HalfClosedSlowCommandTests(SynchronousTestCase):
    """
    A client that sends a slow command and closes its side keeps its slot
    while the command runs, but at the connection limit the oldest such
    makes room for a new client.
    """

    def setUp(self) -> None:
        self.logged = LogCapture(self)
        self.waiting: list[Deferred[str]] = []
        table = CommandTable()

        @table.command("slow")
        def slow() -> Deferred[str]:
            self.waiting.append(Deferred())
            return self.waiting[-1]

        self.server = InMemoryServer(with_builtins(table), max_connections=2)

    def half_closed(self) -> tuple[CommandServerProtocol, StringTransport]:
        protocol, transport = self.server.connect(HalfCloseableTransport())
        protocol.dataReceived(b"slow\n")
        protocol.readConnectionLost()
        return protocol, transport

    def test_below_the_limit_it_still_gets_its_reply(self) -> None:
        _, transport = self.half_closed()
        self.waiting[0].callback("done")
        self.assertEqual(transport.value(), replies("done"))

    def test_at_the_limit_the_oldest_makes_room(self) -> None:
        aborted: list[int] = []
        first, first_transport = self.half_closed()
        first_transport.abortConnection = lambda: aborted.append(1)  # type: ignore[method-assign]
        _, second_transport = self.half_closed()
        second_transport.abortConnection = lambda: aborted.append(2)  # type: ignore[method-assign]
        newcomer, transport = self.server.connect()
        self.assertEqual(aborted, [1])
        self.assertFalse(transport.disconnecting)
        newcomer.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), replies(GREETING))
        self.assertEqual(self.server.factory.stats.events["made_room"], 1)
        self.assertEqual(
            [m for m in self.logged.messages() if "make room" in m or "full" in m],
            [
                "[1] closing half-closed connection from tcp:192.168.1.1:54321 "
                "that waits for a command: the server is full"
            ],
        )
        first.connectionLost()
        self.assertEqual(len(self.server.factory.connections), 2)

    def test_open_clients_are_never_made_to_room(self) -> None:
        self.server.connect()
        self.server.connect()
        _, transport = self.server.connect()
        self.assertEqual(transport.value(), replies(too_many_connections(2)))
