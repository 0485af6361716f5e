"""
The client libraries' own CPU per pipelined request, beside redis-py's
asyncio client (with hiredis) doing pipelined PING against redis-server.

Each server runs pinned to one CPU, each client in its own process pinned
to the other, in interleaved rounds (A B C, A B C, ...).  A client connects,
warms up, then sends ``--batch`` requests pipelined and waits for every
reply, ``--batches`` times; it reports its own process CPU time (user +
system) per request and requests per second, and this script reads the
server's CPU time from /proc around each run.  It prints medians, and the
ratio of each client's CPU per request to redis-py's, round by round.

Run from a clone (redis-server installed: ``apt install redis-server``)::

    python3 -m venv .venv && .venv/bin/pip install '.[bench]'
    .venv/bin/python benchmarks/client_library.py

Everything is bounded: a fixed count of requests, each process a timeout;
only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from _harness import cpu_seconds, free_port, pin, redis_server_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 120.0

ASYNCIO = """
import asyncio
from commandproto.asyncio import connect

async def run():
    client = await connect("127.0.0.1", PORT)
    async def batch():
        futures = [client.request("Hello") for _ in range(BATCH)]
        WAIT
        assert replies[-1] == "Greetings!" and len(replies) == BATCH
    await batch()
    start, wall = time.process_time(), time.perf_counter()
    for _ in range(BATCHES):
        await batch()
    report(start, wall)
    await client.close()

asyncio.run(run())
"""

TWISTED = """
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import react
from commandproto.client import connect

async def run(reactor):
    client = await connect(reactor, f"tcp:127.0.0.1:{PORT}")
    async def batch():
        ds = [client.request("Hello") for _ in range(BATCH)]
        WAIT
        assert replies[-1] == "Greetings!" and len(replies) == BATCH
    await batch()
    start, wall = time.process_time(), time.perf_counter()
    for _ in range(BATCHES):
        await batch()
    report(start, wall)
    await client.close()

react(lambda reactor: ensureDeferred(run(reactor)))
"""

# Two ways to wait for a batch: gather (asyncio.gather, gatherResults), whose
# own cost is asyncio's or Twisted's; and in order: replies come in the
# order of the requests, so the last one's arrival means all are in.
CLIENTS = {
    "commandproto.asyncio, in order": ASYNCIO.replace(
        "WAIT",
        "await futures[-1]\n        replies = [f.result() for f in futures]",
    ),
    "commandproto.asyncio, gather": ASYNCIO.replace(
        "WAIT", "replies = await asyncio.gather(*futures)"
    ),
    "commandproto.client, in order": TWISTED.replace(
        "WAIT",
        "replies = []\n        for d in ds:\n            d.addCallback(replies.append)"
        "\n        await ds[-1]",
    ),
    "commandproto.client, gather": TWISTED.replace(
        "WAIT", "replies = await gatherResults(ds)"
    ),
    "redis-py asyncio + hiredis": """
import asyncio
import redis.asyncio
from redis.utils import HIREDIS_AVAILABLE
assert HIREDIS_AVAILABLE, "pip install hiredis"

async def run():
    client = redis.asyncio.Redis(host="127.0.0.1", port=PORT)
    async def batch():
        pipe = client.pipeline(transaction=False)
        for _ in range(BATCH):
            pipe.ping()
        replies = await pipe.execute()
        assert replies[-1] is True and len(replies) == BATCH
    await batch()
    start, wall = time.process_time(), time.perf_counter()
    for _ in range(BATCHES):
        await batch()
    report(start, wall)
    await client.aclose()

asyncio.run(run())
""",
}

PRELUDE = """
import json, time
PORT, BATCH, BATCHES = {port}, {batch}, {batches}

def report(start, wall):
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    print(json.dumps({{"cpu": cpu, "wall": wall, "requests": BATCH * BATCHES}}))
"""


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=10)
    arguments = parser.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is missing: apt install redis-server")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    environment = {**os.environ, "PYTHONPATH": ROOT}
    directory = tempfile.mkdtemp(prefix="client-bench-")
    ports = {"commandproto": free_port(), "redis": free_port()}
    servers = {
        "commandproto": subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "commandserver",
                "--listen",
                f"tcp:{ports['commandproto']}:interface=127.0.0.1",
            ],
            cwd=directory,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=pin(server_cpu),
        ),
        "redis": subprocess.Popen(
            redis_server_command(ports["redis"]),
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=pin(server_cpu),
        ),
    }
    try:
        for port in ports.values():
            wait_for_port(port)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in CLIENTS}
        for _ in range(arguments.rounds):
            for name, body in CLIENTS.items():
                server = "redis" if name.startswith("redis") else "commandproto"
                source = (
                    PRELUDE.format(
                        port=ports[server],
                        batch=arguments.batch,
                        batches=arguments.batches,
                    )
                    + body
                )
                before = cpu_seconds(servers[server].pid)
                run = subprocess.run(
                    [sys.executable, "-c", source],
                    capture_output=True,
                    text=True,
                    env=environment,
                    timeout=TIMEOUT,
                    preexec_fn=pin(client_cpu),
                )
                after = cpu_seconds(servers[server].pid)
                if run.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{run.stderr}")
                outcome = json.loads(run.stdout.splitlines()[-1])
                requests = outcome["requests"]
                # The server's CPU covers the warm-up batch and connecting too.
                served = requests + arguments.batch
                results[name].append(
                    {
                        "cpu_us": outcome["cpu"] / requests * 1e6,
                        "rate": requests / outcome["wall"],
                        "server_us": (after - before) / served * 1e6,
                    }
                )
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=TIMEOUT)
        shutil.rmtree(directory, ignore_errors=True)
    reference = results["redis-py asyncio + hiredis"]
    print(
        f"{arguments.rounds} rounds of {arguments.batches} x {arguments.batch} "
        f"pipelined requests; servers on CPU {server_cpu}, clients on CPU "
        f"{client_cpu}; Python {sys.version.split()[0]}"
    )
    print(
        f"{'client':34} {'client CPU us/req':>18} {'req/s':>10} "
        f"{'server CPU us/req':>18} {'CPU vs redis-py':>16}"
    )
    for name, rounds in results.items():
        ratios = [
            a["cpu_us"] / b["cpu_us"] for a, b in zip(rounds, reference, strict=True)
        ]
        print(
            f"{name:34} {statistics.median(r['cpu_us'] for r in rounds):18.2f} "
            f"{statistics.median(r['rate'] for r in rounds):10,.0f} "
            f"{statistics.median(r['server_us'] for r in rounds):18.2f} "
            f"{statistics.median(ratios):16.2f}"
        )


if __name__ == "__main__":
    main()
