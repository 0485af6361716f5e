"""
The set/get load: ``python -m commandproto.bench``'s engine (its
connections, schedule, reply checker and JSON report) with mixes that its
``-t`` cannot say, because redis-server's ``GET`` answers two lines
(``$8`` then the value).  The same engine drives commandproto and
redis-server, so the comparison is of the servers alone.

Usage::

    python benchmarks/kvload.py --port PORT -t MIX [-c 50] [-P 64]
        [--duration 3 | -n REQUESTS] [--timeout 10]

MIX is one of :data:`MIXES`: ``set-get`` (``set KEY VALUE`` then ``get
KEY`` over the 64 keys of :mod:`kvbench`, alternating), ``get``, ``aget``
and ``dget`` (each over the 64 keys, which the store holds from the start),
or ``redis-set-get`` and ``redis-get`` (inline ``SET``/``GET`` and their
RESP replies ``+OK`` and ``$N``).  The report is the JSON object of
``python -m commandproto.bench --json``; a wrong, missing or out-of-order
reply ends the run with one line on standard error and exit code 3.

Loopback only (``--host`` is 127.0.0.1); every run is bounded by
``--duration`` or ``-n`` and by ``--timeout`` without progress.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import cast

from kvbench import KEYS, VALUES
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import react

from commandproto.bench.runner import RunSettings, format_json, run_single
from commandproto.bench.workload import Request
from commandproto.client.connect import make_endpoint


def _set_get(set_line: str, get_line: str, ok: str, bulk: bool) -> list[Request]:
    requests = []
    for key, value in zip(KEYS, VALUES, strict=True):
        reply = f"${len(value.encode())}\r\n{value}" if bulk else value
        requests += [
            Request(f"{set_line} {key} {value}", ok),
            Request(f"{get_line} {key}", reply),
        ]
    return requests


def _gets(get_line: str, bulk: bool) -> list[Request]:
    return [
        Request(
            f"{get_line} {key}",
            f"${len(value.encode())}\r\n{value}" if bulk else value,
        )
        for key, value in zip(KEYS, VALUES, strict=True)
    ]


MIXES: dict[str, tuple[Request, ...]] = {
    "set-get": tuple(_set_get("set", "get", "OK", bulk=False)),
    "get": tuple(_gets("get", bulk=False)),
    "aget": tuple(_gets("aget", bulk=False)),
    "dget": tuple(_gets("dget", bulk=False)),
    "redis-set-get": tuple(_set_get("SET", "GET", "+OK", bulk=True)),
    "redis-get": tuple(_gets("GET", bulk=True)),
}
"""
The mixes, by name: each request with the exact reply it must get (a
redis-server bulk reply is ``$N``, CRLF, the value).
"""


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kvload.py", description="The set/get load, for commandproto and redis."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-t", dest="mix", choices=sorted(MIXES), required=True)
    parser.add_argument("-c", dest="clients", type=int, default=50)
    parser.add_argument("-P", dest="pipeline", type=int, default=1)
    parser.add_argument("-n", dest="requests", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="(always JSON)")
    arguments = parser.parse_args(argv)
    if (arguments.requests is None) == (arguments.duration is None):
        parser.error("give -n or --duration, one of them")
    for name in ("clients", "pipeline", "requests", "duration", "timeout"):
        value = getattr(arguments, name)
        if value is not None and value <= 0:
            parser.error(f"{name} must be positive")
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse(sys.argv[1:] if argv is None else argv)
    settings = RunSettings(
        mix=MIXES[arguments.mix],
        clients=arguments.clients,
        requests=arguments.requests,
        duration=arguments.duration,
        pipeline=arguments.pipeline,
        timeout=arguments.timeout,
    )

    async def go(reactor: IReactorCore) -> None:
        endpoint, address = make_endpoint(reactor, "127.0.0.1", arguments.port, None)
        result = await run_single(
            cast(IReactorTime, reactor), settings, endpoint, address, None
        )
        if result.code:
            print(f"kvload.py: {result.message}", file=sys.stderr)
            raise SystemExit(result.code)
        sys.stdout.write(format_json(arguments.mix, result, settings, 1))

    react(go)


if __name__ == "__main__":
    main()
