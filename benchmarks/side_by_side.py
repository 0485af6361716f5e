"""
commandproto side by side with what people would use instead.

Starts each server pinned to CPU 0, drives them all with the same generator
(``python -m commandproto.bench``) pinned to CPU 1, in interleaved rounds
(A B C D, A B C D, ...), and writes medians and ratios to
``docs/benchmarks.rst`` between its ``.. results`` markers.

Servers:
  - commandproto, as ``twistd -n commandserver`` with its defaults;
  - a plain Twisted LineReceiver of the same protocol: the floor;
  - asyncio streams, asyncio.Protocol, and asyncio.Protocol on uvloop
    (where uvloop is installed);
  - redis-server answering inline PING (where it is installed);
  - the seed's blocking server, which serves one client at a time.

Scenarios: 1 client request/response; 50 clients request/response; 50
clients pipelining 64 deep; for commandproto trees that have
``commandproto/benchcommands.py`` (their server then runs with ``--commands
commandproto.benchcommands``), 50 clients pipelining 64 deep an ``async
def`` command (``aping``) and a mix (``-t mix``: the seed's commands, an
unknown line and ``echo hi``), each compared with the same server's constant
path in the same run; 10,000 idle connections (server memory per
connection); and the client's piped mode (lines per second through
``python -m commandproto.client`` into /dev/null).

Everything is bounded: each load run by --duration, each process by a
timeout, the idle connections by a count.  Only loopback is used.

Run from a clone:
    python3 -m venv .venv && .venv/bin/pip install '.[bench]'
    .venv/bin/python benchmarks/side_by_side.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    ROOT,
    ServerProcess,
    choose_cpus,
    describe_machine,
    free_port,
    git_commit,
    log,
    number,
    pin,
    probe,
    read_exactly,
    redis_server_command,
    resolve_tree,
    simple_table,
    twistd_command,
    write_docs,
)

# A JSON report: the generator's, or a measurement's.
Report = dict[str, Any]

SERVERS = ROOT / "benchmarks" / "servers"
DOCS = ROOT / "docs" / "benchmarks.rst"
BEGIN = ".. results begin (written by benchmarks/side_by_side.py)"
END = ".. results end"

# Request lines and the replies they must get, for the generator's -t.
HELLO = "Hello"
PING = "PING=+PONG"


@dataclass
class ServerSpec:
    """
    A server to compare.

    :ivar name: short name, used in tables.
    :ivar description: what it is, for the docs.
    :ivar command: its command line, given a port (0: it picks).
    :ivar mix: the generator's -t for it.
    :ivar announces: whether it prints ``listening on PORT``, or is given a
        port.
    :ivar serves_many: whether it can hold many connections at once.
    :ivar tree: for commandproto, the checkout it runs from.
    :ivar bench_commands: it serves :mod:`commandproto.benchcommands`, so
        the scenarios with their own mix apply.
    :ivar kv: it serves ``benchmarks/kvbench.py``, for ``--set-get``.
    """

    name: str
    description: str
    command: Callable[[int], list[str]]
    mix: str = HELLO
    announces: bool = True
    serves_many: bool = True
    environment: dict[str, str] = field(default_factory=dict)
    tree: Path | None = None
    bench_commands: bool = False
    kv: bool = False


def commandproto_spec(label: str, tree: Path, origin: str) -> ServerSpec:
    """
    commandproto as people run it, from one checkout; with the benchmark
    commands where the checkout has them.

    :param origin: where that checkout came from, for the docs.
    """
    bench_commands = (tree / "commandproto" / "benchcommands.py").is_file()
    extra = ["--commands", "commandproto.benchcommands"] if bench_commands else []
    served = ", serving ``--commands commandproto.benchcommands``" if extra else ""
    if "max-connections-per-ip" in (tree / "commandproto" / "tap.py").read_text():
        # Every benchmark client comes from 127.0.0.1.
        extra += ["--max-connections-per-ip", "0"]
        served += " and ``--max-connections-per-ip 0``"
    return ServerSpec(
        label,
        f"``twistd -n commandserver`` from {origin}, every protection at its "
        f"defaults{served}",
        serving_with(extra),
        environment={"PYTHONPATH": str(tree)},
        tree=tree,
        bench_commands=bench_commands,
    )


def server_specs(
    trees: list[tuple[str, Path, str]], idle_connections: int
) -> list[ServerSpec]:
    """
    The servers this machine can run: commandproto (one for each tree
    asked for), then the floor, then the others.
    """
    python = sys.executable
    specs = [commandproto_spec(*tree) for tree in trees]
    specs += [
        ServerSpec(
            "LineReceiver",
            "a plain Twisted ``LineReceiver``, the same protocol and nothing "
            "else (the floor)",
            lambda port: [
                python,
                str(SERVERS / "linereceiver_server.py"),
                "--port",
                str(port),
            ],
        ),
        ServerSpec(
            "asyncio streams",
            "``asyncio.start_server``: ``readline``, ``write``, ``drain``",
            lambda port: [
                python,
                str(SERVERS / "asyncio_streams_server.py"),
                "--port",
                str(port),
            ],
        ),
        ServerSpec(
            "asyncio.Protocol",
            "an ``asyncio.Protocol``, one write per read",
            lambda port: [
                python,
                str(SERVERS / "asyncio_protocol_server.py"),
                "--port",
                str(port),
            ],
        ),
    ]
    if importlib.util.find_spec("uvloop") is not None:
        specs.append(
            ServerSpec(
                "asyncio.Protocol+uvloop",
                "the same ``asyncio.Protocol`` on uvloop "
                f"{importlib.metadata.version('uvloop')}",
                lambda port: [
                    python,
                    str(SERVERS / "asyncio_protocol_server.py"),
                    "--port",
                    str(port),
                    "--uvloop",
                ],
            )
        )
    redis = shutil.which("redis-server")
    if redis is not None:
        specs.append(
            ServerSpec(
                "redis-server",
                f"{redis_version(redis)}, answering inline ``PING`` "
                "(no persistence): the C reference",
                lambda port: redis_server_command(
                    port,
                    "--daemonize",
                    "no",
                    "--maxclients",
                    str(idle_connections + 100),
                    "--loglevel",
                    "warning",
                    program=redis,
                ),
                mix=PING,
                announces=False,
            )
        )
    specs.append(
        ServerSpec(
            "blocking (seed)",
            "the seed's blocking socket server, line-framed, serving one "
            "client at a time",
            lambda port: [
                python,
                str(SERVERS / "blocking_server.py"),
                "--port",
                str(port),
            ],
            serves_many=False,
        )
    )
    return specs


def redis_version(redis: str) -> str:
    output = subprocess.run(
        [redis, "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    match = re.search(r"v=(\S+)", output)
    return f"redis-server {match.group(1)}" if match else "redis-server"


class RunningServer(ServerProcess):
    """
    A server of the comparison, pinned, with its output going to a file,
    answering its mix's first request.
    """

    def __init__(self, spec: ServerSpec, cpu: int | None, directory: Path) -> None:
        self.spec = spec
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        path = os.pathsep.join(
            [spec.environment.get("PYTHONPATH", str(ROOT)), str(ROOT)]
        )
        environment["PYTHONPATH"] = path
        port = None if spec.announces else free_port()
        super().__init__(
            spec.command(port or 0),
            directory / f"{re.sub(r'[^a-z]+', '-', spec.name.lower())}.log",
            environment=environment,
            cwd=directory,
            cpu=cpu,
            port=port,
            serving=probe(*request_and_reply(spec.mix)),
            name=spec.name,
        )

    def stop(self, timeout: float = 10.0, also: Sequence[int] = ()) -> None:
        super().stop(timeout, also)


def request_and_reply(mix: str) -> tuple[bytes, bytes]:
    """
    The first request of a mix and its reply, through commandproto's own
    table and codec.
    """
    sys.path.insert(0, str(ROOT))
    from commandproto.bench.runner import expected_replies
    from commandproto.bench.workload import parse_mix
    from commandproto.wire.codec import encode_line

    first = parse_mix(mix, expected_replies())[0]
    return encode_line(first.line), encode_line(first.reply)


@contextlib.contextmanager
def running(
    spec: ServerSpec, cpu: int | None, directory: Path
) -> Iterator[RunningServer]:
    server = RunningServer(spec, cpu, directory)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Scenario:
    """
    A load scenario: the generator's clients and pipeline depth.

    :ivar mix: the generator's -t, for commandproto servers that serve the
        benchmark commands only; ``None`` for each server's own mix.
    """

    key: str
    title: str
    clients: int
    pipeline: int
    mix: str | None = None

    def applies_to(self, spec: ServerSpec) -> bool:
        return self.mix is None or spec.bench_commands


CONSTANT = "50x64"
"""
The scenario that the ones with their own mix are compared with: the same
server's constant path, in the same run.
"""

LOAD_SCENARIOS = [
    Scenario("1x1", "1 client, request/response", 1, 1),
    Scenario("50x1", "50 clients, request/response", 50, 1),
    Scenario(CONSTANT, "50 clients, pipelining 64 deep", 50, 64),
    Scenario(
        "50x64-async",
        "50 clients, pipelining 64 deep an async command (``-t aping``)",
        50,
        64,
        mix="aping",
    ),
    Scenario(
        "50x64-mix",
        "50 clients, pipelining 64 deep a mix (``-t mix``)",
        50,
        64,
        mix="mix",
    ),
]


def run_load(
    server: RunningServer, scenario: Scenario, duration: float, cpu: int | None
) -> Report:
    """
    One generator run against one server.

    :returns: the generator's JSON report, with the server's CPU use (over
        the generator's whole life, connecting included) and the generator's
        (over the measured time) added; or the failure.
    """
    command = [
        sys.executable,
        "-m",
        "commandproto.bench",
        "--port",
        str(server.port),
        "-c",
        str(scenario.clients),
        "-P",
        str(scenario.pipeline),
        "-t",
        scenario.mix or server.spec.mix,
        "--duration",
        str(duration),
        "--timeout",
        "10",
        "--json",
    ]
    return run_generator(server, command, duration, cpu)


def run_generator(
    server: RunningServer, command: list[str], duration: float, cpu: int | None
) -> Report:
    """
    Run a generator that prints ``python -m commandproto.bench --json``'s
    report, pinned to ``cpu``, and add the server's CPU use to its report.

    :returns: the report, or the failure.
    """
    server_before = server.cpu_seconds()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration + 60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            preexec_fn=pin(cpu),
        )
    except subprocess.TimeoutExpired:
        return {"error": "the generator timed out"}
    server_cpu = server.cpu_seconds() - server_before
    if result.returncode != 0:
        return {"error": f"exit {result.returncode}: {result.stderr.strip()}"}
    report: Report = json.loads(result.stdout)
    seconds = float(report["seconds"])
    requests = int(report["requests"])
    report["server_cpu_percent"] = 100 * server_cpu / seconds if seconds else 0.0
    report["server_us_per_request"] = 1e6 * server_cpu / requests if requests else 0.0
    generator_cpu = float(report["cpu_seconds"])
    report["generator_cpu_percent"] = 100 * generator_cpu / seconds if seconds else 0.0
    return report


def raise_file_limit(wanted: int) -> int:
    """
    Raise this process's open-file limit (inherited by the servers) as far
    as the hard limit allows.

    :returns: how many idle connections that leaves room for.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 200 if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return min(wanted, target - 200)


def measure_idle(server: RunningServer, connections: int, batch: int = 100) -> Report:
    """
    Server memory per idle connection: RSS before, then open the
    connections in batches, each answering one request (so the server has
    accepted and served it), then RSS again.
    """
    request, reply = request_and_reply(server.spec.mix)
    time.sleep(0.5)
    before = server.rss_kib()
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < connections:
            fresh = [
                socket.create_connection(("127.0.0.1", server.port), timeout=10)
                for _ in range(min(batch, connections - len(sockets)))
            ]
            sockets += fresh
            for s in fresh:
                s.sendall(request)
            for s in fresh:
                if read_exactly(s, len(reply)) != reply:
                    return {"error": "a connection got the wrong reply"}
        time.sleep(1.0)
        after = server.rss_kib()
    except OSError as e:
        return {"error": f"after {len(sockets)} connections: {e}"}
    finally:
        for s in sockets:
            s.close()
    return {
        "connections": connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / connections,
    }


def client_supports_raw(environment: dict[str, str], tree: Path) -> bool:
    output = subprocess.run(
        [sys.executable, "-m", "commandproto.client", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
        cwd=tree,
    ).stdout
    return "--raw" in output


def measure_client(
    server: RunningServer, lines_file: Path, lines: int, cpu: int | None
) -> Report:
    """
    Lines per second through ``python -m commandproto.client`` with piped
    input and output to /dev/null, start-up included.
    """
    assert server.spec.tree is not None
    environment = {**os.environ, "PYTHONPATH": str(server.spec.tree)}
    raw = client_supports_raw(environment, server.spec.tree)
    command = [sys.executable, "-m", "commandproto.client", "--port", str(server.port)]
    if raw:
        command.append("--raw")
    mode = "--raw" if raw else "default output"
    with open(lines_file, "rb") as stdin:
        start = time.perf_counter()
        try:
            result = subprocess.run(
                command,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=300,
                env=environment,
                # python -m puts the working directory first on the path:
                # run from the tree, so that it is that tree's client.
                cwd=server.spec.tree,
                preexec_fn=pin(cpu),
            )
        except subprocess.TimeoutExpired:
            return {"error": "the client timed out", "mode": mode}
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        return {
            "error": f"exit {result.returncode}: {result.stderr.decode().strip()}",
            "mode": mode,
        }
    return {
        "lines": lines,
        "seconds": seconds,
        "lines_per_second": lines / seconds,
        "mode": mode,
    }


# Reports.


def good(reports: Sequence[Report]) -> list[Report]:
    """
    The reports of runs that did not fail.
    """
    return [r for r in reports if "error" not in r]


def median_of(reports: Sequence[Report], key: str) -> float | None:
    values = [float(r[key]) for r in reports if key in r]
    return statistics.median(values) if values else None


def latency_of(reports: Sequence[Report], key: str) -> float | None:
    values = [float(r["latency_ms"][key]) for r in reports if "latency_ms" in r]
    return statistics.median(values) if values else None


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.2f}"


def load_table(
    scenario: Scenario,
    results: dict[str, list[Report]],
    names: list[str],
    constant: dict[str, list[Report]],
) -> str:
    """
    A scenario's table.  Where the scenario has its own mix, the ratios are
    to the same server's constant path (``constant``) instead of to the floor
    and to redis-server.
    """
    floor = median_of(results.get("LineReceiver", []), "rps")
    redis = median_of(results.get("redis-server", []), "rps")
    rows = []
    for name in names:
        if scenario.mix is not None and name not in results:
            continue
        reports = results.get(name, [])
        good = [r for r in reports if "error" not in r]
        if not good:
            errors = {str(r.get("error", "not run")) for r in reports} or {"not run"}
            rows.append([name, "failed: " + "; ".join(sorted(errors))[:60]] + [""] * 8)
            continue
        rps = [float(r["rps"]) for r in good]
        value = statistics.median(rps)
        if scenario.mix is None:
            ratios = [ratio(value, floor), ratio(value, redis)]
        else:
            base = [r for r in constant.get(name, []) if "error" not in r]
            ratios = [
                ratio(value, median_of(base, "rps")),
                ratio(
                    median_of(good, "server_us_per_request"),
                    median_of(base, "server_us_per_request"),
                ),
            ]
        rows.append(
            [
                name,
                number(value),
                f"{number(min(rps))}-{number(max(rps))}",
                *ratios,
                number(latency_of(good, "p50"), 3),
                number(latency_of(good, "p99"), 3),
                number(median_of(good, "server_cpu_percent")),
                number(median_of(good, "server_us_per_request"), 2),
                number(median_of(good, "generator_cpu_percent")),
            ]
        )
    header = [
        "server",
        "req/s",
        "range",
        *(
            ["vs floor", "vs redis"]
            if scenario.mix is None
            else ["req/s vs constant", "CPU/req vs constant"]
        ),
        "p50 ms",
        "p99 ms",
        "server CPU %",
        "server CPU us/req",
        "gen CPU %",
    ]
    return f"{scenario.title}\n{'-' * len(scenario.title)}\n\n" + simple_table(
        header, rows
    )


def idle_table(results: dict[str, list[Report]], names: list[str]) -> str:
    rows = []
    for name in names:
        reports = [r for r in results.get(name, []) if "error" not in r]
        if name not in results:
            continue
        if not reports:
            errors = {str(r.get("error")) for r in results[name]}
            rows.append([name, "failed: " + "; ".join(sorted(errors))[:60], "", "", ""])
            continue
        rows.append(
            [
                name,
                number(median_of(reports, "connections")),
                number((median_of(reports, "rss_before_kib") or 0) / 1024, 1),
                number((median_of(reports, "rss_after_kib") or 0) / 1024, 1),
                number(median_of(reports, "kib_per_connection"), 2),
            ]
        )
    return simple_table(
        [
            "server",
            "connections",
            "RSS before MiB",
            "RSS after MiB",
            "KiB per connection",
        ],
        rows,
    )


def client_table(client: dict[str, list[Report]], names: list[str]) -> str:
    rows = []
    for name in names:
        if name not in client:
            continue
        reports = good(client[name])
        if not reports:
            errors = {str(r.get("error")) for r in client[name]}
            rows.append([name, "", "failed: " + "; ".join(sorted(errors))[:60]])
            continue
        rows.append(
            [
                name,
                str(reports[0]["mode"]),
                number(median_of(reports, "lines_per_second")),
            ]
        )
    return simple_table(["server and client", "mode", "lines/s"], rows)


def targets_table(
    specs: list[ServerSpec],
    loads: dict[str, dict[str, list[Report]]],
    idle: dict[str, list[Report]],
    client: dict[str, list[Report]],
) -> str:
    def rps(scenario: str, name: str) -> float | None:
        return median_of(good(loads.get(scenario, {}).get(name, [])), "rps")

    def us(scenario: str, name: str) -> float | None:
        return median_of(
            good(loads.get(scenario, {}).get(name, [])), "server_us_per_request"
        )

    def verdict(value: float | None, goal: float, higher: bool = True) -> str:
        if value is None:
            return "not measured"
        return "met" if (value >= goal if higher else value <= goal) else "not met"

    trees = [spec.name for spec in specs if spec.tree is not None]
    rows = []
    for spec in specs:
        if spec.tree is None:
            continue
        name = spec.name
        if name != trees[0]:
            # Keeping the numbers of the first tree named, the one before.
            first = trees[0]
            for key in ("50x64", "50x1"):
                speed = ratio(rps(key, name), rps(key, first))
                cost = ratio(us(key, name), us(key, first))
                kept = None
                if speed != "n/a" and cost != "n/a":
                    kept = min(2.0 - float(cost), float(speed))
                rows.append(
                    [
                        f"{name}: {key.replace('x', ' x ')} within 5 % of {first}",
                        f"{speed} x in req/s; {cost} x in server CPU per request",
                        verdict(kept, 0.95),
                    ]
                )
        constant = us(CONSTANT, name)
        if spec.bench_commands:
            mixed = us("50x64-mix", name)
            rows.append(
                [
                    f"{name}: 50 x 64 -t mix <= 1.3 x constant in server CPU/request",
                    f"{ratio(mixed, constant)} x constant "
                    f"({number(mixed, 2)} vs {number(constant, 2)} us/request)",
                    verdict(
                        mixed / constant if mixed and constant else None,
                        1.3,
                        higher=False,
                    ),
                ]
            )
            waited = us("50x64-async", name)
            rows.append(
                [
                    f"{name}: 50 x 64 -t aping (async), no target",
                    f"{ratio(waited, constant)} x constant "
                    f"({number(waited, 2)} vs {number(constant, 2)} us/request)",
                    "reported",
                ]
            )
        pipelined, redis = rps("50x64", name), rps("50x64", "redis-server")
        rows.append(
            [
                f"{name}: 50 x 64 pipelined >= redis-server",
                f"{ratio(pipelined, redis)} x redis in req/s; "
                f"{ratio(us('50x64', name), us('50x64', 'redis-server'))} x redis "
                "in server CPU per request",
                verdict(pipelined / redis if pipelined and redis else None, 1.0),
            ]
        )
        command, floor = rps("50x1", name), rps("50x1", "LineReceiver")
        rows.append(
            [
                f"{name}: 50 x 1 >= LineReceiver floor",
                f"{ratio(command, floor)} x floor in req/s; "
                f"{ratio(us('50x1', name), us('50x1', 'LineReceiver'))} x floor "
                "in server CPU per request",
                verdict(command / floor if command and floor else None, 1.0),
            ]
        )
        kib = median_of(good(idle.get(name, [])), "kib_per_connection")
        rows.append(
            [
                f"{name}: idle connections < 3 KiB each",
                f"{number(kib, 2)} KiB",
                verdict(kib, 3.0, higher=False),
            ]
        )
        lines = median_of(good(client.get(name, [])), "lines_per_second")
        mode = next((str(r["mode"]) for r in client.get(name, []) if "mode" in r), "")
        rows.append(
            [
                f"{name}: client piped >= 500,000 lines/s",
                f"{number(lines)} lines/s ({mode})",
                verdict(lines, 500_000.0),
            ]
        )
    return simple_table(["target", "measured (medians)", "verdict"], rows)


def render(
    arguments: argparse.Namespace,
    specs: list[ServerSpec],
    loads: dict[str, dict[str, list[Report]]],
    idle: dict[str, list[Report]],
    client: dict[str, list[Report]],
    pinning: str,
    idle_connections: int,
    started: datetime.datetime,
    took: float,
) -> str:
    names = [spec.name for spec in specs]
    mode = " (--quick: a smoke test, not numbers to quote)" if arguments.quick else ""
    parts = [
        BEGIN,
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC with the generator of "
        f"commandproto {git_commit(ROOT)}{mode}; {arguments.rounds} interleaved "
        f"round{'s' if arguments.rounds != 1 else ''} of {arguments.duration:g} s "
        f"per run; the whole run took {took / 60:.1f} minutes.",
        "",
        "The machine:",
        "",
        describe_machine(pinning),
        "",
        "Servers:",
        "",
        *(f"- **{spec.name}**: {spec.description}" for spec in specs),
        "",
        "Each cell is the median over the rounds; *range* is the lowest and "
        "highest req/s; *vs floor* and *vs redis* are ratios of medians "
        "measured in this same run; *server CPU* is the server's user+system "
        "time over the run (100 % is one core saturated); *server CPU us/req* "
        "is that time per request, which does not depend on how fast the "
        "generator is; *gen CPU* is the generator's (near 100 %, the "
        "generator is the limit).",
        "",
    ]
    for scenario in LOAD_SCENARIOS:
        if scenario.mix is not None and not loads.get(scenario.key):
            continue
        parts += [
            load_table(
                scenario, loads.get(scenario.key, {}), names, loads.get(CONSTANT, {})
            ),
            "",
        ]
    title = f"{idle_connections:,} idle connections"
    parts += [
        title,
        "-" * len(title),
        "",
        "Server RSS (``VmRSS``) before and after opening the connections; each "
        "connection is answered once, so that the server has accepted it.",
        "",
        idle_table(idle, names),
        "",
        "The client's piped mode",
        "-----------------------",
        "",
        "``python -m commandproto.client`` against the commandproto server of "
        "the same tree, input from a file, output to ``/dev/null``, start-up "
        "included; ``--raw`` where that tree's client has it.",
        "",
        client_table(client, names),
        "",
        "Targets",
        "-------",
        "",
        targets_table(specs, loads, idle, client),
        "",
        END,
    ]
    return "\n".join(parts) + "\n"


# Set/get beside redis-server (issue 16).

KVBENCH = ROOT / "benchmarks" / "kvbench.py"
KVLOAD = ROOT / "benchmarks" / "kvload.py"
SET_GET_BEGIN = (
    ".. set/get results begin (written by benchmarks/side_by_side.py --set-get)"
)
SET_GET_END = ".. set/get results end"


@dataclass(frozen=True)
class KVScenario:
    """
    A set/get load: ``benchmarks/kvload.py``'s mixes for commandproto (the
    :mod:`kvbench` commands) and for redis-server.

    :ivar redis_mix: the mix for redis-server, or ``None`` if it has no
        such command (the ``async def`` twins).
    """

    key: str
    title: str
    clients: int
    pipeline: int
    mix: str
    redis_mix: str | None

    def mix_for(self, spec: ServerSpec) -> str | None:
        """
        The mix for that server, or ``None`` if this load does not apply.
        """
        if spec.name == REDIS:
            return self.redis_mix
        return self.mix if spec.kv else None


REDIS = "redis-server"

SET_GET_SCENARIOS = [
    KVScenario(
        "set/get 50x64",
        "set/get, 50 clients x 64 pipelined",
        50,
        64,
        "set-get",
        "redis-set-get",
    ),
    KVScenario(
        "set/get 50x1",
        "set/get, 50 clients request/response",
        50,
        1,
        "set-get",
        "redis-set-get",
    ),
    KVScenario("get 50x64", "get, 50 x 64 pipelined", 50, 64, "get", "redis-get"),
    KVScenario("aget 50x64", "aget (async, no await), 50 x 64", 50, 64, "aget", None),
    KVScenario("dget 50x64", "dget (awaits a Deferred), 50 x 64", 50, 64, "dget", None),
]


def serving_with(
    options: Sequence[str], reactor: str | None = None
) -> Callable[[int], list[str]]:
    """
    The command line of ``twistd -n [-r REACTOR] commandserver`` with
    ``options``, given its port.
    """

    def command(port: int) -> list[str]:
        return twistd_command([f"tcp:{port}:interface=127.0.0.1"], options, reactor)

    return command


def set_get_specs(
    trees: list[tuple[str, Path, str]], idle_connections: int
) -> list[ServerSpec]:
    """
    For each tree, commandproto serving ``--commands kvbench:commands`` with
    its defaults, again with ``--metrics``, and again on Twisted's asyncio
    reactor (``twistd -r asyncio``) instead of the default (epoll); then
    redis-server, if it is installed.
    """
    specs = []
    for label, tree, origin in trees:
        extra = ["--commands", "kvbench:commands"]
        if "max-connections-per-ip" in (tree / "commandproto" / "tap.py").read_text():
            # Every benchmark client comes from 127.0.0.1.
            extra += ["--max-connections-per-ip", "0"]
        for metrics, reactor in ((False, None), (True, None), (False, "asyncio")):
            options = [*extra]
            name = label
            if metrics:
                options += ["--metrics", "tcp:0:interface=127.0.0.1"]
                name = f"{label} --metrics"
            twistd = "twistd -n"
            if reactor:
                name = f"{label} -r {reactor}"
                twistd = f"twistd -n -r {reactor}"
            specs.append(
                ServerSpec(
                    name,
                    f"``{twistd} commandserver {' '.join(options)}`` from "
                    f"{origin}, every other option at its default",
                    serving_with(options, reactor),
                    environment={"PYTHONPATH": str(tree)},
                    tree=tree,
                    kv=True,
                )
            )
    specs += [
        dataclasses.replace(
            spec,
            description=spec.description.replace("inline ``PING``", "inline SET/GET"),
            kv=True,
        )
        for spec in server_specs([], idle_connections)
        if spec.name == REDIS
    ]
    return specs


def run_kv_load(
    server: RunningServer, scenario: KVScenario, duration: float, cpu: int | None
) -> Report:
    """
    One ``benchmarks/kvload.py`` run against one server.
    """
    mix = scenario.mix_for(server.spec)
    assert mix is not None
    command = [
        sys.executable,
        str(KVLOAD),
        "--port",
        str(server.port),
        "-c",
        str(scenario.clients),
        "-P",
        str(scenario.pipeline),
        "-t",
        mix,
        "--duration",
        str(duration),
        "--timeout",
        "10",
    ]
    return run_generator(server, command, duration, cpu)


def per_round_ratio(
    results: dict[tuple[str, str], list[Report]],
    scenario: str,
    name: str,
    base_scenario: str,
    base: str,
) -> float | None:
    """
    The median over rounds of each round's ratio of server CPU per command:
    ``name`` in ``scenario`` over ``base`` in ``base_scenario``.  A round
    where either run failed is left out.
    """
    ratios = []
    pairs = zip(
        results.get((scenario, name), []),
        results.get((base_scenario, base), []),
        strict=False,
    )
    for report, reference in pairs:
        if "error" in report or "error" in reference:
            continue
        mine = float(report["server_us_per_request"])
        theirs = float(reference["server_us_per_request"])
        if theirs:
            ratios.append(mine / theirs)
    return statistics.median(ratios) if ratios else None


def bound_by(reports: Sequence[Report]) -> str:
    """
    What limited the runs: the server (its CPU near a core), the generator
    (its CPU near a core), or neither: waiting, on round trips or on other
    work sharing the CPUs.
    """
    if not reports:
        return "n/a"
    server = median_of(reports, "server_cpu_percent") or 0.0
    generator = median_of(reports, "generator_cpu_percent") or 0.0
    if server >= 90:
        return "server CPU"
    if generator >= 90:
        return "generator CPU"
    return "neither (waits)"


def set_get_tables(
    specs: list[ServerSpec], results: dict[tuple[str, str], list[Report]]
) -> str:
    """
    One table of every run (medians) and one of the targets (medians of
    per-round ratios).
    """
    rows = []
    for scenario in SET_GET_SCENARIOS:
        for spec in specs:
            if scenario.mix_for(spec) is None:
                continue
            reports = results.get((scenario.key, spec.name), [])
            fine = good(reports)
            if not fine:
                errors = {str(r.get("error", "not run")) for r in reports}
                failed = "failed: " + "; ".join(sorted(errors))[:60]
                rows.append([scenario.key, spec.name, failed, "", "", "", "", ""])
                continue
            rows.append(
                [
                    scenario.key,
                    spec.name,
                    number(median_of(fine, "rps")),
                    number(median_of(fine, "server_us_per_request"), 2),
                    number(latency_of(fine, "p50"), 3),
                    number(median_of(fine, "server_cpu_percent")),
                    number(median_of(fine, "generator_cpu_percent")),
                    bound_by(fine),
                ]
            )
    runs = simple_table(
        [
            "load",
            "server",
            "req/s",
            "server CPU us/cmd",
            "p50 ms",
            "server CPU %",
            "gen CPU %",
            "bound by",
        ],
        rows,
    )

    def verdict(value: float | None, goal: float | None) -> str:
        if value is None:
            return "not measured"
        if goal is None:
            return "reported"
        return "met" if value <= goal else "not met"

    def row(
        what: str, value: float | None, goal: float | None, bound: str
    ) -> list[str]:
        shown = "n/a" if value is None else f"{value:.2f} x"
        return [what, shown, verdict(value, goal), bound]

    def bound(scenario: str, name: str) -> str:
        return bound_by(good(results.get((scenario, name), [])))

    targets = []
    for spec in specs:
        if spec.tree is None or spec.name.endswith(("--metrics", "-r asyncio")):
            continue
        name = spec.name
        metrics = f"{name} --metrics"
        on_asyncio = f"{name} -r asyncio"
        for key, goal in (("set/get 50x64", 2.0), ("set/get 50x1", 3.0)):
            targets.append(
                row(
                    f"{name}: {key} <= {goal:g} x redis-server",
                    per_round_ratio(results, key, name, key, REDIS),
                    goal,
                    f"{bound(key, name)}; redis: {bound(key, REDIS)}",
                )
            )
        targets.append(
            row(
                f"{name}: get 50x64 vs redis-server GET",
                per_round_ratio(results, "get 50x64", name, "get 50x64", REDIS),
                None,
                f"{bound('get 50x64', name)}; redis: {bound('get 50x64', REDIS)}",
            )
        )
        targets.append(
            row(
                f"{name}: aget <= 1.3 x get",
                per_round_ratio(results, "aget 50x64", name, "get 50x64", name),
                1.3,
                bound("aget 50x64", name),
            )
        )
        targets.append(
            row(
                f"{name}: dget (awaits a Deferred) vs get",
                per_round_ratio(results, "dget 50x64", name, "get 50x64", name),
                None,
                bound("dget 50x64", name),
            )
        )
        for scenario in SET_GET_SCENARIOS:
            targets.append(
                row(
                    f"{name}: --metrics on/off, {scenario.key} <= 1.05",
                    per_round_ratio(results, scenario.key, metrics, scenario.key, name),
                    1.05,
                    bound(scenario.key, metrics),
                )
            )
        for scenario in SET_GET_SCENARIOS:
            targets.append(
                row(
                    f"{name}: asyncio reactor / epoll, {scenario.key}",
                    per_round_ratio(
                        results, scenario.key, on_asyncio, scenario.key, name
                    ),
                    None,
                    bound(scenario.key, on_asyncio),
                )
            )
    return (
        runs + "\n\nTargets (server CPU per command; each value is the median over the "
        "rounds of that round's ratio):\n\n"
        + simple_table(["target", "measured", "verdict", "bound by"], targets)
    )


def render_set_get(
    command: str,
    arguments: argparse.Namespace,
    specs: list[ServerSpec],
    results: dict[tuple[str, str], list[Report]],
    pinning: str,
    started: datetime.datetime,
    took: float,
    load: str,
) -> str:
    mode = (
        " (``--quick``: a smoke run, not numbers to quote)" if arguments.quick else ""
    )
    parts = [
        SET_GET_BEGIN,
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC{mode}; {arguments.rounds} "
        f"interleaved round{'s' if arguments.rounds != 1 else ''} of "
        f"{arguments.duration:g} s per run; the whole run took "
        f"{took / 60:.1f} minutes.  Command::",
        "",
        f"    {command}",
        "",
        "The machine:",
        "",
        describe_machine(pinning),
        *([f"- {load}"] if load else []),
        "",
        "Servers:",
        "",
        *(f"- **{spec.name}**: {spec.description}" for spec in specs),
        "",
        set_get_tables(specs, results),
        "",
        SET_GET_END,
    ]
    return "\n".join(parts) + "\n"


def rotated(items: Sequence[Any], round_number: int) -> list[Any]:
    """
    ``items`` in the order of round ``round_number``: each round starts one
    further along, so that no server always runs right after the same
    other one (an effect of the run before, such as a warm cache or a
    busy CPU, would otherwise favour or cost the same server every round).
    """
    if not items:
        return []
    shift = round_number % len(items)
    return [*items[shift:], *items[:shift]]


def measure_set_get(
    arguments: argparse.Namespace, trees: list[tuple[str, Path, str]]
) -> int:
    """
    The set/get comparison: every kv server through every set/get load, in
    interleaved rounds; write its section of the docs.
    """
    command = " ".join(
        ["python benchmarks/side_by_side.py", *(arguments.argv or [])]
    ).rstrip()
    server_cpu, generator_cpu, pinning = choose_cpus(
        "the generator (and this script)", "generator"
    )
    if generator_cpu is not None:
        os.sched_setaffinity(0, {generator_cpu})
    specs = set_get_specs(trees, 200)
    if arguments.servers:
        chosen = {name.strip() for name in arguments.servers.split(",")}
        specs = [spec for spec in specs if spec.name in chosen]
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    results: dict[tuple[str, str], list[Report]] = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="side-by-side-kv-") as scratch:
        directory = Path(scratch)
        # A third-party command set, found in the directory the server
        # starts in (as --commands MODULE:ATTRIBUTE looks there).
        shutil.copy(KVBENCH, directory / KVBENCH.name)
        with contextlib.ExitStack() as stack:
            servers = []
            for spec in specs:
                log(f"starting {spec.name}")
                servers.append(
                    stack.enter_context(running(spec, server_cpu, directory))
                )
            for server in servers:
                # Warm up: imports, allocations, caches; and every key set.
                run_kv_load(
                    server,
                    SET_GET_SCENARIOS[0],
                    min(arguments.duration, 1.0),
                    generator_cpu,
                )
            for round_number in range(arguments.rounds):
                for scenario in SET_GET_SCENARIOS:
                    for server in rotated(servers, round_number):
                        if scenario.mix_for(server.spec) is None:
                            continue
                        loads.append(os.getloadavg()[0])
                        report = run_kv_load(
                            server, scenario, arguments.duration, generator_cpu
                        )
                        results.setdefault((scenario.key, server.spec.name), []).append(
                            report
                        )
                        shown = report.get("error") or (
                            f"{float(report['rps']):,.0f} req/s, "
                            f"{float(report['server_us_per_request']):.2f} us/cmd"
                        )
                        log(
                            f"round {round_number + 1} {scenario.key:>13} "
                            f"{server.spec.name}: {shown}"
                        )
    took = time.monotonic() - clock
    load = ""
    if loads:
        load = (
            f"load average (1 min) during the runs: {min(loads):.1f}-"
            f"{max(loads):.1f}, median {statistics.median(loads):.1f}"
        )
    block = render_set_get(
        command, arguments, specs, results, pinning, started, took, load
    )
    print(block)
    if arguments.save_json:
        arguments.save_json.write_text(
            json.dumps({" / ".join(k): v for k, v in results.items()}, indent=1)
        )
    if not arguments.no_write:
        write_docs(arguments.output, block, SET_GET_BEGIN, SET_GET_END)
        log(f"wrote {arguments.output}")
    failed = any("error" in r for reports in results.values() for r in reports)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="commandproto side by side with the alternatives."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: 1 short round"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per run (default 3)"
    )
    parser.add_argument(
        "--idle-connections", type=int, default=None, help="default 10000"
    )
    parser.add_argument("--client-lines", type=int, default=None, help="default 500000")
    parser.add_argument(
        "--servers", default=None, help="comma-separated server names to run"
    )
    parser.add_argument(
        "--commandproto",
        action="append",
        metavar="LABEL=WHERE",
        default=[],
        help="measure the server (and client) of commandproto from WHERE, a "
        "checkout's path or a git revision of this repository, named LABEL in "
        "the tables; repeatable, to compare versions in one run (default: this "
        "checkout, as 'commandproto')",
    )
    parser.add_argument(
        "--output", type=Path, default=DOCS, help=f"default {DOCS.relative_to(ROOT)}"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--save-json", type=Path, default=None, help="raw results")
    parser.add_argument(
        "--set-get",
        action="store_true",
        help="instead: set/get with a third-party command set "
        "(benchmarks/kvbench.py), with and without --metrics, beside "
        "redis-server's SET/GET; writes its own section",
    )
    arguments = parser.parse_args(argv)
    arguments.argv = list(sys.argv[1:] if argv is None else argv)
    quick = arguments.quick
    arguments.rounds = arguments.rounds or (1 if quick else 3)
    arguments.duration = arguments.duration or (0.5 if quick else 3.0)
    archives = Path(tempfile.mkdtemp(prefix="side-by-side-trees-"))
    try:
        trees = []
        for entry in arguments.commandproto or ["commandproto=" + str(ROOT)]:
            label, equals, where = entry.partition("=")
            try:
                if not (label and equals):
                    raise ValueError("want LABEL=PATH or LABEL=REVISION")
                trees.append((label, *resolve_tree(where, archives)))
            except ValueError as e:
                parser.error(f"--commandproto {entry!r}: {e}")
        if arguments.set_get:
            return measure_set_get(arguments, trees)
        return measure(arguments, trees)
    finally:
        shutil.rmtree(archives, ignore_errors=True)


def measure(arguments: argparse.Namespace, trees: list[tuple[str, Path, str]]) -> int:
    """
    Run every server through every scenario, write the report.
    """
    quick = arguments.quick
    wanted_idle = arguments.idle_connections or (300 if quick else 10_000)
    client_lines = arguments.client_lines or (20_000 if quick else 500_000)

    server_cpu, generator_cpu, pinning = choose_cpus(
        "the generator (and this script)", "generator"
    )
    if generator_cpu is not None:
        os.sched_setaffinity(0, {generator_cpu})
    idle_connections = raise_file_limit(wanted_idle)
    if idle_connections < wanted_idle:
        pinning += (
            f" The open-file limit allowed {idle_connections} idle connections "
            f"instead of {wanted_idle}."
        )
    specs = server_specs(trees, idle_connections)
    if arguments.servers:
        chosen = {name.strip() for name in arguments.servers.split(",")}
        specs = [spec for spec in specs if spec.name in chosen]
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    loads: dict[str, dict[str, list[Report]]] = {}
    idle: dict[str, list[Report]] = {}
    client: dict[str, list[Report]] = {}

    with tempfile.TemporaryDirectory(prefix="side-by-side-") as scratch:
        directory = Path(scratch)
        with contextlib.ExitStack() as stack:
            servers = []
            for spec in specs:
                log(f"starting {spec.name}")
                servers.append(
                    stack.enter_context(running(spec, server_cpu, directory))
                )
            for server in servers:
                # Warm up: imports, allocations, caches.
                run_load(
                    server,
                    LOAD_SCENARIOS[2],
                    min(arguments.duration, 1.0),
                    generator_cpu,
                )
            for round_number in range(arguments.rounds):
                for scenario in LOAD_SCENARIOS:
                    for server in rotated(servers, round_number):
                        if not scenario.applies_to(server.spec):
                            continue
                        report = run_load(
                            server, scenario, arguments.duration, generator_cpu
                        )
                        loads.setdefault(scenario.key, {}).setdefault(
                            server.spec.name, []
                        ).append(report)
                        shown = (
                            report.get("error") or f"{float(report['rps']):,.0f} req/s"
                        )
                        log(
                            f"round {round_number + 1} {scenario.key:>11} "
                            f"{server.spec.name}: {shown}"
                        )
        lines_file = directory / "lines.txt"
        request, _ = request_and_reply(HELLO)
        lines_file.write_bytes(request.replace(b"\r\n", b"\n") * client_lines)
        for round_number in range(arguments.rounds):
            for spec in specs:
                if not spec.serves_many:
                    continue
                # A fresh server each time: memory, once allocated, stays.
                with running(spec, server_cpu, directory) as server:
                    report = measure_idle(server, idle_connections)
                    if spec.tree is not None:
                        client.setdefault(spec.name, []).append(
                            measure_client(
                                server, lines_file, client_lines, generator_cpu
                            )
                        )
                idle.setdefault(spec.name, []).append(report)
                shown = report.get("error") or (
                    f"{float(report['kib_per_connection']):.2f} KiB/connection"
                )
                log(f"round {round_number + 1}  idle {spec.name}: {shown}")
    took = time.monotonic() - clock
    block = render(
        arguments,
        specs,
        loads,
        idle,
        client,
        pinning,
        idle_connections,
        started,
        took,
    )
    print(block)
    if arguments.save_json:
        arguments.save_json.write_text(
            json.dumps({"loads": loads, "idle": idle, "client": client}, indent=1)
        )
    if not arguments.no_write:
        write_docs(arguments.output, block, BEGIN, END)
        log(f"wrote {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
