"""
The server with commands that answer later: order, waiting, overlap,
timeouts, failures, bounded input, drain and half-close; driven in memory by
``commandproto.testing`` and on ``StringTransport`` with a ``Clock``.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import CLOSING, GREETING, CommandTable, Rest, Session
from commandproto.testing import CommandTester

from ._helpers import LogCapture, replies, serve


class Gate:
    """
    Commands whose replies the test releases by hand: ``wait NAME`` answers
    when the test opens gate NAME; ``peek NAME`` may overlap.
    """

    def __init__(self) -> None:
        self.waiting: dict[str, Deferred[str]] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.table = CommandTable()
        self.table.command("wait")(self._wait)
        self.table.command("peek", overlap=True)(self._wait)

        @self.table.command("echo")
        def echo(text: Rest) -> str:
            return text

        @self.table.command("sleep")
        async def sleep(seconds: float, session: Session) -> str:
            await deferLater(session.clock, seconds)
            return f"slept {seconds:g}"

    def _wait(self, name: str) -> Deferred[str]:
        self.started.append(name)

        def cancel(_: Deferred[str]) -> None:
            self.cancelled.append(name)

        self.waiting[name] = Deferred(cancel)
        return self.waiting[name]

    def open(self, name: str) -> None:
        self.waiting.pop(name).callback(f"opened {name}")


class OrderTests(SynchronousTestCase):
    """
    Replies go out in request order, and a command starts after the one
    before it has answered.
    """

    def setUp(self) -> None:
        self.gate = Gate()
        self.tester = CommandTester(self.gate.table)
        self.client = self.tester.connect()

    def test_lines_after_a_pending_command_wait(self) -> None:
        self.client.send("wait a", "echo b", "Hello")
        self.assertEqual(self.client.replies(), [])
        self.assertEqual(self.gate.started, ["a"])
        self.gate.open("a")
        self.assertEqual(self.client.replies(), ["opened a", "b", GREETING])

    def test_next_command_starts_only_after_the_one_before(self) -> None:
        self.client.send("wait a", "wait b")
        self.assertEqual(self.gate.started, ["a"])
        self.gate.open("a")
        self.assertEqual(self.gate.started, ["a", "b"])
        self.assertEqual(self.client.replies(), ["opened a"])

    def test_overlapping_commands_start_at_once_and_answer_in_order(self) -> None:
        self.client.send("peek a", "peek b", "echo c")
        self.assertEqual(self.gate.started, ["a", "b"])
        self.gate.open("b")
        self.assertEqual(self.client.replies(), [])
        self.gate.open("a")
        self.assertEqual(self.client.replies(), ["opened a", "opened b", "c"])

    def test_clock_driven_handler(self) -> None:
        self.client.send("sleep 2", "echo after")
        self.tester.advance(1.5)
        self.assertEqual(self.client.replies(), [])
        self.tester.advance(0.5)
        self.assertEqual(self.client.replies(), ["slept 2", "after"])

    def test_slow_command_does_not_delay_other_connections(self) -> None:
        self.client.send("wait a")
        other = self.tester.connect()
        self.assertEqual(other.request("Hello"), GREETING)

    def test_quit_waits_its_turn(self) -> None:
        self.client.send("wait a", "quit", "echo never")
        self.gate.open("a")
        self.assertEqual(self.client.replies(), ["opened a", CLOSING])
        self.assertTrue(self.client.closed)


class FailureTests(SynchronousTestCase):
    """
    A handler's failure or timeout is one error reply; the connection goes on.
    """

    def test_failure_then_next_line(self) -> None:
        gate = Gate()
        client = CommandTester(gate.table).connect()
        LogCapture(self)
        client.send("wait a", "echo next")
        gate.waiting.pop("a").errback(KeyError("hidden"))
        self.assertEqual(client.replies(), ["Error: wait failed", "next"])
        self.flushLoggedErrors(KeyError)

    def test_timeout(self) -> None:
        gate = Gate()
        tester = CommandTester(gate.table, command_timeout=5)
        client = tester.connect()
        LogCapture(self)
        client.send("wait a", "echo next")
        tester.advance(5)
        self.assertEqual(client.replies(), ["Error: wait timed out", "next"])
        self.assertEqual(gate.cancelled, ["a"])

    def test_no_timeout(self) -> None:
        gate = Gate()
        tester = CommandTester(gate.table, command_timeout=None)
        client = tester.connect()
        client.send("wait a")
        tester.advance(10**6)
        self.assertEqual(client.replies(), [])

    def test_disconnect_cancels_running_command(self) -> None:
        gate = Gate()
        client = CommandTester(gate.table).connect()
        client.send("wait a")
        client.close()
        self.assertEqual(gate.cancelled, ["a"])


class BoundedInputTests(SynchronousTestCase):
    """
    While a command waits, input is held in a bounded queue: past it the
    server stops reading the connection.
    """

    def test_stops_reading_past_max_unanswered(self) -> None:
        gate = Gate()
        clock, protocol, transport, _ = serve(gate.table, max_unanswered=10)
        protocol.dataReceived(b"wait a\n" + b"Hello\n" * 8)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"Hello\n")
        self.assertEqual(transport.producerState, "paused")
        gate.open("a")
        clock.advance(0)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(transport.value(), replies("opened a", *[GREETING] * 9))

    def test_stops_reading_past_held_bytes(self) -> None:
        gate = Gate()
        _clock, protocol, transport, _ = serve(
            gate.table, max_unanswered=10**9, max_line_length=10**6
        )
        protocol.dataReceived(b"wait a\n")
        protocol.dataReceived(b"x" * 70000)
        self.assertEqual(transport.producerState, "paused")

    def test_held_input_is_raw_bytes(self) -> None:
        gate = Gate()
        _clock, protocol, _transport, _ = serve(gate.table)
        protocol.dataReceived(b"wait a\n")
        protocol.dataReceived(b"ab\n" * 20000)
        # One bytes object, not an object per line.
        self.assertEqual(protocol._core.intake.held, b"ab\n" * 20000)
        self.assertEqual(len(protocol._core.intake.frames), 0)


class LifecycleTests(SynchronousTestCase):
    """
    Shutdown and half-close wait for running commands.
    """

    def test_drain_waits_for_running_command(self) -> None:
        gate = Gate()
        _clock, protocol, transport, factory = serve(gate.table)
        protocol.dataReceived(b"wait a\nHello\n")
        drained = factory.drain(5)
        self.assertNoResult(drained)
        self.assertEqual(transport.value(), b"")
        gate.open("a")
        self.assertEqual(transport.value(), replies("opened a", GREETING, CLOSING))
        self.assertTrue(transport.disconnecting)

    def test_drain_timeout_aborts(self) -> None:
        gate = Gate()
        clock, protocol, transport, factory = serve(gate.table)
        LogCapture(self)
        protocol.dataReceived(b"wait a\n")
        factory.drain(5)
        clock.advance(5)
        self.assertTrue(transport.disconnecting)

    def test_half_close_waits_for_running_command(self) -> None:
        gate = Gate()
        _clock, protocol, transport, _ = serve(gate.table)
        protocol.dataReceived(b"wait a\nHello")
        protocol.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        gate.open("a")
        self.assertEqual(transport.value(), replies("opened a", GREETING))
        self.assertTrue(transport.disconnecting)

    def test_idle_timer_does_not_fire_while_a_command_runs(self) -> None:
        gate = Gate()
        clock, protocol, transport, _ = serve(
            gate.table, idle_timeout=10, command_timeout=None
        )
        protocol.dataReceived(b"wait a\n")
        clock.advance(25)
        self.assertFalse(transport.disconnecting)
        gate.open("a")
        self.assertEqual(transport.value(), replies("opened a"))


class CancelledHandlerTests(SynchronousTestCase):
    """
    A coroutine handler sees its cancellation when the client goes away.
    """

    def test_coroutine_cancelled(self) -> None:
        seen: list[str] = []
        table = CommandTable()

        @table.command("block")
        async def block(session: Session) -> str:
            try:
                await Deferred()
            except CancelledError:
                seen.append("cancelled")
                raise
            return "never"

        client = CommandTester(table).connect()
        client.send("block")
        client.close()
        self.assertEqual(seen, ["cancelled"])
