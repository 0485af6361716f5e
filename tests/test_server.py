"""
Unit tests for the server protocol and factory, on StringTransport.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    CLOSING,
    GREETING,
    INVALID_UTF8,
    PRESENT,
    UNKNOWN_COMMAND,
    Command,
    CommandTable,
    Reply,
    constant,
    line_too_long,
)
from commandproto.server import (
    BATCH,
    CommandServerFactory,
    describe_address,
)

from ._helpers import InMemoryServer, LogCapture, replies


class RecordingTransport(StringTransport):
    """
    A StringTransport that remembers each write separately.
    """

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def recording_server(
    table: CommandTable | None = None, **settings: object
) -> InMemoryServer:
    """
    A server of ``table`` whose connections are made on a
    :class:`RecordingTransport`.
    """
    return InMemoryServer(table, transport_factory=RecordingTransport, **settings)  # type: ignore[arg-type]


class SeedCommandsTests(SynchronousTestCase):
    """
    The seed's replies, exactly.
    """

    def assert_reply(self, request: bytes, reply: str) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(request)
        self.assertEqual(transport.value(), replies(reply))

    def test_hello(self) -> None:
        self.assert_reply(b"Hello\n", GREETING)

    def test_are_you_there(self) -> None:
        self.assert_reply(b"Are you there?\n", PRESENT)

    def test_quit(self) -> None:
        self.assert_reply(b"quit\n", CLOSING)

    def test_unknown(self) -> None:
        self.assert_reply(b"Goodbye\n", UNKNOWN_COMMAND)

    def test_blank_line_is_unknown(self) -> None:
        self.assert_reply(b"\n", UNKNOWN_COMMAND)

    def test_matching_is_case_sensitive(self) -> None:
        self.assert_reply(b"hello\n", UNKNOWN_COMMAND)

    def test_matching_is_exact(self) -> None:
        self.assert_reply(b"Hello \n", UNKNOWN_COMMAND)

    def test_crlf_terminator(self) -> None:
        self.assert_reply(b"Hello\r\n", GREETING)

    def test_replies_end_with_crlf(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), b"Greetings!\r\n")


class PipeliningTests(SynchronousTestCase):
    """
    Many lines in, the same number of replies out, in order, however split.
    """

    stream = b"Hello\nAre you there?\r\nnope\n\nHello\r\n"
    expected = replies(GREETING, PRESENT, UNKNOWN_COMMAND, UNKNOWN_COMMAND, GREETING)

    def test_all_at_once(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(self.stream)
        self.assertEqual(transport.value(), self.expected)

    def test_one_byte_at_a_time(self) -> None:
        protocol, transport = recording_server().connect()
        for index in range(len(self.stream)):
            protocol.dataReceived(self.stream[index : index + 1])
        self.assertEqual(transport.value(), self.expected)

    def test_replies_of_one_read_are_one_write(self) -> None:
        protocol, transport = recording_server().connect(RecordingTransport())
        protocol.dataReceived(self.stream)
        self.assertEqual(transport.writes, [self.expected])

    def test_thousands_of_lines_in_one_read(self) -> None:
        server = recording_server()
        protocol, transport = server.connect()
        protocol.dataReceived(b"Hello\n" * 5000)
        for _ in range(5000 // BATCH + 1):
            server.advance(0)
        self.assertEqual(transport.value(), replies(GREETING) * 5000)

    def test_one_batch_per_reactor_turn(self) -> None:
        server = recording_server()
        protocol, transport = server.connect(RecordingTransport())
        clock = server.clock
        protocol.dataReceived(b"Hello\n" * (BATCH * 2 + 1))
        # The rest waits for the reactor's next turns, one write each.
        self.assertEqual(transport.writes, [replies(GREETING) * BATCH])
        # The next turn (there is no idle timer by default).
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual(len(transport.writes), 3)
        self.assertEqual(transport.value(), replies(GREETING) * (BATCH * 2 + 1))

    def test_partial_line_waits_for_its_end(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"Hel")
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"lo\n")
        self.assertEqual(transport.value(), replies(GREETING))


class QuitTests(SynchronousTestCase):
    """
    ``quit`` is answered, then the connection closes, and nothing after it
    runs.
    """

    def test_closes_after_reply(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"quit\n")
        self.assertTrue(transport.disconnecting)

    def test_nothing_after_quit_in_same_read(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"Hello\nquit\nHello\nAre you there?\n")
        self.assertEqual(transport.value(), replies(GREETING, CLOSING))

    def test_nothing_after_quit_in_later_read(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"quit\n")
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.value(), replies(CLOSING))

    def test_other_commands_keep_connection_open(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"Hello\nnope\n")
        self.assertFalse(transport.disconnecting)


class HalfCloseTests(SynchronousTestCase):
    """
    A client that closes its sending side still gets every reply.
    """

    def test_provides_half_close(self) -> None:
        protocol, _ = recording_server().connect()
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))

    def test_replies_then_closes(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"Hello\nAre you there?\n")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), replies(GREETING, PRESENT))
        self.assertTrue(transport.disconnecting)

    def test_unterminated_last_line_is_answered(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"Hello\nAre you there?")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), replies(GREETING, PRESENT))

    def test_nothing_pending_sends_nothing(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_after_quit_unterminated_tail_is_ignored(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"quit\nHello")
        protocol.readConnectionLost()
        self.assertEqual(transport.value(), replies(CLOSING))

    def test_write_side_lost_closes(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.writeConnectionLost()
        self.assertTrue(transport.disconnecting)


class BadInputTests(SynchronousTestCase):
    """
    Bad input gets an error reply and loses nothing else.
    """

    def test_invalid_utf8(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"\xff\xfe\nHello\n")
        self.assertEqual(transport.value(), replies(INVALID_UTF8, GREETING))

    def test_utf8_character_split_across_reads(self) -> None:
        table = CommandTable((Command("caf\u00e9", lambda: Reply("ok")),))
        protocol, transport = recording_server(table).connect()
        protocol.dataReceived(b"caf\xc3")
        protocol.dataReceived(b"\xa9\n")
        self.assertEqual(transport.value(), replies("ok"))

    def test_control_bytes_are_unknown(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"\x00\x01\x1b[A\x7f\n")
        self.assertEqual(transport.value(), replies(UNKNOWN_COMMAND))

    def test_overlong_line_gets_one_error_and_connection_stays(self) -> None:
        protocol, transport = recording_server(max_line_length=8).connect()
        protocol.dataReceived(b"x" * 20 + b"\nHello\n")
        self.assertEqual(transport.value(), replies(line_too_long(8), GREETING))
        self.assertFalse(transport.disconnecting)

    def test_overlong_line_split_across_reads(self) -> None:
        protocol, transport = recording_server(max_line_length=8).connect()
        for _ in range(10):
            protocol.dataReceived(b"y" * 5)
        protocol.dataReceived(b"y\nHello\n")
        self.assertEqual(transport.value(), replies(line_too_long(8), GREETING))


class FactoryTests(SynchronousTestCase):
    """
    The factory shares one command table among its protocols.
    """

    def test_default_table_is_the_seeds(self) -> None:
        factory = CommandServerFactory()
        self.assertEqual(
            factory.commands.names(),
            ["Hello", "Are you there?", "quit", "help", "stats"],
        )

    def test_custom_table_is_used(self) -> None:
        table = CommandTable((Command("ping", lambda: Reply("pong")),))
        protocol, transport = recording_server(table).connect()
        protocol.dataReceived(b"ping\nHello\n")
        self.assertEqual(transport.value(), replies("pong", UNKNOWN_COMMAND))

    def test_max_line_length_reaches_protocol(self) -> None:
        protocol, _ = recording_server(max_line_length=99).connect()
        self.assertEqual(protocol.MAX_LENGTH, 99)


class LoggingTests(SynchronousTestCase):
    """
    Connects and disconnects are logged with the peer's address and the
    connection's id.
    """

    def setUp(self) -> None:
        self.log = LogCapture(self)

    def messages(self) -> list[str]:
        return self.log.messages()

    def test_connect_logged_with_peer(self) -> None:
        recording_server().connect()
        self.assertIn("[1] connection from tcp:127.0.0.1:40000", self.messages())

    def test_disconnect_logged_with_peer(self) -> None:
        protocol, _ = recording_server().connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(
            any(
                m.startswith("[1] connection from tcp:127.0.0.1:40000 closed")
                for m in self.messages()
            )
        )


class DescribeAddressTests(SynchronousTestCase):
    """
    Addresses are logged the way people write them.
    """

    def test_ipv4(self) -> None:
        address = IPv4Address("TCP", "127.0.0.1", 12345)
        self.assertEqual(describe_address(address), "tcp:127.0.0.1:12345")

    def test_ipv6(self) -> None:
        address = IPv6Address("TCP", "::1", 12345)
        self.assertEqual(describe_address(address), "tcp6:[::1]:12345")

    def test_unix(self) -> None:
        address = UNIXAddress(b"/tmp/s.sock")
        self.assertEqual(describe_address(address), "unix:/tmp/s.sock")

    def test_unnamed_unix_peer(self) -> None:
        self.assertEqual(describe_address(UNIXAddress(None)), "unix:(unnamed)")


class ReplyCacheTests(SynchronousTestCase):
    """
    Constant commands are answered from a cache of encoded replies, which
    follows the table's changes.
    """

    def test_constant_command_not_called_per_line(self) -> None:
        calls: list[int] = []

        def handler() -> Reply:
            calls.append(1)
            return Reply("pong")

        table = CommandTable((Command("ping", handler, constant=True),))
        protocol, transport = recording_server(table).connect()
        calls.clear()
        protocol.dataReceived(b"ping\n" * 10)
        self.assertEqual((transport.value(), calls), (replies("pong") * 10, []))

    def test_cache_follows_table_changes(self) -> None:
        table = CommandTable()
        server = recording_server(table)
        server.connect()
        table.add(constant("ping", "pong"))
        protocol, transport = server.connect()
        protocol.dataReceived(b"ping\r\n")
        self.assertEqual(transport.value(), replies("pong"))

    def test_cached_and_uncached_lines_keep_order(self) -> None:
        protocol, transport = recording_server().connect()
        protocol.dataReceived(b"Hello\r\nnope\nAre you there?\nquit\nHello\n")
        self.assertEqual(
            transport.value(), replies(GREETING, UNKNOWN_COMMAND, PRESENT, CLOSING)
        )
