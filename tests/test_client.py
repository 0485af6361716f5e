"""
Unit tests for the client: its session logic, and client and server talking
in memory through iosim.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from commandproto.client.cli import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REPLY_ERROR,
    PROMPT,
    ClientSession,
    InputReceiver,
    Options,
    Script,
    make_script,
)
from commandproto.client.connect import describe_failure
from commandproto.commands.table import (
    CLOSING,
    GREETING,
    PRESENT,
    UNKNOWN_COMMAND,
    Command,
    Reply,
    default_commands,
)
from commandproto.server import CommandServerFactory


class FakeStdout(StringTransport):
    """
    Standard output: records text, and reports itself closed at once.
    """

    session: ClientSession
    writer_lost = False
    """
    Like StandardIO after a write error: closing no longer reports back.
    """

    def loseConnection(self) -> None:
        super().loseConnection()
        if not self.writer_lost:
            self.session.output_closed()

    def text(self) -> str:
        text: str = self.value().decode("utf-8")
        return text


class Harness:
    """
    A client session wired to a real server protocol through iosim, with a
    fake standard output and standard input.
    """

    def __init__(
        self,
        *,
        interactive: bool = False,
        factory: CommandServerFactory | None = None,
        **options: Any,
    ) -> None:
        self.errors: list[str] = []
        self.session = ClientSession(
            "test-server", self.errors.append, interactive=interactive, **options
        )
        self.stdout = FakeStdout()
        self.stdout.session = self.session
        self.session.attach_output(self.stdout)
        self.stdin = InputReceiver(self.session)
        self.exit_codes: list[int] = []
        self.session.done.addCallback(self.exit_codes.append)
        server_factory = factory or CommandServerFactory()
        self.client, self.server, self.pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(None),
            self.session.new_protocol,
        )

    def type(self, data: bytes) -> None:
        self.stdin.dataReceived(data)
        self.pump.flush()

    def end_input(self) -> None:
        self.stdin.readConnectionLost()
        self.pump.flush()


class PipedSessionTests(SynchronousTestCase):
    """
    With piped input: no prompt, every reply printed in order, exit 0 at the
    end of input.
    """

    def test_replies_printed_in_order(self) -> None:
        harness = Harness()
        harness.type(b"Hello\nAre you there?\nnope\n")
        self.assertEqual(
            harness.stdout.text(),
            "Server response: Greetings!\n"
            "Server response: Yes, I am here!\n"
            "Server response: Unknown command.\n",
        )

    def test_no_prompt(self) -> None:
        harness = Harness()
        harness.type(b"Hello\n")
        self.assertNotIn(PROMPT, harness.stdout.text())

    def test_end_of_input_waits_for_replies_then_exits_0(self) -> None:
        harness = Harness()
        harness.stdin.dataReceived(b"Hello\nHello\n")
        harness.stdin.readConnectionLost()
        self.assertEqual(harness.exit_codes, [])
        harness.pump.flush()
        self.assertEqual(harness.stdout.text().count("Greetings!"), 2)
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_unterminated_last_input_line_is_sent(self) -> None:
        harness = Harness()
        harness.stdin.dataReceived(b"Hello\nAre you there?")
        harness.end_input()
        self.assertIn("Server response: Yes, I am here!\n", harness.stdout.text())
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_quit_exits_0(self) -> None:
        harness = Harness()
        harness.type(b"quit\n")
        self.assertEqual(harness.stdout.text(), "Server response: Closing down\n")
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_lines_after_quit_are_not_waited_for(self) -> None:
        harness = Harness()
        harness.type(b"quit\nHello\nHello\n")
        self.assertEqual(harness.exit_codes, [EXIT_OK])
        self.assertNotIn("Greetings!", harness.stdout.text())

    def test_crlf_input_is_sent_as_typed(self) -> None:
        harness = Harness()
        harness.type(b"Hello\r\n")
        self.assertEqual(harness.stdout.text(), "Server response: Greetings!\n")

    def test_non_ascii_reply_printed(self) -> None:
        harness = Harness()
        harness.type(b"\xff\n")
        self.assertIn("Server response: Error: ", harness.stdout.text())

    def test_no_errors_on_success(self) -> None:
        harness = Harness()
        harness.type(b"Hello\n")
        harness.end_input()
        self.assertEqual(harness.errors, [])


class InteractiveSessionTests(SynchronousTestCase):
    """
    On a terminal: the seed's prompt before each command.
    """

    def test_prompt_on_connect(self) -> None:
        harness = Harness(interactive=True)
        self.assertEqual(harness.stdout.text(), PROMPT)

    def test_prompt_after_each_reply(self) -> None:
        harness = Harness(interactive=True)
        harness.type(b"Hello\n")
        self.assertEqual(
            harness.stdout.text(),
            "Execute command: Server response: Greetings!\nExecute command: ",
        )

    def test_no_prompt_after_closing_down(self) -> None:
        harness = Harness(interactive=True)
        harness.type(b"quit\n")
        self.assertTrue(
            harness.stdout.text().endswith("Server response: Closing down\n")
        )

    def test_ctrl_d_ends_cleanly(self) -> None:
        harness = Harness(interactive=True)
        harness.end_input()
        self.assertEqual(harness.exit_codes, [EXIT_OK])
        self.assertTrue(harness.stdout.text().endswith("\n"))

    def test_ctrl_c_exits_130(self) -> None:
        harness = Harness(interactive=True)
        harness.session.interrupt()
        harness.pump.flush()
        self.assertEqual(harness.exit_codes, [EXIT_INTERRUPTED])


class FailureTests(SynchronousTestCase):
    """
    Failures are one clear line on standard error and exit code 1.
    """

    def test_server_closing_mid_session(self) -> None:
        harness = Harness()
        harness.stdin.dataReceived(b"Hello\n")
        assert harness.server.transport is not None
        harness.server.transport.loseConnection()
        harness.pump.flush()
        self.assertEqual(
            harness.errors,
            ["commandproto: connection to test-server closed by the server"],
        )
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])

    def test_fail_finishes_once(self) -> None:
        harness = Harness()
        harness.session.fail("first")
        harness.session.fail("second")
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])

    def test_closed_stdout_stops(self) -> None:
        harness = Harness()
        harness.stdin.writeConnectionLost()
        harness.pump.flush()
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])

    def test_overlong_reply_is_failure(self) -> None:
        harness = Harness()
        harness.client.dataReceived(b"x" * (2 * 1024 * 1024))
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])
        self.assertIn("too long", harness.errors[0])


class DescribeFailureTests(SynchronousTestCase):
    """
    Connection failures in a few words.
    """

    def test_refused(self) -> None:
        self.assertEqual(
            describe_failure(Failure(ConnectionRefusedError())), "connection refused"
        )

    def test_unknown_host(self) -> None:
        self.assertEqual(describe_failure(Failure(DNSLookupError("x"))), "unknown host")

    def test_closed(self) -> None:
        self.assertEqual(
            describe_failure(Failure(ConnectionDone())), "closed by the server"
        )

    def test_lost(self) -> None:
        self.assertEqual(describe_failure(Failure(ConnectionLost())), "connection lost")


class OptionsTests(SynchronousTestCase):
    """
    Command-line parsing.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults_are_the_seeds(self) -> None:
        options = self.parse()
        self.assertEqual(
            (options["host"], options["port"], options["connect"]),
            ("127.0.0.1", 12345, None),
        )

    def test_host_and_port(self) -> None:
        options = self.parse("--host", "::1", "--port", "4000")
        self.assertEqual((options["host"], options["port"]), ("::1", 4000))

    def test_port_out_of_range(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "--port", "70000")

    def test_port_not_a_number(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "--port", "abc")

    def test_connect(self) -> None:
        options = self.parse("--connect", "unix:path=/tmp/x")
        self.assertEqual(options["connect"], "unix:path=/tmp/x")


