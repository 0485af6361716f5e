"""
Integration tests: the real ``twistd -n commandserver`` and the real client,
as processes, on loopback TCP ports the OS picks or unix sockets in a
temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import CLOSING, GREETING, PRESENT, UNKNOWN_COMMAND

from ._helpers import replies
from ._processes import (
    IO_TIMEOUT,
    ServerProcess,
    read_exactly,
    read_until_closed,
    refusing_port,
    run_client,
    subprocess_environment,
)


class ProcessTestCase(SynchronousTestCase):
    """
    Gives each test a temporary directory and a way to start servers that
    are always stopped afterwards.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def start_server(self, *options: str) -> ServerProcess:
        server = ServerProcess(self.directory, *options)
        self.addCleanup(server.stop)
        return server


class WireTests(ProcessTestCase):
    """
    What ``nc`` and ``telnet`` users see.
    """

    def test_nc_with_lf(self) -> None:
        server = self.start_server()
        with server.connect() as sock:
            sock.sendall(b"Hello\nAre you there?\nfoo\nquit\n")
            received = read_until_closed(sock)
        self.assertEqual(received, replies(GREETING, PRESENT, UNKNOWN_COMMAND, CLOSING))

    def test_telnet_with_crlf(self) -> None:
        server = self.start_server()
        with server.connect() as sock:
            sock.sendall(b"Hello\r\n")
            self.assertEqual(
                read_exactly(sock, len(replies(GREETING))), replies(GREETING)
            )
            sock.sendall(b"quit\r\n")
            self.assertEqual(read_until_closed(sock), replies(CLOSING))

    def test_half_close_gets_every_reply(self) -> None:
        server = self.start_server()
        with server.connect() as sock:
            sock.sendall(b"Hello\n" * 1000 + b"Are you there?")
            sock.shutdown(socket.SHUT_WR)
            received = read_until_closed(sock)
        self.assertEqual(received, replies(GREETING) * 1000 + replies(PRESENT))

    def test_two_clients_at_once(self) -> None:
        server = self.start_server()
        with server.connect() as first, server.connect() as second:
            first.sendall(b"Hello\n")
            second.sendall(b"Are you there?\n")
            self.assertEqual(
                read_exactly(second, len(replies(PRESENT))), replies(PRESENT)
            )
            self.assertEqual(
                read_exactly(first, len(replies(GREETING))), replies(GREETING)
            )
            first.sendall(b"quit\n")
            self.assertEqual(read_until_closed(first), replies(CLOSING))
            second.sendall(b"Hello\n")
            self.assertEqual(
                read_exactly(second, len(replies(GREETING))), replies(GREETING)
            )

    def test_keeps_serving_after_client_leaves(self) -> None:
        server = self.start_server()
        for _ in range(3):
            with server.connect() as sock:
                sock.sendall(b"quit\n")
                self.assertEqual(read_until_closed(sock), replies(CLOSING))

    def test_unix_socket(self) -> None:
        path = f"{self.directory}/commandproto.sock"
        self.start_server("--listen", f"unix:{path}")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(IO_TIMEOUT)
            sock.connect(path)
            sock.sendall(b"Hello\nquit\n")
            self.assertEqual(read_until_closed(sock), replies(GREETING, CLOSING))

    def test_logs_connect_and_disconnect_with_peer(self) -> None:
        server = self.start_server()
        with server.connect() as sock:
            local_port = sock.getsockname()[1]
            sock.sendall(b"quit\n")
            read_until_closed(sock)
        peer = re.escape(f"tcp:127.0.0.1:{local_port}")
        server.wait_for_log(re.compile(f"connection from {peer}$"))
        server.wait_for_log(re.compile(f"connection from {peer} closed"))

    def test_address_in_use_fails_at_start(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with self.assertRaises(AssertionError):
                self.start_server("--listen", f"tcp:{port}:interface=127.0.0.1")


class ClientProcessTests(ProcessTestCase):
    """
    ``python -m commandproto.client`` against the real server.
    """

    def test_piped_input(self) -> None:
        server = self.start_server()
        result = run_client(
            ["--port", str(server.port)], b"Hello\nAre you there?\nnope\n"
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                0,
                b"Server response: Greetings!\n"
                b"Server response: Yes, I am here!\n"
                b"Server response: Unknown command.\n",
                b"",
            ),
        )

    def test_piped_quit(self) -> None:
        server = self.start_server()
        result = run_client(["--port", str(server.port)], b"Hello\nquit\nHello\n")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(
            result.stdout,
            b"Server response: Greetings!\nServer response: Closing down\n",
        )

    def test_many_pipelined_lines_in_order(self) -> None:
        server = self.start_server()
        lines = [b"Hello", b"Are you there?", b"x"] * 3000
        result = run_client(["--port", str(server.port)], b"\n".join(lines) + b"\n")
        expected = {
            b"Hello": GREETING,
            b"Are you there?": PRESENT,
            b"x": UNKNOWN_COMMAND,
        }
        self.assertEqual(result.returncode, 0)
        self.assertEqual(
            result.stdout.decode().splitlines(),
            [f"Server response: {expected[line]}" for line in lines],
        )

    def test_connect_endpoint_unix(self) -> None:
        path = f"{self.directory}/s.sock"
        self.start_server("--listen", f"unix:{path}")
        result = run_client(["--connect", f"unix:path={path}"], b"Hello\n")
        self.assertEqual(
            (result.returncode, result.stdout), (0, b"Server response: Greetings!\n")
        )

    def test_connection_refused(self) -> None:
        port = refusing_port(self)
        result = run_client(["--port", str(port)], b"Hello\n")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            f"commandproto: cannot connect to 127.0.0.1:{port}: connection refused\n",
        )

    def test_unknown_host(self) -> None:
        result = run_client(["--host", "no-such-host.invalid"], b"Hello\n")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            "commandproto: cannot connect to no-such-host.invalid:12345: "
            "unknown host\n",
        )

    def test_usage_error_exits_2_without_traceback(self) -> None:
        result = run_client(["--port", "nope"], b"")
        self.assertEqual(result.returncode, 2)
        self.assertNotIn(b"Traceback", result.stderr)

    def test_server_going_away_mid_session(self) -> None:
        server = self.start_server()
        client = subprocess.Popen(
            [sys.executable, "-m", "commandproto.client", "--port", str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=subprocess_environment(),
        )
        self.addCleanup(client.kill)
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(b"Hello\n")
        client.stdin.flush()
        self.assertEqual(client.stdout.readline(), b"Server response: Greetings!\n")
        server.process.kill()
        # Standard input stays open: only the server going away ends this.
        client.wait(timeout=IO_TIMEOUT)
        _, stderr = client.communicate(timeout=IO_TIMEOUT)
        self.assertEqual(client.returncode, 1)
        self.assertEqual(len(stderr.splitlines()), 1, stderr)
        self.assertIn(f"127.0.0.1:{server.port}".encode(), stderr)


class ClientModeTests(ProcessTestCase):
    """
    One-shot, raw and repeat modes, and every exit status, as scripts see
    them.
    """

    def test_one_shot(self) -> None:
        server = self.start_server()
        result = run_client(
            ["--port", str(server.port), "Hello", "Are you there?"], b""
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (
                0,
                b"Server response: Greetings!\nServer response: Yes, I am here!\n",
                b"",
            ),
        )

    def test_one_shot_does_not_read_stdin(self) -> None:
        server = self.start_server()
        result = run_client(["--port", str(server.port), "Hello"], b"quit\nHello\n")
        self.assertEqual(result.stdout, b"Server response: Greetings!\n")

    def test_raw(self) -> None:
        server = self.start_server()
        result = run_client(
            ["--port", str(server.port), "--raw"], b"Hello\nnope\nhelp\n"
        )
        self.assertEqual(
            result.stdout,
            b"Greetings!\nUnknown command.\n"
            b"Commands: Hello, Are you there?, quit, help, stats\n",
        )

    def test_repeat(self) -> None:
        server = self.start_server()
        result = run_client(
            ["--port", str(server.port), "-r", "3", "-i", "0.05", "Are you there?"],
            b"",
        )
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, b"Server response: Yes, I am here!\n" * 3),
        )

    def test_exit_0(self) -> None:
        server = self.start_server()
        result = run_client(["--port", str(server.port), "-e", "Hello"], b"")
        self.assertEqual(result.returncode, 0)

    def test_exit_1_connection_refused(self) -> None:
        result = run_client(["--port", str(refusing_port(self)), "Hello"], b"")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1)

    def test_exit_2_usage_without_traceback(self) -> None:
        for arguments in (["-r", "2"], ["-i", "1", "Hello"], ["-r", "0", "Hello"]):
            result = run_client(arguments, b"")
            self.assertEqual(result.returncode, 2, arguments)
            self.assertNotIn(b"Traceback", result.stderr)
            self.assertTrue(result.stderr.startswith(b"commandproto: "))

    def test_exit_3_error_reply_with_fail_on_error(self) -> None:
        server = self.start_server()
        result = run_client(["--port", str(server.port), "-e", "Hello", "nope"], b"")
        self.assertEqual(result.returncode, 3)
        self.assertEqual(
            result.stdout,
            b"Server response: Greetings!\nServer response: Unknown command.\n",
        )

    def test_exit_3_from_piped_input(self) -> None:
        server = self.start_server()
        result = run_client(
            ["--port", str(server.port), "--fail-on-error"], b"Hello\n\xff\n"
        )
        self.assertEqual(result.returncode, 3)

    def test_error_reply_without_flag_exits_0(self) -> None:
        server = self.start_server()
        result = run_client(["--port", str(server.port), "nope"], b"")
        self.assertEqual(result.returncode, 0)


