"""
Answering a connection's lines in order: each line's reply from the cache of
constant replies or from its command, written with its batch when nothing
is pending before it, else queued behind what is (the
:class:`~commandproto.server.replies.ReplyQueue`); commands that answer later
take their place and hold up the lines behind them.  No I/O: replies go out,
and the connection goes on, through :class:`Answered`.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Protocol

from ..commands.table import Reply, Session
from ..wire.codec import OVERLONG, Frame
from .dispatch import Dispatcher
from .replies import Pending, ReplyQueue
from .settings import Settings


class Answered(Protocol):
    """
    What answering needs of its connection (and what the dispatcher needs:
    :class:`~commandproto.server.dispatch.Caller`).
    """

    conn: str
    peer: str

    @property
    def gone(self) -> bool:
        """
        Whether the connection is closing or closed: late replies are for
        nobody.
        """

    def session(self) -> Session: ...

    def complain(self, event: str) -> bool: ...

    def send(self, data: bytes) -> None:
        """
        Write encoded replies.
        """

    def close(self) -> None:
        """
        Close gracefully, after a reply that closes the connection.
        """

    def finishing(self) -> None:
        """
        A reply that closes the connection is queued: start nothing more.
        """

    def go_on(self) -> None:
        """
        A command that held up the lines after it has answered: go on with
        them.
        """


class LineHandler(Protocol):
    """
    Where a line goes when the protocol watches every line: its
    ``lineReceived`` (or ``lineLengthExceeded``), which answers it.
    """

    def line_received(self, frame: Frame) -> None: ...


class Answering:
    """
    One connection's replies, in order.

    :ivar queue: replies behind one that is not ready yet; made when first
        needed, dropped when empty.
    :ivar blocking: running commands that the lines after them wait for.
    :ivar answering: a batch is being answered; replies that become ready
        meanwhile go out with it.
    """

    __slots__ = (
        "_cache",
        "_connection",
        "_hits",
        "_io",
        "_out",
        "answering",
        "blocking",
        "dispatcher",
        "plain",
        "queue",
        "settings",
        "stats",
    )

    def __init__(
        self,
        connection: Answered,
        *,
        dispatcher: Dispatcher,
        settings: Settings,
        reply_cache: dict[bytes, bytes],
        io: LineHandler,
        plain: bool,
    ) -> None:
        self._connection = connection
        self.dispatcher = dispatcher
        self.stats = dispatcher.stats
        self.settings = settings
        self._cache = reply_cache
        self._io = io
        self.plain = plain
        self.queue: ReplyQueue | None = None
        self.blocking = 0
        self.answering = False
        # Within a batch: the replies to send with one write; else None.
        self._out: list[bytes] | None = None
        # Within a timed batch: the lines answered from the cache.
        self._hits: list[Frame] | None = None

    def answer_frames(
        self, frames: Sequence[Frame], started: float | None = None
    ) -> Sequence[Frame]:
        """
        Start each line in order, and send the replies that are ready, in
        one write.  Stops early at a command whose reply is pending and that
        the lines after it must wait for, and at a command that closes the
        connection (dropping the rest).

        :param started: with timing, when the batch began (``perf_counter``)
            if the caller has read the clock already; else it is read here.
        :returns: the lines not started, to be answered later.
        """
        rest: Sequence[Frame] = ()
        if not frames:
            return rest
        connection = self._connection
        stats = self.stats
        timing = stats.timing
        # The commands this batch answers ok are counted at its end.
        mark = len(stats.answered)
        begun = 0.0
        dispatcher = self.dispatcher
        if timing:
            # With timing, the cached replies of this batch, timed together.
            self._hits = []
            begun = dispatcher.mark = perf_counter() if started is None else started
        elif dispatcher.slow_threshold is not None:
            # The first line's time starts here (Dispatcher.mark).
            dispatcher.mark = perf_counter()
        out: list[bytes] = []
        # Set through a call: a command run below may set it to None, and
        # code that reads it after an assignment here would be typed (and,
        # compiled by mypyc, checked) as a list.
        self._begin(out)
        unsent = stats.unsent
        stats.unsent = out
        get = self._cache.get
        counts = stats.cached
        answer = self._answer
        start = dispatcher.start
        line_received = self._io.line_received
        plain = self.plain
        try:
            for index, frame in enumerate(frames):
                if plain and frame is not OVERLONG:
                    reply = get(frame)
                    if self.queue:
                        answer(frame, reply)
                    elif reply is not None:
                        # A constant command, nothing pending: the commonest
                        # line of a mixed read, answered here.
                        out.append(reply)
                        counts[frame] = counts.get(frame, 0) + 1
                        if timing:
                            self._hits.append(frame)  # type: ignore[union-attr]
                        continue
                    else:
                        answered = start(frame, connection)
                        if type(answered) is bytes:
                            # Answered at once, nothing pending: in this write.
                            out.append(answered)
                            continue
                        self._place(answered)
                else:
                    # Through the protocol: lineReceived, or
                    # lineLengthExceeded for every line too long.
                    line_received(frame)
                if self._out is None:
                    # Stop: this command closes the connection (the
                    # connection drops the rest), or the rest wait for it or
                    # for room.
                    rest = frames[index + 1 :]
                    break
        finally:
            self.answering = False
            self._out = None
            stats.unsent = unsent
            seconds = perf_counter() - begun if timing else None
            stats.count_answered(mark, seconds)
            if out:
                self._connection.send(b"".join(out))
        if timing:
            hits = self._hits
            self._hits = None
            if hits:
                stats.cached_read(hits, seconds)  # type: ignore[arg-type]
        if self.queue:
            self.flush()
        return rest

    def _begin(self, out: list[bytes]) -> None:
        """
        A batch begins: its replies go to ``out``.
        """
        self._out = out
        self.answering = True

    def answer(self, frame: Frame) -> None:
        """
        Answer one framed line (``OVERLONG`` for one too long): from the cache
        of constant replies, or by starting its command.  The reply goes out
        with the batch being answered, or at once outside of one; in order
        behind any reply still pending.
        """
        if self.answering:
            self._answer(frame, self._cache.get(frame))  # type: ignore[arg-type]
            return
        # Outside a batch: a batch of one line.
        stats = self.stats
        mark = len(stats.answered)
        started = self.dispatcher.mark = perf_counter()
        try:
            self._answer(frame, self._cache.get(frame))  # type: ignore[arg-type]
        finally:
            stats.count_answered(
                mark, perf_counter() - started if stats.timing else None
            )

    def _answer(self, frame: Frame, reply: bytes | None) -> None:
        """
        :meth:`answer`, once the line's cached reply (if any) is known.
        """
        started: bytes | Pending
        if reply is not None:
            counts = self.stats.cached
            counts[frame] = counts.get(frame, 0) + 1  # type: ignore[index,arg-type]
            hits = self._hits
            if hits is not None:
                hits.append(frame)
            started = reply
        else:
            started = self.dispatcher.start(frame, self._connection)
        self._place(started)

    def _place(self, started: bytes | Pending) -> None:
        """
        Give a line's reply (or its place, for one to come) its turn: in the
        batch's write, in the queue behind one still pending, or out now.
        """
        out = self._out
        queue = self.queue
        if type(started) is Pending:
            if queue is None:
                queue = self.queue = ReplyQueue()
            pending = started
            # Queued first: a command that answers while it is being started
            # finds its place taken.
            queue.append(pending)
            if pending.deferred is not None:
                if pending.blocking:
                    self.blocking += 1
                pending.deferred.addCallback(self._finished, pending)
            if pending.close:
                # Nothing after it is run.
                self._connection.finishing()
                self._out = None
            elif (pending.blocking and pending.reply is None) or len(
                queue
            ) >= self.settings.max_unanswered:
                # The rest wait: for this command, or for room.
                self._out = None
        elif queue:
            queue.append(started)
            if len(queue) >= self.settings.max_unanswered:
                self._out = None
        elif out is not None:
            out.append(started)  # type: ignore[arg-type]
        else:
            self._connection.send(started)  # type: ignore[arg-type]
        if out is None and self.queue and not self.answering:
            self.flush()

    def _finished(self, reply: Reply, pending: Pending) -> None:
        """
        A command that answered later has its reply: send every reply now
        ready, in order, and go on with the lines that waited for it.
        """
        if pending.blocking:
            self.blocking -= 1
        connection = self._connection
        if connection.gone:
            self.dispatcher.finish(pending, None, connection)
            return
        self.dispatcher.finish(pending, reply, connection)
        if self.answering:
            # Answered while another command of ours ran: the loop that is
            # running sends it.
            return
        self.flush()
        connection.go_on()

    def flush(self) -> None:
        """
        Send the replies at the head of the queue that are ready, in one
        write; close after one that closes the connection.
        """
        queue = self.queue
        if queue is None:
            return
        out, close = queue.take_ready()
        if not queue:
            # An idle connection keeps no queue.
            self.queue = None
        if out:
            self._connection.send(b"".join(out))
        if close:
            self._connection.close()

    def drop(self) -> None:
        """
        Forget the replies not sent, and cancel the commands still running:
        nobody will read their replies.
        """
        queue, self.queue = self.queue, None
        if queue is not None:
            queue.cancel_all()
