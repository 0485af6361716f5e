"""
The load tester's logic, with no I/O: what to send, when, and whether each
reply is the right one.

  - :func:`parse_mix` turns ``-t`` into requests, each with the reply it must get;
    the replies come from the command table, unless a request names its own
    (``PING=+PONG``) for a server that is not commandproto; a preset's name
    (``mix``, see :data:`PRESETS`) stands for its requests.
  - :class:`Workload` pre-builds the bytes of each batch of pipelined requests and
    of the replies they expect, with the shared line codec.
  - :class:`ReplyChecker` checks one connection's reply stream against what it
    expects and measures each request's latency, from the time it was sent
    (or, in an open-loop run, was due to be sent) to the time its reply
    arrived.
  - :class:`ClosedLoop` and :class:`OpenLoop` decide how many requests go out and when.

The checker compares bytes, not lines: replies are expected in order, so the
bytes that must arrive are known in advance, and a chunk of 64 pipelined
replies is checked with one comparison instead of 64 lookups.  Only when the
comparison fails does it split lines, to say what went wrong.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..commands.table import CommandTable
from ..server.histogram import LatencyHistogram
from ..wire.codec import LF, encode_line, is_one_line


@dataclass(frozen=True, slots=True)
class Request:
    """
    One kind of request in a mix.

    :ivar line: the request line, without its terminator.
    :ivar reply: the reply line it must get, without its terminator.
    """

    line: str
    reply: str


PRESETS = {"mix": "Hello,Are you there?,nope,echo hi"}
"""
Mixes with a name, for ``-t``: ``mix`` is the seed's two commands, a line
that names no command, and a command with an argument (``echo``, which
:mod:`commandproto.benchcommands` serves), so that most reads of a pipelining
client hold lines that the cache of constant replies does not answer.
"""


def parse_mix(spec: str, commands: CommandTable) -> tuple[Request, ...]:
    """
    Parse a command mix: request lines separated by commas, each either a
    line the command table answers (``Hello``), a line with its expected
    reply after ``=`` (``PING=+PONG``), or the name of a preset (``mix``),
    which stands for the preset's lines.

    :param spec: the mix, as given to ``-t``.
    :param commands: the table that gives the expected replies.
    :returns: the requests, in the order they are sent (round robin).
    :raises ValueError: if an entry is empty, holds a line break, or is a
        command that closes the connection (such as ``quit``).
    """
    requests = []
    entries = []
    for entry in spec.split(","):
        entries += PRESETS[entry].split(",") if entry in PRESETS else [entry]
    for entry in entries:
        line, equals, reply = entry.partition("=")
        if not line:
            raise ValueError(f"empty request in command mix {spec!r}")
        if not (is_one_line(line) and is_one_line(reply)):
            raise ValueError(f"request {entry!r} holds a line break")
        if not equals:
            answer = commands.dispatch(line)
            if answer.close:
                raise ValueError(
                    f"{line!r} closes the connection, so it cannot be repeated"
                )
            reply = answer.text
        requests.append(Request(line, reply))
    return tuple(requests)


def mix_name(requests: tuple[Request, ...]) -> str:
    """
    Name a mix for reports: its request lines, comma-separated.
    """
    return ",".join(request.line for request in requests)


@dataclass(frozen=True, slots=True)
class Batch:
    """
    Requests sent with one write, and the replies they expect.

    :ivar data: the request lines, each encoded and terminated.
    :ivar replies: the expected reply lines, encoded and terminated, in order.
    :ivar ends: for each request, the offset in ``replies`` just past its
        reply.
    """

    data: bytes
    replies: bytes
    ends: tuple[int, ...]

    @property
    def size(self) -> int:
        """
        The number of requests in the batch.
        """
        return len(self.ends)


class Workload:
    """
    The batches a connection sends, built once with the shared codec and
    reused.

    :ivar requests: the mix, sent round robin.
    """

    def __init__(self, requests: tuple[Request, ...]) -> None:
        if not requests:
            raise ValueError("a workload needs at least one request")
        self.requests = requests
        self._lines = [encode_line(request.line) for request in requests]
        self._replies = [encode_line(request.reply) for request in requests]
        self._batches: dict[tuple[int, int], Batch] = {}

    def batch(self, position: int, size: int) -> Batch:
        """
        The batch of ``size`` requests starting at ``position`` in the mix.

        :param position: how many requests the connection has sent before.
        :param size: how many to send now, at least 1.
        """
        start = position % len(self.requests)
        key = (start, size)
        batch = self._batches.get(key)
        if batch is None:
            picks = [(start + i) % len(self.requests) for i in range(size)]
            ends = []
            offset = 0
            for pick in picks:
                offset += len(self._replies[pick])
                ends.append(offset)
            batch = Batch(
                b"".join(self._lines[pick] for pick in picks),
                b"".join(self._replies[pick] for pick in picks),
                tuple(ends),
            )
            self._batches[key] = batch
        return batch


class ReplyError(Exception):
    """
    The server's replies were not the ones the requests must get.

    :ivar kind: ``wrong``, ``out of order``, ``extra`` or ``missing``.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _show(line: bytes) -> str:
    # A CRLF terminator goes unsaid; anything else (a bare LF) is shown.
    text = line.removesuffix(b"\r\n")
    return repr(text.decode("utf-8", "replace"))


