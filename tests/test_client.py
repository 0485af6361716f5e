"""
Unit tests for the client: its session logic, and client and server talking
in memory through iosim.
"""

from __future__ import annotations

from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from commandproto._server import CommandServerFactory
from commandproto.client import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROMPT,
    ClientSession,
    InputReceiver,
    Options,
    ReplyReceiver,
    describe_failure,
)


class FakeStdout(StringTransport):
    """
    Standard output: records text, and reports itself closed at once.
    """

    session: ClientSession

    def loseConnection(self) -> None:
        super().loseConnection()
        self.session.output_closed()

    def text(self) -> str:
        text: str = self.value().decode("utf-8")
        return text


class Harness:
    """
    A client session wired to a real server protocol through iosim, with a
    fake standard output and standard input.
    """

    def __init__(self, *, interactive: bool = False) -> None:
        self.errors: list[str] = []
        self.session = ClientSession(
            "test-server", self.errors.append, interactive=interactive
        )
        self.stdout = FakeStdout()
        self.stdout.session = self.session
        self.session.attach_output(self.stdout)
        self.stdin = InputReceiver(self.session)
        self.exit_codes: list[int] = []
        self.session.done.addCallback(self.exit_codes.append)
        factory = CommandServerFactory()
        self.client, self.server, self.pump = connectedServerAndClient(
            lambda: factory.buildProtocol(None),
            lambda: ReplyReceiver(self.session),
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
            ["commandproto.client: connection to test-server closed by the server"],
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
