"""
The server protocol is a ``LineReceiver``: a subclass set as the factory's
``protocol`` sees every line through ``lineReceived`` and every reply through
``sendLine``, constant commands included, however the bytes are split;
``MAX_LENGTH`` is the limit in force and ``lineLengthExceeded`` is called for
every over-long line.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    GREETING,
    PRESENT,
    UNKNOWN_COMMAND,
    CommandTable,
    Rest,
    line_too_long,
    with_builtins,
)
from commandproto.server import CommandServerProtocol
from commandproto.wire.codec import encode_line

from ._helpers import InMemoryServer, replies


class Watching(CommandServerProtocol):
    """
    Records every line and every reply, as a subclass that logs them would.
    """

    def connectionMade(self) -> None:
        self.lines: list[bytes] = []
        self.sent: list[bytes] = []
        self.too_long = 0
        super().connectionMade()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        super().lineReceived(line)

    def sendLine(self, line: bytes) -> None:
        self.sent.append(line)
        super().sendLine(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.too_long += 1
        super().lineLengthExceeded(line)


class OnlyTooLong(CommandServerProtocol):
    def connectionMade(self) -> None:
        self.too_long = 0
        super().connectionMade()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.too_long += 1
        super().lineLengthExceeded(line)


def table() -> CommandTable:
    commands = CommandTable()

    @commands.command("echo")
    def echo(text: Rest) -> str:
        return text

    return with_builtins(commands)


LINES = ["Hello", "Are you there?", "nope", "echo a b", "Hello"]
ANSWERS = [GREETING, PRESENT, UNKNOWN_COMMAND, "a b", GREETING]


class SubclassTests(SynchronousTestCase):
    def test_it_is_a_line_receiver(self) -> None:
        protocol, _ = InMemoryServer(table(), protocol=CommandServerProtocol).connect()
        self.assertIsInstance(protocol, LineReceiver)
        self.assertEqual(protocol.delimiter, b"\r\n")

    def test_factory_builds_its_protocol_attribute(self) -> None:
        protocol, _ = InMemoryServer(table(), protocol=Watching).connect()
        self.assertIsInstance(protocol, Watching)

    def test_sees_every_line_and_reply_in_one_read(self) -> None:
        protocol, transport = InMemoryServer(table(), protocol=Watching).connect()
        assert isinstance(protocol, Watching)
        protocol.dataReceived(b"".join(encode_line(line) for line in LINES))
        self.assertEqual(protocol.lines, [line.encode() for line in LINES])
        self.assertEqual(protocol.sent, [answer.encode() for answer in ANSWERS])
        self.assertEqual(transport.value(), replies(*ANSWERS))

    def test_sees_a_constant_command_alone(self) -> None:
        """
        A read of constant commands only, which a plain protocol answers from
        its cache without a line in sight, still goes through the subclass.
        """
        protocol, transport = InMemoryServer(table(), protocol=Watching).connect()
        assert isinstance(protocol, Watching)
        protocol.dataReceived(b"Hello\r\nHello\n")
        self.assertEqual(protocol.lines, [b"Hello", b"Hello"])
        self.assertEqual(protocol.sent, [b"Greetings!", b"Greetings!"])
        self.assertEqual(transport.value(), replies(GREETING, GREETING))

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=12), max_size=20))
    def test_any_split(self, cuts: list[int]) -> None:
        protocol, transport = InMemoryServer(table(), protocol=Watching).connect()
        assert isinstance(protocol, Watching)
        data = b"".join(encode_line(line) for line in LINES)
        position = 0
        for size in cuts:
            protocol.dataReceived(data[position : position + size])
            position += size
        protocol.dataReceived(data[position:])
        self.assertEqual(protocol.lines, [line.encode() for line in LINES])
        self.assertEqual(protocol.sent, [answer.encode() for answer in ANSWERS])
        self.assertEqual(transport.value(), replies(*ANSWERS))

    def test_a_plain_protocol_takes_the_fast_path(self) -> None:
        self.assertTrue(CommandServerProtocol._plain)
        self.assertFalse(Watching._plain)
        # Over-long lines never take the fast path: watching them costs
        # nothing there.
        self.assertTrue(OnlyTooLong._plain)


class LineLengthTests(SynchronousTestCase):
    def test_max_length_is_the_limit_in_force(self) -> None:
        protocol, _ = InMemoryServer(
            table(), protocol=CommandServerProtocol, max_line_length=10
        ).connect()
        self.assertEqual(protocol.MAX_LENGTH, 10)

    def test_every_over_long_line_is_reported_and_answered(self) -> None:
        for protocol_class in (Watching, OnlyTooLong):
            protocol, transport = InMemoryServer(
                table(), protocol=protocol_class, max_line_length=10
            ).connect()
            protocol.dataReceived(b"x" * 11 + b"\nHello\n" + b"y" * 30 + b"\n")
            # Across reads too.
            protocol.dataReceived(b"z" * 8)
            protocol.dataReceived(b"z" * 8)
            protocol.dataReceived(b"\nHello\n")
            self.assertEqual(protocol.too_long, 3)  # type: ignore[attr-defined]
            too_long = line_too_long(10)
            self.assertEqual(
                transport.value(),
                replies(too_long, GREETING, too_long, too_long, GREETING),
            )
            self.assertFalse(transport.disconnecting)
