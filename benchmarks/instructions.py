"""
Instructions per read of the server's read path, counted by callgrind:
repeatable whatever else the machine is doing, so small changes show.

Usage: python benchmarks/instructions.py [--tree CHECKOUT] [--metrics] [SCENARIO ...]

For each scenario, one protocol on a transport that discards its writes is
fed the scenario's read 50 times (warm-up) and then N times more, under
``valgrind --tool=callgrind`` with ``PYTHONHASHSEED=0``, twice (N and 0);
the difference of the two totals over N is printed.  ``--tree`` measures
another checkout (a ``git worktree`` of an older commit) with this script's
scenarios; ``--metrics`` keeps the statistics with ``timing`` on, as
``--metrics`` and ``--dashboard`` make them.  Needs valgrind (Debian's ``valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

KEYS = [f"key:{n:02d}" for n in range(64)]

# name: (what one read holds, N, the command set: "bench" or "kv")
SCENARIOS: dict[str, tuple[bytes, int, str]] = {
    "constant": (b"Hello\r\n" * 64, 500, "bench"),
    "one": (b"Hello\r\n", 3000, "bench"),
    "nope": (b"Hello\r\n" * 63 + b"nope\r\n", 500, "bench"),
    "mix": (b"Hello\r\nAre you there?\r\nnope\r\necho hi\r\n" * 16, 300, "bench"),
    "echo": (b"echo hi\r\n" * 64, 200, "bench"),
    "aping": (b"aping\r\n" * 64, 100, "bench"),
    "setget": (
        b"".join(
            f"set {k} v{i}\r\nget {k}\r\n".encode() for i, k in enumerate(KEYS[:32])
        ),
        100,
        "kv",
    ),
    "get": (b"".join(f"get {k}\r\n".encode() for k in KEYS), 100, "kv"),
    "aget": (b"".join(f"aget {k}\r\n".encode() for k in KEYS), 100, "kv"),
    "get1": (b"get key:01\r\n", 2000, "kv"),
}

CHILD = """
import sys
sys.path.insert(0, {benchmarks!r})
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from commandproto import CommandServerFactory
from commandproto.commands.table import with_builtins
from commandproto.server.stats import ServerStats
if {kind!r} == "kv":
    from kvbench import make_commands
    table = make_commands()
else:
    from commandproto.benchcommands import commands as table


class Discard(StringTransport):
    def write(self, data):
        pass


protocol = CommandServerFactory(
    with_builtins(table), clock=Clock(), stats=ServerStats(timing={timing!r})
).buildProtocol(None)
protocol.makeConnection(Discard())
data = {data!r}
for _ in range(50 + {n}):
    protocol.dataReceived(data)
"""


def instructions(tree: Path, scenario: str, n: int, timing: bool = False) -> int:
    """
    Everything the process executed, feeding the read 50 + ``n`` times.
    """
    data, _, kind = SCENARIOS[scenario]
    code = CHILD.format(benchmarks=str(HERE), kind=kind, data=data, n=n, timing=timing)
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)},
        # From the tree: ``-c`` puts the working directory first on the path.
        cwd=tree,
        timeout=600,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise SystemExit(f"instructions.py: no count from valgrind: {result.stderr}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, default=HERE.parent)
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="time every reply, as --metrics makes the server",
    )
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS])
    arguments = parser.parse_args()
    for scenario in arguments.scenarios or SCENARIOS:
        n = SCENARIOS[scenario][1]
        per_read = (
            instructions(arguments.tree, scenario, n, arguments.metrics)
            - instructions(arguments.tree, scenario, 0, arguments.metrics)
        ) // n
        print(f"{scenario:10} {per_read:>12,} instructions per read", flush=True)


if __name__ == "__main__":
    main()
