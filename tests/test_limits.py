"""
Unit tests for the server's protections: backpressure, the connection limit,
the idle timeout and the drain at shutdown.  StringTransport with producer
semantics, and a Clock for time.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from commandproto.commands.table import (
    CLOSING,
    GREETING,
    PRESENT,
    idle_timeout_reply,
    too_many_connections,
)
from commandproto.server import (
    BATCH,
    CLOSE_TIMEOUT,
    CommandServerProtocol,
    DrainService,
)

from ._helpers import InMemoryServer, LogCapture, replies


class SlowReaderTransport(StringTransport):
    """
    A transport whose peer reads nothing: once more than ``limit`` bytes are
    written, it pauses its producer, as a real transport does when its send
    buffer passes its size.
    """

    def __init__(self, limit: int = 2**62) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.limit = limit

    def write(self, data: bytes) -> None:
        super().write(data)
        producer = self.producer
        if (
            producer is not None
            and len(self.value()) > self.limit
            and self.producerState == "producing"
        ):
            producer.pauseProducing()

    def drain(self) -> bytes:
        """
        The peer reads everything; the producer is resumed.
        """
        data = self.value()
        self.clear()
        if self.producer is not None and self.producerState == "paused":
            self.producer.resumeProducing()
        return cast(bytes, data)


def slow_reader_server(**settings: object) -> InMemoryServer:
    """
    A server whose connections are made on a :class:`SlowReaderTransport`
    unless given another.
    """
    return InMemoryServer(transport_factory=SlowReaderTransport, **settings)  # type: ignore[arg-type]


def disconnect(protocol: CommandServerProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


class BackpressureTests(SynchronousTestCase):
    """
    A client that stops reading stops being read.
    """

    def test_registers_as_streaming_producer(self) -> None:
        protocol, transport = slow_reader_server().connect()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)

    def test_pausing_stops_reading_the_transport(self) -> None:
        protocol, transport = slow_reader_server().connect()
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")

    def test_lines_arriving_while_paused_wait(self) -> None:
        protocol, transport = slow_reader_server().connect()
        protocol.pauseProducing()
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), b"")

    def test_lines_held_while_paused_are_answered_on_resume(self) -> None:
        protocol, transport = slow_reader_server().connect()
        protocol.pauseProducing()
        protocol.dataReceived(b"Hello\nAre you there?\n")
        protocol.resumeProducing()
        self.assertEqual(transport.value(), replies(GREETING, PRESENT))
        self.assertEqual(transport.producerState, "producing")

    def test_big_read_stops_answering_once_paused(self) -> None:
        transport = SlowReaderTransport(limit=1000)
        protocol, _ = slow_reader_server().connect(transport)
        protocol.dataReceived(b"Hello\n" * (BATCH * 5))
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), replies(GREETING) * BATCH)

    def test_every_reply_arrives_in_order_after_draining(self) -> None:
        transport = SlowReaderTransport(limit=1000)
        server = slow_reader_server()
        protocol, _ = server.connect(transport)
        count = BATCH * 5 + 7
        protocol.dataReceived(b"Hello\nAre you there?\n" * count)
        received = b""
        for _ in range(100):
            received += transport.drain()
            server.clock.advance(0)
        received += transport.value()
        self.assertEqual(received, replies(GREETING, PRESENT) * count)

    def test_unregisters_before_closing(self) -> None:
        protocol, transport = slow_reader_server().connect()
        protocol.dataReceived(b"quit\n")
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)

    def test_closing_connection_reads_again_to_drop_input(self) -> None:
        protocol, transport = slow_reader_server().connect()
        protocol.pauseProducing()
        protocol.dataReceived(b"quit\n")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), replies(CLOSING))


@implementer(IHalfCloseableDescriptor)
class HalfCloseableTransport(SlowReaderTransport):
    """
    A transport that, like TCP's, can close its sending side alone.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def readConnectionLost(self, reason: Failure) -> None:
        pass

    def writeConnectionLost(self, reason: Failure) -> None:
        pass


