"""
``--legacy-listen``: the seed's wire format in front of the ordinary server
protocol, and the client's ``--legacy`` talking to it, in memory.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from commandproto.client.cli import (
    EXIT_OK,
    ClientSession,
    InputReceiver,
)
from commandproto.commands.table import (
    CLOSING,
    GREETING,
    PRESENT,
    UNKNOWN_COMMAND,
    idle_timeout_reply,
    too_many_connections,
)
from commandproto.listeners.legacy import LegacyFactory, legacy_request
from commandproto.server import CommandServerFactory

from ._helpers import InMemoryServer
from .test_client import FakeStdout


def connect(factory: CommandServerFactory) -> tuple[StringTransport, object]:
    wrapping = LegacyFactory(factory)
    protocol = wrapping.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return transport, protocol


class LegacyRequestTests(SynchronousTestCase):
    """
    One read is one request line.
    """

    def test_no_line_end(self) -> None:
        self.assertEqual(legacy_request(b"Hello"), b"Hello\n")

    def test_line_end_dropped(self) -> None:
        for read in (b"Hello\r\n", b"Hello\n", b"Hello\r"):
            self.assertEqual(legacy_request(read), b"Hello\n")

    def test_line_break_inside_stays_one_line(self) -> None:
        self.assertEqual(legacy_request(b"a\nb"), b"a\rb\n")


class LegacyServerTests(SynchronousTestCase):
    """
    The seed's replies, with no line end, from the ordinary server.
    """

    def converse(self, *reads: bytes) -> list[bytes]:
        transport, protocol = connect(CommandServerFactory(clock=Clock()))
        replies = []
        for read in reads:
            transport.clear()
            protocol.dataReceived(read)  # type: ignore[attr-defined]
            replies.append(transport.value())
        return replies

    def test_seed_conversation(self) -> None:
        self.assertEqual(
            self.converse(b"Hello", b"Are you there?", b"Goodbye", b"quit"),
            [
                GREETING.encode(),
                PRESENT.encode(),
                UNKNOWN_COMMAND.encode(),
                CLOSING.encode(),
            ],
        )

    def test_line_ends_accepted(self) -> None:
        self.assertEqual(self.converse(b"Hello\r\n"), [GREETING.encode()])

    def test_read_with_line_break_inside_gets_one_reply(self) -> None:
        self.assertEqual(self.converse(b"Hello\nHello"), [UNKNOWN_COMMAND.encode()])

    def test_quit_closes(self) -> None:
        transport, protocol = connect(CommandServerFactory(clock=Clock()))
        protocol.dataReceived(b"quit")  # type: ignore[attr-defined]
        self.assertTrue(transport.disconnecting)

    def test_connection_limit_shared_with_framed_listeners(self) -> None:
        server = InMemoryServer(max_connections=1)
        server.connect()
        transport, _ = connect(server.factory)
        self.assertEqual(transport.value(), too_many_connections(1).encode())
        self.assertTrue(transport.disconnecting)

    def test_idle_timeout(self) -> None:
        clock = Clock()
        transport, _ = connect(CommandServerFactory(idle_timeout=5, clock=clock))
        clock.advance(5)
        self.assertEqual(transport.value(), idle_timeout_reply(5).encode())

    def test_drain_says_closing_down(self) -> None:
        factory = CommandServerFactory(clock=Clock())
        transport, protocol = connect(factory)
        protocol.dataReceived(b"Hello")  # type: ignore[attr-defined]
        factory.drain(5)
        self.assertEqual(transport.value(), (GREETING + CLOSING).encode())

    def test_backpressure_reaches_the_real_transport(self) -> None:
        transport, protocol = connect(CommandServerFactory(clock=Clock()))
        self.assertIsNotNone(transport.producer)
        assert transport.producer is not None
        transport.producer.pauseProducing()
        protocol.dataReceived(b"Hello")  # type: ignore[attr-defined]
        self.assertEqual(transport.value(), b"")
        self.assertEqual(transport.producerState, "paused")
        transport.producer.resumeProducing()
        self.assertEqual(transport.value(), GREETING.encode())


class LegacyClientAndServerTests(SynchronousTestCase):
    """
    ``commandproto --legacy`` against a legacy listener, in memory.
    """

    def test_piped_conversation(self) -> None:
        errors: list[str] = []
        session = ClientSession(
            "legacy", errors.append, interactive=False, legacy=True, window=1
        )
        stdout = FakeStdout()
        stdout.session = session
        session.attach_output(stdout)
        codes: list[int] = []
        session.done.addCallback(codes.append)
        stdin = InputReceiver(session)
        wrapping = LegacyFactory(CommandServerFactory(clock=Clock()))
        _, _, pump = connectedServerAndClient(
            lambda: wrapping.buildProtocol(None),
            session.new_protocol,
        )
        stdin.dataReceived(b"Hello\nAre you there?\nGoodbye\nquit\n")
        pump.flush()
        self.assertEqual(
            stdout.text(),
            f"Server response: {GREETING}\n"
            f"Server response: {PRESENT}\n"
            f"Server response: {UNKNOWN_COMMAND}\n"
            f"Server response: {CLOSING}\n",
        )
        self.assertEqual((codes, errors), ([EXIT_OK], []))
