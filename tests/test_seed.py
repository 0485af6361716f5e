"""
The seed's own two scripts, from the blog post that started commandproto,
talking to ours both ways: the seed's client to ``--legacy-listen``, and
``commandproto --legacy`` to the seed's server.

The scripts are extracted from the post at test time, their ``HOST`` and
``PORT`` rewritten to loopback and a port the OS picked, and run with this
interpreter.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from ._processes import (
    IO_TIMEOUT,
    SOURCE_ROOT,
    ServerProcess,
    run_client,
    subprocess_environment,
    unused_port,
)

SEED = os.environ.get(
    "COMMANDPROTO_SEED",
    os.path.join(SOURCE_ROOT, os.pardir, "shared", "seeds", "000_5f24263bc8439679.txt"),
)
CONVERSATION = b"Hello\nAre you there?\nGoodbye\nquit\n"
SEED_CLIENT_OUTPUT = (
    "Execute command: Server response: Greetings!\n"
    "Execute command: Server response: Yes, I am here!\n"
    "Execute command: Server response: Unknown command.\n"
    "Execute command: Server response: Closing down\n"
)
SEED_SERVER_OUTPUT = (
    "Socket initialized successfully.\n"
    "Socket ready for incoming messages.\n"
    "Connected.\n"
    "Received: Hello\n"
    "Received: Are you there?\n"
    "Received: Goodbye\n"
    "Received: quit\n"
)
LEGACY_LISTENING = re.compile(
    r"listening on tcp:127\.0\.0\.1:(\d+) \(the seed's wire format\)"
)


def seed_script(marker: str, port: int) -> str:
    """
    One of the post's scripts, aimed at ``127.0.0.1:port``.

    :param marker: its first line, ``# Networking: Server`` or ``...Client``.
    """
    with open(SEED, encoding="utf-8") as f:
        post = f.read()
    (source,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", post, re.DOTALL)
        if block.startswith(marker)
    ]
    source = re.sub(r"^HOST = .*$", "HOST = '127.0.0.1'", source, flags=re.M)
    return re.sub(r"^PORT = .*$", f"PORT = {port}", source, flags=re.M)


class SeedServer:
    """
    The seed's server, as a process, once it listens.
    """

    def __init__(self, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", seed_script("# Networking: Server", port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_environment(),
        )
        assert self.process.stdout is not None
        self.output = ""
        # It accepts one client only: wait for its word, not a probe.
        for _ in range(2):
            self.output += self.process.stdout.readline()
        if not self.output.endswith("Socket ready for incoming messages.\n"):
            raise AssertionError(f"the seed's server did not start: {self.output!r}")

    def finish(self) -> tuple[int, str]:
        out, _ = self.process.communicate(timeout=IO_TIMEOUT)
        return self.process.returncode, self.output + out

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def run_seed_client(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", seed_script("# Networking: Client", port)],
        input=CONVERSATION.decode(),
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        timeout=IO_TIMEOUT,
    )


class SeedTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not os.path.exists(SEED):
            self.skipTest(f"the seed post is not at {SEED}")
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def seed_server(self) -> tuple[SeedServer, int]:
        port = unused_port()
        server = SeedServer(port)
        self.addCleanup(server.kill)
        return server, port

    def test_seed_client_with_seed_server(self) -> None:
        # The reference the other tests match: the seed talking to itself.
        server, port = self.seed_server()
        client = run_seed_client(port)
        self.assertEqual((client.returncode, client.stdout), (0, SEED_CLIENT_OUTPUT))
        self.assertEqual(server.finish(), (0, SEED_SERVER_OUTPUT))

    def test_seed_client_with_legacy_listener(self) -> None:
        server = ServerProcess(
            self.directory, "--legacy-listen", "tcp:0:interface=127.0.0.1"
        )
        self.addCleanup(server.stop)
        match = LEGACY_LISTENING.search(server.wait_for_log(LEGACY_LISTENING))
        assert match is not None
        client = run_seed_client(int(match.group(1)))
        self.assertEqual(
            (client.returncode, client.stdout, client.stderr),
            (0, SEED_CLIENT_OUTPUT, ""),
        )

    def test_our_client_with_seed_server(self) -> None:
        server, port = self.seed_server()
        result = run_client(["--legacy", "--port", str(port)], CONVERSATION)
        self.assertEqual(
            (result.returncode, result.stdout.decode(), result.stderr),
            (
                0,
                "Server response: Greetings!\n"
                "Server response: Yes, I am here!\n"
                "Server response: Unknown command.\n"
                "Server response: Closing down\n",
                b"",
            ),
        )
        self.assertEqual(server.finish(), (0, SEED_SERVER_OUTPUT))

    def test_our_client_without_legacy_says_what_to_do(self) -> None:
        server, port = self.seed_server()
        started = time.monotonic()
        result = run_client(["--timeout", "1", "--port", str(port)], b"Hello\n")
        self.assertLess(time.monotonic() - started, IO_TIMEOUT)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            f"commandproto: no reply from 127.0.0.1:{port} within 1 second; it "
            "sent text without a line end: for a server in the seed's format, "
            "use --legacy\n",
        )
        server.kill()


class SilentServerTests(SynchronousTestCase):
    """
    ``--timeout`` against a server that accepts and never answers.
    """

    def test_one_shot_times_out(self) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            result = run_client(["--timeout", "0.5", "--port", str(port), "Hello"], b"")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            f"commandproto: no reply from 127.0.0.1:{port} within 0.5 seconds "
            "(--timeout SECONDS, 0 waits for ever)\n",
        )
