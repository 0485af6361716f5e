"""
Regressions from a review of the rewritten read path: whatever a handler
returns, and whatever order the client's events come in, every line gets one
reply, nothing runs after ``quit``, and every close finishes.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    CLOSING,
    CommandTable,
    Reply,
    Rest,
    Session,
    constant,
)
from commandproto.server import (
    CLOSE_TIMEOUT,
    Phase,
)
from commandproto.testing import CommandTester

from ._helpers import LogCapture, replies, serve


class BadResultTests(SynchronousTestCase):
    """
    A result that cannot become a reply is the handler's bug: one error
    reply, one logged traceback, and the connection goes on.
    """

    def setUp(self) -> None:
        self.logged = LogCapture(self)
        table = self.table = CommandTable()
        table.command("pow")(lambda a, b: int(a) ** int(b))
        table.command("notext")(lambda: Reply(42))  # type: ignore[arg-type]
        table.command("surrogate")(lambda: "\ud800")

        @table.command("later")
        def later(session: Session, kind: str) -> Deferred[object]:
            value = 10**5000 if kind == "int" else "\ud800"
            return deferLater(session.clock, 1, lambda: value)

    def assert_contained(self, request: bytes, name: str, advance: float = 0) -> None:
        clock, protocol, transport, _ = serve(self.table)
        protocol.dataReceived(request + b"\nHello\n")
        clock.advance(advance)
        self.assertEqual(
            transport.value(), replies(f"Error: {name} failed", "Greetings!")
        )
        self.assertEqual(len([e for e in self.logged.events if "log_failure" in e]), 1)
        self.flushLoggedErrors()

    def test_int_too_big_to_print(self) -> None:
        self.assert_contained(b"pow 10 5000", "pow")

    def test_reply_without_text(self) -> None:
        self.assert_contained(b"notext", "notext")

    def test_text_utf8_cannot_encode(self) -> None:
        self.assert_contained(b"surrogate", "surrogate")

    def test_later_int_too_big(self) -> None:
        self.assert_contained(b"later int", "later", advance=1)

    def test_later_text_utf8_cannot_encode(self) -> None:
        self.assert_contained(b"later text", "later", advance=1)

    def test_handlers_own_cancellation_is_a_failure(self) -> None:
        table = CommandTable()

        @table.command("inner")
        def inner(session: Session) -> Deferred[str]:
            result = deferLater(session.clock, 1, lambda: "x")
            session.clock.callLater(0.5, result.cancel)
            return result

        tester = CommandTester(table)
        client = tester.connect()
        client.send("inner")
        tester.advance(1)
        self.assertEqual(client.replies(), ["Error: inner failed"])
        self.assertTrue([e for e in self.logged.events if "log_failure" in e])
        self.flushLoggedErrors()


class RegistrationTests(SynchronousTestCase):
    """
    What would break the one-line rule is refused when the command is added.
    """

    def test_usage_with_line_break(self) -> None:
        table = CommandTable()
        self.assertRaises(ValueError, table.command("a", usage="a\nb"), lambda x: x)

    def test_summary_with_line_break(self) -> None:
        table = CommandTable()
        self.assertRaises(ValueError, table.command("a", summary="a\nb"), lambda: "")

    def test_constant_must_answer_a_reply(self) -> None:
        from commandproto.commands.table import Command

        table = CommandTable()
        self.assertRaises(
            ValueError, table.add, Command("ping", lambda: "pong", constant=True)
        )
        table.add(constant("ping", "pong"))


class QuitBehindOverlapTests(SynchronousTestCase):
    """
    Nothing sent after ``quit`` runs, even while ``quit`` waits its turn.
    """

    def setUp(self) -> None:
        self.ran: list[str] = []
        self.gate: Deferred[str] = Deferred()
        table = self.table = CommandTable()
        table.command("slow", overlap=True)(lambda: self.gate)

        @table.command("mark")
        def mark(x: str) -> str:
            self.ran.append(x)
            return "ok"

    def test_later_read(self) -> None:
        _, protocol, transport, _ = serve(self.table)
        protocol.dataReceived(b"slow\nquit\n")
        protocol.dataReceived(b"mark after\n")
        self.gate.callback("done")
        self.assertEqual(self.ran, [])
        self.assertEqual(transport.value(), replies("done", CLOSING))
        self.assertTrue(transport.disconnecting)

    def test_later_batch_of_the_same_read(self) -> None:
        clock, protocol, _, _ = serve(self.table)
        protocol.dataReceived(
            b"slow\n" + b"Hello\n" * 1022 + b"quit\n" + b"mark x\n" * 5
        )
        clock.advance(0)
        self.gate.callback("done")
        clock.advance(0)
        self.assertEqual(self.ran, [])


class CloseTests(SynchronousTestCase):
    """
    Every close finishes: at once when the client has ended its side, and
    within CLOSE_TIMEOUT when it reads nothing.
    """

    def setUp(self) -> None:
        LogCapture(self)
        self.gate: Deferred[str] = Deferred()
        self.table = CommandTable()
        self.table.command("wait")(lambda: self.gate)

    def test_quit_after_half_close_closes_fully(self) -> None:
        _, protocol, transport, _ = serve(self.table)
        protocol.dataReceived(b"wait\nquit\n")
        protocol.readConnectionLost()
        self.gate.callback("done")
        self.assertEqual(transport.value(), replies("done", CLOSING))
        self.assertTrue(transport.disconnecting)

    def test_half_close_during_drain(self) -> None:
        _, protocol, transport, factory = serve(self.table)
        protocol.dataReceived(b"wait\n")
        factory.drain(5)
        protocol.readConnectionLost()
        self.gate.callback("done")
        self.assertEqual(transport.value(), replies("done", CLOSING))
        self.assertTrue(transport.disconnecting)

    def test_full_close_that_stalls_is_aborted(self) -> None:
        clock, protocol, transport, _ = serve(self.table)
        protocol.dataReceived(b"Hello\n")
        protocol.readConnectionLost()
        self.assertEqual(protocol.phase, Phase.CLOSING)
        aborted: list[bool] = []
        transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
        clock.advance(CLOSE_TIMEOUT)
        self.assertEqual(aborted, [True])


class BoundTests(SynchronousTestCase):
    """
    --max-unanswered bounds the commands running at once, overlapping ones
    included.
    """

    def test_overlap_flood(self) -> None:
        table = CommandTable()

        @table.command("o", overlap=True)
        def o(session: Session) -> Deferred[str]:
            return deferLater(session.clock, 10, lambda: "x")

        clock, protocol, transport, _ = serve(table, max_unanswered=4)
        protocol.dataReceived(b"o\n" * 4096)
        clock.advance(0)
        self.assertLessEqual(len(protocol._core.replies.queue or ()), 4)
        for _ in range(1100):
            clock.advance(10)
        self.assertEqual(transport.value(), replies("x") * 4096)


class SessionCloseTests(SynchronousTestCase):
    """
    ``close_after_reply`` belongs to the command that asked.
    """

    def setUp(self) -> None:
        table = self.table = CommandTable()

        @table.command("bye")
        async def bye(session: Session) -> str:
            session.close_after_reply()
            await deferLater(session.clock, 100)
            return "bye"

        @table.command("echo")
        def echo(text: Rest) -> str:
            return text

    def test_timed_out_close_does_not_close_the_next_command(self) -> None:
        LogCapture(self)
        tester = CommandTester(self.table, command_timeout=5)
        client = tester.connect()
        client.send("bye")
        tester.advance(5)
        self.assertEqual(client.replies(), ["Error: bye timed out"])
        self.assertEqual(client.request("echo hi"), "hi")
        self.assertFalse(client.closed)

    def test_close_asked_before_waiting_closes_after_the_reply(self) -> None:
        tester = CommandTester(self.table, command_timeout=None)
        client = tester.connect()
        client.send("bye", "echo never")
        tester.advance(100)
        self.assertEqual(client.replies(), ["bye"])
        self.assertTrue(client.closed)


class InputTests(SynchronousTestCase):
    """
    Odd but harmless input is no handler bug.
    """

    def test_help_with_trailing_cr_and_spaces(self) -> None:
        logged = LogCapture(self)
        _, protocol, transport, _ = serve(CommandTable())
        protocol.dataReceived(b"help  Hello\r\r\n")
        self.assertEqual(transport.value(), replies("Hello - a greeting"))
        self.assertEqual([e for e in logged.events if "log_failure" in e], [])

    def test_half_close_with_a_turn_pending_leaves_one_turn(self) -> None:
        _clock, protocol, _, _ = serve(CommandTable())
        protocol.dataReceived(b"nope\n" * 5000)
        first = protocol._core.timers.turn
        protocol.readConnectionLost()
        self.assertIs(protocol._core.timers.turn, first)
