"""
Microbenchmark of the server's per-read hot path, in process, no sockets:
``CommandServerProtocol.dataReceived`` on a transport that discards writes,
against Twisted's plain ``LineReceiver`` answering the same protocol.

Usage: python benchmarks/hot_path.py [--rounds N] [--metrics]
           [--profile SCENARIO]

Prints the median nanoseconds of CPU time per command for each scenario,
the ratio to the plain LineReceiver, and commandproto's ratio to its own
constant path (the first scenario), measured side by side in interleaved
rounds.  CPU time (``time.process_time_ns``), not wall time: on a shared
machine, wall time counts the moments other processes had the CPU, and
three runs at a load average of 5 gave 149, 344 and 380 ns for the
constant read, where CPU time gave 144 and 145.  The
server serves the built-ins, :mod:`commandproto.benchcommands` (``echo``,
``aping``) and ``benchmarks/kvbench.py`` (``set``, ``get``, ``aget``), as
``twistd -n commandserver --commands commandproto.benchcommands
--commands kvbench:commands`` does.

``--profile SCENARIO`` (a scenario's key: ``constant``, ``mix``, ...) runs
that scenario under cProfile instead and prints the top functions by their
own time, each with its share of the whole and its nanoseconds per command
(cProfile's overhead included, so shares say more than the nanoseconds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from kvbench import KEYS, VALUES
from kvbench import commands as kv_commands
from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver

from commandproto import CommandServerFactory
from commandproto.benchcommands import commands as bench_commands
from commandproto.commands.table import with_builtins
from commandproto.server.stats import ServerStats

MIX = b"Hello\r\nAre you there?\r\nnope\r\necho hi\r\n"
# benchmarks/side_by_side.py --set-get's lines, over 32 of kvbench's keys.
SET_GET = b"".join(
    f"set {key} {value}\r\nget {key}\r\n".encode()
    for key, value in zip(KEYS[:32], VALUES[:32], strict=True)
)
GETS = b"".join(f"get {key}\r\n".encode() for key in KEYS)
AGETS = b"".join(f"aget {key}\r\n".encode() for key in KEYS)

# Key: (title, what one read holds).  The first is the constant path that
# the others are compared with.
SCENARIOS = {
    "constant": ("pipelined 64 x 'Hello\\r\\n'", b"Hello\r\n" * 64),
    "constant-lf": ("pipelined 64 x 'Hello\\n'", b"Hello\n" * 64),
    "mix": ("pipelined 64 mix (-t mix)", MIX * 16),
    "unknown": ("pipelined 64, one 'nope' in it", b"Hello\r\n" * 63 + b"nope\r\n"),
    "echo": ("pipelined 64 x 'echo hi'", b"echo hi\r\n" * 64),
    "async": ("pipelined 64 x 'aping' (async)", b"aping\r\n" * 64),
    "one": ("one 'Hello\\r\\n'", b"Hello\r\n"),
    "setget": ("pipelined 64 set/get (kvbench)", SET_GET),
    "get": ("pipelined 64 x 'get KEY' (kvbench)", GETS),
    "aget": ("pipelined 64 x 'aget KEY' (async)", AGETS),
}


class NullTransport:
    """
    Enough of a transport for the protocols, throwing writes away.
    """

    disconnecting = False

    def write(self, data: bytes) -> None:
        pass

    def writeSequence(self, data: list[bytes]) -> None:
        pass

    def getPeer(self) -> None:
        return None

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass


class PlainLineReceiver(LineReceiver):
    """
    The floor: Twisted's LineReceiver and a dict, nothing else.
    """

    delimiter = b"\n"
    replies = {
        b"Hello": b"Greetings!\r\n",
        b"Are you there?": b"Yes, I am here!\r\n",
    }

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        assert self.transport is not None
        self.transport.write(self.replies.get(line, b"Unknown command.\r\n"))


def make_commandproto(timing: bool = False) -> Callable[[bytes], None]:
    """
    :param timing: time every reply, as ``--metrics`` makes the server do.
    """
    factory = CommandServerFactory(
        with_builtins(bench_commands, kv_commands),
        clock=Clock(),
        stats=ServerStats(timing=timing),
    )
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(NullTransport())  # type: ignore[no-untyped-call]
    return protocol.dataReceived


def make_plain() -> Callable[[bytes], None]:
    protocol = PlainLineReceiver()
    protocol.makeConnection(NullTransport())  # type: ignore[no-untyped-call]
    return protocol.dataReceived


def time_per_command(receive: Callable[[bytes], None], data: bytes) -> float:
    commands = data.count(b"\n")
    repeats = max(20000 // commands, 200)
    start = time.process_time_ns()
    for _ in range(repeats):
        receive(data)
    return (time.process_time_ns() - start) / (repeats * commands)


def profile(key: str) -> None:
    """
    Run one scenario against commandproto under cProfile and print the top
    functions by their own time.
    """
    import cProfile
    import pstats

    receive = make_commandproto()
    data = SCENARIOS[key][1]
    commands = data.count(b"\n")
    repeats = max(200_000 // commands, 2000)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        receive(data)
    profiler.disable()
    print(f"{SCENARIOS[key][0]}: {repeats * commands:,} commands")
    stats = pstats.Stats(profiler)
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in rows.values())
    print(f"own time per command: {1e9 * total / (repeats * commands):,.0f} ns")
    print(f"{'share':>6} {'ns/cmd':>7} {'calls/cmd':>9}  function")
    ranked = sorted(rows.items(), key=lambda item: item[1][2], reverse=True)
    for (filename, line, name), row in ranked[:15]:
        where = f"{Path(filename).name}:{line}" if line else filename
        print(
            f"{100 * row[2] / total:5.1f}% "
            f"{1e9 * row[2] / (repeats * commands):7.0f} "
            f"{row[1] / (repeats * commands):9.2f}  {name} ({where})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", choices=sorted(SCENARIOS), default=None)
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also commandproto timing every reply, as --metrics makes it; "
        "its last column is its ratio to commandproto without",
    )
    arguments = parser.parse_args()
    if arguments.profile is not None:
        profile(arguments.profile)
        return
    servers: dict[str, Callable[[], Callable[[bytes], None]]] = {
        "commandproto": make_commandproto,
        "plain LineReceiver": make_plain,
    }
    if arguments.metrics:
        servers["with --metrics"] = lambda: make_commandproto(timing=True)
    print(f"{'scenario':34} {'server':20} {'ns/cmd':>8} {'ratio':>6} {'vs const':>8}")
    constant = None
    for title, data in SCENARIOS.values():
        samples: dict[str, list[float]] = {server: [] for server in servers}
        for _ in range(arguments.rounds):
            for server, make in servers.items():
                samples[server].append(time_per_command(make(), data))
        floor = statistics.median(samples["plain LineReceiver"])
        for server, values in samples.items():
            median = statistics.median(values)
            versus = ""
            if server == "commandproto":
                constant = constant or median
                versus = f"{median / constant:8.2f}"
            elif server == "with --metrics":
                off = statistics.median(samples["commandproto"])
                versus = f"{median / off:8.2f} (on/off)"
            print(
                f"{title:34} {server:20} {median:8.0f} {median / floor:6.2f} {versus}"
            )


if __name__ == "__main__":
    main()
