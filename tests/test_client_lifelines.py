"""
The client against servers that misbehave or go away: lines the server sends
on its own, time limits, the seed's wire format, and reconnecting.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from commandproto.client.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    PROMPT,
    ClientSession,
    Script,
)
from commandproto.commands.table import (
    CLOSING,
    GREETING,
    PRESENT,
    idle_timeout_reply,
    is_unsolicited,
    too_many_connections,
    unsolicited_kind,
)
from commandproto.server import CommandServerFactory

from .test_client import Harness, Wired

REFUSED = (
    "commandproto: test-server refused the connection: "
    "too many connections (limit is 2); try again later"
)


class UnsolicitedKindTests(SynchronousTestCase):
    """
    The command table alone says which lines the server sends on its own.
    """

    def test_too_many_connections(self) -> None:
        self.assertEqual(
            unsolicited_kind(too_many_connections(10000)), "too many connections"
        )

    def test_idle(self) -> None:
        self.assertEqual(unsolicited_kind(idle_timeout_reply(300)), "idle")
        self.assertEqual(unsolicited_kind(idle_timeout_reply(0.25)), "idle")

    def test_closing_down(self) -> None:
        self.assertEqual(unsolicited_kind(CLOSING), CLOSING)

    def test_replies_are_not(self) -> None:
        for text in (GREETING, "Error: no such key", "Error: idle", "Closing"):
            self.assertFalse(is_unsolicited(text), text)


class UnsolicitedLineTests(SynchronousTestCase):
    """
    A line the server sends on its own is a connection failure, never the
    reply to a command.
    """

    def test_too_many_connections_is_not_the_reply(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send(b"Are you there?")
        wired.receive(too_many_connections(2))
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])
        self.assertEqual(wired.stdout.text(), "")
        self.assertEqual(wired.errors, [REFUSED])

    def test_too_many_connections_with_fail_on_error_exits_1(self) -> None:
        wired = Wired(fail_on_error=True)
        wired.connect()
        wired.session.send(b"Are you there?")
        wired.receive(too_many_connections(2))
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])

    def test_refused_by_a_real_server(self) -> None:
        factory = CommandServerFactory(max_connections=1)
        first = Harness(factory=factory)
        second = Harness(factory=factory)
        second.type(b"Are you there?\n")
        self.assertEqual(second.exit_codes, [EXIT_FAILURE])
        self.assertEqual(second.stdout.text(), "")
        self.assertEqual(
            second.errors,
            [REFUSED.replace("limit is 2", "limit is 1")],
        )
        first.type(b"Hello\n")
        self.assertEqual(first.stdout.text(), f"Server response: {GREETING}\n")

    def test_idle_line_does_not_make_outstanding_negative(self) -> None:
        wired = Wired()
        wired.connect()
        wired.receive(idle_timeout_reply(300))
        self.assertEqual(wired.session.outstanding, 0)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])
        self.assertEqual(
            wired.errors,
            [
                "commandproto: connection to test-server closed by the server: "
                "idle for 300 seconds"
            ],
        )

    def test_stray_line_is_a_protocol_error(self) -> None:
        # A reply to no request: the server cannot be believed (issue 12).
        wired = Wired()
        wired.connect()
        wired.receive("surprise")
        self.assertEqual(wired.session.outstanding, 0)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])

    def test_shutdown_closing_down_is_not_printed(self) -> None:
        factory = CommandServerFactory()
        harness = Harness(factory=factory)
        harness.type(b"Hello\n")
        factory.drain(5)
        harness.pump.flush()
        self.assertEqual(harness.stdout.text(), f"Server response: {GREETING}\n")
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])


class TimeoutTests(SynchronousTestCase):
    """
    ``--timeout``: a reply that does not come in time ends the session.
    """

    def wired(self, **options: object) -> tuple[Wired, Clock]:
        clock = Clock()
        wired = Wired(clock=clock, timeout=5, **options)
        wired.connect()
        return wired, clock

    def test_no_reply_in_time_exits_1(self) -> None:
        wired, clock = self.wired()
        wired.session.send(b"Hello")
        clock.advance(4.9)
        self.assertEqual(wired.exit_codes, [])
        clock.advance(0.1)
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])
        self.assertEqual(
            wired.errors,
            [
                "commandproto: no reply from test-server within 5 seconds "
                "(--timeout SECONDS, 0 waits for ever)"
            ],
        )
        self.assertTrue(wired.server.disconnected)

    def test_each_reply_gets_the_whole_time(self) -> None:
        wired, clock = self.wired()
        wired.session.send_lines([b"Hello", b"Hello"])
        clock.advance(4)
        wired.receive(GREETING)
        clock.advance(4)
        self.assertEqual(wired.exit_codes, [])

    def test_nothing_awaited_is_not_timed(self) -> None:
        wired, clock = self.wired(interactive=True)
        wired.session.send(b"Hello")
        wired.receive(GREETING)
        clock.advance(3600)
        self.assertEqual(wired.exit_codes, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unread_output_is_not_a_timeout(self) -> None:
        wired, clock = self.wired()
        wired.session.send(b"Hello")
        assert wired.stdout.producer is not None
        wired.stdout.producer.pauseProducing()
        clock.advance(60)
        self.assertEqual(wired.exit_codes, [])
        wired.stdout.producer.resumeProducing()
        clock.advance(5)
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])

    def test_reply_without_line_end_suggests_legacy(self) -> None:
        clock = Clock()
        errors: list[str] = []
        session = ClientSession(
            "seed:1", errors.append, interactive=False, clock=clock, timeout=2
        )
        session.done.addCallback(lambda _: None)
        receiver = session.new_protocol()
        receiver.makeConnection(StringTransport())
        session.send(b"Hello")
        receiver.dataReceived(b"Unknown command.")
        clock.advance(2)
        self.assertEqual(
            errors,
            [
                "commandproto: no reply from seed:1 within 2 seconds; it sent "
                "text without a line end: for a server in the seed's format, "
                "use --legacy"
            ],
        )


class LegacyTests(SynchronousTestCase):
    """
    ``--legacy``: the seed's wire format, one command at a time.
    """

    def test_one_command_at_a_time_without_line_end(self) -> None:
        wired = Wired(legacy=True, window=1)
        wired.connect()
        wired.session.send_lines([b"Hello", b"Are you there?", b"quit"])
        self.assertEqual(wired.server.value(), b"Hello")
        wired.receive(GREETING)
        self.assertEqual(wired.server.value(), b"HelloAre you there?")
        wired.receive(PRESENT)
        self.assertEqual(wired.server.value(), b"HelloAre you there?quit")
        wired.receive(CLOSING)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_OK])
        self.assertEqual(
            wired.stdout.text(),
            f"Server response: {GREETING}\n"
            f"Server response: {PRESENT}\n"
            f"Server response: {CLOSING}\n",
        )

    def test_one_read_is_one_reply(self) -> None:
        wired = Wired(legacy=True, raw=True)
        wired.connect()
        wired.session.send_lines([b"nope", b"two", b"Hello"])
        wired.protocol.dataReceived(b"Unknown command.")
        wired.protocol.dataReceived(b"a\nb")
        wired.protocol.dataReceived(b"Greetings!\r\n")
        self.assertEqual(wired.stdout.text(), "Unknown command.\na\nb\nGreetings!\n")


class ReconnectTests(SynchronousTestCase):
    """
    At the prompt, a connection the server closes for idleness or shutdown
    is opened again by the next command; ``-r`` does so between rounds.
    """

    def wired(self, **options: object) -> tuple[Wired, list[int]]:
        calls: list[int] = []
        wired = Wired(reconnect=lambda: calls.append(1), **options)
        wired.connect()
        return wired, calls

    def test_idle_at_the_prompt_says_so_and_reconnects(self) -> None:
        wired, calls = self.wired(interactive=True, window=1)
        wired.receive(idle_timeout_reply(300))
        wired.close()
        self.assertEqual(wired.exit_codes, [])
        self.assertEqual(
            wired.stdout.text(),
            PROMPT + "\n"
            "commandproto: connection to test-server closed by the server: "
            "idle for 300 seconds; the next command reconnects\n" + PROMPT,
        )
        self.assertFalse(wired.input.paused)
        self.assertEqual(calls, [])
        wired.session.send(b"Hello")
        self.assertEqual(calls, [1])
        self.assertTrue(wired.input.paused)
        again = StringTransport()
        wired.reconnect(again)
        self.assertEqual(again.value(), b"Hello\r\n")
        wired.receive(GREETING)
        self.assertTrue(
            wired.stdout.text().endswith(
                f"{PROMPT}Server response: {GREETING}\n{PROMPT}"
            )
        )

    def test_reconnection_learns_the_new_server_commands(self) -> None:
        wired, calls = self.wired(interactive=True, window=1, fetch_commands=True)
        wired.receive("Commands: Hello, quit")
        wired.receive(CLOSING)
        wired.close()
        wired.session.send(b"Hello")
        self.assertEqual(calls, [1])
        again = StringTransport()
        wired.reconnect(again)
        self.assertEqual(again.value(), b"help\r\nHello\r\n")
        wired.receive("Commands: Hello, quit, ping", GREETING)
        self.assertEqual(wired.session.command_names, ["Hello", "quit", "ping"])
        self.assertTrue(
            wired.stdout.text().endswith(
                f"{PROMPT}Server response: {GREETING}\n{PROMPT}"
            )
        )

    def test_shutdown_at_the_prompt_reconnects(self) -> None:
        wired, calls = self.wired(interactive=True, window=1)
        wired.receive(CLOSING)
        wired.close()
        self.assertIn("the server shut down; the next command", wired.stdout.text())
        wired.session.send(b"Hello")
        self.assertEqual(calls, [1])

    def test_end_of_input_while_disconnected_exits_0(self) -> None:
        wired, _ = self.wired(interactive=True, window=1)
        wired.receive(idle_timeout_reply(300))
        wired.close()
        wired.session.input_ended()
        self.assertEqual(wired.exit_codes, [EXIT_OK])

    def test_refused_at_the_prompt_is_a_failure(self) -> None:
        wired, calls = self.wired(interactive=True, window=1)
        wired.receive(too_many_connections(2))
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])
        self.assertEqual(calls, [])

    def test_piped_input_does_not_reconnect(self) -> None:
        wired, calls = self.wired()
        wired.receive(idle_timeout_reply(300))
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])
        self.assertEqual(calls, [])

    def test_repeat_reconnects_after_idle(self) -> None:
        clock = Clock()
        calls: list[int] = []
        wired = Wired(
            script=Script(("Are you there?",), 3, 300.0),
            clock=clock,
            reconnect=lambda: calls.append(1),
        )
        wired.connect(with_input=False)
        wired.receive(PRESENT)
        wired.receive(idle_timeout_reply(300))
        wired.close()
        self.assertEqual(wired.exit_codes, [])
        clock.advance(300)
        self.assertEqual(calls, [1])
        again = StringTransport()
        wired.reconnect(again)
        self.assertEqual(again.value(), b"Are you there?\r\n")
        wired.receive(PRESENT)
        clock.advance(300)
        self.assertEqual(calls, [1])
        wired.receive(PRESENT)
        self.assertTrue(again.disconnecting)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_OK])
        self.assertEqual(wired.stdout.text().count(PRESENT), 3)
