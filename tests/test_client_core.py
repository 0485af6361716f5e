"""
The client library's protocol core alone: bytes in, replies matched to
requests out, with no transport, reactor or clock.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from commandproto.client import errors
from commandproto.client.core import ClientCore
from commandproto.client.errors import (
    ConnectionClosed,
    ProtocolError,
    ReplyError,
    ServerRefused,
    UnknownCommand,
)

REFUSAL = "Error: too many connections (limit is 2)"
IDLE = "Error: idle for 300 seconds, closing connection"
LINE_TIMEOUT = "Error: line took too long (limit is 30 seconds)"


def sent(core: ClientCore[int], *lines: str) -> bytes:
    return b"".join(core.request(line, n) for n, line in enumerate(lines))


class RequestTests(SynchronousTestCase):
    def test_request_encodes_line_with_crlf(self) -> None:
        core: ClientCore[str] = ClientCore()
        self.assertEqual(core.request("Are you there?", "w"), b"Are you there?\r\n")
        self.assertEqual(core.pending, 1)

    def test_request_of_two_lines_is_refused(self) -> None:
        core: ClientCore[str] = ClientCore()
        self.assertRaises(ValueError, core.request, "Hello\nquit", "w")
        self.assertEqual(core.pending, 0)

    def test_nothing_may_follow_quit(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "quit")
        e = self.assertRaises(ConnectionClosed, core.request, "Hello", 9)
        self.assertEqual(e.why, errors.QUIT)

    def test_nothing_may_follow_close(self) -> None:
        core: ClientCore[int] = ClientCore()
        core.close()
        e = self.assertRaises(ConnectionClosed, core.request, "Hello", 9)
        self.assertEqual(e.why, errors.CLOSED)


class ReplyTests(SynchronousTestCase):
    def test_replies_match_requests_in_order(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "Hello", "Are you there?")
        self.assertEqual(
            core.receive_data(b"Greetings!\r\nYes, I am here!\r\n"),
            [(0, "Greetings!"), (1, "Yes, I am here!")],
        )
        self.assertEqual(core.pending, 0)

    def test_error_replies_are_exceptions(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "hello", "help nope")
        (_, unknown), (_, error) = core.receive_data(
            b"Unknown command.\r\nError: no such command: nope\r\n"
        )
        assert isinstance(unknown, UnknownCommand)
        self.assertEqual(unknown.reply, "Unknown command.")
        self.assertIs(type(error), ReplyError)
        assert isinstance(error, ReplyError)
        self.assertEqual(error.reply, "Error: no such command: nope")

    def test_more_replies_than_requests_breaks_the_connection(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "Hello")
        self.assertEqual(
            core.receive_data(b"Greetings!\r\nGreetings!\r\n"), [(0, "Greetings!")]
        )
        assert core.broken is not None
        self.assertEqual(core.broken.why, errors.PROTOCOL)
        self.assertEqual(core.connection_lost()[0].why, errors.PROTOCOL)

    def test_overlong_reply_fails_its_request_only(self) -> None:
        core: ClientCore[int] = ClientCore(max_reply_length=8)
        sent(core, "a", "b")
        (first, long), second = core.receive_data(b"123456789\r\nshort\r\n")
        self.assertEqual(first, 0)
        self.assertIsInstance(long, ProtocolError)
        self.assertEqual(second, (1, "short"))

    def test_closing_down_answers_our_quit(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "Hello", "quit")
        self.assertEqual(
            core.receive_data(b"Greetings!\r\nClosing down\r\n"),
            [(0, "Greetings!"), (1, "Closing down")],
        )
        exception, waiters = core.connection_lost("closed by the server")
        self.assertEqual((exception.why, waiters), (errors.QUIT, []))

    def test_lost_connection_fails_outstanding_requests(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "Hello", "Hello")
        exception, waiters = core.connection_lost("connection refused")
        self.assertEqual(waiters, [0, 1])
        self.assertEqual(exception.why, errors.LOST)
        self.assertEqual(str(exception), "connection lost: connection refused")
        self.assertRaises(ConnectionClosed, core.request, "Hello", 2)


class UnsolicitedTests(SynchronousTestCase):
    """
    Lines the server sends on its own, before it closes.
    """

    def test_refusal_with_request_outstanding_is_a_refusal(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "Are you there?")
        self.assertEqual(core.receive_data(REFUSAL.encode() + b"\r\n"), [])
        exception, waiters = core.connection_lost("closed by the server")
        self.assertIsInstance(exception, ServerRefused)
        self.assertEqual(str(exception), REFUSAL)
        self.assertEqual(waiters, [0])

    def test_idle_line_with_nothing_outstanding_ends_the_connection(self) -> None:
        core: ClientCore[int] = ClientCore()
        self.assertEqual(core.receive_data(IDLE.encode() + b"\r\n"), [])
        e = self.assertRaises(ConnectionClosed, core.request, "Hello", 0)
        self.assertEqual(
            (e.why, str(e)),
            (errors.IDLE, "connection closed by the server: idle for 300 seconds"),
        )

    def test_closing_down_not_answering_quit_is_shutdown(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "Hello")
        self.assertEqual(
            core.receive_data(b"Greetings!\r\nClosing down\r\n"), [(0, "Greetings!")]
        )
        self.assertEqual(core.connection_lost()[0].why, errors.SHUTDOWN)

    def test_line_timeout(self) -> None:
        core: ClientCore[int] = ClientCore()
        sent(core, "Hello")
        core.receive_data(LINE_TIMEOUT.encode() + b"\r\n")
        exception, waiters = core.connection_lost()
        self.assertEqual(
            (exception.why, exception.line, waiters),
            (errors.LINE_TIMEOUT, LINE_TIMEOUT, [0]),
        )

    def test_unsolicited_looking_reply_followed_by_a_line_is_a_reply(self) -> None:
        # A command may answer anything, even what looks like the server's
        # last word: the next line shows that it was a reply.
        core: ClientCore[int] = ClientCore()
        sent(core, "echo", "Hello")
        self.assertEqual(core.receive_data(b"Closing down\r\n"), [])
        (first, reply), second = core.receive_data(b"Greetings!\r\n")
        self.assertEqual((first, reply, second), (0, "Closing down", (1, "Greetings!")))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


replies = st.lists(
    st.one_of(
        st.text(
            st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
            max_size=20,
        ),
        st.sampled_from(["Unknown command.", "Error: no", "Closing down", IDLE]),
    ),
    max_size=20,
)


class FramingModelTests(SynchronousTestCase):
    @given(replies, st.lists(st.integers(min_value=0), max_size=10), st.booleans())
    def test_any_split_matches_the_model(
        self, texts: list[str], cuts: list[int], crlf: bool
    ) -> None:
        # The model: the n-th line answers the n-th request; a line the
        # server may send on its own that comes last could be a reply or
        # its last word, and the connection's end says which.
        core: ClientCore[int] = ClientCore()
        for n in range(len(texts)):
            core.request("x", n)
        end = b"\r\n" if crlf else b"\n"
        data = b"".join(t.encode() + end for t in texts)
        got: list[tuple[int, object]] = []
        for piece in split(data, cuts):
            got.extend(core.receive_data(piece))
        expected = list(enumerate(texts))
        held = texts and texts[-1] in ("Closing down", IDLE)
        if held:
            expected = expected[:-1]
        self.assertEqual(
            [(n, o if isinstance(o, str) else o.reply) for n, o in got],  # type: ignore[attr-defined]
            expected,
        )
        _, waiters = core.connection_lost()
        self.assertEqual(waiters, [len(texts) - 1] if held else [])
