"""
The server's own numbers: connections, commands by name and outcome, their
latency, bytes, and client misbehaviour, as plain counters with no I/O.

The ``stats`` command reads them as one line, and ``--metrics`` exposes the
same counters to Prometheus (:mod:`commandproto.ops.metrics`), reading them only
when scraped: counting costs an integer addition, never a lock.
"""

from __future__ import annotations

import collections
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

from ..commands.table import (
    ERROR_PREFIX,
    UNKNOWN_COMMAND,
    failed_reply,
    timed_out_reply,
)

UNKNOWN_LABEL = "(unknown)"
"""
The one name that every unknown command counts under: labels are never a
client's text.
"""

OK = "ok"
ERROR = "error"
UNKNOWN = "unknown"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
OUTCOMES = (OK, ERROR, UNKNOWN, FAILED, TIMED_OUT, CANCELLED)
"""
How a command ended: answered; refused with ``Error: ...`` (a usage error
or the handler's ``CommandError``); not a command; its handler failed; it
timed out; its client went away before it answered.
"""

REFUSAL_REASONS = (
    "max_connections",
    "max_connections_per_ip",
    "shutting_down",
)
"""
Why a connection is refused: over ``--max-connections``, over
``--max-connections-per-ip``, or the server is draining.  (Past
``--max-handshakes`` none is refused: the oldest handshake is dropped, an
event, ``handshake_dropped``.)
"""

EVENTS = (
    "over_long_line",
    "invalid_utf8",
    "idle_timeout",
    "line_timeout",
    "handshake_timeout",
    "handshake_dropped",
    "backpressure",
    "stalled",
    "made_room",
)
"""
What clients do wrong, and what the server does about it: a line over
``--max-line-length``, a line that is not UTF-8, ``--idle-timeout``,
``--line-timeout`` and ``--handshake-timeout`` expiring, a client that does
not read its replies (the transport pauses us), a close that did not finish
and was aborted, a TLS handshake dropped to make room for a new one (past
``--max-handshakes``), a half-closed client that waited for a command
closed to make room for a new one (at ``--max-connections``).
"""

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""
Upper bounds, in seconds, of the latency histogram's buckets: from 100 µs
(a command answered at once) to the default ``--command-timeout``.
"""

# The first bucket's bound: most replies fall in it, found with one
# comparison rather than a bisection (about 800 instructions).
_FIRST = LATENCY_BUCKETS[0]

# Count a read's lines in one C call (collections.Counter's own helper).
count_elements: Callable[[dict[bytes, int], Iterable[object]], None] = (
    collections._count_elements  # type: ignore[attr-defined]
)


def package_version() -> str:
    """
    The installed commandproto's version, or ``unknown``.
    """
    try:
        return version("commandproto")
    except PackageNotFoundError:
        return "unknown"


def outcome_of(name: str, text: str) -> str:
    """
    Classify a command's reply.

    :param name: the command's name.
    :param text: its reply, without the line terminator.
    :returns: one of :data:`OUTCOMES` (never ``cancelled``).
    """
    if not text.startswith(ERROR_PREFIX):
        return UNKNOWN if text == UNKNOWN_COMMAND else OK
    if text == failed_reply(name):
        return FAILED
    if text == timed_out_reply(name):
        return TIMED_OUT
    return ERROR


class Latency:
    """
    One command's latency histogram: a count per bucket of
    :data:`LATENCY_BUCKETS` (and one past the last), and the sum.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        self.counts[
            0 if seconds <= _FIRST else bisect_left(LATENCY_BUCKETS, seconds)
        ] += times
        self.total += seconds * times

    def cumulative(self) -> list[tuple[str, int]]:
        """
        The buckets as Prometheus writes them: ``le`` bounds, cumulative
        counts, ``+Inf`` last.
        """
        running = 0
        buckets: list[tuple[str, int]] = []
        for bound, count in zip(
            (*LATENCY_BUCKETS, float("inf")), self.counts, strict=True
        ):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return buckets


