"""
What ``--workers`` costs and gives: the server's CPU-seconds per million
commands, and the requests per second, at each number of workers, for 50
clients request/response and 50 clients pipelining 64, with
``python -m commandproto.bench`` as the load on the same machine.

Usage: python benchmarks/workers.py [--workers 1,2] [--rounds 3]
           [--requests 200000] [--pipelined-requests 2000000]

Loopback only; every run is bounded by its request count and a timeout, and
every process it starts is stopped before it exits.  Server CPU is read from
/proc (user + system time of the supervisor and every worker), so Linux
only.  The load generator runs on the same cores as the server: on a machine
with few cores the requests per second say how the two share them, not what
the server could do alone; CPU per command is the figure that does not
depend on that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _harness import (
    TWISTD_LISTENING,
    ServerProcess,
    children,
    cpu_seconds,
    twistd_command,
)

RUN_TIMEOUT = 300.0


class Server(ServerProcess):
    """
    ``twistd -n commandserver --workers N`` on an OS-chosen loopback port,
    its log in a file of ``directory``.

    :ivar pids: the supervisor's and, with several workers, each worker's.
    """

    def __init__(self, workers: int, directory: Path) -> None:
        super().__init__(
            twistd_command(
                ["tcp:0:interface=127.0.0.1"],
                ["--workers", str(workers), "--idle-timeout", "0"],
            ),
            directory / "server.log",
            environment={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=Path.cwd(),
            listeners=workers,
            pattern=TWISTD_LISTENING,
            name="the server",
        )
        self.pids = [self.pid]
        if workers > 1:
            self.pids += children(self.pid)

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def stop(self, timeout: float = 30.0, also: Sequence[int] = ()) -> None:
        super().stop(timeout, [*also, *getattr(self, "pids", ())])


def run_bench(port: int, requests: int, pipeline: int) -> dict[str, object]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "commandproto.bench",
            "--port",
            str(port),
            "-c",
            "50",
            "-n",
            str(requests),
            "-P",
            str(pipeline),
            "--json",
        ],
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout)
    return report


def measure(workers: int, requests: int, pipeline: int) -> tuple[float, float]:
    """
    One run against a fresh server.

    :returns: server CPU-seconds per million commands, and requests per
        second.
    """
    with tempfile.TemporaryDirectory(prefix="workers-") as directory:
        return _measure(Server(workers, Path(directory)), requests, pipeline)


def _measure(server: Server, requests: int, pipeline: int) -> tuple[float, float]:
    try:
        # Warm up (connections, caches) before measuring.
        run_bench(server.port, max(requests // 20, 1000), pipeline)
        before = server.cpu()
        report = run_bench(server.port, requests, pipeline)
        used = server.cpu() - before
    finally:
        server.stop()
    answered = float(report["requests"])  # type: ignore[arg-type]
    return used / answered * 1e6, float(report["rps"])  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--pipelined-requests", type=int, default=2_000_000)
    arguments = parser.parse_args()
    counts = [int(n) for n in arguments.workers.split(",")]
    scenarios = [
        ("50 clients request/response", 1, arguments.requests),
        ("50 clients pipelining 64", 64, arguments.pipelined_requests),
    ]
    print(f"{os.cpu_count()} CPUs; load generator on the same machine")
    print(f"{'scenario':<30} {'workers':>7} {'CPU-s per 1M':>13} {'req/s':>10}")
    for name, pipeline, requests in scenarios:
        for workers in counts:
            # Interleaved rounds would be fairer; rounds in a row are simpler
            # and the medians are stable enough here.
            results = [
                measure(workers, requests, pipeline) for _ in range(arguments.rounds)
            ]
            cpu = statistics.median(r[0] for r in results)
            rps = statistics.median(r[1] for r in results)
            print(f"{name:<30} {workers:>7} {cpu:>13.2f} {rps:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
