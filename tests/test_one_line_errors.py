"""
Every failure a person sees is one line in our words saying what to do,
never a traceback: the real client and the real ``twistd``, as processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import trustme
from twisted.trial.unittest import SynchronousTestCase

from ._processes import (
    IO_TIMEOUT,
    TWISTD,
    ServerProcess,
    run_client,
    subprocess_environment,
)

WITHOUT_OPENSSL = "import sys; sys.modules['OpenSSL'] = None; "
CLIENT = "from commandproto.client import main; main()"
TLS_EXTRA = "TLS needs the tls extra: pip install 'commandproto[tls]'"


def run(code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *arguments],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        timeout=IO_TIMEOUT * 2,
    )


class OneLineTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def assert_one_line(
        self, result: subprocess.CompletedProcess[str], status: int, line: str
    ) -> None:
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        self.assertEqual(
            (result.returncode, result.stderr.splitlines()[0]), (status, line)
        )


class ClientErrorTests(OneLineTestCase):
    def client(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        result = run_client(list(arguments), b"Hello\n")
        return subprocess.CompletedProcess(
            result.args,
            result.returncode,
            result.stdout.decode(),
            result.stderr.decode(),
        )

    def test_port_not_a_number(self) -> None:
        self.assert_one_line(
            self.client("--port", "abc"),
            2,
            "commandproto: --port takes a number from 1 to 65535, not 'abc'",
        )

    def test_repeat_zero_names_the_option(self) -> None:
        self.assert_one_line(
            self.client("-r", "0", "Hello"),
            2,
            "commandproto: -r/--repeat takes a whole number of at least 1, not '0'",
        )

    def test_negative_timeout_names_the_option(self) -> None:
        self.assert_one_line(
            self.client("--timeout", "-1"),
            2,
            "commandproto: --timeout takes a number of seconds, 0 or more, not '-1'",
        )

    def test_endpoint_without_port(self) -> None:
        self.assert_one_line(
            self.client("--connect", "tcp:localhost"),
            2,
            "commandproto: bad endpoint 'tcp:localhost': missing or unknown "
            "parts (write it as tcp:HOST:PORT)",
        )

    def test_trust_roots_naming_a_file(self) -> None:
        path = Path(self.directory) / "ca.pem"
        trustme.CA().cert_pem.write_to_path(str(path))
        endpoint = f"tls:localhost:12345:trustRoots={path}"
        self.assert_one_line(
            self.client("--connect", endpoint),
            2,
            f"commandproto: bad endpoint {endpoint!r}: trustRoots= must name a "
            "directory holding the CA certificates (*.pem files), not a file",
        )

    def test_tls_without_the_extra(self) -> None:
        self.assert_one_line(
            run(WITHOUT_OPENSSL + CLIENT, "--connect", "tls:localhost:12345"),
            2,
            f"commandproto: {TLS_EXTRA}",
        )

    def test_untrusted_server_certificate(self) -> None:
        directory = Path(self.directory)
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(directory / "server.key"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        (directory / "other").mkdir()
        trustme.CA().cert_pem.write_to_path(str(directory / "other" / "ca.pem"))
        server = ServerProcess(
            self.directory,
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={directory}/server.key"
            f":certKey={directory}/server.pem",
        )
        self.addCleanup(server.stop)
        endpoint = f"tls:localhost:{server.port}:trustRoots={directory}/other"
        self.assert_one_line(
            self.client("--connect", endpoint),
            1,
            f"commandproto: connection to {endpoint} closed: TLS handshake "
            "failed: certificate verify failed",
        )


class TwistdTestCase(OneLineTestCase):
    def twistd(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", TWISTD, *arguments],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=subprocess_environment(),
            timeout=IO_TIMEOUT * 2,
        )


class ServerErrorTests(TwistdTestCase):
    def taken_port(self) -> int:
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port: int = holder.getsockname()[1]
        return port

    def in_use(self, port: int) -> str:
        return (
            f"twistd commandserver: cannot listen on "
            f"tcp:{port}:interface=127.0.0.1: address already in use (is "
            "another server running there? stop it, or choose another port "
            "with --listen)"
        )

    def test_address_in_use_in_the_foreground(self) -> None:
        port = self.taken_port()
        result = self.twistd(
            "-n",
            "--pidfile=",
            "commandserver",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        )
        self.assert_one_line(result, 1, self.in_use(port))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)

    def test_address_in_use_daemonized(self) -> None:
        port = self.taken_port()
        result = self.twistd(
            f"--pidfile={self.directory}/twistd.pid",
            f"--logfile={self.directory}/twistd.log",
            "commandserver",
            "--legacy-listen",
            f"tcp:{port}:interface=127.0.0.1",
        )
        self.assert_one_line(result, 1, self.in_use(port))
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertFalse(os.path.exists(f"{self.directory}/twistd.pid"))

    def test_bad_listen_is_one_line_first(self) -> None:
        result = self.twistd("-n", "--pidfile=", "commandserver", "--listen", "tcp:abc")
        self.assert_one_line(
            result,
            1,
            "twistd commandserver: bad --listen endpoint 'tcp:abc': the port "
            "must be a number (examples: tcp:12345, unix:/run/commandproto.sock; "
            "see --help)",
        )

    def test_tls_without_the_extra(self) -> None:
        result = run(
            WITHOUT_OPENSSL + TWISTD,
            "-n",
            "--pidfile=",
            "commandserver",
            "--listen",
            "ssl:0:privateKey=key.pem",
        )
        self.assert_one_line(
            result,
            1,
            f"twistd commandserver: --listen 'ssl:0:privateKey=key.pem': {TLS_EXTRA}",
        )


class StartupUsageErrorTests(TwistdTestCase):
    """
    Every usage error of ``twistd -n commandserver`` is one line on standard
    error in our words, exit status 1: never twistd's usage on standard
    output.
    """

    def assert_usage_error(self, line: str, *arguments: str) -> None:
        result = self.twistd("-n", "--pidfile=", "commandserver", *arguments)
        self.assert_one_line(result, 1, f"twistd commandserver: {line}")
        self.assertEqual((result.stdout, len(result.stderr.splitlines())), ("", 1))

    def test_number_out_of_range(self) -> None:
        self.assert_usage_error(
            "--max-connections must be a number of at least 1 "
            "(see twistd commandserver --help)",
            "--max-connections",
            "0",
        )

    def test_not_one_of_the_choices(self) -> None:
        self.assert_usage_error(
            "--log-format takes one of text, json (see twistd commandserver --help)",
            "--log-format",
            "xml",
        )

    def test_not_a_number(self) -> None:
        self.assert_usage_error(
            "--workers takes a number or 'auto', not 'abc' "
            "(see twistd commandserver --help)",
            "--workers",
            "abc",
        )

    def test_unknown_option(self) -> None:
        self.assert_usage_error(
            "unknown option --bogus (see twistd commandserver --help)", "--bogus"
        )

    def test_option_without_its_value(self) -> None:
        self.assert_usage_error(
            "--max-connections needs a value (see twistd commandserver --help)",
            "--max-connections",
        )


class PidFileTests(TwistdTestCase):
    """
    A pid file twistd would refuse stops the start in one line.
    """

    def start(self, content: str) -> subprocess.CompletedProcess[str]:
        Path(self.directory, "twistd.pid").write_text(content)
        return self.twistd("-n", "--pidfile=twistd.pid", "commandserver")

    def test_running_process(self) -> None:
        # Our own process: surely running (as a stale file's number can be
        # after a reboot).
        result = self.start(f"{os.getpid()}\n")
        self.assert_one_line(
            result,
            1,
            f"twistd commandserver: the pid file twistd.pid names process "
            f"{os.getpid()}, which is running (another server started here? "
            "stop it; if not, remove the file, or choose another with twistd "
            "--pidfile)",
        )
        self.assertEqual((result.stdout, len(result.stderr.splitlines())), ("", 1))

    def test_not_a_process_id(self) -> None:
        result = self.start("abc\n")
        self.assert_one_line(
            result,
            1,
            "twistd commandserver: the pid file twistd.pid holds no process "
            "id: remove it, or choose another with twistd --pidfile",
        )
        self.assertEqual((result.stdout, len(result.stderr.splitlines())), ("", 1))
