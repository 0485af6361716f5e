"""
The server's general read path, as optimised for reads that mix cached
constant replies with other lines: it must answer exactly as a line-by-line
model does, however the bytes are split, and forget what it remembers when
the command table changes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from commandproto.benchcommands import commands as bench_commands
from commandproto.commands.table import (
    GREETING,
    UNKNOWN_COMMAND,
    Command,
    CommandTable,
    Rest,
    constant,
    with_builtins,
)
from commandproto.wire.codec import encode_line

from ._helpers import InMemoryServer, replies

LINES = [
    "Hello",
    "Are you there?",
    "nope",
    "echo hi",
    "echo  two  spaces ",
    "aping",
    "help echo",
    "Hello there",
    "\xe9t\xe9",
]


def model(lines: list[str]) -> bytes:
    """
    The replies a line-by-line server gives: each line through the table.
    """
    table = with_builtins(bench_commands)
    return b"".join(encode_line(table.dispatch(line).text) for line in lines)


class MixedReadTests(SynchronousTestCase):
    """
    Reads that hold cached constant commands, unknown lines, commands with
    arguments and asynchronous commands that answer at once.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.sampled_from(LINES), min_size=1, max_size=40),
        st.lists(st.integers(min_value=1, max_value=30), max_size=20),
    )
    def test_any_split_answers_like_the_model(
        self, lines: list[str], cuts: list[int]
    ) -> None:
        data = b"".join(encode_line(line) for line in lines)
        protocol, transport = InMemoryServer(with_builtins(bench_commands)).connect()
        position = 0
        for size in cuts:
            protocol.dataReceived(data[position : position + size])
            position += size
        if position < len(data):
            protocol.dataReceived(data[position:])
        self.assertEqual(transport.value(), model(lines))

    def test_one_read_is_one_write(self) -> None:
        protocol, transport = InMemoryServer(with_builtins(bench_commands)).connect()
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        lines = ["Hello", "nope", "echo a b", "aping", "Are you there?"] * 3
        protocol.dataReceived(b"".join(encode_line(line) for line in lines))
        self.assertEqual(writes, [model(lines)])

    def test_replies_after_a_pending_one_wait_in_order(self) -> None:
        later: Deferred[str] = Deferred()
        table = with_builtins(bench_commands)
        table.add(Command("later", lambda: later))
        protocol, transport = InMemoryServer(table).connect()
        protocol.dataReceived(b"Hello\r\nnope\r\nlater\r\necho x\r\nnope\r\n")
        self.assertEqual(transport.value(), replies(GREETING, UNKNOWN_COMMAND))
        later.callback("done")
        self.assertEqual(
            transport.value(),
            replies(GREETING, UNKNOWN_COMMAND, "done", "x", UNKNOWN_COMMAND),
        )

    def test_a_closing_command_drops_the_rest_of_the_read(self) -> None:
        protocol, transport = InMemoryServer(with_builtins(bench_commands)).connect()
        protocol.dataReceived(b"nope\r\necho a\r\nquit\r\nHello\r\nnope\r\n")
        self.assertEqual(
            transport.value(), replies(UNKNOWN_COMMAND, "a", "Closing down")
        )


class TableChangeTests(SynchronousTestCase):
    """
    A command added to the table while connections are open is answered.
    """

    def test_a_command_added_later_is_answered(self) -> None:
        table = with_builtins(bench_commands)
        protocol, transport = InMemoryServer(table).connect()
        protocol.dataReceived(b"ping\r\nHello\r\n")
        table.add(constant("ping", "pong"))
        protocol.dataReceived(b"ping\r\nHello\r\n")
        self.assertEqual(
            transport.value(), replies(UNKNOWN_COMMAND, GREETING, "pong", GREETING)
        )

    def test_a_command_added_by_a_command_is_answered_in_the_same_read(
        self,
    ) -> None:
        table = with_builtins(bench_commands)

        def define(name: Rest) -> str:
            table.add(constant(name, "defined"))
            return "ok"

        table.add(Command("define", define))
        protocol, transport = InMemoryServer(table).connect()
        protocol.dataReceived(b"ping\r\n")
        protocol.dataReceived(b"ping\r\nHello\r\ndefine ping\r\nping\r\nnope\r\n")
        self.assertEqual(
            transport.value(),
            replies(
                UNKNOWN_COMMAND,
                UNKNOWN_COMMAND,
                GREETING,
                "ok",
                "defined",
                UNKNOWN_COMMAND,
            ),
        )


class FindTests(SynchronousTestCase):
    """
    ``CommandTable.find``: the longest name that the line is, or that is
    followed by a space, wins.
    """

    @staticmethod
    def model(names: list[str], line: str) -> tuple[str, str | None] | None:
        if line in names:
            return line, None
        matches = [name for name in names if line.startswith(name + " ")]
        if not matches:
            return None
        name = max(matches, key=len)
        return name, line[len(name) + 1 :]

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.text(alphabet="ab ", min_size=1, max_size=5), unique=True),
        st.text(alphabet="ab ", max_size=8),
    )
    def test_longest_name_wins(self, names: list[str], line: str) -> None:
        table = CommandTable(Command(name, lambda: "") for name in names)
        found = table.find(line)
        got = None if found is None else (found[0].name, found[1])
        self.assertEqual(got, self.model(names, line))