@implementer(IPushProducer)
class FakeInput:
    """
    An input source that records whether the session wants it paused.
    """

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.paused = False
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class Wired:
    """
    A session with a StringTransport for the server, so a test decides
    exactly when each reply arrives.
    """

    def __init__(self, **options: Any) -> None:
        self.errors: list[str] = []
        options.setdefault("interactive", False)
        self.session = ClientSession("test-server", self.errors.append, **options)
        self.stdout = FakeStdout()
        self.stdout.session = self.session
        self.session.attach_output(self.stdout)
        self.input = FakeInput()
        self.exit_codes: list[int] = []
        self.session.done.addCallback(self.exit_codes.append)
        self.server = StringTransport()
        self.protocol = self.session.new_protocol()

    def connect(self, *, with_input: bool = True) -> None:
        if with_input:
            self.session.attach_input(self.input)
        self.protocol.makeConnection(self.server)

    def reconnect(self, server: StringTransport) -> None:
        """
        The session's next connection is up, on ``server``.
        """
        self.server = server
        self.protocol = self.session.new_protocol()
        self.protocol.makeConnection(server)

    def receive(self, *lines: str) -> None:
        """
        These reply lines come from the server, in one read.
        """
        self.protocol.dataReceived(b"".join(line.encode() + b"\r\n" for line in lines))

    def sent(self) -> list[bytes]:
        written: bytes = self.server.value()
        return written.split(b"\r\n")[:-1]

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