class GracefulCloseTests(SynchronousTestCase):
    """
    The server closes its sending side first and reads until the client
    closes, so that unread requests never make the kernel reset the
    connection under the last replies.
    """

    def quit(
        self,
    ) -> tuple[InMemoryServer, CommandServerProtocol, HalfCloseableTransport]:
        server = slow_reader_server()
        transport = HalfCloseableTransport()
        protocol, _ = server.connect(transport)
        protocol.dataReceived(b"Hello\nquit\nHello\n")
        return server, protocol, transport

    def test_quit_closes_sending_side_only(self) -> None:
        _, _, transport = self.quit()
        self.assertEqual(
            (transport.write_closed, transport.disconnecting), (True, False)
        )

    def test_input_after_quit_is_dropped(self) -> None:
        _, protocol, transport = self.quit()
        protocol.dataReceived(b"Are you there?\n" * 100)
        self.assertEqual(transport.value(), replies(GREETING, CLOSING))

    def test_client_close_completes_it(self) -> None:
        _, protocol, transport = self.quit()
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)

    def test_client_that_never_closes_is_aborted(self) -> None:
        server, _, transport = self.quit()
        server.clock.advance(CLOSE_TIMEOUT)
        self.assertTrue(transport.disconnected)

    def test_half_close_by_client_closes_at_once(self) -> None:
        server = slow_reader_server()
        transport = HalfCloseableTransport()
        protocol, _ = server.connect(transport)
        protocol.dataReceived(b"Hello\n")
        protocol.readConnectionLost()
        self.assertEqual(
            (transport.write_closed, transport.disconnecting), (False, True)
        )

    def test_closing_connection_holds_its_slot_until_gone(self) -> None:
        # It still holds a descriptor, which the limit counts.
        server = slow_reader_server(max_connections=1)
        protocol, _ = server.connect(HalfCloseableTransport())
        protocol.dataReceived(b"quit\n")
        _, refused = server.connect()
        self.assertTrue(refused.disconnecting)
        disconnect(protocol)
        _, transport = server.connect()
        self.assertFalse(transport.disconnecting)


class MaxConnectionsTests(SynchronousTestCase):
    """
    Clients over the limit get one error line and are closed.
    """

    def test_over_limit_gets_error_and_close(self) -> None:
        server = slow_reader_server(max_connections=2)
        server.connect()
        server.connect()
        _, transport = server.connect()
        self.assertEqual(transport.value(), replies(too_many_connections(2)))
        self.assertTrue(transport.disconnecting)

    def test_under_limit_stays_open(self) -> None:
        server = slow_reader_server(max_connections=2)
        server.connect()
        _, transport = server.connect()
        self.assertFalse(transport.disconnecting)

    def test_refused_connection_answers_nothing(self) -> None:
        server = slow_reader_server(max_connections=1)
        server.connect()
        protocol, transport = server.connect()
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), replies(too_many_connections(1)))

    def test_freed_slot_is_usable_at_once(self) -> None:
        server = slow_reader_server(max_connections=1)
        first, _ = server.connect()
        disconnect(first)
        protocol, transport = server.connect()
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), replies(GREETING))

    def test_refused_connection_frees_no_slot(self) -> None:
        server = slow_reader_server(max_connections=1)
        server.connect()
        refused, _ = server.connect()
        disconnect(refused)
        _, transport = server.connect()
        self.assertTrue(transport.disconnecting)

    def test_factory_counts_connections(self) -> None:
        server = slow_reader_server()
        first, _ = server.connect()
        server.connect()
        disconnect(first)
        self.assertEqual(len(server.factory.connections), 1)


