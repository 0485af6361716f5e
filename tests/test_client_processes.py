"""
The real client against the real server, as processes: refusals are not
replies, and ``-r`` outlives the server's idle timeout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from ._processes import IO_TIMEOUT, ServerProcess, run_client, subprocess_environment

# The client, telling on standard error at exit which pyOpenSSL modules it
# imported.
TELLING_CLIENT = (
    "import atexit, sys; "
    "atexit.register(lambda: print(sorted(m for m in sys.modules "
    "if m.startswith('OpenSSL')), file=sys.stderr)); "
    "from commandproto.client import main; main()"
)


class ClientProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def start_server(self, *options: str) -> ServerProcess:
        server = ServerProcess(self.directory, *options)
        self.addCleanup(server.stop)
        return server

    def test_refused_at_max_connections_exits_1(self) -> None:
        server = self.start_server("--max-connections", "1")
        with server.connect() as holder:
            holder.sendall(b"Hello\n")
            holder.recv(100)
            for flags in ([], ["-e"]):
                result = run_client(
                    [*flags, "--port", str(server.port), "Are you there?"], b""
                )
                self.assertEqual(
                    (result.returncode, result.stdout, result.stderr.decode()),
                    (
                        1,
                        b"",
                        f"commandproto: 127.0.0.1:{server.port} refused the "
                        "connection: too many connections (limit is 1); try "
                        "again later\n",
                    ),
                )

    def test_repeat_reconnects_after_idle_timeout(self) -> None:
        server = self.start_server("--idle-timeout", "0.5")
        result = run_client(
            ["--port", str(server.port), "-r", "2", "-i", "1.5", "-e", "Hello"], b""
        )
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, b"Server response: Greetings!\n" * 2, b""),
        )

    def test_plain_tcp_does_not_import_tls(self) -> None:
        server = self.start_server()
        for where in (
            ["--port", str(server.port)],
            ["--connect", f"tcp:127.0.0.1:{server.port}"],
        ):
            result = subprocess.run(
                [sys.executable, "-c", TELLING_CLIENT, *where, "Hello"],
                capture_output=True,
                env=subprocess_environment(),
                timeout=IO_TIMEOUT,
            )
            self.assertEqual(
                (result.returncode, result.stdout, result.stderr),
                (0, b"Server response: Greetings!\n", b"[]\n"),
            )
