"""
Integration tests of the protections, against the real ``twistd -n
commandserver``: floods, limits, timeouts, shutdown, TLS and mutual TLS.
Every loop is bounded in bytes and time; traffic stays on loopback.
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import socket
import ssl
import struct
import time
from pathlib import Path

import trustme
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    CLOSING,
    GREETING,
    UNKNOWN_COMMAND,
    idle_timeout_reply,
    too_many_connections,
)

from ._helpers import replies
from ._processes import (
    IO_TIMEOUT,
    ServerProcess,
    read_exactly,
    read_until_closed,
    run_client,
)
from .test_integration import ProcessTestCase

FLOOD_LIMIT_BYTES = 256 * 1024 * 1024
FLOOD_LIMIT_SECONDS = 20.0


def rss_kib(pid: int) -> int:
    """
    A process's resident set size, from /proc.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def flood_without_reading(sock: socket.socket) -> int:
    """
    Send ``Hello`` lines and never read, until the server stops reading
    (our sends block for two seconds) or a bound is reached.

    :returns: the bytes sent.
    """
    chunk = b"Hello\n" * 10000
    sent = 0
    sock.settimeout(2.0)
    deadline = time.monotonic() + FLOOD_LIMIT_SECONDS
    while sent < FLOOD_LIMIT_BYTES and time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
        except TimeoutError:
            break
    return sent


def assert_served(test: SynchronousTestCase, server: ServerProcess) -> None:
    """
    A fresh client is answered.
    """
    with server.connect() as sock:
        sock.sendall(b"Hello\n")
        test.assertEqual(read_exactly(sock, len(replies(GREETING))), replies(GREETING))


class HardeningTestCase(ProcessTestCase):
    def start_server(self, *options: str) -> ServerProcess:
        server = super().start_server(*options)
        self.addCleanup(self.assert_no_traceback, server)
        return server

    def assert_no_traceback(self, server: ServerProcess) -> None:
        server.stop()
        self.assertNotIn("Traceback", server.log_text())


class FloodTests(HardeningTestCase):
    """
    A client that writes without reading costs bounded memory and slows no
    one else.
    """

    def test_flood_that_never_reads(self) -> None:
        server = self.start_server()
        before = rss_kib(server.process.pid)
        with server.connect() as flood:
            sent = flood_without_reading(flood)
            # Served: the server has gone round its loop since it read the
            # flood's last bytes, so all it will keep of them is kept.
            assert_served(self, server)
            after = rss_kib(server.process.pid)
        self.assertGreater(sent, 1024 * 1024)
        self.assertLess(after - before, 32 * 1024, (before, after, sent))

    def test_unterminated_line_never_grows_memory(self) -> None:
        server = self.start_server("--max-line-length", "1024")
        before = rss_kib(server.process.pid)
        with server.connect() as sock:
            sock.sendall(b"x" * (64 * 1024 * 1024))
            after = rss_kib(server.process.pid)
            sock.sendall(b"\nHello\n")
            expected = replies("Error: line too long (limit is 1024 bytes)", GREETING)
            self.assertEqual(read_exactly(sock, len(expected)), expected)
        self.assertLess(after - before, 32 * 1024, (before, after))

    def test_tls_client_hello_on_plain_port(self) -> None:
        server = self.start_server()
        hello = _client_hello()
        with server.connect() as sock:
            sock.sendall(hello)
            assert_served(self, server)
            sock.sendall(b"\nHello\n")
            data = b""
            while not data.endswith(replies(GREETING)):
                chunk = sock.recv(65536)
                self.assertTrue(chunk, data)
                data += chunk
        for line in data.split(b"\r\n")[:-2]:
            self.assertTrue(line == b"Unknown command." or line.startswith(b"Error:"))

    def test_http_request_on_plain_port(self) -> None:
        server = self.start_server()
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            expected = replies(UNKNOWN_COMMAND) * 3
            self.assertEqual(read_exactly(sock, len(expected)), expected)

    def test_reset_mid_line(self) -> None:
        server = self.start_server()
        sock = server.connect()
        sock.sendall(b"Hel")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert_served(self, server)