class IdleTimeoutTests(SynchronousTestCase):
    """
    A silent client is told why and closed; activity resets the clock.
    """

    def test_idle_client_told_and_closed(self) -> None:
        server = slow_reader_server(idle_timeout=30)
        _, transport = server.connect()
        server.clock.advance(30)
        self.assertEqual(transport.value(), replies(idle_timeout_reply(30)))
        self.assertTrue(transport.disconnecting)

    def test_not_closed_before_timeout(self) -> None:
        server = slow_reader_server(idle_timeout=30)
        _, transport = server.connect()
        server.clock.advance(29)
        self.assertFalse(transport.disconnecting)

    def test_a_whole_line_resets_timeout(self) -> None:
        server = slow_reader_server(idle_timeout=30)
        protocol, transport = server.connect()
        server.clock.advance(20)
        protocol.dataReceived(b"Hel")
        protocol.dataReceived(b"lo\n")
        server.clock.advance(20)
        self.assertFalse(transport.disconnecting)
        server.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_part_of_a_line_does_not_reset_timeout(self) -> None:
        server = slow_reader_server(idle_timeout=30, line_timeout=None)
        protocol, transport = server.connect()
        server.clock.advance(20)
        protocol.dataReceived(b"Hel")
        server.clock.advance(10)
        self.assertTrue(transport.disconnecting)

    def test_no_timeout_when_disabled(self) -> None:
        server = slow_reader_server(idle_timeout=None)
        _, transport = server.connect()
        server.clock.advance(10**9)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_stalled_close_is_aborted(self) -> None:
        server = slow_reader_server(idle_timeout=30)
        protocol, transport = server.connect()
        protocol.dataReceived(b"quit\n")
        self.assertFalse(transport.disconnected)
        server.clock.advance(30)
        self.assertTrue(transport.disconnected)

    def test_paused_client_is_aborted(self) -> None:
        server = slow_reader_server(idle_timeout=30)
        protocol, transport = server.connect()
        protocol.pauseProducing()
        server.clock.advance(30)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"")

    def test_timer_cancelled_on_disconnect(self) -> None:
        server = slow_reader_server(idle_timeout=30)
        protocol, _ = server.connect()
        disconnect(protocol)
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_reply_text(self) -> None:
        self.assertEqual(
            idle_timeout_reply(300), "Error: idle for 300 seconds, closing connection"
        )


class DrainTests(SynchronousTestCase):
    """
    At shutdown every client gets what was due, then ``Closing down``.
    """

    def test_clients_get_closing_down_then_close(self) -> None:
        server = slow_reader_server()
        _, first = server.connect()
        _, second = server.connect()
        server.factory.drain(5)
        for transport in (first, second):
            self.assertEqual(transport.value(), replies(CLOSING))
            self.assertTrue(transport.disconnecting)

    def test_lines_already_read_are_answered_first(self) -> None:
        server = slow_reader_server()
        protocol, transport = server.connect()
        protocol.pauseProducing()
        protocol.dataReceived(b"Hello\nAre you there?\n")
        server.factory.drain(5)
        self.assertEqual(transport.value(), b"")
        protocol.resumeProducing()
        self.assertEqual(transport.value(), replies(GREETING, PRESENT, CLOSING))

    def test_quit_already_answered_gets_no_second_closing(self) -> None:
        server = slow_reader_server()
        protocol, transport = server.connect()
        protocol.dataReceived(b"quit\n")
        server.factory.drain(5)
        self.assertEqual(transport.value(), replies(CLOSING))

    def test_fires_when_all_gone(self) -> None:
        server = slow_reader_server()
        first, _ = server.connect()
        second, _ = server.connect()
        done = server.factory.drain(5)
        fired: list[None] = []
        done.addCallback(fired.append)
        disconnect(first)
        self.assertEqual(fired, [])
        disconnect(second)
        self.assertEqual(fired, [None])

    def test_fires_at_once_with_no_connections(self) -> None:
        self.assertEqual(
            self.successResultOf(slow_reader_server().factory.drain(5)), None
        )

    def test_timeout_aborts_the_rest(self) -> None:
        server = slow_reader_server()
        _, transport = server.connect()
        server.factory.drain(5)
        server.clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        server.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_timeout_cancelled_when_drained(self) -> None:
        server = slow_reader_server(idle_timeout=None)
        protocol, _ = server.connect()
        server.factory.drain(5)
        disconnect(protocol)
        self.assertEqual(server.clock.getDelayedCalls(), [])

    def test_new_connections_refused_while_draining(self) -> None:
        server = slow_reader_server()
        server.connect()
        server.factory.drain(5)
        protocol, transport = server.connect()
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), replies(CLOSING))
        self.assertTrue(transport.disconnecting)

    def test_drain_service_stop_waits_for_drain(self) -> None:
        server = slow_reader_server()
        protocol, _ = server.connect()
        service = DrainService(server.factory, 5)
        service.startService()
        stopping: Deferred[None] = service.stopService()
        self.assertNoResult(stopping)
        disconnect(protocol)
        self.successResultOf(stopping)