class ServerStats:
    """
    Counters for one server, shared by its connections.

    The protocol adds to them directly (``stats.bytes_in += n``): attribute
    arithmetic is the cheapest thing the read path can do.

    :ivar timing: whether to time the replies of constant commands answered
        from the cache (one clock reading per read); other commands are always
        timed, for the slow log.
    :ivar cached: constant commands answered from the cache, by request
        bytes (always ``ok``).
    :ivar commands: other commands, by name and outcome.
    :ivar answered: the names of commands answered ``ok`` by the batches
        being answered, counted (and timed) by ``count_answered`` when
        their batch ends: one list append per command, the rest per read.
        ``commands_by_outcome`` counts them meanwhile.
    :ivar latency: latency histograms by command name.
    :ivar cached_latency: latency histograms of cached commands, by request
        bytes.
    :ivar refused: refused connections by reason.
    :ivar events: client misbehaviour and server reactions, by kind.
    """

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        timing: bool = False,
        server_version: str | None = None,
    ) -> None:
        self._wall = wall
        self.started = wall()
        self.version = package_version() if server_version is None else server_version
        self.timing = timing
        self.open = 0
        self.accepted = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.cached: dict[bytes, int] = {}
        self.commands: dict[tuple[str, str], int] = {}
        self.answered: list[str] = []
        # The replies of the batch being answered, not yet written (and so
        # not yet in bytes_out): a stats within the batch counts them.
        self.unsent: list[bytes] | None = None
        self.latency: dict[str, Latency] = {}
        self.cached_latency: dict[bytes, Latency] = {}
        self.refused: dict[str, int] = {}
        self.events: dict[str, int] = {}

    # -- counting

    def command_done(self, name: str, outcome: str, seconds: float | None) -> None:
        """
        A command (not answered from the cache) has its reply.

        :param seconds: from its start to its reply, or ``None`` if not timed.
        """
        key = (name, outcome)
        self.commands[key] = self.commands.get(key, 0) + 1
        if seconds is not None:
            latency = self.latency.get(name)
            if latency is None:
                latency = self.latency[name] = Latency()
            latency.observe(seconds)

    def count_answered(self, mark: int, seconds: float | None) -> None:
        """
        A batch of lines has been answered: count the commands it answered
        ``ok`` (those in :attr:`answered` from ``mark`` on), and time each
        with the batch, as :meth:`cached_read` does: each reply went out with
        the batch's write, so it took at most the batch's time.

        :param mark: the length of :attr:`answered` when the batch began
            (batches nest when a command's reply lets another connection's
            waiting lines run).
        :param seconds: the batch's time, or ``None`` if not timed.
        """
        answered = self.answered
        many = len(answered) - mark
        if many == 1:
            # One command (request/response): the cheapest count.
            name = answered.pop()
            key = (name, OK)
            commands = self.commands
            commands[key] = commands.get(key, 0) + 1
            if seconds is not None:
                # _observe, inline: request/response pays for it per command.
                latency = self.latency.get(name)
                if latency is None:
                    latency = self.latency[name] = Latency()
                latency.counts[
                    0 if seconds <= _FIRST else bisect_left(LATENCY_BUCKETS, seconds)
                ] += 1
                latency.total += seconds
            return
        if many <= 0:
            return
        batch = answered[mark:] if mark else answered
        first = batch[0]
        if many == 1 or batch.count(first) == many:
            # One command, or a pipeline of one command: no per-line work.
            groups: Iterable[tuple[str, int]] = ((first, many),)
        else:
            counts: dict[str, int] = {}
            count_elements(counts, batch)  # type: ignore[arg-type]
            groups = counts.items()
        del answered[mark:]
        commands = self.commands
        for name, times in groups:
            key = (name, OK)
            commands[key] = commands.get(key, 0) + times
            if seconds is not None:
                self._observe(name, seconds, times)

    def _observe(self, name: str, seconds: float, times: int) -> None:
        latency = self.latency.get(name)
        if latency is None:
            latency = self.latency[name] = Latency()
        latency.counts[
            0 if seconds <= _FIRST else bisect_left(LATENCY_BUCKETS, seconds)
        ] += times
        latency.total += seconds * times

    def cached_read(self, frames: Sequence[object], seconds: float) -> None:
        """
        Time one read's replies from the cache (when :attr:`timing`): each
        line's reply took at most the read's time.  Kept by request bytes,
        named at scrape time: the read path decodes nothing.
        """
        latency = self.cached_latency
        if len(frames) == 1:
            frame = frames[0]
            histogram = latency.get(frame)  # type: ignore[call-overload]
            if histogram is None:
                histogram = latency[frame] = Latency()  # type: ignore[index]
            histogram.counts[
                0 if seconds <= _FIRST else bisect_left(LATENCY_BUCKETS, seconds)
            ] += 1
            histogram.total += seconds
            return
        first = frames[0]
        if frames.count(first) == len(frames):
            # A pipeline of one command: no per-line Python work.
            groups: Iterable[tuple[object, int]] = ((first, len(frames)),)
        else:
            groups = collections.Counter(frames).items()
        for frame, times in groups:
            histogram = latency.get(frame)  # type: ignore[call-overload]
            if histogram is None:
                histogram = latency[frame] = Latency()  # type: ignore[index]
            histogram.observe(seconds, times)

    def latency_by_name(self) -> dict[str, Latency]:
        """
        Every latency histogram by command name, the cached commands' merged
        in.
        """
        merged = dict(self.latency)
        for frame, cached in self.cached_latency.items():
            name = frame.decode("utf-8")
            histogram = merged.get(name)
            if histogram is None:
                merged[name] = cached
                continue
            combined = Latency()
            combined.counts = [
                a + b for a, b in zip(histogram.counts, cached.counts, strict=True)
            ]
            combined.total = histogram.total + cached.total
            merged[name] = combined
        return merged

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def event(self, kind: str) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1

    # -- reading

    def uptime(self) -> float:
        return max(self._wall() - self.started, 0.0)

    def commands_by_outcome(self) -> dict[tuple[str, str], int]:
        """
        Every command counted, the cached ones included, by name and outcome.
        """
        counts = dict(self.commands)
        for name in self.answered:
            key = (name, OK)
            counts[key] = counts.get(key, 0) + 1
        for frame, count in self.cached.items():
            key = (frame.decode("utf-8"), OK)
            counts[key] = counts.get(key, 0) + count
        return counts

    def summary(self) -> dict[str, int | str]:
        """
        The numbers that ``stats`` answers, in its order.
        """
        counts = self.commands_by_outcome()
        return {
            "uptime": int(self.uptime()),
            "connections": self.open,
            "connections_total": self.accepted,
            "commands": sum(counts.values()),
            "errors": sum(n for (_, outcome), n in counts.items() if outcome != OK),
            "refused": sum(self.refused.values()),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out + sum(map(len, self.unsent or ())),
            "version": self.version,
        }

    def line(self) -> str:
        """
        The ``stats`` reply: ``key=value`` pairs separated by spaces.
        """
        return format_pairs(self.summary())


def format_pairs(pairs: Mapping[str, object]) -> str:
    """
    ``key=value`` pairs, separated by spaces, in one line.
    """
    return " ".join(f"{key}={value}" for key, value in pairs.items())


def parse_pairs(text: str) -> dict[str, str]:
    """
    Read back a line made by :func:`format_pairs`.
    """
    return dict(pair.split("=", 1) for pair in text.split(" ") if "=" in pair)
