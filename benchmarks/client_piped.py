"""
The command-line client's piped mode beside ``redis-cli --pipe``: the time
to pipe ``--lines`` lines (``Hello``; redis-cli ``PING``), start-up
included, and the client's peak memory.

Each server runs pinned to one CPU, each client to the other; rounds are
interleaved (every client once per round).  A client is timed as a whole
process (``commandproto --raw < FILE > FILE``, ``redis-cli --pipe < FILE``);
its CPU time and peak RSS come from the kernel's accounting of the finished
process (``wait4``).  The script prints medians, and each client's time as
a ratio to redis-cli's, round by round.

``--before REV`` adds the client of another checkout or git revision (the
same server).  ``--nodelay-server`` adds a run against a commandproto
server that sets ``TCP_NODELAY`` on the connections it accepts (as
redis-server does), set by a few lines run before twistd, to show what the
server's Nagle costs the client's piped mode.

Run from a clone (redis-server and redis-cli installed)::

    python benchmarks/client_piped.py [--lines 1000000] [--rounds 5]

Everything is bounded: a fixed count of lines, each process a timeout; only
loopback is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    ROOT,
    TWISTD,
    TWISTD_LISTENING,
    ServerProcess,
    environment_for,
    free_port,
    pin,
    probe,
    redis_server_command,
    resolve_tree,
    simple_table,
    stopping,
)

TIMEOUT = 120.0
TIME = "/usr/bin/time"

NODELAY = (
    "import twisted.internet.tcp as tcp; "
    "_init = tcp.Server.__init__; "
    "tcp.Server.__init__ = lambda self, *a, **k: "
    "(_init(self, *a, **k), self.setTcpNoDelay(True))[0]; "
)


def run_client(
    command: list[str], stdin: Path, environment: dict[str, str], cpu: int
) -> tuple[float, float, int, bytes]:
    """
    Run one client to its end, under ``/usr/bin/time``: a child forked from
    this (larger) Python process would report this process's memory as its
    peak, while ``time``, small, reports its own child's.

    :returns: wall seconds, CPU seconds, peak RSS in KiB, and its output.
    """
    with (
        open(stdin, "rb") as source,
        tempfile.TemporaryFile() as output,
        tempfile.NamedTemporaryFile("r") as figures,
    ):
        start = time.perf_counter()
        process = subprocess.run(
            [TIME, "-q", "-o", figures.name, "-f", "%M %U %S", *command],
            stdin=source,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=tempfile.gettempdir(),
            preexec_fn=pin(cpu),
            timeout=TIMEOUT,
        )
        wall = time.perf_counter() - start
        output.seek(0)
        text = output.read()
        rss, user, system = figures.read().split()[-3:]
    if process.returncode != 0:
        raise SystemExit(f"{command} exited {process.returncode}: {text[-300:]!r}")
    return wall, float(user) + float(system), int(rss), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", help="another checkout or git revision")
    parser.add_argument("--nodelay-server", action="store_true")
    arguments = parser.parse_args()
    lines = min(max(arguments.lines, 1), 10_000_000)
    rounds = min(max(arguments.rounds, 1), 20)
    for program in ("redis-server", "redis-cli", TIME):
        if shutil.which(program) is None:
            raise SystemExit(
                f"{program} is not installed: apt install redis-server time"
            )

    with tempfile.TemporaryDirectory(prefix="client-piped-") as directory:
        work = Path(directory)
        hello = work / "hello.txt"
        hello.write_bytes(b"Hello\n" * lines)
        pings = work / "pings.resp"
        pings.write_bytes(b"*1\r\n$4\r\nPING\r\n" * lines)
        here = environment_for(ROOT)

        def commandproto_server(prelude: str, name: str) -> ServerProcess:
            command = [
                sys.executable,
                "-c",
                prelude + TWISTD,
                "-n",
                "--pidfile=",
                "commandserver",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ]
            return ServerProcess(
                command,
                work / f"{name}.log",
                environment=here,
                cwd=work,
                cpu=0,
                pattern=TWISTD_LISTENING,
                serving=probe(b"Hello\r\n", b"Greetings!\r\n"),
                name=name,
            )

        redis_port = free_port()
        redis = ServerProcess(
            redis_server_command(redis_port),
            work / "redis.log",
            environment=dict(os.environ),
            cwd=work,
            cpu=0,
            port=redis_port,
            serving=probe(b"PING\r\n", b"+PONG\r\n"),
            name="redis-server",
        )
        with stopping(redis), stopping(commandproto_server("", "server")) as server:
            clients: dict[str, tuple[list[str], Path, dict[str, str]]] = {}
            client = [sys.executable, "-m", "commandproto.client", "--raw"]
            clients["commandproto --raw"] = (
                [*client, "--port", str(server.port)],
                hello,
                here,
            )
            if arguments.before:
                tree, described = resolve_tree(arguments.before, work / "trees")
                clients[f"commandproto --raw, {described}"] = (
                    [*client, "--port", str(server.port)],
                    hello,
                    environment_for(tree),
                )
            nodelay = None
            if arguments.nodelay_server:
                nodelay = commandproto_server(NODELAY, "nodelay-server")
                clients["commandproto --raw, server with TCP_NODELAY"] = (
                    [*client, "--port", str(nodelay.port)],
                    hello,
                    here,
                )
            clients["redis-cli --pipe"] = (
                ["redis-cli", "-p", str(redis_port), "--pipe"],
                pings,
                dict(os.environ),
            )
            results: dict[str, list[tuple[float, float, int]]] = {
                name: [] for name in clients
            }
            try:
                for round_ in range(rounds):
                    for name, (command, stdin, environment) in clients.items():
                        wall, cpu, rss, text = run_client(
                            command, stdin, environment, 1
                        )
                        if name.startswith("redis"):
                            ok = f"errors: 0, replies: {lines}".encode() in text
                        else:
                            ok = text.count(b"Greetings!\n") == lines
                        if not ok:
                            raise SystemExit(f"{name}: wrong output {text[-200:]!r}")
                        results[name].append((wall, cpu, rss))
                        print(
                            f"round {round_ + 1} {name}: {wall:.2f} s, "
                            f"{cpu:.2f} s CPU, {rss / 1024:.1f} MiB",
                            file=sys.stderr,
                        )
            finally:
                if nodelay is not None:
                    nodelay.stop()

    reference = results["redis-cli --pipe"]
    rows = []
    for name, runs in results.items():
        ratios = [run[0] / ref[0] for run, ref in zip(runs, reference, strict=True)]
        rows.append(
            [
                name,
                f"{statistics.median(r[0] for r in runs):.2f} s",
                f"{statistics.median(r[1] for r in runs):.2f} s",
                f"{statistics.median(r[2] for r in runs) / 1024:.1f} MiB",
                f"{statistics.median(ratios):.2f}",
            ]
        )
    print(
        f"{rounds} interleaved rounds of {lines:,} piped lines; servers on CPU 0, "
        f"clients on CPU 1; Python {sys.version.split()[0]}; medians"
    )
    print(
        simple_table(
            ["client", "time", "client CPU", "peak RSS", "time vs redis-cli"], rows
        )
    )


if __name__ == "__main__":
    main()
