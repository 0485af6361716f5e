"""
The interactive client on a real pseudo-terminal, against the real server:
what a person types and sees, and the terminal left as it was found.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time

from twisted.trial.unittest import SynchronousTestCase

from ._processes import IO_TIMEOUT, ServerProcess, subprocess_environment
from ._screen import Screen

PROMPT = "Execute command: "
LEFT = b"\x1b[D"
UP = b"\x1b[A"


class TerminalClient:
    """
    ``python -m commandproto.client`` with a pseudo-terminal for standard
    input, output and error, and an emulated screen showing its output.
    """

    def __init__(self, port: int, histfile: str) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.initial_attributes = termios.tcgetattr(self.slave)
        environment = subprocess_environment()
        environment["COMMANDPROTO_HISTFILE"] = histfile
        self.process = subprocess.Popen(
            [sys.executable, "-m", "commandproto.client", "--port", str(port)],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=environment,
            start_new_session=True,
        )
        self.screen = Screen()
        self.output = b""

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            self.output += data
            self.screen.feed(data)

    def wait_for(self, text: str, count: int = 1) -> None:
        """
        Read output until ``text`` is on the screen ``count`` times, or fail.
        (Trailing blanks on screen are not seen.)
        """
        text = text.rstrip()
        deadline = time.monotonic() + IO_TIMEOUT
        while self.screen.text().count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not seen {count} times on screen:\n{self.screen.text()}"
                )
            self._read(0.05)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait_exit(self) -> int:
        """
        Wait for the client to exit, reading all it wrote.

        :returns: its exit status.
        """
        deadline = time.monotonic() + IO_TIMEOUT
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("client did not exit:\n" + self.screen.text())
            self._read(0.05)
        self._read(0.05)
        return self.process.returncode

    def attributes(self) -> list[object]:
        return termios.tcgetattr(self.slave)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


class TerminalTests(SynchronousTestCase):
    """
    Typing, editing, history, completion, Ctrl-C and Ctrl-D on a real
    terminal; after every way out the terminal is as it was.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-pty-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.histfile = os.path.join(self.directory, "state", "history")
        self.server = ServerProcess(self.directory)
        self.addCleanup(self.server.stop)

    def start(self) -> TerminalClient:
        client = TerminalClient(self.server.port, self.histfile)
        self.addCleanup(client.close)
        client.wait_for(PROMPT)
        # The line editor owns the terminal now: no echo, no line buffering.
        self.assertNotEqual(client.attributes(), client.initial_attributes)
        return client

    def assert_exited(self, client: TerminalClient, status: int) -> None:
        self.assertEqual(client.wait_exit(), status)
        self.assertEqual(client.attributes(), client.initial_attributes)

    def test_typing_and_replies(self) -> None:
        client = self.start()
        client.type(b"Hello\r")
        client.wait_for(PROMPT, 2)
        self.assertEqual(
            client.screen.rows()[:3],
            [PROMPT + "Hello", "Server response: Greetings!", PROMPT.rstrip()],
        )
        client.type(b"quit\r")
        client.wait_for("Server response: Closing down")
        self.assert_exited(client, 0)

    def test_editing_mid_line(self) -> None:
        client = self.start()
        client.type(b"zzz\x15")  # Ctrl-U
        client.type(b"Are yu there?" + LEFT * 8 + b"o")  # Left, insert
        client.type(b"\x01xx \x01" + b"\x1b[3~" * 3)  # Ctrl-A, Delete
        client.type(b"\x05 tail" + LEFT * 5 + b"\x0b")  # Ctrl-E, Ctrl-K
        client.type(b" junk\x17\x7f")  # Ctrl-W, Backspace
        client.wait_for(PROMPT + "Are you there?")
        client.type(b"\r")
        client.wait_for("Server response: Yes, I am here!")
        self.assertEqual(client.screen.rows()[0], PROMPT + "Are you there?")
        client.type(b"\x04")
        self.assert_exited(client, 0)

    def test_history_recall_and_persistence(self) -> None:
        client = self.start()
        client.type(b"Are you there?\r")
        client.wait_for(PROMPT, 2)
        client.type(b"Hello\r")
        client.wait_for(PROMPT, 3)
        client.type(UP + UP + b"\r")
        client.wait_for("Yes, I am here!", 2)
        client.type(b"\x04")
        self.assert_exited(client, 0)
        with open(self.histfile, encoding="utf-8") as f:
            self.assertEqual(f.read(), "Are you there?\nHello\nAre you there?\n")

        again = self.start()
        again.type(UP + UP + b"\r")
        again.wait_for("Server response: Greetings!")
        again.type(b"\x12you\r")
        again.wait_for("Server response: Yes, I am here!")
        again.type(b"\x04")
        self.assert_exited(again, 0)

    def test_completion(self) -> None:
        client = self.start()
        client.type(b"Ar\t")
        client.wait_for(PROMPT + "Are you there?")
        client.type(b"\r")
        client.wait_for("Server response: Yes, I am here!")
        client.type(b"he\t\r")
        client.wait_for(
            "Server response: Commands: Hello, Are you there?, quit, help, stats"
        )
        client.type(b"\x04")
        self.assert_exited(client, 0)

    def test_ctrl_c_clears_line(self) -> None:
        client = self.start()
        client.type(b"Hel\x03Are you there?\r")
        client.wait_for("Server response: Yes, I am here!")
        self.assertEqual(client.screen.rows()[0], PROMPT + "Are you there?")
        self.assertIsNone(client.process.poll())
        client.type(b"\x04")
        self.assert_exited(client, 0)

    def test_ctrl_d_ends(self) -> None:
        client = self.start()
        client.type(b"\x04")
        self.assert_exited(client, 0)
        self.assertEqual(client.screen.rows()[:2], [PROMPT.rstrip(), ""])

    def test_server_going_away_ends(self) -> None:
        client = self.start()
        client.type(b"Hel")
        client.wait_for(PROMPT + "Hel")
        self.server.process.kill()
        self.assert_exited(client, 1)
        rows = client.screen.rows()[:2]
        # The prompt does not wait for the start-up help's reply: a server
        # killed before it read that request resets the connection.
        self.assertIn(
            rows,
            [
                [
                    PROMPT + "Hel",
                    f"commandproto: connection to 127.0.0.1:{self.server.port} {why}",
                ]
                for why in ("closed by the server", "connection lost")
            ],
        )

    def test_terminated_restores_terminal(self) -> None:
        client = self.start()
        client.type(b"Hel")
        client.wait_for(PROMPT + "Hel")
        client.process.send_signal(signal.SIGTERM)
        self.assert_exited(client, 143)
        self.assertEqual(client.attributes(), client.initial_attributes)

    def test_sigint_exits_130(self) -> None:
        client = self.start()
        client.process.send_signal(signal.SIGINT)
        self.assert_exited(client, 130)