PIPED_LINES = 1_000_000


class MillionLineTests(ProcessTestCase):
    """
    A million piped lines go through, every reply in order, with the client
    holding no more than its window.
    """

    def test_million_lines_in_order(self) -> None:
        server = self.start_server()
        commands = [b"Hello", b"Are you there?", b"x"]
        answers = [GREETING, PRESENT, UNKNOWN_COMMAND]

        # Every 1000th line is different, so a lost, doubled or reordered
        # reply shows up as a mismatch at a known position.
        def command(number: int) -> bytes:
            return b"quit?" if number % 1000 == 999 else commands[number % 3]

        def answer(number: int) -> str:
            return UNKNOWN_COMMAND if number % 1000 == 999 else answers[number % 3]

        stdin = b"".join(command(n) + b"\n" for n in range(PIPED_LINES))
        result = run_client(["--port", str(server.port), "--raw"], stdin, timeout=120)
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        replies = result.stdout.decode().split("\n")
        self.assertEqual(replies.pop(), "")
        self.assertEqual(len(replies), PIPED_LINES)
        mismatches = [n for n, reply in enumerate(replies) if reply != answer(n)]
        self.assertEqual(mismatches[:5], [])


class ClientEdgeTests(ProcessTestCase):
    """
    The client's ways to fail, each one line and a status, no traceback.
    """

    def test_bad_connect_strings_are_usage_errors(self) -> None:
        for endpoint in ("tcp:host=127.0.0.1", "tls:127.0.0.1", "nonsense:1"):
            result = run_client(["--connect", endpoint, "Hello"], b"")
            self.assertEqual(result.returncode, 2, endpoint)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)

    def test_closed_stdout(self) -> None:
        server = self.start_server()
        result = subprocess.run(
            [
                "sh",
                "-c",
                f'exec "$0" -m commandproto.client --port {server.port} Hello >&-',
                sys.executable,
            ],
            capture_output=True,
            timeout=IO_TIMEOUT,
            env=subprocess_environment(),
        )
        self.assertEqual(
            (result.returncode, result.stderr),
            (1, b"commandproto: standard output is closed\n"),
        )

    def test_output_pipe_closed_early(self) -> None:
        server = self.start_server()
        reader, writer = os.pipe()
        client = subprocess.Popen(
            [sys.executable, "-m", "commandproto.client", "--port", str(server.port)],
            stdin=subprocess.PIPE,
            stdout=writer,
            stderr=subprocess.PIPE,
            env=subprocess_environment(),
        )
        os.close(writer)
        self.addCleanup(client.kill)
        assert client.stdin is not None
        client.stdin.write(b"Hello\n")
        client.stdin.flush()
        with os.fdopen(reader, "rb") as output:
            output.read(1)
        # Nobody reads the output now: the client must notice and stop.
        with contextlib.suppress(BrokenPipeError):
            client.stdin.write(b"Hello\n" * 100000)
            client.stdin.close()
        self.assertEqual(client.wait(timeout=IO_TIMEOUT), 1)