@dataclass(slots=True)
class _Sent:
    """
    Requests that went out together: when, where their replies start in the
    connection's reply stream, and how many of those replies are in.
    """

    sent_at: float
    start: int
    ends: tuple[int, ...]
    done: int = 0


@dataclass(slots=True)
class ReplyChecker:
    """
    One connection's replies: checks each against the reply its request must
    get, in order, and records each request's latency.

    :ivar histogram: where latencies go, in nanoseconds.
    :ivar outstanding: requests sent and not yet answered.
    :ivar answered: requests answered correctly so far.
    """

    histogram: LatencyHistogram
    outstanding: int = 0
    answered: int = 0
    # The expected bytes not yet received, from the start of the oldest
    # unanswered reply; _partial of them have already arrived and matched.
    _expected: bytearray = field(default_factory=bytearray)
    _partial: int = 0
    # Offset in the reply stream of the start of _expected.
    _base: int = 0
    _sent: deque[_Sent] = field(default_factory=deque)

    def sent(self, batch: Batch, sent_at: float) -> None:
        """
        Requests went out.

        :param batch: what was sent.
        :param sent_at: when, in seconds: when they were sent, or in an
            open-loop run, when they were due.
        """
        start = self._base + len(self._expected)
        self._expected += batch.replies
        self._sent.append(_Sent(sent_at, start, batch.ends))
        self.outstanding += batch.size

    def received(self, data: bytes, now: float) -> int:
        """
        Bytes arrived from the server.

        :param data: the bytes, split anywhere.
        :param now: the time, in seconds, on the same clock as ``sent_at``.
        :returns: how many requests these bytes completed.
        :raises ReplyError: if they are not what the requests must get.
        """
        partial = self._partial
        end = partial + len(data)
        if self._expected[partial:end] != data:
            raise self._diagnose(data)
        received = self._base + end
        completed = 0
        sent = self._sent
        while sent:
            head = sent[0]
            done = bisect.bisect_right(head.ends, received - head.start)
            if done == head.done:
                break
            count = done - head.done
            head.done = done
            self.histogram.record(max(0, int((now - head.sent_at) * 1e9)), count)
            completed += count
            if done < len(head.ends):
                break
            sent.popleft()
        # Forget the replies that are complete; keep a partial one.
        if sent:
            head = sent[0]
            boundary = head.start + (head.ends[head.done - 1] if head.done else 0)
        else:
            boundary = received
        del self._expected[: boundary - self._base]
        self._base = boundary
        self._partial = received - boundary
        self.outstanding -= completed
        self.answered += completed
        return completed

    def closed(self) -> None:
        """
        The server closed the connection.

        :raises ReplyError: if requests were still waiting for replies.
        """
        if self.outstanding:
            got = ""
            if self._partial:
                got = f"; the last reply stopped after {_show(self._partial_line())}"
            raise ReplyError(
                "missing",
                f"missing replies: {self.outstanding} requests unanswered when "
                f"the connection closed{got}",
            )

    def _partial_line(self) -> bytes:
        return bytes(self._expected[: self._partial])

    def _reply_starts(self) -> Iterator[tuple[int, int]]:
        """
        The expected replies not yet complete, as (start, end) offsets in
        ``_expected``.
        """
        for sent in self._sent:
            previous = sent.ends[sent.done - 1] if sent.done else 0
            for end in sent.ends[sent.done :]:
                yield (
                    sent.start + previous - self._base,
                    sent.start + end - self._base,
                )
                previous = end

    def _diagnose(self, data: bytes) -> ReplyError:
        """
        Say how the received bytes differ from the expected ones.
        """
        received = self._partial_line() + data
        expected = bytes(self._expected)
        replies = list(self._reply_starts())
        for number, (start, end) in enumerate(replies):
            line_end = received.find(LF, start)
            got = received[start:] if line_end < 0 else received[start : line_end + 1]
            want = expected[start:end]
            if got == want:
                continue
            if line_end >= 0 or not want.startswith(got):
                later = [expected[s:e] for s, e in replies[number + 1 :]]
                if got in later:
                    return ReplyError(
                        "out of order",
                        f"reply out of order: expected {_show(want)}, got "
                        f"{_show(got)}, the reply to a later request",
                    )
                incomplete = "" if line_end >= 0 else " (incomplete)"
                return ReplyError(
                    "wrong",
                    f"wrong reply: expected {_show(want)}, got "
                    f"{_show(got)}{incomplete}",
                )
        extra = received[len(expected) :]
        return ReplyError(
            "extra",
            f"extra reply: got {_show(extra.split(LF)[0])} with no request "
            f"waiting for it",
        )