class GracefulCloseTests(HardeningTestCase):
    """
    Lines sent after ``quit`` never cost the client the replies before it.
    """

    def test_data_after_quit_loses_no_reply(self) -> None:
        server = self.start_server()
        with server.connect() as sock:
            sock.sendall(b"Hello\n" * 20000 + b"quit\n" + b"Hello\n" * 20000)
            # Read late: a server that closed with our extra lines unread would
            # have made the kernel reset the connection, destroying its replies.
            time.sleep(0.5)
            received = read_until_closed(sock)
        self.assertEqual(received, replies(GREETING) * 20000 + replies(CLOSING))


class LimitTests(HardeningTestCase):
    """
    --max-connections and --idle-timeout against the real server.
    """

    def test_max_connections(self) -> None:
        server = self.start_server("--max-connections", "2")
        first, second = server.connect(), server.connect()
        with first, second:
            for sock in (first, second):
                sock.sendall(b"Hello\n")
                read_exactly(sock, len(replies(GREETING)))
            with server.connect() as third:
                self.assertEqual(
                    read_until_closed(third), replies(too_many_connections(2))
                )
            first.sendall(b"quit\n")
            read_until_closed(first)
            # The slot is free once the connection is gone: the client has
            # closed its side too.
            first.close()
            for _ in range(100):
                with server.connect() as sock:
                    sock.sendall(b"Hello\n")
                    if read_exactly(sock, len(replies(GREETING))) == replies(GREETING):
                        break
                time.sleep(0.05)
            else:
                self.fail("the slot was not freed")

    def test_idle_timeout(self) -> None:
        server = self.start_server("--idle-timeout", "0.5")
        with server.connect() as sock:
            self.assertEqual(read_until_closed(sock), replies(idle_timeout_reply(0.5)))


class ShutdownTests(HardeningTestCase):
    """
    SIGTERM and SIGINT drain the connections, bounded by --shutdown-timeout.
    """

    def assert_drains(self, signum: int) -> None:
        server = self.start_server()
        with server.connect() as busy, server.connect() as idle:
            busy.sendall(b"Hello\n" * 2000)
            read_exactly(busy, len(replies(GREETING)))
            server.signal(signum)
            received = replies(GREETING) + read_until_closed(busy)
            self.assertEqual(read_until_closed(idle), replies(CLOSING))
        self.assertEqual(received, replies(GREETING) * 2000 + replies(CLOSING))
        # twistd ends by re-raising the signal that stopped it, once drained.
        self.assertEqual(server.process.wait(timeout=IO_TIMEOUT), -signum)

    def test_sigterm_drains(self) -> None:
        self.assert_drains(signal.SIGTERM)

    def test_sigint_drains(self) -> None:
        self.assert_drains(signal.SIGINT)

    def test_stuck_client_aborted_after_shutdown_timeout(self) -> None:
        server = self.start_server("--shutdown-timeout", "1")
        with server.connect() as stuck:
            flood_without_reading(stuck)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            self.assertEqual(server.process.wait(timeout=IO_TIMEOUT), -signal.SIGTERM)
            elapsed = time.monotonic() - started
        self.assertIn("aborting 1 connection", server.log_text())
        self.assertLess(elapsed, IO_TIMEOUT)


