"""
``--workers``, against the real ``twistd -n commandserver``: a supervisor
and its workers sharing TCP (``SO_REUSEPORT``) and unix listeners, restarts,
the drain on SIGTERM, and workers that outlive no supervisor.  Loopback and
temporary unix sockets only; every wait bounded.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import CLOSING, GREETING
from commandproto.ops.workers import parse_workers, share
from commandproto.server.stats import parse_pairs

from ._helpers import replies
from ._processes import IO_TIMEOUT, ServerProcess, read_exactly, read_until_closed
from .test_hardening import HardeningTestCase

WORKER_LISTENING = re.compile(r"listening on tcp:127\.0\.0\.1:\d+")


def children(pid: int) -> list[int]:
    """
    A process's child processes, from /proc.
    """
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def kill_if_alive(pids: list[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def wait_until(condition: object, timeout: float = IO_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def hello(server: ServerProcess) -> bytes:
    with server.connect() as sock:
        sock.sendall(b"Hello\n")
        return read_exactly(sock, len(replies(GREETING)))


class WorkerOptionTests(SynchronousTestCase):
    """
    ``--workers N|auto`` and the limits' shares.
    """

    def test_auto_is_the_cpus(self) -> None:
        self.assertEqual(parse_workers("auto"), len(os.sched_getaffinity(0)))

    def test_number(self) -> None:
        self.assertEqual(parse_workers("3"), 3)

    def test_bad_values(self) -> None:
        for value in ("0", "-1", "two"):
            with self.assertRaises(ValueError):
                parse_workers(value)

    def test_shares_never_exceed_the_total(self) -> None:
        self.assertEqual(share(10000, 3), 3333)
        self.assertEqual(share(4, 4), 1)

    def test_less_than_one_each_cannot_be_shared(self) -> None:
        self.assertRaises(ValueError, share, 1, 4)


class WorkerProcessTests(HardeningTestCase):
    """
    A supervisor and two workers.
    """

    def start_workers(self, *options: str) -> tuple[ServerProcess, list[int]]:
        server = self.start_server("--workers", "2", *options)
        # The first worker's "listening on" started the helper; wait for the
        # second's.
        server.wait_for_log(WORKER_LISTENING)
        workers = children(server.process.pid)
        self.assertEqual(len(workers), 2)
        self.addCleanup(kill_if_alive, workers)
        return server, workers

    def test_two_workers_serve_one_port(self) -> None:
        server, workers = self.start_workers()
        for _ in range(20):
            self.assertEqual(hello(server), replies(GREETING))
        # Each worker has its own listening socket on the port.
        for pid in workers:
            self.assertIn(f"(pid {pid})", server.log_text())

    def test_metrics_and_stats_cover_every_worker(self) -> None:
        server, _ = self.start_workers("--metrics", "tcp:0:interface=127.0.0.1")
        line = server.expect_log(
            re.compile(r"metrics on tcp:127\.0\.0\.1:(\d+) at /metrics")
        )
        metrics_port = int(re.findall(r":(\d+) at /metrics", line)[0])
        for _ in range(12):
            self.assertEqual(hello(server), replies(GREETING))

        def scraped_hellos() -> float:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as response:
                text = response.read().decode()
            found = re.search(
                r'^commandproto_commands_total\{command="Hello",outcome="ok"\} (\S+)$',
                text,
                re.M,
            )
            return float(found.group(1)) if found else 0.0

        # Snapshots are at most a second old: wait for them, boundedly.
        wait_until(lambda: scraped_hellos() == 12)

        def stats() -> dict[str, str]:
            with server.connect() as sock:
                sock.sendall(b"stats\n")
                data = b""
                while not data.endswith(b"\r\n"):
                    chunk = sock.recv(4096)
                    self.assertTrue(chunk, data)
                    data += chunk
            return parse_pairs(data.decode().strip())

        wait_until(lambda: int(stats()["commands"]) >= 12)
        self.assertIn(stats()["worker"], ("1", "2"))

    def test_unix_socket_is_shared(self) -> None:
        path = os.path.join(self.directory, "s.sock")
        server = self.start_server("--workers", "2", "--listen", f"unix:{path}")
        server.wait_for_log(re.compile("listening on unix:"))
        for _ in range(10):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(IO_TIMEOUT)
                sock.connect(path)
                sock.sendall(b"Hello\n")
                self.assertEqual(
                    read_exactly(sock, len(replies(GREETING))), replies(GREETING)
                )

    def test_dead_worker_is_restarted(self) -> None:
        server, workers = self.start_workers()
        os.kill(workers[0], signal.SIGKILL)
        server.wait_for_log(re.compile(rf"\(pid {workers[0]}\) died: .*restarting"))
        line = server.wait_for_log(re.compile(r"started worker \d of 2 \(pid \d+\)"))
        server.wait_for_log(WORKER_LISTENING)
        new = int(re.findall(r"pid (\d+)", line)[0])
        self.assertEqual(
            sorted(children(server.process.pid)), sorted([workers[1], new])
        )
        for _ in range(10):
            self.assertEqual(hello(server), replies(GREETING))

    def test_sigterm_drains_every_worker(self) -> None:
        server, workers = self.start_workers()
        clients = [server.connect() for _ in range(8)]
        try:
            for sock in clients:
                sock.sendall(b"Hello\n" * 2000)
                read_exactly(sock, len(replies(GREETING)))
            server.signal(signal.SIGTERM)
            for sock in clients:
                received = replies(GREETING) + read_until_closed(sock)
                self.assertEqual(received, replies(GREETING) * 2000 + replies(CLOSING))
        finally:
            for sock in clients:
                sock.close()
        self.assertEqual(server.process.wait(timeout=IO_TIMEOUT), -signal.SIGTERM)
        for pid in workers:
            self.assertFalse(alive(pid))

    def test_workers_drain_when_the_supervisor_dies(self) -> None:
        server, workers = self.start_workers()
        with server.connect() as sock:
            sock.sendall(b"Hello\n")
            read_exactly(sock, len(replies(GREETING)))
            server.signal(signal.SIGKILL)
            self.assertEqual(read_until_closed(sock), replies(CLOSING))
        for pid in workers:
            wait_until(lambda pid=pid: not alive(pid))
