"""
commandproto against abusive clients, revision beside revision.

Each scenario of issue 12 ("Hold the line against abuse") is run against a
fresh ``twistd -n commandserver`` of each revision asked for, in interleaved
rounds, and the medians are printed and written to ``docs/benchmarks.rst``
between its ``.. abuse results`` markers:

1. slowloris: connections that trickle a never-ending line, a byte a second,
   fill every slot; a well-behaved client tries every 0.5 s;
2. one address takes every slot; a client from another address tries;
3. TLS squatters: TCP connections to the TLS port that never send a
   ClientHello; a TLS client and a plain client try;
4. memory per stalled client: 200 clients pipeline ``ab`` (or ``Hello``) and
   never read;
5. fairness: a request/response client's latency beside 50 greedy
   pipeliners that read their replies (``echo``, 64 and 1,024 requests in
   flight each, so that the server, not the generator, is the bottleneck),
   and beside 500 that do not (and how long the server stays busy once
   their writes stop);
6. descriptor exhaustion: 4,200 clients against a server whose open-file
   limit is 4,096.

The server runs pinned to CPU 0; this script, which plays every client, and
the load generator (``python -m commandproto.bench``) to CPU 1.  Every load
is bounded in count and in time, every address is on loopback, and every
process this script starts is stopped before it ends.

Run from a clone, comparing a revision with the checkout::

    python3 -m venv .venv && .venv/bin/pip install '.[dev,bench]'
    .venv/bin/python benchmarks/abuse.py \\
        --commandproto before=ec38c82 --commandproto after=.

``--quick`` is a smoke run (one round, smaller loads, no reference rows,
about two minutes);
``--no-write`` prints the results without touching the docs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import selectors
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness
from _harness import (
    ROOT,
    TWISTD,
    TWISTD_LISTENING,
    ServerProcess,
    choose_cpus,
    describe_machine,
    environment_for,
    log,
    number,
    pin,
    simple_table,
    twistd_command,
    write_docs,
)

# One run's measurements, by name.
Report = dict[str, Any]

DOCS = ROOT / "docs" / "benchmarks.rst"
BEGIN = ".. abuse results begin (written by benchmarks/abuse.py)"
END = ".. abuse results end"

HELLO = b"Hello\n"
GREETING = b"Greetings!"
TOO_MANY = b"Error: too many connections"


# Processes and revisions.


@dataclass
class Tree:
    """
    A commandproto checkout to measure.

    :ivar label: its name in the tables.
    :ivar path: where it is.
    :ivar origin: where it came from, for the docs.
    :ivar options: the ``twistd commandserver`` options it knows.
    """

    label: str
    path: Path
    origin: str
    options: frozenset[str] = frozenset()

    def has(self, option: str) -> bool:
        return option in self.options


def resolve_tree(label: str, where: str, archives: Path) -> Tree:
    """
    Find the checkout to measure: a path, or a git revision of this
    repository, extracted with ``git archive`` (as side_by_side.py does).

    :raises ValueError: if ``where`` is neither.
    """
    path, origin = _harness.resolve_tree(where, archives)
    return Tree(label, path, origin)


def known_options(tree: Path) -> frozenset[str]:
    """
    The long options of that tree's ``twistd commandserver``.
    """
    output = subprocess.run(
        [sys.executable, "-c", TWISTD, "commandserver", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment_for(tree),
        cwd=tempfile.gettempdir(),
    ).stdout
    return frozenset(re.findall(r"--([a-z][a-z-]+)", output))


class Server(ServerProcess):
    """
    A ``twistd -n commandserver`` of one tree, pinned, logging to a file,
    answering ``Hello`` on its last listener.

    :ivar ports: the loopback TCP ports it listens on, in ``--listen`` order.
    """

    def __init__(
        self,
        tree: Tree,
        options: Sequence[str],
        directory: Path,
        cpu: int | None,
        listeners: Sequence[str] = ("tcp:0:interface=127.0.0.1",),
        files: int | None = None,
    ) -> None:
        super().__init__(
            twistd_command(listeners, options),
            directory / "server.log",
            environment=environment_for(tree.path),
            cwd=directory,
            cpu=cpu,
            files=files,
            listeners=len(listeners),
            pattern=TWISTD_LISTENING,
            serving=lambda port: hello(port, timeout=2.0),
        )


@contextlib.contextmanager
def running(
    tree: Tree,
    options: Sequence[str],
    cpu: int | None,
    listeners: Sequence[str] = ("tcp:0:interface=127.0.0.1",),
    files: int | None = None,
) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="abuse-server-") as directory:
        server = Server(tree, options, Path(directory), cpu, listeners, files)
        try:
            yield server
        finally:
            server.stop()


# Clients.


def connect(
    port: int, source: str = "127.0.0.1", timeout: float = 2.0
) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    )


def read_line(sock: socket.socket, limit: int = 4096) -> bytes:
    """
    Read up to and including a line end (or what came before the close).
    """
    data = b""
    while b"\n" not in data and len(data) < limit:
        chunk = sock.recv(limit)
        if not chunk:
            break
        data += chunk
    return data


def hello(
    port: int,
    source: str = "127.0.0.1",
    timeout: float = 1.0,
    context: ssl.SSLContext | None = None,
) -> bool:
    """
    One well-behaved client: connect, ``Hello``, ``Greetings!``?
    """
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(connect(port, source, timeout))
            if context is not None:
                sock = stack.enter_context(
                    context.wrap_socket(sock, server_hostname="localhost")
                )
            sock.sendall(HELLO)
            return read_line(sock).startswith(GREETING)
    except (OSError, ssl.SSLError):
        return False


@dataclass
class Probes:
    """
    A well-behaved client trying every ``interval`` seconds, in a thread.
    """

    attempts: dict[str, list[bool]] = field(default_factory=dict)

    def run(
        self,
        tries: dict[str, Callable[[], bool]],
        seconds: float,
        interval: float = 0.5,
    ) -> threading.Thread:
        def loop() -> None:
            start = time.monotonic()
            for n in range(int(seconds / interval)):
                time.sleep(max(0.0, start + n * interval - time.monotonic()))
                for name, attempt in tries.items():
                    self.attempts.setdefault(name, []).append(attempt())

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def report(self) -> Report:
        return {
            f"{name}_ok": sum(results) for name, results in self.attempts.items()
        } | {f"{name}_tries": len(results) for name, results in self.attempts.items()}


@dataclass
class Attacker:
    """
    One abusive connection and what became of it.
    """

    sock: socket.socket
    source: str
    opened: float
    closed: float | None = None
    ended: float | None = None
    received: bytes = b""

    @property
    def refused(self) -> bool:
        """
        Whether the server refused it: with the error line, or by closing
        it at once without a word (as a TLS listener must).
        """
        at_once = (
            self.closed is not None
            and self.closed - self.opened < 2.0
            and not self.received
        )
        return self.received.startswith(TOO_MANY) or at_once


def sources(prefix: str, count: int, per_address: int) -> list[str]:
    """
    ``count`` source addresses, ``per_address`` connections from each,
    ``prefix.1``, ``prefix.2``, ...: Linux routes all of 127/8 to loopback.
    """
    return [f"{prefix}.{1 + n // per_address}" for n in range(count)]


def open_attackers(
    port: int, addresses: Sequence[str], first: bytes, deadline: float
) -> list[Attacker]:
    """
    Connect from each address and send ``first``: 50 at a time, each batch
    once the server has accepted the one before.  More at once would
    overflow a listen backlog of 50 (Twisted's default), and the kernel
    would then leave some connections that the client counts as open
    unknown to the server (SYN cookies), so that they hold no slot.
    """
    attackers = []
    for start in range(0, len(addresses), 50):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        socks, _, _ = connect_batch(port, addresses[start : start + 50], min(left, 10))
        settle(port, min(left, 10))
        for sock in socks:
            if first:
                with contextlib.suppress(OSError):
                    sock.send(first)
            attackers.append(Attacker(sock, sock.getsockname()[0], time.monotonic()))
    return attackers


def unaccepted(port: int) -> int:
    """
    Connections to a loopback port that the kernel holds for the server and
    the server has not accepted yet: half-open (``SYN_RECV``, which a short
    listen backlog leaves waiting for a retried handshake, though the client
    already counts itself connected) plus the listener's accept queue.
    """
    local = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] != local:
            continue
        if fields[3] == "03":
            count += 1
        elif fields[3] == "0A":
            count += int(fields[4].split(":")[1], 16)
    return count


def settle(port: int, timeout: float = 30.0) -> None:
    """
    Wait until the server has accepted every connection the kernel holds
    for it (twice in a row, 20 ms apart), or ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        quiet = quiet + 1 if unaccepted(port) == 0 else 0
        time.sleep(0.02)


def hold(
    port: int,
    addresses: Sequence[str],
    seconds: float,
    trickle: bool,
    reconnect: bool = False,
    before_probes: Callable[[], None] | None = None,
) -> tuple[list[Attacker], int, float]:
    """
    Open a connection from each address and keep it for ``seconds``: either
    silent, or trickling a never-ending line, one byte a second each.  Note
    when the server closes each.

    :param reconnect: open a new connection as soon as one is closed (at
        most one attempt per connection per 0.1 s).
    :param before_probes: called once every connection is open (start the
        well-behaved clients there).
    :returns: every connection opened, how many could not be opened, and
        how many seconds it took to open the first ones.
    """
    byte = b"x" if trickle else b""
    started = time.monotonic()
    attackers = open_attackers(port, addresses, byte, started + 60)
    failed = len(addresses) - len(attackers)
    settle(port)
    opening = time.monotonic() - started
    if before_probes is not None:
        before_probes()
    live = {a.sock.fileno(): a for a in attackers}
    everyone = list(attackers)
    reopen: list[str] = []
    selector = selectors.DefaultSelector()
    for a in attackers:
        selector.register(a.sock, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    tick = 0

    def closed(a: Attacker) -> None:
        a.closed = time.monotonic()
        selector.unregister(a.sock)
        del live[a.sock.fileno()]
        a.sock.close()
        if reconnect:
            reopen.append(a.source)

    try:
        while time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                a = live[key.fd]
                try:
                    chunk = a.sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    a.received += chunk
                else:
                    closed(a)
            tick += 1
            if trickle:
                for a in list(live.values()):
                    if a.sock.fileno() % 10 == tick % 10:
                        try:
                            a.sock.send(byte)
                        except BlockingIOError:
                            pass
                        except OSError:
                            closed(a)
            fresh = open_attackers(port, reopen, byte, deadline)
            reopen.clear()
            for a in fresh:
                live[a.sock.fileno()] = a
                everyone.append(a)
                selector.register(a.sock, selectors.EVENT_READ)
    finally:
        end = time.monotonic()
        for a in live.values():
            a.ended = end
            a.sock.close()
        selector.close()
    return everyone, failed, opening


def held(everyone: Sequence[Attacker], first: int) -> Report:
    """
    What became of the abusive connections: how many the server took, how
    long it kept them, what it said when it closed them.

    :param first: how many of ``everyone`` were opened at the start (the
        rest are reconnections).
    """
    admitted = [a for a in everyone[:first] if not a.refused]
    closed = [a.closed - a.opened for a in admitted if a.closed is not None]
    still_open = [a.ended - a.opened for a in admitted if a.ended is not None]
    said = [a.received.split(b"\r\n")[0] for a in admitted if a.received]
    reply = statistics.mode(said).decode("utf-8", "replace")[:70] if said else ""
    return {
        "opened": first,
        "admitted": len(admitted),
        "refused": first - len(admitted),
        "held_s": statistics.median(closed) if closed else None,
        "still_open": len(still_open),
        "tracked_s": min(still_open) if still_open else None,
        "reconnections": len(everyone) - first,
        "reply": reply,
    }


def attack_and_probe(
    port: int,
    addresses: Sequence[str],
    seconds: float,
    probe_seconds: float,
    tries: dict[str, Callable[[], bool]],
    trickle: bool,
    reconnect: bool = False,
) -> Report:
    """
    Hold abusive connections from ``addresses`` while well-behaved clients
    try every 0.5 s.
    """
    probes = Probes()
    threads: list[threading.Thread] = []
    everyone, failed, opening = hold(
        port,
        addresses,
        seconds,
        trickle,
        reconnect,
        lambda: threads.append(probes.run(tries, probe_seconds)),
    )
    for thread in threads:
        thread.join(timeout=30)
    return {
        **held(everyone, len(addresses) - failed),
        **probes.report(),
        "not_opened": failed,
        "opening_s": opening,
    }


def flood_until_blocked(
    socks: Sequence[socket.socket],
    line: bytes,
    max_bytes: int,
    max_seconds: float,
    stall: float = 2.0,
) -> tuple[list[int], float]:
    """
    Pipeline ``line`` on every socket without reading, until no socket has
    taken a byte for ``stall`` seconds (the server has stopped reading them
    all), or each has sent ``max_bytes``, or ``max_seconds`` have passed.

    :returns: the bytes each sent, and when the last byte was sent
        (``time.monotonic()``).
    """
    chunk = line * (65536 // len(line))
    sent = [0] * len(socks)
    dead = [False] * len(socks)
    for sock in socks:
        sock.setblocking(False)
    started = last = time.monotonic()
    while time.monotonic() - started < max_seconds:
        progress = False
        for n, sock in enumerate(socks):
            if dead[n] or sent[n] >= max_bytes:
                continue
            try:
                taken = sock.send(chunk[: max_bytes - sent[n]])
            except BlockingIOError:
                continue
            except OSError:
                dead[n] = True
                continue
            sent[n] += taken
            progress = progress or taken > 0
        now = time.monotonic()
        if progress:
            last = now
        elif now - last > stall or all(
            dead[n] or sent[n] >= max_bytes for n in range(len(socks))
        ):
            break
        else:
            time.sleep(0.02)
    return sent, last


def latencies(sock: socket.socket, seconds: float) -> list[float]:
    """
    Request/response on one connection for ``seconds``: each ``Hello``'s
    round trip, in ms.
    """
    found = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        sock.sendall(HELLO)
        if not read_line(sock).startswith(GREETING):
            raise RuntimeError("the well-behaved client got a wrong reply")
        found.append(1000 * (time.perf_counter() - began))
    return found


def percentiles(values: Sequence[float]) -> Report:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "requests": len(ordered),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1],
    }


class CPUSampler:
    """
    The server's CPU time, sampled every ``interval`` seconds in a thread.
    """

    def __init__(self, server: Server, interval: float = 0.5) -> None:
        self.server = server
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, IndexError, ValueError):
                self.samples.append((time.monotonic(), self.server.cpu_seconds()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def percent(self, start: float, end: float) -> float | None:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return 100 * (c1 - c0) / (t1 - t0)

    def busy_after(self, moment: float, limit: float, idle: float = 20.0) -> float:
        """
        Wait until the server's CPU falls below ``idle`` % (over one
        interval) after ``moment``, or ``limit`` seconds have passed.

        :returns: seconds from ``moment`` to the start of that idle
            interval (``limit`` if it stayed busy).
        """
        while time.monotonic() < moment + limit:
            after = [s for s in self.samples if s[0] >= moment]
            for (t0, c0), (t1, c1) in itertools.pairwise(after):
                if 100 * (c1 - c0) / (t1 - t0) < idle:
                    return max(0.0, t0 - moment)
            time.sleep(self.interval)
        return limit


def _flood_child(
    pipe: multiprocessing.connection.Connection,
    port: int,
    clients: int,
    line: bytes,
    max_bytes: int,
    max_seconds: float,
) -> None:
    socks = []
    try:
        for _ in range(clients):
            with contextlib.suppress(OSError):
                socks.append(connect(port, timeout=5.0))
        pipe.send(("open", len(socks)))
        sent, last = flood_until_blocked(socks, line, max_bytes, max_seconds)
        pipe.send(("stopped", last, sum(sent), sum(1 for n in sent if n < max_bytes)))
        pipe.poll(300)
    finally:
        for sock in socks:
            sock.close()


# Scenarios.


@dataclass
class Params:
    """
    How big each load is: the full run's, or ``--quick``'s.
    """

    quick: bool
    slow_count: int = 2000
    slow_seconds: float = 15.0
    per_ip_count: int = 2000
    per_ip_seconds: float = 6.0
    squatters: int = 1100
    squat_limit: int = 1000
    squat_seconds: float = 12.0
    squat_probe_seconds: float = 8.0
    stalled_clients: int = 200
    stalled_max_bytes: int = 16 << 20
    flood_seconds: float = 60.0
    greedy_clients: int = 50
    greedy_seconds: float = 10.0
    greedy_pipelines: tuple[int, ...] = (64, 1024)
    nonreading_clients: int = 500
    nonreading_max_bytes: int = 512 << 10
    busy_limit: float = 30.0
    fd_limit: int = 4096
    fd_clients: int = 4200

    @classmethod
    def choose(cls, quick: bool) -> Params:
        if not quick:
            return cls(quick)
        return cls(
            quick,
            slow_count=300,
            slow_seconds=7.0,
            per_ip_count=1100,
            per_ip_seconds=3.0,
            squat_seconds=7.0,
            squat_probe_seconds=5.0,
            stalled_clients=50,
            flood_seconds=15.0,
            greedy_seconds=3.0,
            nonreading_clients=100,
            nonreading_max_bytes=256 << 10,
            busy_limit=10.0,
            fd_limit=512,
            fd_clients=600,
        )


@dataclass
class Variant:
    """
    One way of running a scenario against one tree.

    :ivar reference: run in the first round only (a reference point, not a
        comparison).
    """

    name: str
    options: list[str]
    bound: str
    reconnect: bool = False
    line: bytes = HELLO
    reference: bool = False
    close_refused: bool = False
    pipeline: int = 64


@dataclass
class Context:
    params: Params
    server_cpu: int | None
    client_cpu: int | None
    certificates: Path


@dataclass
class Scenario:
    """
    A scenario: its variants for a tree, how to run one, and its table.
    """

    key: str
    title: str
    text: Callable[[Params], str]
    variants: Callable[[Tree, Params], list[Variant]]
    run: Callable[[Tree, Variant, Context], Report]
    header: list[str]
    row: Callable[[Report, Params], list[str]]


def fixed(tree: Tree) -> bool:
    """
    Whether a tree has the defences of issue 12 (judged by one option).
    """
    return tree.has("line-timeout")


def ratio_text(report: Report, name: str) -> str:
    ok, tries = report.get(f"{name}_ok"), report.get(f"{name}_tries")
    if ok is None or tries is None:
        return "n/a"
    return f"{ok:.0f}/{tries:.0f}"


def held_text(report: Report) -> str:
    admitted = report.get("admitted") or 0
    still_open = report.get("still_open") or 0
    if report.get("held_s") is not None and still_open <= admitted / 2:
        text = f"{report['held_s']:.1f} s"
        if still_open:
            text += f" ({still_open:,.0f} still open)"
        return text
    if report.get("tracked_s") is None:
        return "n/a"
    return (
        f"> {report['tracked_s']:.0f} s ({still_open:,.0f} of "
        f"{admitted:,.0f} still open)"
    )


# 1. Slowloris.


def slowloris_variants(tree: Tree, p: Params) -> list[Variant]:
    base = ["--max-connections", str(p.slow_count)]
    if not fixed(tree):
        return [
            Variant(
                "defaults",
                base,
                "nothing: every byte restarts the 300 s idle clock",
            )
        ]
    short = [*base, "--line-timeout", "5"]
    return [
        Variant(
            "--line-timeout 5",
            short,
            "--line-timeout: a line must arrive whole 5 s after its first byte",
        ),
        Variant(
            "defaults (--line-timeout 30)",
            base,
            "--line-timeout 30, past the end of this run",
            reference=True,
        ),
        Variant(
            "--line-timeout 5, attackers reconnect",
            short,
            "only --max-connections: a closed slot is taken again at once",
            reconnect=True,
            reference=True,
        ),
    ]


def slowloris_run(tree: Tree, variant: Variant, c: Context) -> Report:
    p = c.params
    with running(tree, variant.options, c.server_cpu) as server:
        port = server.port
        return attack_and_probe(
            port,
            sources("127.0.1", p.slow_count, 100),
            p.slow_seconds,
            p.slow_seconds - 1.5,
            {"probe": lambda: hello(port)},
            trickle=True,
            reconnect=variant.reconnect,
        )


def slowloris_row(r: Report, p: Params) -> list[str]:
    return [
        ratio_text(r, "probe"),
        f"{number(r.get('admitted'))}/{number(r.get('opened'))}",
        held_text(r),
        number(r.get("reconnections")),
        str(r.get("reply") or "(nothing)"),
    ]


SLOWLORIS = Scenario(
    "slowloris",
    "1. Slowloris",
    lambda p: (
        f"{p.slow_count:,} connections, 100 from each of "
        f"{(p.slow_count + 99) // 100} loopback addresses (127.0.1.x, so that "
        "no per-address limit applies), each sending one byte of a "
        "never-ending line every second, against ``--max-connections "
        f"{p.slow_count}``.  Once they are open, a well-behaved client from "
        "127.0.0.1 connects, sends ``Hello`` and waits up to 1 s for "
        f"``Greetings!``, every 0.5 s for {p.slow_seconds - 1.5:g} s.  "
        "*held* is the median time from a trickling connection's first byte "
        "to the server closing it (or, while most are still open, how long "
        f"they were watched: {p.slow_seconds:g} s)."
    ),
    slowloris_variants,
    slowloris_run,
    [
        "well-behaved client served",
        "trickling admitted",
        "held",
        "reconnections",
        "what the trickling clients got",
    ],
    slowloris_row,
)


# 2. One address takes every slot.


def per_ip_variants(tree: Tree, p: Params) -> list[Variant]:
    base = ["--max-connections", str(p.per_ip_count)]
    if tree.has("max-connections-per-ip"):
        return [
            Variant(
                "defaults (--max-connections-per-ip 1000)",
                base,
                "--max-connections-per-ip: one address gets 1,000 slots",
            )
        ]
    return [Variant("defaults", base, "nothing: one address may take every slot")]


def per_ip_run(tree: Tree, variant: Variant, c: Context) -> Report:
    p = c.params
    with running(tree, variant.options, c.server_cpu) as server:
        port = server.port
        return attack_and_probe(
            port,
            ["127.0.0.1"] * p.per_ip_count,
            p.per_ip_seconds,
            p.per_ip_seconds - 1.0,
            {"probe": lambda: hello(port, "127.0.0.2")},
            trickle=True,
        )


def per_ip_row(r: Report, p: Params) -> list[str]:
    return [
        ratio_text(r, "probe"),
        f"{number(r.get('admitted'))}/{number(r.get('opened'))}",
        number(r.get("refused")),
    ]


PER_IP = Scenario(
    "per-ip",
    "2. One address takes every slot",
    lambda p: (
        f"{p.per_ip_count:,} connections from 127.0.0.1, trickling as above, "
        f"against ``--max-connections {p.per_ip_count}``; a client from "
        "127.0.0.2 tries ``Hello`` every 0.5 s for "
        f"{p.per_ip_seconds - 1:g} s."
    ),
    per_ip_variants,
    per_ip_run,
    ["client from 127.0.0.2 served", "127.0.0.1 admitted", "127.0.0.1 refused"],
    per_ip_row,
)


# 3. TLS squatters.


def make_certificates(directory: Path) -> ssl.SSLContext | None:
    """
    A CA and a server certificate for localhost (with trustme, from the dev
    extra), and a client context that trusts them.
    """
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_variants(tree: Tree, p: Params) -> list[Variant]:
    base = ["--max-connections", str(p.squat_limit)]
    if tree.has("handshake-timeout"):
        return [
            Variant(
                "defaults (--handshake-timeout 5, --max-handshakes 1000)",
                base,
                "--handshake-timeout and --max-handshakes; handshakes hold "
                "no connection slot",
            ),
            Variant(
                "defaults, squatters reconnect",
                base,
                "only --max-handshakes: a freed handshake slot is taken again",
                reconnect=True,
                reference=True,
            ),
        ]
    return [
        Variant(
            "defaults",
            base,
            "the idle timeout: 300 s, +10 s to close; squatters hold slots",
        )
    ]


def tls_run(tree: Tree, variant: Variant, c: Context) -> Report:
    p = c.params
    context = make_certificates(c.certificates)
    if context is None:
        return {"error": "trustme is not installed (pip install '.[dev]')"}
    keys = f"privateKey={c.certificates}/server.key:certKey={c.certificates}/server.pem"
    listeners = [f"ssl:0:interface=127.0.0.1:{keys}", "tcp:0:interface=127.0.0.1"]
    with running(tree, variant.options, c.server_cpu, listeners) as server:
        tls_port, plain = server.ports
        if not hello(tls_port, timeout=5.0, context=context):
            return {"error": "a TLS client is not served even before the squatters"}
        return attack_and_probe(
            tls_port,
            sources("127.0.3", p.squatters, 100),
            p.squat_seconds,
            p.squat_probe_seconds,
            {
                "tls": lambda: hello(tls_port, timeout=2.0, context=context),
                "plain": lambda: hello(plain, timeout=2.0),
            },
            trickle=False,
            reconnect=variant.reconnect,
        )


def tls_row(r: Report, p: Params) -> list[str]:
    return [
        ratio_text(r, "tls"),
        ratio_text(r, "plain"),
        f"{number(r.get('admitted'))}/{number(r.get('opened'))}",
        held_text(r),
        number(r.get("reconnections")),
    ]


TLS = Scenario(
    "tls",
    "3. TLS squatters",
    lambda p: (
        "One ``ssl:`` and one ``tcp:`` listener, ``--max-connections "
        f"{p.squat_limit}``; {p.squatters:,} TCP connections to the TLS port "
        "(100 from each of 127.0.3.x) that never send a ClientHello.  Then a "
        "TLS client (verifying the server's trustme certificate) and a plain "
        "client each try ``Hello`` every 0.5 s for "
        f"{p.squat_probe_seconds:g} s.  *held*: how long the server kept the "
        f"squatters (watched for {p.squat_seconds:g} s)."
    ),
    tls_variants,
    tls_run,
    [
        "TLS client served",
        "plain client served",
        "squatters admitted",
        "held",
        "reconnections",
    ],
    tls_row,
)


# 4. Memory per stalled client.


def memory_variants(tree: Tree, p: Params) -> list[Variant]:
    if fixed(tree):
        bound = (
            "unanswered input kept as the raw bytes; reading stops at "
            "64 KiB of unsent replies"
        )
    else:
        bound = "one Python object per held line"
    return [
        Variant("ab", [], bound, line=b"ab\n"),
        Variant("Hello", [], bound, line=HELLO),
    ]


def memory_run(tree: Tree, variant: Variant, c: Context) -> Report:
    p = c.params
    with running(tree, variant.options, c.server_cpu) as server:
        time.sleep(0.5)
        before = server.rss_kib()
        socks: list[socket.socket] = []
        try:
            for _ in range(p.stalled_clients):
                socks.append(connect(server.port, timeout=5.0))
            sent, _ = flood_until_blocked(
                socks, variant.line, p.stalled_max_bytes, p.flood_seconds
            )
            time.sleep(1.0)
            after = server.rss_kib()
            served = hello(server.port, timeout=5.0)
        finally:
            for sock in socks:
                sock.close()
    return {
        "clients": len(socks),
        "sent_mib": statistics.median(sent) / (1 << 20),
        "capped": sum(1 for n in sent if n >= p.stalled_max_bytes),
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "kib_per_client": (after - before) / len(socks),
        "served": 1.0 if served else 0.0,
    }


def memory_row(r: Report, p: Params) -> list[str]:
    kib = r.get("kib_per_client")
    verdict = "n/a" if kib is None else ("met" if kib <= 256 else "not met")
    return [
        number(r.get("clients")),
        number(r.get("sent_mib"), 1),
        number(r.get("rss_before_mib"), 1),
        number(r.get("rss_after_mib"), 1),
        number(kib),
        verdict,
        "yes" if r.get("served") == 1.0 else "no",
    ]


MEMORY = Scenario(
    "memory",
    "4. Memory per stalled client",
    lambda p: (
        f"{p.stalled_clients} clients each pipeline ``ab`` (or ``Hello``) as "
        "fast as the server takes them and never read, until no client has "
        f"sent a byte for 2 s (or {p.stalled_max_bytes >> 20} MiB each, or "
        f"{p.flood_seconds:g} s); server RSS (``VmRSS``, which leaves out the "
        "kernel's socket buffers) before and 1 s after.  *sent*: median "
        "bytes each client got in before the server stopped reading it.  "
        "*served*: a fresh client gets ``Greetings!`` within 5 s meanwhile."
    ),
    memory_variants,
    memory_run,
    [
        "clients",
        "sent MiB each",
        "RSS before MiB",
        "RSS after MiB",
        "KiB per client",
        "<= 256 KiB",
        "served",
    ],
    memory_row,
)


# 5. Fairness.


GREEDY_LINE = "echo the quick brown fox"
"""
What the greedy pipeliners send: a command of the general path (find the
command, bind its argument, call the handler, encode the reply), which costs
the server several times what it costs the load generator to send and check
(``Hello`` is answered from a cache in about 0.3 us, and the generator could
not keep the server busy with it).
"""

BENCH_COMMANDS = ["--commands", "commandproto.benchcommands"]


def greedy_variants(tree: Tree, p: Params) -> list[Variant]:
    if fixed(tree):
        bound = "at most 1,024 lines of one client per reactor turn"
    else:
        bound = "one read (up to 64 KiB of lines) answered in one go"
    return [
        Variant(
            f"-P {depth}",
            BENCH_COMMANDS,
            bound,
            pipeline=depth,
        )
        for depth in p.greedy_pipelines
    ]


def scheduled_seconds(pid: int) -> float:
    """
    Seconds a process (all its threads) has spent on a CPU or waiting in a
    run queue for one, from ``/proc/PID/schedstat``: time it wanted a CPU.
    """
    on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return (int(on_cpu) + int(waiting)) / 1e9


def greedy_run(tree: Tree, variant: Variant, c: Context) -> Report:
    p = c.params
    with running(tree, variant.options, c.server_cpu) as server:
        probe = connect(server.port, timeout=10.0)
        client_cpu = pin(c.client_cpu)

        def generator() -> None:
            # The generator shares CPU 1 with the request/response client:
            # niced, so that the client's round trips measure the server
            # rather than the wait for CPU 1.
            if client_cpu is not None:
                client_cpu()
            os.nice(10)

        bench = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "commandproto.bench",
                "--port",
                str(server.port),
                "-c",
                str(p.greedy_clients),
                "-P",
                str(variant.pipeline),
                "-t",
                GREEDY_LINE,
                "--duration",
                str(p.greedy_seconds + 3),
                "--timeout",
                "10",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment_for(ROOT),
            cwd=ROOT,
            preexec_fn=generator,
        )
        try:
            with probe:
                time.sleep(1.5)
                cpu = server.cpu_seconds()
                wanted = scheduled_seconds(server.pid)
                began = time.monotonic()
                found = latencies(probe, p.greedy_seconds)
                cpu = server.cpu_seconds() - cpu
                wanted = scheduled_seconds(server.pid) - wanted
                took = time.monotonic() - began
            out, err = bench.communicate(timeout=p.greedy_seconds + 60)
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait()
    greedy = json.loads(out) if bench.returncode == 0 else {}
    return {
        **percentiles(found),
        "server_cpu_percent": 100 * cpu / took,
        "server_wanted_percent": 100 * wanted / took,
        "greedy_rps": greedy.get("rps"),
        "greedy_error": err.decode(errors="replace").strip()[:80]
        if bench.returncode
        else "",
    }


def greedy_row(r: Report, p: Params) -> list[str]:
    p99 = r.get("p99_ms")
    return [
        number(r.get("p50_ms"), 2),
        number(p99, 2),
        number(r.get("max_ms"), 1),
        number(r.get("requests")),
        number(r.get("greedy_rps")),
        number(r.get("server_cpu_percent")),
        number(r.get("server_wanted_percent")),
        "n/a" if p99 is None else ("met" if p99 < 50 else "not met"),
    ]


GREEDY = Scenario(
    "greedy",
    "5a. Fairness: greedy pipeliners that read",
    lambda p: (
        f"``python -m commandproto.bench -c {p.greedy_clients} -P DEPTH -t "
        f"'{GREEDY_LINE}'`` against a server started with ``--commands "
        "commandproto.benchcommands`` (each connection keeps DEPTH requests "
        "in flight and reads its replies; ``echo`` takes the general path, "
        "which costs the server several times what it costs the generator, "
        "so that the server is the bottleneck), and beside it one "
        "request/response client sending ``Hello`` and waiting for each "
        f"reply, for {p.greedy_seconds:g} s (after 1.5 s of warm-up): its "
        "round-trip times.  The generator runs at ``nice 10`` on the "
        "client's CPU, so that the client's round trips measure the server, "
        "not its wait for CPU 1.  *server CPU %*: its CPU time over the "
        "window; *wanted %*: time on a CPU or waiting in the run queue for "
        "one (``/proc/PID/schedstat``), near 100 when the server is the "
        "bottleneck even if other work on the machine takes some of CPU 0."
    ),
    greedy_variants,
    greedy_run,
    [
        "p50 ms",
        "p99 ms",
        "max ms",
        "its requests",
        "greedy req/s",
        "server CPU %",
        "wanted %",
        "p99 < 50 ms",
    ],
    greedy_row,
)


def nonreading_variants(tree: Tree, p: Params) -> list[Variant]:
    if fixed(tree):
        bound = "1,024 lines per turn; reading stops at 64 KiB of unsent replies"
    else:
        bound = "reading stops only once the kernel's send buffer is full"
    return [Variant("Hello", [], bound)]


def nonreading_run(tree: Tree, variant: Variant, c: Context) -> Report:
    p = c.params
    context = multiprocessing.get_context("fork")
    with running(tree, variant.options, c.server_cpu) as server:
        probe = connect(server.port, timeout=10.0)
        parent, child = context.Pipe()
        flood = context.Process(
            target=_flood_child,
            args=(
                child,
                server.port,
                p.nonreading_clients,
                variant.line,
                p.nonreading_max_bytes,
                p.flood_seconds,
            ),
            daemon=True,
        )
        sampler = CPUSampler(server)
        try:
            with probe:
                probe.sendall(HELLO)
                read_line(probe)
                flood.start()
                if not parent.poll(60):
                    return {"error": "the flooding clients did not connect"}
                opened = parent.recv()[1]
                began = time.monotonic()
                found = latencies(probe, p.greedy_seconds)
                during = sampler.percent(began, time.monotonic())
            if not parent.poll(p.flood_seconds + 60):
                return {"error": "the flood did not stop"}
            _, stopped, total, blocked = parent.recv()
            busy = sampler.busy_after(stopped, p.busy_limit)
            parent.send("exit")
        finally:
            sampler.stop()
            flood.join(timeout=10)
            if flood.is_alive():
                flood.kill()
                flood.join()
    return {
        **percentiles(found),
        "clients": opened,
        "sent_mib": total / (1 << 20),
        "blocked": blocked,
        "server_cpu_percent": during,
        "busy_after_s": busy,
    }


def nonreading_row(r: Report, p: Params) -> list[str]:
    busy = r.get("busy_after_s")
    busy_text = number(busy, 1)
    if isinstance(busy, float | int) and busy >= p.busy_limit:
        busy_text = f">= {p.busy_limit:g}"
    return [
        number(r.get("p50_ms"), 2),
        number(r.get("p99_ms"), 2),
        number(r.get("max_ms"), 1),
        number(r.get("server_cpu_percent")),
        f"{number(r.get('blocked'))}/{number(r.get('clients'))}",
        number(r.get("sent_mib")),
        busy_text,
    ]


NONREADING = Scenario(
    "nonreading",
    "5b. Fairness: pipeliners that never read",
    lambda p: (
        f"{p.nonreading_clients} clients pipeline ``Hello`` and never read, "
        "each until the server stops reading it (no byte taken for 2 s) or "
        f"it has sent {p.nonreading_max_bytes >> 10} KiB; meanwhile the "
        f"request/response client measures for {p.greedy_seconds:g} s.  "
        "*blocked*: clients the server had stopped reading before their "
        "cap; *busy after*: seconds from the flood's last byte until the "
        "server's CPU falls under 20 % (sampled every 0.5 s, for at most "
        f"{p.busy_limit:g} s)."
    ),
    nonreading_variants,
    nonreading_run,
    [
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU %",
        "blocked",
        "MiB sent",
        "busy after s",
    ],
    nonreading_row,
)


# 6. Descriptor exhaustion.


def descriptor_variants(tree: Tree, p: Params) -> list[Variant]:
    if fixed(tree):
        bound = (
            "the limit counts every descriptor, lingering closes included, "
            "and keeps a reserve to refuse with"
        )
    else:
        bound = "--max-connections (10,000) does not fit the 4,096 descriptors"
    return [
        Variant("defaults", [], bound),
        Variant(
            "defaults, refused clients close at once",
            [],
            bound,
            reference=True,
            close_refused=True,
        ),
    ]


def connect_batch(
    port: int, addresses: Sequence[str], timeout: float
) -> tuple[list[socket.socket], int, int]:
    """
    Connect from each address at once, without blocking.

    :returns: the connected sockets, how many were refused or reset, how
        many timed out.
    """
    pending = []
    reset = 0
    for source in addresses:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        code = sock.connect_ex(("127.0.0.1", port))
        if code in (0, errno.EINPROGRESS):
            pending.append(sock)
        else:
            reset += 1
            sock.close()
    connected = []
    by_fd = {sock.fileno(): sock for sock in pending}
    with selectors.DefaultSelector() as selector:
        for sock in pending:
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                sock = by_fd.pop(key.fd)
                selector.unregister(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected.append(sock)
                else:
                    reset += 1
                    sock.close()
    for sock in by_fd.values():
        sock.close()
    return connected, reset, len(by_fd)


def replies_of(
    socks: Sequence[socket.socket], timeout: float
) -> list[tuple[bytes, str]]:
    """
    Each socket's first line, and how it ended: ``line``, ``eof``,
    ``reset`` or ``timeout``.
    """
    found: dict[int, tuple[bytes, str]] = {}
    data = {sock.fileno(): b"" for sock in socks}
    by_fd = {sock.fileno(): sock for sock in socks}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                fd = key.fd
                sock = by_fd[fd]
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    found[fd] = (data[fd], "reset")
                    selector.unregister(sock)
                    continue
                data[fd] += chunk
                if not chunk or b"\n" in data[fd]:
                    found[fd] = (data[fd], "line" if chunk else "eof")
                    selector.unregister(sock)
    return [found.get(s.fileno(), (data[s.fileno()], "timeout")) for s in socks]


def descriptors_run(tree: Tree, variant: Variant, c: Context) -> Report:
    p = c.params
    counts = dict.fromkeys(("served", "refused", "reset", "silent", "other"), 0)
    kept: list[socket.socket] = []
    addresses = sources("127.0.2", p.fd_clients, 100)
    with running(tree, variant.options, c.server_cpu, files=p.fd_limit) as server:
        deadline = time.monotonic() + 120
        tried = 0
        try:
            for start in range(0, len(addresses), 100):
                if time.monotonic() > deadline:
                    break
                batch = addresses[start : start + 100]
                tried += len(batch)
                socks, reset, late = connect_batch(server.port, batch, 5.0)
                counts["reset"] += reset
                counts["silent"] += late
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.send(HELLO)
                kept += socks
                for sock, (line, how) in zip(
                    socks, replies_of(socks, 5.0), strict=True
                ):
                    if line.startswith(GREETING):
                        counts["served"] += 1
                    elif line.startswith(TOO_MANY):
                        counts["refused"] += 1
                        if variant.close_refused:
                            sock.close()
                    elif how == "reset" and not line:
                        counts["reset"] += 1
                    elif not line:
                        counts["silent"] += 1
                    else:
                        counts["other"] += 1
        finally:
            for sock in kept:
                sock.close()
    return {"clients": p.fd_clients, "not_tried": p.fd_clients - tried, **counts}


def descriptors_row(r: Report, p: Params) -> list[str]:
    return [
        number(r.get(key))
        for key in ("clients", "served", "refused", "reset", "silent", "other")
    ]


DESCRIPTORS = Scenario(
    "descriptors",
    "6. Out of file descriptors",
    lambda p: (
        "The server starts with ``resource.setrlimit(RLIMIT_NOFILE, "
        f"({p.fd_limit}, {p.fd_limit}))`` (in ``preexec_fn``), then "
        f"{p.fd_clients:,} clients (100 from each of 127.0.2.x, so that no "
        "per-address limit applies) connect in batches of 100, each sending "
        "``Hello``, and stay connected (in the second run, a client that "
        "gets the error line closes at once).  *refused*: got the error line; "
        "*reset*: connection refused or reset with no line; *silent*: "
        "closed with nothing, or nothing within 5 s."
    ),
    descriptor_variants,
    descriptors_run,
    ["clients", "served", "refused (error line)", "reset", "silent", "other"],
    descriptors_row,
)

SCENARIOS = [SLOWLORIS, PER_IP, TLS, MEMORY, GREEDY, NONREADING, DESCRIPTORS]


# Reports.


def combine(reports: Sequence[Report]) -> Report:
    """
    The median of each number over the rounds that did not fail; the first
    round's value of anything else.
    """
    good = [r for r in reports if "error" not in r]
    if not good:
        errors = sorted({str(r.get("error", "not run")) for r in reports})
        return {"error": "; ".join(errors) or "not run"}
    combined: Report = {"rounds": len(good)}
    for key in good[0]:
        values = [r.get(key) for r in good]
        numbers = [
            float(v)
            for v in values
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if numbers:
            combined[key] = statistics.median(numbers)
        else:
            combined[key] = next((v for v in values if v is not None), None)
    return combined


Results = dict[tuple[str, str, str], list[Report]]


def scenario_table(
    scenario: Scenario, trees: Sequence[Tree], results: Results, p: Params
) -> str:
    header = ["server", "run", *scenario.header, "rounds", "what bounds it"]
    rows = []
    for tree in trees:
        for variant in scenario.variants(tree, p):
            reports = results.get((scenario.key, tree.label, variant.name), [])
            if not reports:
                continue
            combined = combine(reports)
            if "error" in combined:
                cells = ["failed: " + str(combined["error"])[:70]]
                cells += [""] * (len(scenario.header) - 1)
                rounds = "0"
            else:
                cells = scenario.row(combined, p)
                rounds = number(combined["rounds"])
            rows.append([tree.label, variant.name, *cells, rounds, variant.bound])
    title = scenario.title
    return "\n".join(
        [
            title,
            "-" * len(title),
            "",
            scenario.text(p),
            "",
            simple_table(header, rows),
        ]
    )


def render(
    command: str,
    trees: Sequence[Tree],
    scenarios: Sequence[Scenario],
    results: Results,
    p: Params,
    rounds: int,
    pinning: str,
    started: datetime.datetime,
    took: float,
    load: str = "",
) -> str:
    mode = " (``--quick``: a smoke run, not numbers to quote)" if p.quick else ""
    parts = [
        BEGIN,
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC{mode}; {rounds} interleaved "
        f"round{'s' if rounds != 1 else ''}, each run against a fresh server, "
        "medians shown (rows marked *reference* ran in the first round "
        f"only); the whole run took {took / 60:.1f} minutes.  Command::",
        "",
        f"    {command}",
        "",
        "Servers:",
        "",
        *(f"- **{tree.label}**: {tree.origin}" for tree in trees),
        "",
        "The machine:",
        "",
        describe_machine(pinning),
        "",
        *([load, ""] if load else []),
    ]
    for scenario in scenarios:
        parts += [scenario_table(scenario, trees, results, p), ""]
    parts.append(END)
    return "\n".join(parts) + "\n"


def summary(report: Report) -> str:
    if "error" in report:
        return f"failed: {report['error']}"
    shown = []
    for key, value in report.items():
        if isinstance(value, float):
            shown.append(f"{key}={value:.2f}")
        elif value not in ("", None):
            shown.append(f"{key}={value}")
    return " ".join(shown)


class LoadWatch:
    """
    The machine's 1-minute load average, every 5 s in a thread: on a shared
    machine, other work skews timings, and the docs should say how much.
    """

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(5.0)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(timeout=10)
        if not self.samples:
            return ""
        return (
            f"The machine's 1-minute load average during the run was "
            f"{min(self.samples):.1f}-{max(self.samples):.1f} (median "
            f"{statistics.median(self.samples):.1f}) on {os.cpu_count()} CPUs: "
            "above 2, other work shared the CPUs, and latencies and CPU "
            "shares are that much noisier."
        )


def raise_file_limit() -> None:
    """
    As many descriptors as the hard limit allows, for the many-connection
    scenarios (the servers get their own limits).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def measure(
    trees: Sequence[Tree],
    scenarios: Sequence[Scenario],
    p: Params,
    rounds: int,
    server_cpu: int | None,
    client_cpu: int | None,
) -> Results:
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="abuse-certificates-") as certificates:
        context = Context(p, server_cpu, client_cpu, Path(certificates))
        for round_number in range(rounds):
            for scenario in scenarios:
                for tree in trees:
                    for variant in scenario.variants(tree, p):
                        if variant.reference and (round_number > 0 or p.quick):
                            continue
                        began = time.monotonic()
                        try:
                            report = scenario.run(tree, variant, context)
                        except Exception as e:
                            report = {"error": f"{type(e).__name__}: {e}"}
                        key = (scenario.key, tree.label, variant.name)
                        results.setdefault(key, []).append(report)
                        log(
                            f"round {round_number + 1} {scenario.key} "
                            f"{tree.label} [{variant.name}] "
                            f"({time.monotonic() - began:.0f} s): {summary(report)}"
                        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="commandproto against abusive clients, revision beside "
        "revision (issue 12)."
    )
    parser.add_argument(
        "--commandproto",
        action="append",
        metavar="LABEL=WHERE",
        default=[],
        help="measure the server of commandproto from WHERE, a checkout's path "
        "or a git revision of this repository, named LABEL; repeatable "
        "(default: this checkout, as 'commandproto')",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, small loads"
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 3")
    parser.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated, of: " + ", ".join(s.key for s in SCENARIOS),
    )
    parser.add_argument(
        "--output", type=Path, default=DOCS, help=f"default {DOCS.relative_to(ROOT)}"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--save-json", type=Path, default=None, help="raw results")
    arguments = parser.parse_args(argv)
    p = Params.choose(arguments.quick)
    rounds = arguments.rounds or (1 if arguments.quick else 3)
    scenarios = SCENARIOS
    if arguments.scenarios:
        chosen = {name.strip() for name in arguments.scenarios.split(",")}
        unknown = chosen - {s.key for s in SCENARIOS}
        if unknown:
            parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
        scenarios = [s for s in SCENARIOS if s.key in chosen]
    command = " ".join(
        ["python benchmarks/abuse.py", *(sys.argv[1:] if argv is None else argv)]
    )

    server_cpu, client_cpu, pinning = choose_cpus(
        "this script (every client) and the load generator", "clients"
    )
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    raise_file_limit()
    archives = Path(tempfile.mkdtemp(prefix="abuse-trees-"))
    try:
        trees = []
        for entry in arguments.commandproto or ["commandproto=" + str(ROOT)]:
            label, equals, where = entry.partition("=")
            try:
                if not (label and equals):
                    raise ValueError("want LABEL=PATH or LABEL=REVISION")
                tree = resolve_tree(label, where, archives)
            except ValueError as e:
                parser.error(f"--commandproto {entry!r}: {e}")
            tree.options = known_options(tree.path)
            log(f"{tree.label}: {tree.origin}")
            trees.append(tree)
        started = datetime.datetime.now(datetime.timezone.utc)
        clock = time.monotonic()
        watch = LoadWatch()
        try:
            results = measure(trees, scenarios, p, rounds, server_cpu, client_cpu)
        finally:
            load = watch.stop()
        took = time.monotonic() - clock
    finally:
        shutil.rmtree(archives, ignore_errors=True)
    block = render(
        command, trees, scenarios, results, p, rounds, pinning, started, took, load
    )
    print(block)
    if arguments.save_json:
        arguments.save_json.write_text(
            json.dumps(
                {" / ".join(key): value for key, value in results.items()}, indent=2
            )
        )
    if not arguments.no_write:
        write_docs(arguments.output, block, BEGIN, END)
        log(f"wrote {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
