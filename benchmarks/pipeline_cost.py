"""
Server CPU per request of pipelining clients, revision beside revision: what
a change to how the server batches pipelined input costs.

For each load (``Hello`` and ``echo``, 64 and 1,024 requests in flight on
each of 50 connections) and each revision, in interleaved rounds: a fresh
``twistd -n commandserver --commands commandproto.benchcommands`` pinned to
CPU 0, ``python -m commandproto.bench -n N`` pinned to CPU 1, and the
server's CPU time (user + system, ``/proc/PID/stat``) over the run divided
by N.  Printed: each revision's median, and the median over the rounds of
each round's ratio to the first revision (so that a slow minute on a shared
machine hits both sides of a ratio alike).  Loopback only; every run is
bounded by its request count and a timeout.

Run from a clone (a revision is a checkout's path or a git revision)::

    python benchmarks/pipeline_cost.py --commandproto main=. --commandproto new=PATH
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _harness
from _harness import (
    ROOT,
    TWISTD_LISTENING,
    ServerProcess,
    choose_cpus,
    environment_for,
    log,
    pin,
    twistd_command,
)

LOADS = [
    ("Hello", 64, 3_000_000),
    ("Hello", 1024, 3_000_000),
    ("echo the quick brown fox", 64, 1_000_000),
    ("echo the quick brown fox", 1024, 1_000_000),
]
"""(command, requests in flight per connection, requests in all)"""

CLIENTS = 50


def one_run(
    tree: Path,
    line: str,
    depth: int,
    requests: int,
    cpus: tuple[int | None, int | None],
) -> tuple[float, float]:
    """
    :returns: server CPU microseconds per request, and requests per second.
    """
    server_cpu, client_cpu = cpus
    with tempfile.TemporaryDirectory(prefix="pipeline-cost-") as directory:
        server = ServerProcess(
            twistd_command(
                ["tcp:0:interface=127.0.0.1"],
                ["--commands", "commandproto.benchcommands"],
            ),
            Path(directory) / "server.log",
            environment=environment_for(tree),
            cwd=Path(directory),
            cpu=server_cpu,
            listeners=1,
            pattern=TWISTD_LISTENING,
        )
        try:
            before = server.cpu_seconds()
            bench = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "commandproto.bench",
                    "--port",
                    str(server.port),
                    "-c",
                    str(CLIENTS),
                    "-P",
                    str(depth),
                    "-t",
                    line,
                    "-n",
                    str(requests),
                    "--timeout",
                    "10",
                    "--json",
                ],
                capture_output=True,
                timeout=300,
                env=environment_for(ROOT),
                cwd=ROOT,
                preexec_fn=pin(client_cpu),
                check=True,
            )
            used = server.cpu_seconds() - before
        finally:
            server.stop()
    return 1e6 * used / requests, float(json.loads(bench.stdout)["rps"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--commandproto",
        action="append",
        metavar="LABEL=WHERE",
        default=[],
        help="a revision to measure (a path or a git revision); repeatable; the "
        "first is the one the others are compared with",
    )
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    server_cpu, client_cpu, pinning = choose_cpus("the generator", "generator")
    log(pinning)
    archives = Path(tempfile.mkdtemp(prefix="pipeline-cost-trees-"))
    try:
        trees: dict[str, Path] = {}
        for entry in arguments.commandproto or [f"this={ROOT}"]:
            label, equals, where = entry.partition("=")
            if not (label and equals):
                parser.error(f"--commandproto {entry!r}: want LABEL=WHERE")
            try:
                trees[label] = _harness.resolve_tree(where, archives)[0]
            except ValueError as e:
                parser.error(f"--commandproto {entry!r}: {e}")
        found: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
        for round_number in range(arguments.rounds):
            for line, depth, requests in LOADS:
                for label, tree in trees.items():
                    us, rps = one_run(
                        tree, line, depth, requests, (server_cpu, client_cpu)
                    )
                    found.setdefault((line, depth, label), []).append((us, rps))
                    log(
                        f"round {round_number + 1} {line.split()[0]} -P {depth} "
                        f"{label}: {us:.3f} us/request, {rps:,.0f} req/s"
                    )
    finally:
        shutil.rmtree(archives, ignore_errors=True)
    first = next(iter(trees))
    for (line, depth, label), runs in found.items():
        base = found[(line, depth, first)]
        ratios = [a[0] / b[0] for a, b in zip(runs, base, strict=True)]
        print(
            f"{line.split()[0]:5} -P {depth:>4} {label:10} "
            f"{statistics.median(r[0] for r in runs):.3f} us/request, "
            f"x {statistics.median(ratios):.2f} of {first} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}), "
            f"{statistics.median(r[1] for r in runs):,.0f} req/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