class FlowControlTests(SynchronousTestCase):
    """
    Input is read only while fewer than a window of requests await replies,
    and only while the connection can take more.
    """

    def test_input_paused_until_connected(self) -> None:
        wired = Wired()
        wired.session.attach_input(wired.input)
        self.assertTrue(wired.input.paused)
        wired.connect(with_input=False)
        self.assertFalse(wired.input.paused)

    def test_full_window_pauses_input(self) -> None:
        wired = Wired(window=4)
        wired.connect()
        wired.session.send_lines([b"Hello"] * 3)
        self.assertFalse(wired.input.paused)
        wired.session.send(b"Hello")
        self.assertTrue(wired.input.paused)

    def test_input_resumes_when_half_the_window_is_answered(self) -> None:
        wired = Wired(window=4)
        wired.connect()
        wired.session.send_lines([b"Hello"] * 4)
        wired.receive(GREETING)
        self.assertTrue(wired.input.paused)
        wired.receive(GREETING)
        self.assertFalse(wired.input.paused)

    def test_outstanding_never_passes_window_plus_one_read(self) -> None:
        # However fast input comes, what is held stays bounded.
        harness = Harness(window=100)
        source = FakeInput()
        harness.session.attach_input(source)
        most = 0
        for _ in range(50):
            if not source.paused:
                harness.stdin.dataReceived(b"Hello\n" * 30)
            most = max(most, harness.session.outstanding)
            harness.pump.pump()
        self.assertLessEqual(most, 100 + 30)
        self.assertIn("pause", source.calls)

    def test_full_send_buffer_pauses_input(self) -> None:
        wired = Wired()
        wired.connect()
        assert wired.server.producer is not None
        wired.server.producer.pauseProducing()
        self.assertTrue(wired.input.paused)
        wired.server.producer.resumeProducing()
        self.assertFalse(wired.input.paused)

    def test_connection_produces_for_stdout(self) -> None:
        wired = Wired()
        wired.connect()
        assert wired.stdout.producer is not None
        wired.stdout.producer.pauseProducing()
        self.assertEqual(wired.server.producerState, "paused")
        wired.stdout.producer.resumeProducing()
        self.assertEqual(wired.server.producerState, "producing")
        wired.receive(CLOSING)
        wired.close()
        self.assertIsNone(wired.stdout.producer)

    def test_input_paused_at_end(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.interrupt()
        self.assertTrue(wired.input.paused)

    def test_many_lines_in_one_write(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send_lines([b"Hello", b"Are you there?"])
        self.assertEqual(wired.server.value(), b"Hello\r\nAre you there?\r\n")
        self.assertEqual(wired.session.outstanding, 2)


class OutputFormatTests(SynchronousTestCase):
    """
    The seed's ``Server response:`` lines, or with raw only the replies.
    """

    def test_raw_prints_only_replies(self) -> None:
        harness = Harness(raw=True)
        harness.type(b"Hello\nAre you there?\n")
        self.assertEqual(harness.stdout.text(), "Greetings!\nYes, I am here!\n")

    def test_batch_of_replies_in_seed_format(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send_lines([b"a", b"b"])
        wired.receive("x", "y")
        self.assertEqual(
            wired.stdout.text(), "Server response: x\nServer response: y\n"
        )

    def test_closing_in_a_batch_stops_sending(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send_lines([b"Hello", b"quit"])
        wired.receive(GREETING, CLOSING)
        wired.session.send(b"Hello")
        self.assertEqual(wired.sent(), [b"Hello", b"quit"])


class FailOnErrorTests(SynchronousTestCase):
    """
    With ``-e``, an error reply makes the exit status 3.
    """

    def test_unknown_command_exits_3(self) -> None:
        harness = Harness(fail_on_error=True)
        harness.type(b"Hello\nnope\n")
        harness.end_input()
        self.assertEqual(harness.exit_codes, [EXIT_REPLY_ERROR])

    def test_error_reply_exits_3(self) -> None:
        harness = Harness(fail_on_error=True)
        harness.type(b"\xff\n")
        harness.end_input()
        self.assertEqual(harness.exit_codes, [EXIT_REPLY_ERROR])

    def test_no_error_exits_0(self) -> None:
        harness = Harness(fail_on_error=True)
        harness.type(b"Hello\n")
        harness.end_input()
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_without_flag_errors_exit_0(self) -> None:
        harness = Harness()
        harness.type(b"nope\n")
        harness.end_input()
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_connection_failure_still_exits_1(self) -> None:
        harness = Harness(fail_on_error=True)
        harness.type(b"nope\n")
        assert harness.server.transport is not None
        harness.server.transport.loseConnection()
        harness.pump.flush()
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])


class ScriptTests(SynchronousTestCase):
    """
    Commands given as arguments: sent on connecting, then the client exits.
    """

    def test_one_shot(self) -> None:
        harness = Harness(script=Script(("Hello", "Are you there?")))
        self.assertEqual(
            harness.stdout.text(),
            "Server response: Greetings!\nServer response: Yes, I am here!\n",
        )
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_one_shot_quit_exits_0(self) -> None:
        harness = Harness(script=Script(("quit", "Hello")))
        self.assertEqual(harness.stdout.text(), "Server response: Closing down\n")
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_repeat_waits_interval_after_each_round(self) -> None:
        clock = Clock()
        wired = Wired(script=Script(("Are you there?",), 3, 1.5), clock=clock)
        wired.connect(with_input=False)
        self.assertEqual(len(wired.sent()), 1)
        wired.receive(PRESENT)
        clock.advance(1.4)
        self.assertEqual(len(wired.sent()), 1)
        clock.advance(0.1)
        self.assertEqual(len(wired.sent()), 2)
        wired.receive(PRESENT)
        clock.advance(1.5)
        wired.receive(PRESENT)
        self.assertEqual(wired.sent(), [b"Are you there?"] * 3)
        self.assertTrue(wired.server.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])
        wired.close()
        self.assertEqual(wired.stdout.text().count(PRESENT), 3)
        self.assertEqual(wired.exit_codes, [EXIT_OK])

    def test_repeat_does_not_send_before_replies(self) -> None:
        clock = Clock()
        wired = Wired(script=Script(("Hello",), 2, 0.0), clock=clock)
        wired.connect(with_input=False)
        clock.advance(10)
        self.assertEqual(len(wired.sent()), 1)

    def test_repeat_with_clock_through_iosim(self) -> None:
        clock = Clock()
        harness = Harness(script=Script(("Hello", "nope"), 2, 5.0), clock=clock)
        self.assertEqual(harness.exit_codes, [])
        clock.advance(5)
        harness.pump.flush()
        self.assertEqual(
            harness.stdout.text().splitlines(),
            [f"Server response: {GREETING}", f"Server response: {UNKNOWN_COMMAND}"] * 2,
        )
        self.assertEqual(harness.exit_codes, [EXIT_OK])

    def test_interrupt_cancels_the_next_round(self) -> None:
        clock = Clock()
        wired = Wired(script=Script(("Hello",), 5, 1.0), clock=clock)
        wired.connect(with_input=False)
        wired.receive(GREETING)
        wired.session.interrupt()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_repeat_stops_at_closing_down(self) -> None:
        clock = Clock()
        wired = Wired(script=Script(("quit",), 5, 1.0), clock=clock)
        wired.connect(with_input=False)
        wired.receive(CLOSING)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_repeated_script_needs_clock(self) -> None:
        self.assertRaises(
            ValueError,
            ClientSession,
            "x",
            print,
            interactive=False,
            script=Script(("Hello",), 2),
        )


class CommandNamesTests(SynchronousTestCase):
    """
    For completion the client asks the server for ``help``, silently.
    """

    def test_learns_server_commands(self) -> None:
        table = default_commands()
        table.add(Command("ping", lambda: Reply("pong")))
        harness = Harness(
            interactive=True,
            fetch_commands=True,
            factory=CommandServerFactory(table),
        )
        self.assertEqual(
            harness.session.command_names,
            ["Hello", "Are you there?", "quit", "help", "stats", "ping"],
        )

    def test_help_reply_is_not_printed(self) -> None:
        harness = Harness(interactive=True, fetch_commands=True)
        self.assertEqual(harness.stdout.text(), PROMPT)

    def test_prompt_does_not_wait_for_help_reply(self) -> None:
        wired = Wired(interactive=True, fetch_commands=True, window=1)
        wired.connect()
        self.assertEqual((wired.stdout.text(), wired.input.paused), (PROMPT, False))
        self.assertEqual(wired.session.command_names, default_commands().names())
        wired.receive("Commands: a, b")
        self.assertEqual((wired.stdout.text(), wired.input.paused), (PROMPT, False))
        self.assertEqual(wired.session.command_names, ["a", "b"])

    def test_command_typed_before_help_answer_gets_its_own_reply(self) -> None:
        wired = Wired(interactive=True, fetch_commands=True, window=1)
        wired.connect()
        wired.session.send(b"Hello")
        self.assertEqual(wired.sent(), [b"help", b"Hello"])
        wired.receive("Commands: a, b", GREETING)
        self.assertEqual(
            wired.stdout.text(), PROMPT + f"Server response: {GREETING}\n" + PROMPT
        )

    def test_unanswered_help_falls_back_to_built_in_names(self) -> None:
        clock = Clock()
        wired = Wired(
            interactive=True, fetch_commands=True, window=1, clock=clock, timeout=5
        )
        wired.connect()
        clock.advance(60)
        self.assertEqual(wired.exit_codes, [])
        self.assertEqual(wired.session.command_names, default_commands().names())
        self.assertFalse(wired.input.paused)

    def test_old_server_keeps_local_names(self) -> None:
        wired = Wired(interactive=True, fetch_commands=True)
        wired.connect()
        wired.receive(UNKNOWN_COMMAND)
        self.assertEqual(wired.session.command_names, default_commands().names())

    def test_hidden_error_does_not_fail(self) -> None:
        wired = Wired(fetch_commands=True, fail_on_error=True)
        wired.connect()
        wired.receive(UNKNOWN_COMMAND)
        wired.session.input_ended()
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_OK])

    def test_typed_help_updates_names(self) -> None:
        harness = Harness(interactive=True)
        harness.type(b"help\n")
        self.assertIn("Server response: Commands: ", harness.stdout.text())
        self.assertEqual(
            harness.session.command_names,
            ["Hello", "Are you there?", "quit", "help", "stats"],
        )


