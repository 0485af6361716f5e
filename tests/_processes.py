"""
Helpers for integration tests: run the real ``twistd -n commandserver`` and
the real client as processes, on loopback or unix sockets only.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from twisted.trial.unittest import SynchronousTestCase

TWISTD = (
    "import sys; from twisted.scripts.twistd import run; "
    "sys.argv[0] = 'twistd'; sys.exit(run())"
)
# The code under test is this tree's, whatever else is installed.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on (tcp:127\.0\.0\.1:(\d+)|unix:(\S+))")
START_TIMEOUT = 30.0
IO_TIMEOUT = 15.0


class ServerProcess:
    """
    A running ``twistd -n commandserver``, its output collected by a thread
    so that the pipe never fills.

    :ivar port: the TCP port it listens on, if it listens on loopback TCP.
    """

    def __init__(
        self,
        directory: str,
        *options: str,
        preexec_fn: Callable[[], None] | None = None,
        prelude: str = "",
        environment: Mapping[str, str] | None = None,
        pass_fds: Sequence[int] = (),
        command: Sequence[str] = (),
        wait: bool = True,
        twistd_options: Sequence[str] = (),
    ) -> None:
        """
        :param prelude: Python code the child runs before twistd.
        :param twistd_options: twistd's own options (``-r asyncio``).
        :param environment: variables the child gets beside ours.
        :param pass_fds: descriptors the child inherits.
        :param command: what runs the child (``systemd-socket-activate ...``)
            in front of Python.
        :param wait: wait until it logs that it listens.
        """
        if not any(option.startswith("--listen") for option in options):
            options = ("--listen", "tcp:0:interface=127.0.0.1", *options)
        self.process = subprocess.Popen(
            [
                *command,
                sys.executable,
                "-c",
                prelude + TWISTD,
                "-n",
                "--pidfile=",
                *twistd_options,
                "commandserver",
                *options,
            ],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**subprocess_environment(), **(environment or {})},
            preexec_fn=preexec_fn,
            pass_fds=pass_fds,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        self.port = 0
        if wait:
            self.wait_for_log(LISTENING, START_TIMEOUT)

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_log(
        self, pattern: re.Pattern[str], timeout: float = IO_TIMEOUT
    ) -> str:
        """
        Wait for a log line matching ``pattern``, or fail.

        :returns: the matching line.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = None
                remaining = 0
            if line is None:
                raise AssertionError(
                    f"no log line matching {pattern.pattern!r} "
                    f"(exit status {self.process.poll()}):\n" + "".join(self.output)
                )
            self.output.append(line)
            match = pattern.search(line)
            if match:
                if pattern is LISTENING and match.group(2):
                    self.port = self.port or int(match.group(2))
                return line

    def expect_log(self, pattern: re.Pattern[str], timeout: float = IO_TIMEOUT) -> str:
        """
        The first log line matching ``pattern``, whether it was logged
        already or comes within ``timeout``; fail if it does not.
        """
        for line in self.log_text().splitlines(keepends=True):
            if pattern.search(line):
                return line
        return self.wait_for_log(pattern, timeout)

    def socket_count(self) -> int:
        """
        How many sockets the server holds open now (listening ones
        included), from /proc.
        """
        count = 0
        for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.process.pid}/fd/{fd}")
            except OSError:
                continue
            count += target.startswith("socket:")
        return count

    def wait_for_sockets(self, count: int, timeout: float = IO_TIMEOUT) -> None:
        """
        Wait until the server holds at least ``count`` sockets (it has
        accepted the connections a test opened), or fail.
        """
        deadline = time.monotonic() + timeout
        while self.socket_count() < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the server holds {self.socket_count()} sockets, not {count}"
                )
            time.sleep(0.01)

    def log_text(self, settle: float = 0.0) -> str:
        """
        Everything logged so far (after waiting ``settle`` seconds).
        """
        time.sleep(settle)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        return "".join(self.output)

    def connect(self) -> socket.socket:
        """
        A new TCP connection to the server, with a timeout.
        """
        return socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def stop(self) -> int:
        """
        Stop the server (SIGTERM, then SIGKILL if it lingers).

        :returns: its exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def subprocess_environment() -> dict[str, str]:
    """
    The environment for our processes: this tree first on the path, and
    unbuffered output.
    """
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": SOURCE_ROOT + (os.pathsep + path if path else ""),
        "PYTHONUNBUFFERED": "1",
    }


def read_until_closed(sock: socket.socket) -> bytes:
    """
    Read everything the peer sends until it closes.
    """
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """
    Read exactly ``size`` bytes, or fail if the peer closes first.
    """
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def run_client(
    arguments: Sequence[str], stdin: bytes, timeout: float = IO_TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    """
    Run ``python -m commandproto.client`` with piped input.
    """
    return subprocess.run(
        [sys.executable, "-m", "commandproto.client", *arguments],
        input=stdin,
        capture_output=True,
        env=subprocess_environment(),
        timeout=timeout,
    )


def refusing_port(test: SynchronousTestCase) -> int:
    """
    A loopback TCP port that refuses connections until the test ends: bound
    by a socket that does not listen, so that no other process can take it
    meanwhile.
    """
    probe = socket.socket()
    test.addCleanup(probe.close)
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    return port


def unused_port() -> int:
    """
    A loopback TCP port that nothing listens on (as of now): only for a
    program that binds it itself; see :func:`refusing_port`.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