class TLSTests(HardeningTestCase):
    """
    ``ssl:`` and ``mtls:`` listeners, with certificates made for the test.
    """

    def setUp(self) -> None:
        super().setUp()
        self.ca = trustme.CA()
        self.dir = Path(self.directory)
        (self.dir / "trust").mkdir()
        self.ca.cert_pem.write_to_path(str(self.dir / "trust" / "ca.pem"))
        self.ca.cert_pem.write_to_path(str(self.dir / "ca.pem"))
        server_cert = self.ca.issue_cert("localhost", "127.0.0.1")
        server_cert.private_key_pem.write_to_path(str(self.dir / "server.key"))
        server_cert.cert_chain_pems[0].write_to_path(str(self.dir / "server.pem"))
        client_cert = self.ca.issue_cert("client.example")
        client_cert.private_key_pem.write_to_path(str(self.dir / "client.key"))
        client_cert.cert_chain_pems[0].write_to_path(str(self.dir / "client.pem"))

    def keys(self) -> str:
        return f"privateKey={self.dir}/server.key:certKey={self.dir}/server.pem"

    def client_endpoint(self, port: int, *, certificate: bool = False) -> str:
        endpoint = f"tls:localhost:{port}:trustRoots={self.dir}/trust"
        if certificate:
            endpoint += f":certificate={self.dir}/client.pem"
            endpoint += f":privateKey={self.dir}/client.key"
        return endpoint

    def test_tls(self) -> None:
        server = self.start_server(
            "--listen", f"ssl:0:interface=127.0.0.1:{self.keys()}"
        )
        result = run_client(
            ["--connect", self.client_endpoint(server.port)], b"Hello\n"
        )
        self.assertEqual(
            (result.returncode, result.stdout), (0, b"Server response: Greetings!\n")
        )

    def test_descriptor_limit_of_1024_still_serves_hundreds(self) -> None:
        """
        Under a descriptor limit of 1024, an ``ssl:`` listener's handshake
        reserve is sized from the limit, not taken from it whole: the server
        serves about 900 clients, not one.
        """

        def low_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

        server = ServerProcess(
            self.directory,
            "--listen",
            f"ssl:0:interface=127.0.0.1:{self.keys()}",
            preexec_fn=low_limit,
        )
        self.addCleanup(self.assert_no_traceback, server)
        # Logged before the listener's line, which the start waited for.
        log = server.log_text()
        found = re.search(r"open-file limit 1024 allows .* serving at most (\d+)", log)
        self.assertIsNotNone(found, log)
        assert found is not None
        self.assertGreaterEqual(int(found.group(1)), 880, found.group(0))
        context = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        with contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(
                    context.wrap_socket(server.connect(), server_hostname="localhost")
                )
                for _ in range(3)
            ]
            for tls in clients:
                tls.sendall(b"Hello\n")
            answers = [read_exactly(tls, len(replies(GREETING))) for tls in clients]
        self.assertEqual(answers, [replies(GREETING)] * 3)

    def test_tls_client_rejects_untrusted_server(self) -> None:
        server = self.start_server(
            "--listen", f"ssl:0:interface=127.0.0.1:{self.keys()}"
        )
        other = Path(self.directory) / "other"
        other.mkdir()
        trustme.CA().cert_pem.write_to_path(str(other / "ca.pem"))
        endpoint = f"tls:localhost:{server.port}:trustRoots={other}"
        result = run_client(["--connect", endpoint], b"Hello\n")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertEqual(result.stdout, b"")

    def mtls_server(self) -> ServerProcess:
        return self.start_server(
            "--listen",
            f"mtls:0:interface=127.0.0.1:{self.keys()}:caCerts={self.dir}/ca.pem",
        )

    def test_mutual_tls_with_client_certificate(self) -> None:
        server = self.mtls_server()
        endpoint = self.client_endpoint(server.port, certificate=True)
        result = run_client(["--connect", endpoint], b"Hello\n")
        self.assertEqual(
            (result.returncode, result.stdout), (0, b"Server response: Greetings!\n")
        )

    def test_mutual_tls_refuses_client_without_certificate(self) -> None:
        server = self.mtls_server()
        result = run_client(
            ["--connect", self.client_endpoint(server.port)], b"Hello\n"
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)

    def test_mutual_tls_refuses_certificate_from_other_ca(self) -> None:
        server = self.mtls_server()
        stranger = trustme.CA().issue_cert("stranger.example")
        context = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        stranger.configure_cert(context)
        with (
            socket.create_connection(
                ("127.0.0.1", server.port), timeout=IO_TIMEOUT
            ) as raw,
            self.assertRaises((ssl.SSLError, ConnectionError)),
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            # TLS 1.3 reports a refused client certificate on first read.
            tls.sendall(b"Hello\n")
            if not tls.recv(1024):
                raise ConnectionError("closed")


def _client_hello() -> bytes:
    """
    The bytes of a real TLS ClientHello, made in memory.
    """
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()
