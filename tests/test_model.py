"""
The server against a simple model, for commands with arguments and commands
that answer later: any lines, split at any points, with time passing at any
points between the pieces, get exactly the model's replies, in order.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    INVALID_UTF8,
    UNKNOWN_COMMAND,
    CommandTable,
    Rest,
    Session,
    line_too_long,
    with_builtins,
)
from commandproto.wire.codec import encode_line

from ._helpers import InMemoryServer, LogCapture
from .test_codec import PROPERTY_SETTINGS, SEED_REPLIES, as_content, split_at


def model_table() -> CommandTable:
    table = CommandTable()

    @table.command("echo")
    def echo(text: Rest) -> str:
        return text

    @table.command("add")
    def add(a: int, b: int) -> int:
        return a + b

    @table.command("slow")
    async def slow(ticks: int, session: Session) -> str:
        await deferLater(session.clock, ticks)
        return f"slow {ticks}"

    @table.command("peek", overlap=True)
    async def peek(ticks: int, session: Session) -> str:
        await deferLater(session.clock, ticks)
        return f"peek {ticks}"

    @table.command("boom")
    def boom() -> str:
        raise RuntimeError("a bug")

    return table


HELP = "Commands: Hello, Are you there?, quit, help, stats, echo, add, slow, peek, boom"
# What ``help NAME`` answers, as docs/reference/protocol.rst describes it.
HELP_OF = {
    "Hello": "Hello - a greeting",
    "Are you there?": "Are you there? - a liveness check",
    "quit": "quit - end the session",
    "help": "help [NAME] - list the commands, or describe one",
    "stats": "stats - the server's numbers, as key=value pairs",
    "echo": "echo TEXT",
    "add": "add A B",
    "slow": "slow TICKS",
    "peek": "peek TICKS",
    "boom": "boom",
}


def model_reply(line: bytes, max_line_length: int) -> str:
    """
    The reply one line must get, written from the README's rules.
    """
    if len(line) > max_line_length:
        return line_too_long(max_line_length)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID_UTF8
    if text in SEED_REPLIES:
        return SEED_REPLIES[text]
    if text == "help":
        return HELP
    name, space, rest = text.partition(" ")
    words = rest.split()
    if name == "help":
        # help NAME: spaces around the name do not count.
        wanted = rest.strip(" ")
        if not wanted:
            return HELP
        return HELP_OF.get(wanted, f"Error: no such command: {wanted}")
    if name == "echo":
        return rest if space else "Error: usage: echo TEXT"
    if name == "add":
        try:
            a, b = (int(word) for word in words)
        except ValueError:
            return "Error: usage: add A B"
        return str(a + b)
    if name in ("slow", "peek"):
        try:
            (ticks,) = (int(word) for word in words)
        except ValueError:
            return f"Error: usage: {name} TICKS"
        return f"{name} {ticks}"
    if text == "boom":
        return "Error: boom failed"
    return UNKNOWN_COMMAND


@st.composite
def model_line(draw: st.DrawFn, max_length: int) -> bytes:
    text = st.text(st.characters(codec="utf-8"), max_size=12)
    number = st.one_of(st.integers(-50, 50).map(str), st.sampled_from(["x", "1.5", ""]))
    ticks = st.integers(0, 3).map(str)
    kinds = st.one_of(
        st.sampled_from([*sorted(SEED_REPLIES), "help", "boom", "echo", "add"]),
        text.map(lambda t: "echo " + t),
        st.tuples(number, number).map(lambda ab: f"add {ab[0]} {ab[1]}"),
        ticks.map(lambda t: "slow " + t),
        ticks.map(lambda t: "peek " + t),
        st.one_of(st.sampled_from(["", " ", "  echo", "quit "]), text).map(
            lambda t: "help " + t
        ),
        text,
    )
    line = draw(
        st.one_of(
            kinds.map(str.encode),
            st.sampled_from([b"\xff", b"echo \xc0", b"slow \xfe"]),
            st.integers(1, 5).map(lambda extra: b"y" * (max_length + extra)),
        )
    )
    return as_content(line)


class ModelTests(SynchronousTestCase):
    """
    The server, with commands that take arguments and answer later, against
    the model.
    """

    @PROPERTY_SETTINGS
    @given(max_line_length=st.integers(8, 40), half_close=st.booleans(), data=st.data())
    def test_any_split_any_timing_matches_model(
        self, max_line_length: int, half_close: bool, data: st.DataObject
    ) -> None:
        lines = data.draw(st.lists(model_line(max_line_length), max_size=12))
        ends = [data.draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
        stream = b"".join(line + end for line, end in zip(lines, ends, strict=True))
        if half_close and lines:
            # The last line ends with the client's half-close, unterminated
            # (an empty one is then no line at all).
            stream = stream[: -len(ends[-1])]
            if not lines[-1]:
                lines.pop()
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
        chunks = split_at(stream, cuts)
        pauses = data.draw(
            st.lists(
                st.sampled_from([0, 0.5, 1, 3]),
                min_size=len(chunks),
                max_size=len(chunks),
            )
        )
        LogCapture(self)
        server = InMemoryServer(
            with_builtins(model_table()),
            max_line_length=max_line_length,
            command_timeout=None,
            line_timeout=None,
        )
        protocol, transport = server.connect()
        for chunk, pause in zip(chunks, pauses, strict=True):
            protocol.dataReceived(chunk)
            server.advance(pause)
        if half_close:
            protocol.readConnectionLost()
        # Time passes in steps: each command that waits starts its timer
        # only when the one before it has answered.
        for _ in range(4 * len(lines) + 1):
            server.advance(1)

        expected: list[bytes] = []
        closed = half_close
        for line in lines:
            reply = model_reply(line, max_line_length)
            expected.append(encode_line(reply))
            if line == b"quit":
                closed = True
                break
        self.assertEqual(transport.value(), b"".join(expected))
        self.assertEqual(transport.disconnecting, closed)
        self.flushLoggedErrors(RuntimeError)