class PromptLineTests(SynchronousTestCase):
    """
    Whatever ends the session, the prompt's line is ended first and any
    error message comes after all output.
    """

    def test_failure_message_after_output_is_flushed(self) -> None:
        events: list[str] = []
        session = ClientSession("s", events.append, interactive=True)
        output = StringTransport()
        session.attach_output(output)
        protocol = session.new_protocol()
        protocol.makeConnection(StringTransport())
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(events, [])
        self.assertEqual(output.value(), PROMPT.encode() + b"\n")
        session.output_closed()
        self.assertEqual(events, ["commandproto: connection to s connection lost"])

    def test_warn_at_exit(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.warn_at_exit("history not saved")
        self.assertEqual(wired.errors, [])
        wired.session.input_ended()
        wired.close()
        self.assertEqual(wired.errors, ["commandproto: history not saved"])

    def test_interrupt_at_prompt_ends_line(self) -> None:
        harness = Harness(interactive=True)
        harness.session.interrupt()
        self.assertEqual(harness.stdout.text(), PROMPT + "\n")

    def test_done_fires_once(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.finish(EXIT_OK)
        wired.session.output_closed()
        self.assertEqual(wired.exit_codes, [EXIT_OK])
        self.assertIsInstance(wired.session.done, Deferred)


class ScriptOptionsTests(SynchronousTestCase):
    """
    Commands as arguments, ``--raw``, ``-e``, ``-r`` and ``-i``.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_commands_as_arguments(self) -> None:
        options = self.parse("Hello", "Are you there?")
        self.assertEqual(make_script(options), Script(("Hello", "Are you there?")))

    def test_no_arguments_no_script(self) -> None:
        self.assertIsNone(make_script(self.parse()))

    def test_repeat_and_interval(self) -> None:
        options = self.parse("-r", "5", "-i", "1", "Are you there?")
        self.assertEqual(make_script(options), Script(("Are you there?",), 5, 1.0))

    def test_long_names(self) -> None:
        options = self.parse(
            "--raw", "--fail-on-error", "--repeat=2", "--interval=0.5", "Hello"
        )
        self.assertEqual((options["raw"], options["fail-on-error"]), (True, True))
        self.assertEqual(make_script(options), Script(("Hello",), 2, 0.5))

    def test_flags_default_off(self) -> None:
        options = self.parse()
        self.assertEqual((options["raw"], options["fail-on-error"]), (False, False))

    def test_repeat_needs_commands(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "-r", "3")

    def test_interval_needs_repeat(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "-i", "1", "Hello")

    def test_repeat_must_be_positive(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "-r", "0", "Hello")

    def test_interval_must_be_a_duration(self) -> None:
        for bad in ("-1", "nan", "inf", "soon"):
            self.assertRaises(
                usage.UsageError, self.parse, "-r", "2", "-i", bad, "Hello"
            )

    def test_command_with_newline_rejected(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "Hello\nquit")


class ReplyDecodingTests(SynchronousTestCase):
    """
    Replies are decoded as UTF-8, an invalid one with replacement
    characters, each line on its own.
    """

    def test_invalid_bytes_stay_in_their_line(self) -> None:
        wired = Wired(raw=True)
        wired.connect()
        receiver = wired.protocol
        wired.session.send_lines([b"a", b"b", b"c"])
        receiver.dataReceived(b"a\xff\r\n\xc3\r\nb\xc3")
        receiver.dataReceived(b"\xa9\r\n")
        self.assertEqual(wired.stdout.text(), "a\ufffd\n\ufffd\nb\u00e9\n")


class EndingTests(SynchronousTestCase):
    """
    However it ends, the client ends: a closed output, a second signal, the
    server shutting down under it.
    """

    def test_closed_stdout_ends_with_status_1(self) -> None:
        harness = Harness()
        harness.stdout.writer_lost = True
        harness.stdin.writeConnectionLost()
        harness.pump.flush()
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])
        self.assertEqual(
            harness.errors, ["commandproto: cannot write to standard output"]
        )

    def test_second_interrupt_ends_a_stuck_exit(self) -> None:
        harness = Harness()
        harness.stdout.writer_lost = True
        harness.session.interrupt()
        self.assertEqual(harness.exit_codes, [])
        harness.session.interrupt()
        self.assertEqual(harness.exit_codes, [EXIT_INTERRUPTED])

    def test_server_shutdown_mid_session_is_a_failure(self) -> None:
        factory = CommandServerFactory()
        harness = Harness(factory=factory)
        harness.type(b"Hello\n")
        factory.drain(5)
        harness.pump.flush()
        self.assertEqual(harness.exit_codes, [EXIT_FAILURE])
        self.assertEqual(
            harness.errors,
            ["commandproto: connection to test-server closed: the server shut down"],
        )

    def test_closing_down_after_quit_is_success(self) -> None:
        harness = Harness()
        harness.type(b"Hello\nHello\nquit\n")
        self.assertEqual(harness.exit_codes, [EXIT_OK])


class LifecycleTests(SynchronousTestCase):
    """
    The session's states, one transition per test: connecting, running,
    draining after input ends, the server closing or shutting down, our own
    close, and finishing.
    """

    def test_reply_after_the_session_finished_is_ignored(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send(b"Hello")
        wired.session.interrupt()
        wired.receive(GREETING)
        self.assertEqual(wired.exit_codes, [EXIT_INTERRUPTED])
        self.assertEqual(wired.stdout.text(), "")

    def test_reply_while_output_drains_is_ignored(self) -> None:
        wired = Wired()
        wired.stdout.writer_lost = True
        wired.connect()
        wired.session.send(b"Hello")
        wired.session.interrupt()
        wired.receive(GREETING)
        self.assertEqual(wired.stdout.text(), "")
        self.assertEqual(wired.session.outstanding, 1)

    def test_input_end_waits_for_outstanding_replies(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send_lines([b"Hello", b"Hello"])
        wired.session.input_ended()
        wired.receive(GREETING)
        self.assertFalse(wired.server.disconnecting)
        wired.receive(GREETING)
        self.assertTrue(wired.server.disconnecting)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_OK])

    def test_input_end_with_nothing_outstanding_closes_at_once(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.input_ended()
        self.assertTrue(wired.server.disconnecting)
        self.assertIsNone(wired.server.producer)

    def test_no_prompt_after_input_ended(self) -> None:
        wired = Wired(interactive=True)
        wired.connect()
        wired.session.send(b"Hello")
        wired.session.input_ended()
        wired.receive(GREETING)
        self.assertEqual(wired.stdout.text(), PROMPT + f"Server response: {GREETING}\n")

    def test_connection_lost_while_draining_is_a_failure(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send(b"Hello")
        wired.session.input_ended()
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])
        self.assertEqual(
            wired.errors,
            ["commandproto: connection to test-server closed by the server"],
        )

    def test_closing_down_not_answering_our_quit_exits_1(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send_lines([b"Hello", b"quit"])
        wired.receive(CLOSING)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])
        self.assertEqual(
            wired.errors,
            ["commandproto: connection to test-server closed: the server shut down"],
        )

    def test_reply_that_looks_like_closing_down_then_another_is_a_reply(self) -> None:
        # A command may answer "Closing down"; the next line shows that the
        # server is not shutting down, however the reads split them.
        wired = Wired()
        wired.connect()
        wired.session.send_lines([b"echo Closing down", b"Hello"])
        wired.receive(CLOSING)
        wired.receive(GREETING)
        wired.session.input_ended()
        wired.close()
        self.assertEqual(
            wired.stdout.text(),
            f"Server response: {CLOSING}\nServer response: {GREETING}\n",
        )
        self.assertEqual((wired.exit_codes, wired.errors), ([EXIT_OK], []))

    def test_closing_down_answering_our_quit_exits_0(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send_lines([b"Hello", b"quit"])
        wired.receive(GREETING, CLOSING)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_OK])
        self.assertEqual(wired.errors, [])

    def test_closing_down_stops_reading_input(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send(b"quit")
        wired.receive(CLOSING)
        self.assertTrue(wired.input.paused)

    def test_server_closes_after_closing_down(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send(b"quit")
        wired.receive(CLOSING)
        self.assertFalse(wired.server.disconnecting)

    def test_input_end_after_closing_down_closes_our_end(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send(b"quit")
        wired.receive(CLOSING)
        wired.session.input_ended()
        self.assertTrue(wired.server.disconnecting)

    def test_closing_down_while_draining_closes_our_end(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.send(b"quit")
        wired.session.input_ended()
        self.assertFalse(wired.server.disconnecting)
        wired.receive(CLOSING)
        self.assertTrue(wired.server.disconnecting)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_OK])

    def test_connection_after_the_session_finished_is_closed(self) -> None:
        wired = Wired(fetch_commands=True)
        wired.session.interrupt()
        wired.connect()
        self.assertTrue(wired.server.disconnecting)
        self.assertEqual(wired.server.value(), b"")
        self.assertIsNone(wired.server.producer)

    def test_input_ended_before_connecting_closes_once_connected(self) -> None:
        wired = Wired()
        wired.session.attach_input(wired.input)
        wired.session.input_ended()
        wired.connect(with_input=False)
        self.assertTrue(wired.server.disconnecting)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_OK])

    def test_input_ended_before_connecting_does_not_wait_for_help(self) -> None:
        wired = Wired(fetch_commands=True)
        wired.session.input_ended()
        wired.connect(with_input=False)
        self.assertTrue(wired.server.disconnecting)

    def test_interrupt_after_we_closed_closes_only_once(self) -> None:
        # StringTransport, like a careful consumer, refuses a second
        # unregisterProducer.
        wired = Wired()
        wired.connect()
        wired.session.input_ended()
        wired.session.interrupt()
        self.assertEqual(wired.exit_codes, [EXIT_INTERRUPTED])

    def test_closing_down_unasked_after_we_closed_exits_1(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.input_ended()
        wired.receive(CLOSING)
        wired.close()
        self.assertEqual(wired.exit_codes, [EXIT_FAILURE])

    def test_output_closed_before_finishing_does_not_end(self) -> None:
        wired = Wired()
        wired.connect()
        wired.session.output_closed()
        wired.session.send(b"Hello")
        self.assertEqual(wired.exit_codes, [])
        self.assertEqual(wired.sent(), [b"Hello"])