class ClosedLoop:
    """
    Closed-loop scheduling: each connection sends a batch, waits for all of
    its replies, and sends the next, until the request count or the time is
    used up.

    :ivar pipeline: requests in each batch.
    """

    def __init__(
        self,
        pipeline: int,
        *,
        requests: int | None = None,
        deadline: float | None = None,
    ) -> None:
        if (requests is None) == (deadline is None):
            raise ValueError("give a request count or a deadline, not both")
        self.pipeline = pipeline
        self._remaining = requests
        self._deadline = deadline

    def take(self, now: float) -> int:
        """
        Claim the next batch for one connection.

        :param now: the time, in seconds.
        :returns: how many requests to send now; 0 when the run is over.
        """
        if self._deadline is not None:
            return self.pipeline if now < self._deadline else 0
        assert self._remaining is not None
        size = min(self.pipeline, self._remaining)
        self._remaining -= size
        return size


class OpenLoop:
    """
    Open-loop scheduling: requests are due at a fixed rate whatever the
    replies do, so a slow reply cannot hold back the requests behind it
    (which would hide the delay they suffer: coordinated omission).

    Request number ``k`` is due at ``start + k / rate`` on connection
    ``k % connections``.
    """

    def __init__(
        self,
        rate: float,
        connections: int,
        start: float,
        *,
        requests: int | None = None,
        deadline: float | None = None,
    ) -> None:
        if (requests is None) == (deadline is None):
            raise ValueError("give a request count or a deadline, not both")
        if rate <= 0:
            raise ValueError("the rate must be positive")
        self.rate = rate
        self.connections = connections
        self.start = start
        self._requests = requests
        self._deadline = deadline
        self._next = 0

    def _due_time(self, number: int) -> float:
        return self.start + number / self.rate

    def _exists(self, number: int) -> bool:
        if self._requests is not None:
            return number < self._requests
        assert self._deadline is not None
        return self._due_time(number) < self._deadline

    def due(self, now: float) -> list[tuple[int, float]]:
        """
        Claim every request due by ``now``.

        :returns: for each, the connection it goes to and when it was due.
        """
        claimed = []
        number = self._next
        while self._exists(number) and self._due_time(number) <= now:
            claimed.append((number % self.connections, self._due_time(number)))
            number += 1
        self._next = number
        return claimed

    def next_due(self) -> float | None:
        """
        :returns: when the next request is due, or ``None`` if none is left.
        """
        return self._due_time(self._next) if self._exists(self._next) else None
