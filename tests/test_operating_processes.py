"""
Operating the real ``twistd -n commandserver``: a real Prometheus scrape,
JSON logs, socket activation through ``LISTEN_FDS`` (and through
``systemd-socket-activate`` where it is installed), and sd_notify on a
datagram socket of the test's own.  Loopback only; every wait bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
import urllib.request

from commandproto.commands.table import CLOSING, GREETING, INVALID_UTF8

from ._helpers import replies
from ._processes import (
    IO_TIMEOUT,
    ServerProcess,
    read_exactly,
    read_until_closed,
    unused_port,
)
from .test_integration import ProcessTestCase

METRICS = re.compile(r"metrics on tcp:127\.0\.0\.1:(\d+) at /metrics")
CLOSED = re.compile(r"connection from \S+ closed")


def scrape(port: int) -> dict[str, float]:
    """
    The samples of a real scrape, keyed by name and labels as written.
    """
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=IO_TIMEOUT
    ) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


class ScrapeTests(ProcessTestCase):
    """
    ``--metrics`` serves the counters of known traffic.
    """

    def test_scrape_after_known_traffic(self) -> None:
        server = self.start_server("--metrics", "tcp:0:interface=127.0.0.1")
        port = int(METRICS.search(server.wait_for_log(METRICS)).group(1))  # type: ignore[union-attr]
        sent = b"Hello\nHello\r\nAre you there?\nnope\nhelp quit\n\xff\nquit\n"
        with server.connect() as sock:
            sock.sendall(sent)
            received = read_until_closed(sock)
        server.wait_for_log(CLOSED)
        samples = scrape(port)
        expected = {
            'commandproto_commands_total{command="Hello",outcome="ok"}': 2,
            'commandproto_commands_total{command="Are you there?",outcome="ok"}': 1,
            'commandproto_commands_total{command="(unknown)",outcome="unknown"}': 1,
            'commandproto_commands_total{command="help",outcome="ok"}': 1,
            'commandproto_commands_total{command="quit",outcome="ok"}': 1,
            "commandproto_connections_accepted_total": 1,
            "commandproto_connections": 0,
            'commandproto_client_events_total{event="invalid_utf8"}': 1,
            'commandproto_connections_refused_total{reason="max_connections"}': 0,
            "commandproto_received_bytes_total": len(sent),
            "commandproto_sent_bytes_total": len(received),
            'commandproto_command_latency_seconds_count{command="Hello"}': 2,
            'commandproto_command_latency_seconds_count{command="quit"}': 1,
        }
        self.assertEqual({key: samples.get(key) for key in expected}, expected)
        self.assertGreater(samples["process_cpu_seconds_total"], 0)

    def test_stats_command_says_the_same(self) -> None:
        server = self.start_server("--metrics", "tcp:0:interface=127.0.0.1")
        port = int(METRICS.search(server.wait_for_log(METRICS)).group(1))  # type: ignore[union-attr]
        with server.connect() as sock:
            sock.sendall(b"Hello\nnope\nstats\n")
            sock.shutdown(socket.SHUT_WR)
            lines = read_until_closed(sock).decode().splitlines()
        pairs = dict(pair.split("=", 1) for pair in lines[2].split(" "))
        server.wait_for_log(CLOSED)
        samples = scrape(port)
        self.assertEqual((pairs["commands"], pairs["errors"]), ("2", "1"))
        self.assertEqual(pairs["connections_total"], "1")
        self.assertEqual(
            samples['commandproto_commands_total{command="stats",outcome="ok"}'], 1
        )


class JSONLogTests(ProcessTestCase):
    """
    ``--log-format json`` writes one object per line with the fields as keys.
    """

    def test_connection_story(self) -> None:
        server = self.start_server("--log-format", "json")
        with server.connect() as sock:
            local = f"tcp:127.0.0.1:{sock.getsockname()[1]}"
            sock.sendall(b"\xff\nquit\n")
            read_until_closed(sock)
        server.wait_for_log(CLOSED)
        server.stop()
        records = [json.loads(line) for line in server.log_text().splitlines()]
        story = [r for r in records if r.get("peer") == local]
        self.assertEqual(
            [(r["level"], r["message"]) for r in story],
            [
                ("info", f"[1] connection from {local}"),
                ("warn", f"[1] invalid UTF-8 from {local}"),
                (
                    "info",
                    f"[1] connection from {local} closed: {story[-1]['reason']} "
                    "(1 invalid UTF-8 lines)",
                ),
            ],
        )
        self.assertEqual({r["conn"] for r in story}, {"1"})
        self.assertIn("closed cleanly", story[-1]["reason"])

    def test_warn_level_drops_connections(self) -> None:
        # At warn the server does not log where it listens: it is handed a
        # socket already listening (as systemd would), so that no other
        # process can take its port first.
        listener = listening_socket()
        self.addCleanup(listener.close)
        server = ServerProcess(
            self.directory,
            "--listen",
            "systemd:domain=INET:index=0",
            "--log-format",
            "json",
            "--log-level",
            "warn",
            prelude=ACTIVATED,
            environment={
                "TEST_FD": str(listener.fileno()),
                "LISTEN_FDS": "1",
                "LISTEN_FDNAMES": "commandproto",
            },
            pass_fds=(listener.fileno(),),
            wait=False,
        )
        self.addCleanup(server.stop)
        with socket.create_connection(
            listener.getsockname(), timeout=IO_TIMEOUT
        ) as sock:
            sock.sendall(b"Hello\n\xff\n")
            self.assertEqual(
                read_exactly(sock, len(replies(GREETING, INVALID_UTF8))),
                replies(GREETING, INVALID_UTF8),
            )
        server.stop()
        levels = [json.loads(line)["level"] for line in server.log_text().splitlines()]
        self.assertEqual(levels, ["warn"])


def connect_when_up(port: int) -> socket.socket:
    """
    Connect to a loopback port as soon as something listens on it.
    """
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


# The child is systemd's: the passed socket at descriptor 3, and LISTEN_PID
# its own pid, which only the child knows.
ACTIVATED = (
    "import os, sys; fd = int(os.environ.pop('TEST_FD')); "
    "os.dup2(fd, 3); os.close(fd); "
    "os.environ['LISTEN_PID'] = str(os.getpid()); "
)


class SocketActivationTests(ProcessTestCase):
    """
    ``--listen systemd:...`` serves a socket that systemd passes.
    """

    def activated(self, sock: socket.socket, *listen: str) -> ServerProcess:
        server = ServerProcess(
            self.directory,
            *listen,
            prelude=ACTIVATED,
            environment={
                "TEST_FD": str(sock.fileno()),
                "LISTEN_FDS": "1",
                "LISTEN_FDNAMES": "commandproto",
            },
            pass_fds=(sock.fileno(),),
        )
        self.addCleanup(server.stop)
        return server

    def check_served(self, server: ServerProcess, port: int) -> None:
        self.assertEqual(server.port, port)
        with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as c:
            c.sendall(b"Hello\nquit\n")
            self.assertEqual(read_until_closed(c), replies(GREETING, CLOSING))

    def test_by_name(self) -> None:
        with listening_socket() as sock:
            port = sock.getsockname()[1]
            server = self.activated(
                sock, "--listen", "systemd:domain=INET:name=commandproto"
            )
        self.check_served(server, port)

    def test_by_index(self) -> None:
        with listening_socket() as sock:
            port = sock.getsockname()[1]
            server = self.activated(sock, "--listen", "systemd:domain=INET:index=0")
        self.check_served(server, port)

    def test_with_systemd_socket_activate(self) -> None:
        tool = shutil.which("systemd-socket-activate")
        if tool is None:
            self.skipTest("systemd-socket-activate is not installed")
        port = unused_port()
        server = ServerProcess(
            self.directory,
            "--listen",
            "systemd:domain=INET:name=commandproto",
            command=[
                tool,
                "--listen",
                f"127.0.0.1:{port}",
                "--fdname=commandproto",
                "-E",
                "PYTHONPATH",
                "-E",
                "PYTHONUNBUFFERED",
                "-E",
                "PATH",
            ],
            wait=False,
        )
        self.addCleanup(server.stop)
        # It starts the server at the first connection.
        with connect_when_up(port) as client:
            client.sendall(b"Hello\nquit\n")
            self.assertEqual(read_until_closed(client), replies(GREETING, CLOSING))


class NotifyTests(ProcessTestCase):
    """
    sd_notify on a datagram socket of the test's own.
    """

    def receiver(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(IO_TIMEOUT)
        return sock

    def start_notifying(self, notify_socket: str) -> ServerProcess:
        server = ServerProcess(
            self.directory, environment={"NOTIFY_SOCKET": notify_socket}
        )
        self.addCleanup(server.stop)
        return server

    def test_ready_then_stopping(self) -> None:
        path = os.path.join(self.directory, "notify")
        receiver = self.receiver(path)
        server = self.start_notifying(path)
        self.assertEqual(receiver.recv(100), b"READY=1")
        # Ready means listening.
        with server.connect() as sock:
            sock.sendall(b"Hello\n")
            self.assertEqual(sock.recv(100), replies(GREETING))
            server.signal(signal.SIGTERM)
            self.assertEqual(receiver.recv(100), b"STOPPING=1")
        server.process.wait(IO_TIMEOUT)

    def test_abstract_namespace(self) -> None:
        name = f"commandproto-test-{os.getpid()}-{time.monotonic_ns()}"
        receiver = self.receiver("\0" + name)
        self.start_notifying("@" + name)
        self.assertEqual(receiver.recv(100), b"READY=1")

    def test_watchdog(self) -> None:
        path = os.path.join(self.directory, "notify")
        receiver = self.receiver(path)
        server = ServerProcess(
            self.directory,
            environment={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"},
        )
        self.addCleanup(server.stop)
        messages = [receiver.recv(100) for _ in range(4)]
        self.assertEqual(messages[0], b"READY=1")
        self.assertEqual(messages[1:], [b"WATCHDOG=1"] * 3)
