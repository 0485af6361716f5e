"""
What ``--dashboard`` costs the commands: the server's CPU-seconds per
million commands and the requests per second, without and with the
dashboard (an open page's load: ``/stats`` once a second), in interleaved
rounds; and the server CPU time of one ``/stats`` rendering.

Usage: PYTHONPATH=. python benchmarks/dashboard.py [--rounds 5] [--requests 100000]
           [--pipeline 1]

Loopback only; every run is bounded by its request count and a timeout, the
poller by the run's length, and every process it starts is stopped before
it exits.  Server CPU is read from /proc (Linux only).  The load generator
runs on the same cores as the server, so CPU per command is the figure that
does not depend on how they share them.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import threading
import time
import urllib.request

from _harness import cpu_seconds, twistd_command
from workers import run_bench

LISTENING = re.compile(rb"listening on tcp:127\.0\.0\.1:(\d+)")
DASHBOARD = re.compile(rb"dashboard on tcp:127\.0\.0\.1:(\d+)")
POLL = 1.0
STATS_RENDERINGS = 2000


class Server:
    """
    ``twistd -n commandserver`` on OS-chosen loopback ports, with or without
    ``--dashboard``.
    """

    def __init__(self, dashboard: bool) -> None:
        options = ["--dashboard", "tcp:0:interface=127.0.0.1"] if dashboard else []
        self.process = subprocess.Popen(
            twistd_command(["tcp:0:interface=127.0.0.1"], options),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        self.port = self.dashboard = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            self.port and (self.dashboard or not dashboard)
        ):
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the server exited at start-up")
            for pattern, name in ((LISTENING, "port"), (DASHBOARD, "dashboard")):
                match = pattern.search(line)
                if match:
                    setattr(self, name, int(match.group(1)))
        if not self.port:
            raise RuntimeError("the server did not start")
        subprocess.Popen(["cat"], stdin=self.process.stdout, stdout=subprocess.DEVNULL)

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stats(self) -> bytes:
        url = f"http://127.0.0.1:{self.dashboard}/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Poller:
    """
    What an open dashboard page asks of the server: ``/stats`` once a
    second, until stopped.
    """

    def __init__(self, server: Server) -> None:
        self._server = server
        self._stop = threading.Event()
        self.polls = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self._server.stats()
            self.polls += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def measure(dashboard: bool, requests: int, pipeline: int) -> tuple[float, float]:
    """
    One run against a fresh server.

    :returns: server CPU-seconds per million commands, and requests per
        second.
    """
    server = Server(dashboard)
    poller = None
    try:
        run_bench(server.port, max(requests // 20, 1000), pipeline)
        if dashboard:
            poller = Poller(server)
        before = server.cpu()
        report = run_bench(server.port, requests, pipeline)
        used = server.cpu() - before
    finally:
        if poller is not None:
            poller.stop()
        server.stop()
    answered = float(report["requests"])  # type: ignore[arg-type]
    return used / answered * 1e6, float(report["rps"])  # type: ignore[arg-type]


def stats_cost() -> float:
    """
    Server CPU milliseconds per ``/stats`` request (HTTP included), after
    some traffic, from one client asking in a row.
    """
    server = Server(True)
    try:
        run_bench(server.port, 20000, 1)
        with contextlib.suppress(Exception):
            server.stats()
        before = server.cpu()
        for _ in range(STATS_RENDERINGS):
            server.stats()
        used = server.cpu() - before
    finally:
        server.stop()
    return used / STATS_RENDERINGS * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--pipeline", type=int, default=1)
    arguments = parser.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(arguments.rounds):
        for dashboard in (False, True):
            results[dashboard].append(
                measure(dashboard, arguments.requests, arguments.pipeline)
            )
    print(
        f"50 clients, pipeline {arguments.pipeline}, {arguments.requests} "
        f"requests, median of {arguments.rounds} interleaved rounds"
    )
    print(f"{'':<32} {'CPU-s per 1M':>13} {'req/s':>10}")
    for dashboard, name in ((False, "without --dashboard"), (True, "with a page open")):
        cpu = statistics.median(r[0] for r in results[dashboard])
        rps = statistics.median(r[1] for r in results[dashboard])
        print(f"{name:<32} {cpu:>13.2f} {rps:>10,.0f}")
    ratios = [
        with_[0] / without[0]
        for without, with_ in zip(results[False], results[True], strict=True)
    ]
    print(f"CPU per command, with / without: median {statistics.median(ratios):.3f}")
    print(f"server CPU per /stats request: {stats_cost():.3f} ms")


if __name__ == "__main__":
    main()
