"""
The ``proxy:`` listener against real processes: hand-made headers from a raw
socket, and two real ``twistd -n commandserver`` backends behind a real
HAProxy (one ``send-proxy``, one ``send-proxy-v2``, health-checked with
``Are you there?``).  Loopback only; clients come from 127.0.0.2.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time

import trustme

from commandproto.commands.table import CLOSING, GREETING, PRESENT

from ._docs import read
from ._haproxy import DOCUMENTED_CHECKS, HAProxyProcess, haproxy_binary, haproxy_config
from ._helpers import replies
from ._processes import IO_TIMEOUT, read_exactly, read_until_closed
from .test_hardening import HardeningTestCase
from .test_proxy import v1, v2_inet

PROXY_LISTEN = ("--listen", "proxy:tcp:0:interface=127.0.0.1")
# HAProxy's health checks are logged at debug, one line each.
HEALTH_CHECK = re.compile(
    r"connection from tcp:127\.0\.0\.1:\d+ closed: .* \(the proxy's own\)$", re.M
)


def ask(sock: socket.socket, line: bytes, reply: str) -> bytes:
    sock.sendall(line)
    return read_exactly(sock, len(replies(reply)))


class ProxyListenerTests(HardeningTestCase):
    """
    A ``proxy:`` listener spoken to directly.
    """

    def test_v1_header_names_the_client(self) -> None:
        server = self.start_server(*PROXY_LISTEN)
        with server.connect() as sock:
            sock.sendall(v1("192.0.2.7", "127.0.0.1", 4242, server.port))
            self.assertEqual(ask(sock, b"Hello\n", GREETING), replies(GREETING))
        server.wait_for_log(re.compile(r"connection from tcp:192\.0\.2\.7:4242$"))

    def test_v2_header_split_from_its_first_byte(self) -> None:
        server = self.start_server(*PROXY_LISTEN)
        header = v2_inet("2001:db8::7", "::1", 4242, server.port)
        with server.connect() as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(header[:1])
            time.sleep(0.1)
            sock.sendall(header[1:])
            self.assertEqual(ask(sock, b"Hello\n", GREETING), replies(GREETING))
        server.wait_for_log(re.compile(r"connection from tcp6:\[2001:db8::7\]:4242$"))

    def test_no_header_is_one_line_and_a_close(self) -> None:
        server = self.start_server(*PROXY_LISTEN)
        with server.connect() as sock:
            sock.sendall(b"Hello\n" * 100)
            self.assertEqual(read_until_closed(sock), b"")
        server.wait_for_log(re.compile("invalid PROXY header from tcp:127.0.0.1:"))
        # A later connection's line: once it is logged, every line of the
        # first connection (closed before it began) is too.
        with server.connect() as sock:
            sock.sendall(v1("192.0.2.9", "127.0.0.1", 4243, server.port))
            self.assertEqual(ask(sock, b"Hello\n", GREETING), replies(GREETING))
        server.wait_for_log(re.compile(r"connection from tcp:192\.0\.2\.9:4243$"))
        self.assertEqual(server.log_text().count("PROXY header"), 1)

    def test_silence_is_closed_after_the_timeout(self) -> None:
        server = self.start_server(*PROXY_LISTEN, "--handshake-timeout", "0.5")
        with server.connect() as sock:
            started = time.monotonic()
            self.assertEqual(read_until_closed(sock), b"")
            self.assertLess(time.monotonic() - started, 5)
        server.wait_for_log(re.compile(r"no PROXY header from .* within 0.5s"))

    def test_header_then_tls(self) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost")
        key, pem = f"{self.directory}/server.key", f"{self.directory}/server.pem"
        cert.private_key_pem.write_to_path(key)
        cert.cert_chain_pems[0].write_to_path(pem)
        server = self.start_server(
            "--listen",
            f"proxy:ssl:0:interface=127.0.0.1:privateKey={key}:certKey={pem}",
        )
        context = ssl.create_default_context()
        ca.configure_trust(context)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT)
        raw.sendall(v1("192.0.2.9", "127.0.0.1", 4343, server.port))
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            self.assertEqual(ask(sock, b"Hello\n", GREETING), replies(GREETING))
        server.wait_for_log(re.compile(r"connection from tcp:192\.0\.2\.9:4343$"))


class ReadmeConfigurationTests(HardeningTestCase):
    """
    The manual (docs/howto/scaling.rst) shows the configuration the tests
    run, and HAProxy accepts it.
    """

    def documented_config(self) -> str:
        return haproxy_config(
            "127.0.0.1:12345",
            [("one", 12346, "send-proxy"), ("two", 12347, "send-proxy-v2")],
            DOCUMENTED_CHECKS,
        )

    def test_manual_shows_it(self) -> None:
        text = read("docs/howto/scaling.rst")
        indented = "".join(
            "    " + line if line.strip() else line
            for line in self.documented_config().splitlines(True)
        )
        self.assertIn(indented, text)

    def test_haproxy_accepts_it(self) -> None:
        path = f"{self.directory}/documented.cfg"
        with open(path, "w") as f:
            f.write(self.documented_config())
        checked = subprocess.run(
            [haproxy_binary(), "-c", "-f", path],
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)


class HAProxyTests(HardeningTestCase):
    """
    Two backends behind a real HAProxy.
    """

    def setUp(self) -> None:
        haproxy_binary()
        super().setUp()
        self.backends = {
            "v1": self.start_server(*PROXY_LISTEN, "--log-level", "debug"),
            "v2": self.start_server(*PROXY_LISTEN, "--log-level", "debug"),
        }
        self.haproxy = HAProxyProcess(
            self.directory,
            [
                ("v1", self.backends["v1"].port, "send-proxy"),
                ("v2", self.backends["v2"].port, "send-proxy-v2"),
            ],
        )
        self.addCleanup(self.haproxy.stop)
        # Both are up once each has answered a health check.
        for backend in self.backends.values():
            backend.wait_for_log(HEALTH_CHECK)

    def backend_of(self, sock: socket.socket) -> str:
        """
        Which backend logged this client (by its address and port).
        """
        host, port = sock.getsockname()
        pattern = re.compile(rf"connection from tcp:{re.escape(host)}:{port}$", re.M)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [
                name
                for name, backend in self.backends.items()
                if pattern.search(backend.log_text())
            ]
            if found:
                (name,) = found
                return name
            time.sleep(0.05)
        raise AssertionError(f"no backend logged tcp:{host}:{port}")

    def test_backends_log_the_client_address_and_port(self) -> None:
        clients = [self.haproxy.connect() for _ in range(2)]
        try:
            for sock in clients:
                self.assertEqual(ask(sock, b"Hello\n", GREETING), replies(GREETING))
            # Round robin: one client each, so both header versions are seen.
            self.assertEqual(
                sorted(self.backend_of(sock) for sock in clients), ["v1", "v2"]
            )
        finally:
            for sock in clients:
                sock.close()

    def test_health_checks_are_one_line_each(self) -> None:
        for backend in self.backends.values():
            log = backend.log_text()
            checks = HEALTH_CHECK.findall(log)
            self.assertTrue(checks)
            # Not the line an admitted client gets on arrival.
            self.assertIsNone(
                re.search(r"connection from tcp:127\.0\.0\.1:\d+$", log, re.M), log
            )

    def test_half_close_through_haproxy_keeps_every_reply(self) -> None:
        lines = b"Hello\n" * 2000 + b"Are you there?"
        expected = replies(*[GREETING] * 2000, PRESENT)
        for _ in self.backends:
            with self.haproxy.connect() as sock:
                sock.sendall(lines)
                sock.shutdown(socket.SHUT_WR)
                self.assertEqual(read_until_closed(sock), expected)
                self.backend_of(sock)

    def test_stopping_one_backend_leaves_the_others_clients_alone(self) -> None:
        clients = [self.haproxy.connect() for _ in range(2)]
        try:
            for sock in clients:
                ask(sock, b"Hello\n", GREETING)
            on = {self.backend_of(sock): sock for sock in clients}
            self.assertEqual(sorted(on), ["v1", "v2"])
            self.backends["v1"].stop()
            # The stopped backend's client is told, the other's goes on.
            self.assertEqual(read_until_closed(on["v1"]), replies(CLOSING))
            self.haproxy.wait_for_output("v1 is DOWN")
            for _ in range(20):
                self.assertEqual(
                    ask(on["v2"], b"Are you there?\n", PRESENT), replies(PRESENT)
                )
            # New clients all go to the backend still up.
            for _ in range(4):
                with self.haproxy.connect() as sock:
                    self.assertEqual(ask(sock, b"Hello\n", GREETING), replies(GREETING))
                    self.assertEqual(self.backend_of(sock), "v2")
            on["v2"].sendall(b"quit\n")
            self.assertEqual(read_until_closed(on["v2"]), replies(CLOSING))
        finally:
            for sock in clients:
                sock.close()