class LoggingTests(SynchronousTestCase):
    """
    Each misbehaviour is one log line with the peer address and the
    connection's id.
    """

    def setUp(self) -> None:
        self.log = LogCapture(self)

    def lines_about_peer(self) -> list[str]:
        return [m for m in self.log.messages() if "tcp:127.0.0.1:40000" in m]

    def test_refusal_logged_once(self) -> None:
        server = slow_reader_server(max_connections=1)
        server.connect()
        self.log.events.clear()
        server.connect()
        self.assertEqual(
            self.lines_about_peer(),
            [
                "[2] refused connection from tcp:127.0.0.1:40000: "
                + too_many_connections(1)
            ],
        )

    def test_idle_timeout_logged_once(self) -> None:
        server = slow_reader_server(idle_timeout=30)
        server.connect()
        self.log.events.clear()
        server.clock.advance(30)
        self.assertEqual(
            self.lines_about_peer(), ["[1] idle timeout (30s) for tcp:127.0.0.1:40000"]
        )

    def test_overlong_line_logged_once(self) -> None:
        protocol, _ = slow_reader_server(max_line_length=4).connect()
        self.log.events.clear()
        for _ in range(10):
            protocol.dataReceived(b"x" * 100)
        self.assertEqual(
            self.lines_about_peer(),
            ["[1] line longer than 4 bytes from tcp:127.0.0.1:40000"],
        )

    def test_many_bad_lines_logged_once_and_counted_at_close(self) -> None:
        protocol, _ = slow_reader_server(max_line_length=4).connect()
        self.log.events.clear()
        protocol.dataReceived(b"\xff\n" * 500 + b"toolong\n" * 3)
        disconnect(protocol)
        self.assertEqual(
            self.lines_about_peer(),
            [
                "[1] invalid UTF-8 from tcp:127.0.0.1:40000",
                "[1] line longer than 4 bytes from tcp:127.0.0.1:40000",
                "[1] connection from tcp:127.0.0.1:40000 closed: Connection was "
                "closed cleanly. (500 invalid UTF-8 lines, 3 over-long lines)",
            ],
        )

    def test_invalid_utf8_logged_once(self) -> None:
        protocol, _ = slow_reader_server().connect()
        self.log.events.clear()
        protocol.dataReceived(b"\xff\n")
        self.assertEqual(
            self.lines_about_peer(), ["[1] invalid UTF-8 from tcp:127.0.0.1:40000"]
        )


class HalfCloseWhilePausedTests(SynchronousTestCase):
    """
    A client that closes its sending side while the server holds lines back
    still gets every reply.
    """

    def test_backlog_answered_on_half_close(self) -> None:
        transport = SlowReaderTransport(limit=1000)
        count = BATCH * 3
        server = slow_reader_server()
        protocol, _ = server.connect(transport)
        protocol.dataReceived(b"Hello\n" * count)
        self.assertEqual(transport.producerState, "paused")
        protocol.readConnectionLost()
        received = b""
        for _ in range(count // BATCH + 1):
            received += transport.drain()
            server.clock.advance(0)
        self.assertEqual(received + transport.value(), replies(GREETING) * count)
        self.assertTrue(transport.disconnecting)
