"""
The load tester: ``python -m commandproto.bench``.

Shaped like ``redis-benchmark``: ``-c`` clients send ``-n`` requests (or run
for ``--duration`` seconds), ``-P`` at a time, and a summary gives requests
per second and latency percentiles.  Every reply is checked against the
reply its request must get, in order.

Exit codes: 0 when every reply was right; 1 on a connection or I/O failure;
2 on a usage error; 3 on a wrong, missing, extra or out-of-order reply.

The logic with no I/O (what to send and when, reply checking, the latency
histogram, reports) lives in :mod:`commandproto.bench.workload`,
:mod:`commandproto.server.histogram` and the plain functions here; the Twisted code
is :class:`BenchConnection`, :class:`LoadRun` and the worker processes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TextIO, cast

from twisted.internet import error
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IProcessTransport,
    IProtocol,
    IReactorCore,
    IReactorProcess,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from .._version import __version__
from ..bench.workload import (
    PRESETS,
    ClosedLoop,
    OpenLoop,
    ReplyChecker,
    ReplyError,
    Request,
    Workload,
    mix_name,
    parse_mix,
)
from ..client.connect import (
    CONNECTION_OPTIONS,
    TYPE_ENFORCEMENT,
    describe_failure,
    make_endpoint,
)
from ..commands.table import CommandTable, with_builtins
from ..server.histogram import LatencyHistogram
from ..wire.codec import LF, OVERLONG, LineFramer

PROGRAM = "commandproto.bench"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BAD_REPLY = 3

DEFAULT_REQUESTS = 100_000
PERCENTILES = (50.0, 95.0, 99.0, 99.9)
PROGRESS_INTERVAL = 0.25

CSV_HEADER = (
    "test",
    "rps",
    "avg_latency_ms",
    "min_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
)
"""
The header of ``redis-benchmark --csv``, so that its readers read ours.
"""

# A worker's reports are JSON lines; a histogram is a few tens of kilobytes.
_MAX_REPORT_LENGTH = 64 * 1024 * 1024


class Options(usage.Options):
    """
    Command-line options of ``python -m commandproto.bench``.
    """

    synopsis = (
        "Usage: python -m commandproto.bench "
        "[--host HOST] [--port PORT] [--connect ENDPOINT] [-c CLIENTS] "
        "[-n REQUESTS | --duration SECONDS] [-P PIPELINE] [-t MIX] "
        "[--rate RPS] [--workers N] [--csv | --json]"
    )
    longdesc = (
        "Load a commandproto server (or any line-protocol server) and report "
        "requests per second and latency percentiles, checking every reply. "
        "Exit codes: 0 every reply right, 1 connection or I/O failure, "
        "2 usage error, 3 a wrong, missing, extra or out-of-order reply."
    )
    optFlags = [
        ["csv", None, "Print a CSV row under redis-benchmark's header."],
        ["json", None, "Print a JSON object."],
        ["worker", None, "(internal) Run as one process of a --workers run."],
    ]
    optParameters = [
        *CONNECTION_OPTIONS,
        ["clients", "c", 50, "Number of parallel connections.", int],
        [
            "requests",
            "n",
            None,
            f"Total number of requests (default {DEFAULT_REQUESTS}).",
            int,
        ],
        ["duration", None, None, "Run for this many seconds instead of -n.", float],
        [
            "pipeline",
            "P",
            1,
            "Requests each connection sends at once before waiting for their replies.",
            int,
        ],
        [
            "tests",
            "t",
            "Hello",
            "The command mix: request lines separated by commas, sent round "
            "robin.  Each must get the reply commandproto gives it (the "
            "built-ins, and echo and aping from commandproto.benchcommands), "
            "or give the reply after '=': 'PING=+PONG'.  '-t mix' is "
            f"'{PRESETS['mix']}' (serve it with twistd -n commandserver "
            "--commands commandproto.benchcommands).",
        ],
        [
            "rate",
            None,
            None,
            "Open loop: send this many requests per second in all, on "
            "schedule, whatever the replies do; latency counts from when each "
            "request was due.",
            float,
        ],
        [
            "workers",
            None,
            1,
            "Processes that share the clients, so that one core is not the limit.",
            int,
        ],
        [
            "timeout",
            None,
            10.0,
            "Fail if no connection is made and no reply arrives for this many seconds.",
            float,
        ],
    ]

    def opt_version(self) -> None:
        """Print commandproto's version and exit."""
        print(f"commandproto {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        def positive(name: str, value: float) -> None:
            if not (value > 0 and math.isfinite(value)):
                raise usage.UsageError(f"--{name} must be a positive number")

        if not 0 < self["port"] < 65536:
            raise usage.UsageError("--port must be between 1 and 65535")
        for name in ("clients", "pipeline", "workers"):
            positive(name, self[name])
        if self["requests"] is not None and self["duration"] is not None:
            raise usage.UsageError("give -n or --duration, not both")
        if self["requests"] is not None:
            positive("requests", self["requests"])
        if self["duration"] is not None:
            positive("duration", self["duration"])
        positive("timeout", self["timeout"])
        if self["rate"] is not None:
            positive("rate", self["rate"])
            if self["pipeline"] != 1:
                raise usage.UsageError(
                    "--rate sends each request on its own schedule; -P does not apply"
                )
        if self["workers"] > self["clients"]:
            raise usage.UsageError("--workers cannot exceed -c")
        if self["csv"] and self["json"]:
            raise usage.UsageError("give --csv or --json, not both")
        try:
            self["mix"] = parse_mix(self["tests"], expected_replies())
        except ValueError as e:
            raise usage.UsageError(f"-t: {e}") from None


def expected_replies() -> CommandTable:
    """
    The table that says what reply each request must get: the built-ins and
    :mod:`commandproto.benchcommands`, as served by ``twistd -n
    commandserver --commands commandproto.benchcommands``.
    """
    from ..benchcommands import commands

    return with_builtins(commands)


@dataclass(frozen=True)
class RunSettings:
    """
    What one run (or one worker's share of it) does.

    :ivar mix: the requests, sent round robin, with their replies.
    :ivar clients: connections.
    :ivar requests: requests in all, or ``None`` for a timed run.
    :ivar duration: seconds, or ``None`` for a counted run.
    :ivar pipeline: requests per batch (closed loop).
    :ivar rate: requests per second in all (open loop), or ``None``.
    :ivar timeout: seconds without any progress before giving up.
    """

    mix: tuple[Request, ...]
    clients: int = 50
    requests: int | None = DEFAULT_REQUESTS
    duration: float | None = None
    pipeline: int = 1
    rate: float | None = None
    timeout: float = 10.0

    @classmethod
    def from_options(cls, options: Options) -> RunSettings:
        """
        The settings that parsed options ask for.
        """
        requests = options["requests"]
        if requests is None and options["duration"] is None:
            requests = DEFAULT_REQUESTS
        return cls(
            mix=options["mix"],
            clients=options["clients"],
            requests=requests,
            duration=options["duration"],
            pipeline=options["pipeline"],
            rate=options["rate"],
            timeout=options["timeout"],
        )

    def split(self, workers: int) -> list[RunSettings]:
        """
        Share the clients among workers, and the requests and the rate in
        proportion to each one's clients.

        :param workers: at least 1 and at most ``clients``.
        """
        shares = [
            self.clients // workers + (1 if i < self.clients % workers else 0)
            for i in range(workers)
        ]
        parts = []
        given = 0
        for index, share in enumerate(shares):
            requests = None
            if self.requests is not None:
                # Cumulative rounding, so the parts add up exactly.
                upto = self.requests * sum(shares[: index + 1]) // self.clients
                requests, given = upto - given, upto
            rate = None if self.rate is None else self.rate * share / self.clients
            parts.append(replace(self, clients=share, requests=requests, rate=rate))
        return parts


@dataclass
class RunResult:
    """
    What a run measured, or why it failed.

    :ivar histogram: each answered request's latency, in nanoseconds.
    :ivar elapsed: seconds from the start to the last reply.
    :ivar code: the exit code: :data:`EXIT_OK` or why the run failed.
    :ivar message: what went wrong, if anything.
    :ivar cpu: CPU seconds the load generator used over that time.
    """

    histogram: LatencyHistogram
    elapsed: float
    code: int = EXIT_OK
    message: str = ""
    cpu: float = 0.0

    @property
    def answered(self) -> int:
        """
        Requests answered correctly.
        """
        return self.histogram.total

    def to_json(self) -> dict[str, object]:
        """
        :returns: a JSON-ready form that :meth:`from_json` reads back.
        """
        return {
            "histogram": self.histogram.to_json(),
            "elapsed": self.elapsed,
            "code": self.code,
            "message": self.message,
            "cpu": self.cpu,
        }

    @classmethod
    def from_json(cls, data: object) -> RunResult:
        """
        Read :meth:`to_json`'s output back.

        :raises ValueError: if ``data`` is not such output.
        """
        if not isinstance(data, dict):
            raise ValueError(f"not a run result: {data!r:.200}")
        try:
            return cls(
                LatencyHistogram.from_json(data["histogram"]),
                float(data["elapsed"]),
                int(data["code"]),
                str(data["message"]),
                float(data["cpu"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a run result: {data!r:.200}") from e


def merge_results(results: Sequence[RunResult]) -> RunResult:
    """
    Combine the workers' results into the run's: histograms add up bucket by
    bucket; the run lasted as long as its slowest worker; their CPU time
    adds up; the first failure is the run's.
    """
    histogram = LatencyHistogram()
    for result in results:
        histogram.merge(result.histogram)
    merged = RunResult(
        histogram,
        max((r.elapsed for r in results), default=0.0),
        cpu=sum(r.cpu for r in results),
    )
    for result in results:
        if result.code != EXIT_OK:
            merged.code, merged.message = result.code, result.message
            break
    return merged


# Reports.


def summarize(result: RunResult) -> dict[str, float]:
    """
    The numbers a report shows.

    :returns: ``rps`` and latencies in milliseconds: ``avg``, ``min``,
        ``p50``, ``p95``, ``p99``, ``p99.9`` and ``max``.
    """
    histogram = result.histogram
    summary = {
        "rps": histogram.total / result.elapsed if result.elapsed > 0 else 0.0,
        "avg": histogram.mean() / 1e6,
        "min": histogram.min / 1e6,
    }
    for percent in PERCENTILES:
        summary[f"p{percent:g}"] = histogram.percentile(percent) / 1e6
    summary["max"] = histogram.max / 1e6
    return summary


def format_csv(name: str, result: RunResult) -> str:
    """
    A report in the shape of ``redis-benchmark --csv``: its header, then one
    row.
    """
    s = summarize(result)
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerow(
        [name, f"{s['rps']:.2f}"]
        + [f"{s[key]:.3f}" for key in ("avg", "min", "p50", "p95", "p99", "max")]
    )
    return out.getvalue()


def format_json(
    name: str, result: RunResult, settings: RunSettings, workers: int
) -> str:
    """
    A report as one JSON object, latencies in milliseconds.
    """
    s = summarize(result)
    report = {
        "test": name,
        "requests": result.answered,
        "seconds": round(result.elapsed, 6),
        "clients": settings.clients,
        "pipeline": settings.pipeline,
        "rate": settings.rate,
        "workers": workers,
        "rps": round(s.pop("rps"), 2),
        "cpu_seconds": round(result.cpu, 3),
        "latency_ms": {key: round(value, 3) for key, value in s.items()},
    }
    return json.dumps(report) + "\n"


def format_text(
    name: str, result: RunResult, settings: RunSettings, workers: int, address: str
) -> str:
    """
    A report for people, laid out like ``redis-benchmark``'s.
    """
    s = summarize(result)
    if settings.rate is not None:
        load = f"open loop at {settings.rate:g} requests per second"
    else:
        load = f"pipeline {settings.pipeline}"
    keys = ["avg", "min", *(f"p{p:g}" for p in PERCENTILES), "max"]
    cpu = 100 * result.cpu / result.elapsed if result.elapsed > 0 else 0.0
    return (
        f"====== {name} ======\n"
        f"  {result.answered} requests completed in {result.elapsed:.2f} seconds\n"
        f"  {settings.clients} parallel clients, {load}, "
        f"{workers} worker{'s' if workers != 1 else ''}\n"
        f"  server {address}\n"
        "\n"
        "Summary:\n"
        f"  throughput summary: {s['rps']:.2f} requests per second\n"
        f"  load generator CPU: {cpu:.0f}% of one core\n"
        "  latency summary (msec):\n"
        + "".join(f"{key:>10}" for key in keys)
        + "\n"
        + "".join(f"{s[key]:>10.3f}" for key in keys)
        + "\n"
    )


class Progress:
    """
    The live progress line on a terminal: requests done, the rate over the
    last interval, and overall.
    """

    def __init__(self, name: str, stream: TextIO, now: Callable[[], float]) -> None:
        self.name = name
        self._stream = stream
        self._now = now
        self._start: float | None = None
        self._last = (0.0, 0)
        self._width = 0

    def update(self, answered: int) -> None:
        """
        Show the line for this many answered requests.
        """
        now = self._now()
        if self._start is None:
            self._start = now
            self._last = (now, answered)
            return
        then, before = self._last
        recent = (answered - before) / (now - then) if now > then else 0.0
        overall = answered / (now - self._start) if now > self._start else 0.0
        self._last = (now, answered)
        line = (
            f"{self.name}: rps={recent:.1f} (overall: {overall:.1f}) "
            f"answered={answered}"
        )
        self._width = max(self._width, len(line))
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()

    def clear(self) -> None:
        """
        Remove the line.
        """
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()


# The Twisted side.


class BenchConnection(Protocol):
    """
    One client connection: writes the requests its run hands it and checks
    the replies.

    It does not split replies into lines: its :class:`ReplyChecker` compares the
    bytes with the replies the requests must get (encoded by the shared
    codec), which is what lets one process keep up with a fast server.

    :ivar number: which of the run's connections this is.
    :ivar position: requests sent so far.
    """

    def __init__(self, run: LoadRun, number: int) -> None:
        self.run = run
        self.number = number
        self.checker = ReplyChecker(run.histogram)
        self.position = 0
        self.finished = False

    def connectionMade(self) -> None:
        self._transport = cast(ITCPTransport, self.transport)

    def send(self, size: int, sent_at: float) -> None:
        """
        Send the next ``size`` requests of the mix in one write.
        """
        batch = self.run.workload.batch(self.position, size)
        self.position += size
        idle = not self.checker.outstanding
        self.checker.sent(batch, sent_at)
        data = batch.data
        if idle and isinstance(self._transport, FileDescriptor):
            # Every earlier request has its reply, so none of their bytes
            # can still be waiting in the transport's buffer: send now,
            # rather than on the reactor's next turn.  This saves two
            # epoll_ctl calls and a reactor iteration per request, a third
            # of this process's work in request/response runs.
            written = self._transport.writeSomeData(data)
            if isinstance(written, int):
                data = data[written:]
        if data:
            self._transport.write(data)

    def finish(self) -> None:
        """
        Nothing more to send and nothing outstanding: close.
        """
        self.finished = True
        self._transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        try:
            completed = self.checker.received(data, self.run.now())
        except ReplyError as e:
            self.run.fail(EXIT_BAD_REPLY, f"connection {self.number}: {e}")
            return
        if completed:
            self.run.answered(self, completed)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.run.lost(self, reason)


class LoadRun:
    """
    One process's share of a run: its connections, the schedule that feeds
    them, and the watchdog that bounds it.

    Use :meth:`connect`, then :meth:`start`; :attr:`done` fires with the
    :class:`RunResult`.

    :ivar histogram: latencies of this process's requests, in nanoseconds.
    :ivar workload: the pre-built batches.
    :ivar done: fires with the result once every connection has closed, or
        at the first failure.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        settings: RunSettings,
        endpoint: IStreamClientEndpoint,
        address: str,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.address = address
        self.now = now
        self.histogram = LatencyHistogram()
        self.workload = Workload(settings.mix)
        self.done: Deferred[RunResult] = Deferred()
        self.connections: list[BenchConnection] = []
        self._endpoint = endpoint
        self._closed_loop: ClosedLoop | None = None
        self._open_loop: OpenLoop | None = None
        self._start = 0.0
        self._last_reply = 0.0
        self._open = 0
        self._started = False
        self._last_progress = 0.0
        self._cpu_start = 0.0
        self._watchdog: IDelayedCall | None = None
        self._ticker: IDelayedCall | None = None

    @property
    def total_answered(self) -> int:
        """
        Requests answered correctly so far.
        """
        return self.histogram.total

    def connect(self) -> Deferred[None]:
        """
        Open every connection.  The first goes through the endpoint; the
        others go to the address it reached, so a host name is looked up
        once.

        :returns: fires once all are connected, or one has failed (and
            :attr:`done` has fired with the failure).
        """
        return Deferred.fromCoroutine(self._connect())

    async def _connect(self) -> None:
        self._arm_watchdog()
        try:
            first = cast(
                BenchConnection, await self._endpoint.connect(self._factory(0))
            )
            self._add(first)
            peer = cast(ITransport, first.transport).getPeer()
            endpoint = self._endpoint
            if isinstance(peer, IPv4Address):
                endpoint = TCP4ClientEndpoint(self.reactor, peer.host, peer.port)
            elif isinstance(peer, IPv6Address):
                endpoint = TCP6ClientEndpoint(self.reactor, peer.host, peer.port)
            rest = [
                endpoint.connect(self._factory(n)).addCallback(self._add)
                for n in range(1, self.settings.clients)
            ]
            await gatherResults(rest, consumeErrors=True)
        except FirstError as e:
            self._connect_failed(e.subFailure.value)
        except Exception as e:
            self._connect_failed(e)

    def _connect_failed(self, reason: BaseException | None) -> None:
        self.fail(
            EXIT_FAILURE,
            f"cannot connect to {self.address}: {describe_failure(reason)}",
        )

    def _factory(self, number: int) -> Factory:
        return Factory.forProtocol(lambda: BenchConnection(self, number))

    def _add(self, protocol: IProtocol) -> None:
        connection = cast(BenchConnection, protocol)
        if self.done.called:
            connection.finished = True
            cast(ITransport, connection.transport).loseConnection()
            return
        self.connections.append(connection)
        self._open += 1
        self._last_progress = self.now()

    def start(self) -> None:
        """
        Start sending: now the clock runs.
        """
        if self.done.called:
            return
        self._started = True
        self.connections.sort(key=lambda c: c.number)
        settings = self.settings
        self._start = self._last_reply = self._last_progress = now = self.now()
        self._cpu_start = time.process_time()
        deadline = None if settings.duration is None else now + settings.duration
        if settings.rate is not None:
            self._open_loop = OpenLoop(
                settings.rate,
                settings.clients,
                now,
                requests=settings.requests,
                deadline=deadline,
            )
            self._tick()
        else:
            self._closed_loop = ClosedLoop(
                settings.pipeline, requests=settings.requests, deadline=deadline
            )
            for connection in self.connections:
                self._feed(connection)

    def _feed(self, connection: BenchConnection) -> None:
        assert self._closed_loop is not None
        size = self._closed_loop.take(self.now())
        if size:
            connection.send(size, self.now())
        else:
            connection.finish()

    def _tick(self) -> None:
        self._ticker = None
        assert self._open_loop is not None
        due = self._open_loop.due(self.now())
        for number, due_at in due:
            self.connections[number].send(1, due_at)
        next_due = self._open_loop.next_due()
        if next_due is None:
            for connection in self.connections:
                if not connection.checker.outstanding and not connection.finished:
                    connection.finish()
        else:
            delay = next_due - self.now()
            # The reactor sleeps in whole milliseconds; closer than that to
            # the next request's time, keep turning so it goes out on time.
            if delay < 0.001:
                delay = 0.0
            self._ticker = self.reactor.callLater(delay, self._tick)

    def answered(self, connection: BenchConnection, count: int) -> None:
        """
        A connection's requests got their replies.
        """
        self._last_reply = self._last_progress = self.now()
        if connection.checker.outstanding:
            return
        if self._closed_loop is not None:
            self._feed(connection)
        elif self._open_loop is not None and self._open_loop.next_due() is None:
            connection.finish()

    def lost(self, connection: BenchConnection, reason: Failure) -> None:
        """
        A connection closed.
        """
        self._open -= 1
        if self.done.called:
            return
        if not connection.finished:
            if connection.checker.outstanding and reason.check(error.ConnectionDone):
                try:
                    connection.checker.closed()
                except ReplyError as e:
                    self.fail(EXIT_BAD_REPLY, f"connection {connection.number}: {e}")
                    return
            self.fail(
                EXIT_FAILURE,
                f"connection {connection.number} to {self.address}: "
                f"{describe_failure(reason.value)}",
            )
            return
        if self._open == 0 and self._started:
            self._finish(RunResult(self.histogram, self._last_reply - self._start))

    def fail(self, code: int, message: str) -> None:
        """
        Stop the run at its first failure.
        """
        if self.done.called:
            return
        for connection in self.connections:
            connection.finished = True
            if connection.transport is not None:
                cast(ITCPTransport, connection.transport).abortConnection()
        self._finish(
            RunResult(self.histogram, self._last_reply - self._start, code, message)
        )

    def _finish(self, result: RunResult) -> None:
        for call in (self._watchdog, self._ticker):
            if call is not None and call.active():
                call.cancel()
        self._watchdog = self._ticker = None
        if self._started:
            result.cpu = time.process_time() - self._cpu_start
        self.done.callback(result)

    def _arm_watchdog(self) -> None:
        """
        Fail if, for ``timeout`` seconds, no connection is made and no reply
        arrives while requests wait for one: a run always ends by itself.
        """
        timeout = self.settings.timeout

        def check() -> None:
            self._watchdog = None
            quiet = self.now() - self._last_progress
            outstanding = sum(c.checker.outstanding for c in self.connections)
            if quiet < timeout or (self._started and not outstanding):
                self._watchdog = self.reactor.callLater(
                    max(timeout - quiet, 0.001), check
                )
            elif not self._started:
                self.fail(
                    EXIT_FAILURE,
                    f"cannot connect to {self.address}: timed out after {timeout:g} s",
                )
            else:
                self.fail(
                    EXIT_BAD_REPLY,
                    f"missing replies: no reply for {timeout:g} s, "
                    f"{outstanding} requests unanswered",
                )

        self._last_progress = self.now()
        self._watchdog = self.reactor.callLater(timeout, check)

    def mark_alive(self) -> None:
        """
        Count waiting for the other workers as progress, for the watchdog.
        """
        self._last_progress = self.now()


class _ProgressTicker:
    """
    Calls ``report`` every :data:`PROGRESS_INTERVAL` seconds until stopped.
    """

    def __init__(self, reactor: IReactorTime, report: Callable[[], None]) -> None:
        self._reactor = reactor
        self._report = report
        self._call: IDelayedCall | None = reactor.callLater(0, self._tick)

    def _tick(self) -> None:
        self._report()
        self._call = self._reactor.callLater(PROGRESS_INTERVAL, self._tick)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


async def run_single(
    reactor: IReactorTime,
    settings: RunSettings,
    endpoint: IStreamClientEndpoint,
    address: str,
    progress: Progress | None,
) -> RunResult:
    """
    Run the whole load in this process.
    """
    load = LoadRun(reactor, settings, endpoint, address)
    await load.connect()
    load.start()
    ticker = None
    if progress is not None and not load.done.called:
        ticker = _ProgressTicker(reactor, lambda: progress.update(load.total_answered))
    result = await load.done
    if ticker is not None:
        ticker.stop()
    return result


@implementer(IHalfCloseableProtocol)
class _WorkerControl(Protocol):
    """
    A worker's standard I/O: reads ``go`` from its parent, writes reports.
    Its standard input closing before ``go`` means the run is called off;
    standard output stays open for the report.
    """

    def __init__(self) -> None:
        self.go: Deferred[bool] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._framer = LineFramer(64)

    def _decide(self, go: bool) -> None:
        if not self.go.called:
            self.go.callback(go)

    def dataReceived(self, data: bytes) -> None:
        for line in self._framer.feed(data):
            if line == b"go":
                self._decide(True)

    def report(self, **fields: object) -> None:
        assert self.transport is not None
        self.transport.write(json.dumps(fields).encode("utf-8") + LF)

    def readConnectionLost(self) -> None:
        self._decide(False)

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._decide(False)
        if not self.closed.called:
            self.closed.callback(None)


async def run_worker(
    reactor: IReactorTime,
    settings: RunSettings,
    endpoint: IStreamClientEndpoint,
    address: str,
) -> None:
    """
    Run as one process of a ``--workers`` run: connect, say so, wait for the
    parent's ``go``, run, and report the result as a JSON line.
    """
    control = _WorkerControl()
    StandardIO(control, reactor=reactor)
    load = LoadRun(reactor, settings, endpoint, address)
    ticker = None
    await load.connect()
    if not load.done.called:
        control.report(ready=True)
        # Waiting for slower workers to connect is not a stall.
        alive = _ProgressTicker(reactor, load.mark_alive)
        if not await control.go:
            load.fail(EXIT_FAILURE, "the run was called off before it started")
        alive.stop()
        load.start()
        ticker = _ProgressTicker(
            reactor, lambda: control.report(answered=load.total_answered)
        )
    result = await load.done
    if ticker is not None:
        ticker.stop()
    control.report(result=result.to_json())
    assert control.transport is not None
    control.transport.loseConnection()
    await control.closed


class _WorkerProcess(ProcessProtocol):
    """
    The parent's view of one worker: its reports, and its exit.
    """

    def __init__(self, pool: _WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.answered = 0
        self.result: RunResult | None = None
        self._framer = LineFramer(_MAX_REPORT_LENGTH)

    def outReceived(self, data: bytes) -> None:
        for line in self._framer.feed(data):
            if line is OVERLONG:
                self.pool.fail(f"worker {self.number}: report too long")
                continue
            try:
                report = json.loads(line)
                if "ready" in report:
                    self.pool.ready()
                elif "answered" in report:
                    self.answered = int(report["answered"])
                elif "result" in report:
                    self.result = RunResult.from_json(report["result"])
            except (ValueError, TypeError) as e:
                self.pool.fail(f"worker {self.number}: bad report: {e}")

    def processEnded(self, reason: Failure) -> None:
        self.pool.ended(self)


class _WorkerPool:
    """
    The workers of one run: starts them together, adds up their progress
    and merges their results.
    """

    def __init__(
        self, reactor: IReactorProcess, target: list[str], parts: list[RunSettings]
    ) -> None:
        self.done: Deferred[RunResult] = Deferred()
        self.workers: list[_WorkerProcess] = []
        self._ready = 0
        self._started = False
        self._running = len(parts)
        self._failure: str | None = None
        self._transports: list[object] = []
        for number, part in enumerate(parts):
            worker = _WorkerProcess(self, number)
            self.workers.append(worker)
            args = [sys.executable, "-m", "commandproto.bench", "--worker"]
            args += target + worker_arguments(part)
            self._transports.append(
                reactor.spawnProcess(
                    worker,
                    sys.executable,
                    args,
                    env=None,
                    childFDs={0: "w", 1: "r", 2: 2},
                )
            )

    @property
    def answered(self) -> int:
        """
        Requests answered so far by all workers.
        """
        return sum(worker.answered for worker in self.workers)

    def ready(self) -> None:
        self._ready += 1
        if self._ready == len(self.workers):
            self._started = True
            for transport in self._transports:
                cast(ITransport, transport).write(b"go\n")

    def fail(self, message: str) -> None:
        if self._failure is None:
            self._failure = message

    def ended(self, worker: _WorkerProcess) -> None:
        self._running -= 1
        if worker.result is None and self._failure is None:
            self._failure = f"worker {worker.number} ended without a result"
        if not self._started:
            # A worker that ends before the start (it could not connect,
            # say) leaves the others waiting for a go that will never come:
            # closing their standard input calls the run off.  Its failure
            # is the run's.
            self._started = True
            self.workers.remove(worker)
            self.workers.insert(0, worker)
            for transport in self._transports:
                cast(IProcessTransport, transport).closeStdin()
        if self._running == 0:
            results = [w.result for w in self.workers if w.result is not None]
            merged = merge_results(results)
            if self._failure is not None and merged.code == EXIT_OK:
                merged.code, merged.message = EXIT_FAILURE, self._failure
            self.done.callback(merged)


def worker_arguments(settings: RunSettings) -> list[str]:
    """
    The command-line options that give a worker its share of the run.

    :param settings: the worker's share, from :meth:`RunSettings.split`.
    """
    args = ["-c", str(settings.clients), "-P", str(settings.pipeline)]
    args += ["-t", mix_spec(settings.mix)]
    args += ["--timeout", repr(settings.timeout)]
    if settings.requests is not None:
        args += ["-n", str(settings.requests)]
    if settings.duration is not None:
        args += ["--duration", repr(settings.duration)]
    if settings.rate is not None:
        args += ["--rate", repr(settings.rate)]
    return args


def mix_spec(mix: tuple[Request, ...]) -> str:
    """
    Write a mix back as ``-t`` takes it: a request the command table answers
    as expected is named alone (its reply may hold a comma), any other (and
    a line that is a preset's name) with its reply.
    """
    table = expected_replies()
    return ",".join(
        r.line
        if r.line not in PRESETS and table.dispatch(r.line).text == r.reply
        else f"{r.line}={r.reply}"
        for r in mix
    )


def target_arguments(options: Options) -> list[str]:
    """
    The command-line options that name the server.
    """
    if options["connect"] is not None:
        return ["--connect", options["connect"]]
    return ["--host", options["host"], "--port", str(options["port"])]


async def run(reactor: IReactorCore, options: Options, stdout: TextIO) -> int:
    """
    Run the load the options describe and print the report.

    :returns: the exit code.
    """
    settings = RunSettings.from_options(options)
    try:
        endpoint, address = make_endpoint(
            reactor, options["host"], options["port"], options["connect"]
        )
    except ValueError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        return EXIT_USAGE
    clock = cast(IReactorTime, reactor)
    if options["worker"]:
        await run_worker(clock, settings, endpoint, address)
        return EXIT_OK
    name = mix_name(settings.mix)
    progress = (
        Progress(name, sys.stderr, time.monotonic) if sys.stderr.isatty() else None
    )
    workers = options["workers"]
    if workers == 1:
        result = await run_single(clock, settings, endpoint, address, progress)
    else:
        pool = _WorkerPool(
            cast(IReactorProcess, reactor),
            target_arguments(options),
            settings.split(workers),
        )
        ticker = None
        if progress is not None:
            ticker = _ProgressTicker(clock, lambda: progress.update(pool.answered))
        result = await pool.done
        if ticker is not None:
            ticker.stop()
    if progress is not None:
        progress.clear()
    if result.code != EXIT_OK:
        print(f"{PROGRAM}: {result.message}", file=sys.stderr)
        return result.code
    if options["csv"]:
        stdout.write(format_csv(name, result))
    elif options["json"]:
        stdout.write(format_json(name, result, settings, workers))
    else:
        stdout.write(format_text(name, result, settings, workers, address))
    stdout.flush()
    return EXIT_OK


def parse_arguments(argv: Sequence[str], stderr: TextIO = sys.stderr) -> Options:
    """
    Parse the command line, or exit with code 2 and a one-line reason.
    """
    options = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(list(argv))  # type: ignore[no-untyped-call]
    except usage.UsageError as e:
        print(f"{PROGRAM}: {str(e).removeprefix(TYPE_ENFORCEMENT)}", file=stderr)
        print(f"Try '{PROGRAM} --help' for usage.", file=stderr)
        raise SystemExit(EXIT_USAGE) from None
    return options


def main(argv: Sequence[str] | None = None) -> None:
    """
    The console entry point: parse arguments, run, exit.
    """
    options = parse_arguments(sys.argv[1:] if argv is None else argv)

    async def go(reactor: IReactorCore) -> None:
        code = await run(reactor, options, sys.stdout)
        if code:
            raise SystemExit(code)

    react(go)
