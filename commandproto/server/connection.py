"""
One connection's life, with no I/O: events in (bytes received, input
ended, output paused or resumed, a timer fired, the TLS handshake done, a
shutdown), decisions out through :class:`ConnectionIO` (write, pause or
resume reading, half-close, close, abort, schedule a call).

How one connection's input flows:

- a read whose lines all have cached replies (the constant commands) is
  answered with one write: the fast path, which the Twisted adapter
  (:class:`~commandproto.server.protocol.CommandServerProtocol`) keeps in its
  ``dataReceived`` and takes only while the connection is open and nothing
  is held, queued or paused;
- otherwise each line is started in order; a command that answers at once
  has its reply queued at once, one that answers later holds its place in
  the queue of replies (:class:`~commandproto.server.replies.ReplyQueue`),
  and (unless it may overlap) the lines after it wait until it has answered;
- input that cannot be started yet is held, raw, by the connection's
  :class:`~commandproto.server.intake.Intake`, and answered a batch per
  reactor turn;
- reading stops while the client does not read its replies (the transport
  pauses us), while more than ``max_unanswered`` lines are unanswered, or
  while more than :data:`~commandproto.server.intake.HOLD_LIMIT` bytes are
  held.

The connection's end (refusal, wind-down, graceful close, abort, the log
line) is its :class:`~commandproto.server.closing.Closer`'s.

Every state is in one place: :class:`~commandproto.server.phase.Phase` for
where the connection is in its life, :attr:`Connection.input_ended` for
whether the client still sends, :attr:`Connection.output_paused` for whether
it reads, and the named timers of
:class:`~commandproto.server.timers.Timers`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from twisted.internet.interfaces import IAddress, IDelayedCall

from ..commands.table import CLOSING as CLOSING_DOWN
from ..commands.table import Session
from ..wire.codec import Frame
from . import opening
from .admission import Admission, Member
from .answering import Answering
from .closing import Closer
from .dispatch import Dispatcher
from .intake import Intake, is_flood
from .phase import CLOSED, CLOSING, DRAINING, FINISHING, HANDSHAKING, OPEN
from .settings import Settings
from .stats import ServerStats
from .timers import LINE, TURN, Timers


class ConnectionIO(Protocol):
    """
    What a connection's decisions act on: the Twisted adapter implements it
    over its transport; tests implement it in memory.
    """

    def write(self, data: bytes) -> None:
        """
        Send encoded reply lines (each ends with CRLF).
        """

    def pause_reading(self) -> None:
        """
        Stop reading from the client.
        """

    def resume_reading(self) -> None:
        """
        Read from the client again.
        """

    def serve(self) -> None:
        """
        The connection is admitted: start serving it (flow control on).
        """

    def half_close(self) -> bool:
        """
        Close our sending side only, where the transport can (not TLS).

        :returns: whether it could; if not, nothing was done.
        """

    def close(self) -> None:
        """
        Close once what was written has gone out.
        """

    def abort(self) -> None:
        """
        Close at once, dropping what was not sent.
        """

    def schedule(self, delay: float, function: Callable[[], None], /) -> IDelayedCall:
        """
        Call ``function`` in ``delay`` seconds.
        """

    def line_received(self, frame: Frame) -> None:
        """
        Hand one framed line to the protocol (for a protocol that watches
        every line: a subclass that overrides ``lineReceived`` or
        ``sendLine``), which hands it back to :meth:`Answering.answer
        <commandproto.server.answering.Answering.answer>`.
        """


class Connection:
    """
    One client's session: each request line gets exactly one reply line, in
    order.

    :ivar phase: where the connection is in its life.
    :ivar input_ended: the client has closed its sending side.
    :ivar output_paused: the client does not read its replies (the transport
        paused us).
    :ivar intake: the input read but not yet answered.
    :ivar replies: the replies, in order.
    :ivar closer: how the connection ends.
    :ivar io: where its decisions act.
    :ivar conn: the connection's short id, in every log line about it.
    :ivar peer: the client's address, as logged.
    :ivar quiet: a proxy's own connection (its health check): its life is
        logged in one line, at debug, not at info.
    """

    __slots__ = (
        "_cache",
        "_session",
        "admission",
        "closer",
        "conn",
        "dispatcher",
        "input_ended",
        "intake",
        "io",
        "member",
        "output_paused",
        "peer",
        "peer_address",
        "phase",
        "quiet",
        "replies",
        "settings",
        "stats",
        "timers",
    )

    def __init__(
        self,
        io: ConnectionIO,
        member: Member,
        *,
        settings: Settings,
        dispatcher: Dispatcher,
        admission: Admission,
        reply_cache: dict[bytes, bytes],
        max_line_length: int,
        conn: str,
        peer: str,
        peer_address: IAddress | None,
        plain: bool = True,
        quiet: bool = False,
    ) -> None:
        """
        :param plain: the protocol neither watches lines nor replies, so
            lines are answered here directly; otherwise each goes through
            :meth:`ConnectionIO.line_received`.
        """
        self.io = io
        self.member = member
        self.settings = settings
        self.dispatcher = dispatcher
        self.admission = admission
        self.stats: ServerStats = dispatcher.stats
        self._cache = reply_cache
        self.conn = conn
        self.peer = peer
        self.peer_address = peer_address
        self.quiet = quiet
        self.timers = Timers(io)
        self.phase = HANDSHAKING
        self.input_ended = False
        self.output_paused = False
        self.intake = Intake(max_line_length)
        self.replies = Answering(
            self,
            dispatcher=dispatcher,
            settings=settings,
            reply_cache=reply_cache,
            io=io,
            plain=plain,
        )
        self.closer = Closer(self)
        self._session: Session | None = None

    # -- what the dispatcher needs (Caller)

    def session(self) -> Session:
        """
        The connection's session, made on first use.
        """
        session = self._session
        if session is None:
            session = self._session = Session(
                self.peer,
                self.peer_address,
                self.admission.clock,
                connection_id=self.conn,
                stats=self.stats,
            )
        return session

    def complain(self, event: str) -> bool:
        """
        Count a client's misbehaviour (:meth:`Closer.complain
        <commandproto.server.closing.Closer.complain>`).

        :returns: whether this is the first of its kind, to be logged.
        """
        return self.closer.complain(event)

    # -- events: the connection's start (:mod:`~commandproto.server.opening`)

    def connected(self, tls: bool) -> None:
        """
        The transport is connected; a TLS connection is admitted once its
        handshake is done.
        """
        opening.begin(self, tls)

    def handshake_done(self) -> None:
        """
        The TLS handshake is done: now the client is a connection.
        """
        opening.handshake_done(self)

    # -- events: input

    def data_received(self, data: bytes) -> None:
        """
        Bytes from the client (already counted in the statistics).
        """
        if self.phase is not OPEN:
            # Closing: input is read only to be dropped.  Draining: only
            # what was read before the wind-down is answered.
            return
        self.timers.watch(data, self.settings, self.closer)
        intake = self.intake
        if intake.held or intake.frames or self.replies.queue or self.output_paused:
            # Busy: hold the input, raw, until its turn.
            intake.hold(data)
            if self.timers.turn is None and self._can_start():
                self.process()
            else:
                self.update_reading()
            return
        if is_flood(data):
            intake.hold(data)
            self.process()
            return
        self.answer_frames(intake.framer.feed(data))

    def end_of_input(self) -> None:
        """
        The client closed its sending side: answer what it sent (a last line
        without a terminator included), then close.
        """
        self.input_ended = True
        phase = self.phase
        if phase is CLOSING:
            self.closer.close()
        if phase is not OPEN:
            # Draining or finishing: the close that ends it is a full one.
            return
        self.timers.cancel(LINE)
        self.intake.end()
        if self.timers.turn is None:
            self.process()
        if self.phase is OPEN and self.replies.blocking:
            # Waiting on a command: it might be a client that sent a slow
            # one and went away, holding the slot with no socket of its own.
            self.admission.input_ended(self.member)

    def output_lost(self) -> None:
        """
        Our sending side is closed: either we closed it (and wait for the
        client to close its side), or the client can no longer receive
        replies, and there is no point in reading more requests.
        """
        if self.phase is not CLOSING:
            self.closer.close(full=True)

    def lost(self, reason: str) -> None:
        """
        The connection is gone (:meth:`Closer.lost
        <commandproto.server.closing.Closer.lost>`).
        """
        self.closer.lost(reason)

    # -- events: output

    def output_stopped(self) -> None:
        """
        The transport stops for good (the connection is going away, and
        :meth:`lost` follows): nothing more is answered.
        """
        self.output_paused = True

    def pause_output(self) -> None:
        """
        The client does not read its replies: stop answering and reading.
        """
        self.stats.event("backpressure")
        self.output_paused = True
        self.update_reading()

    def resume_output(self) -> None:
        """
        The client reads its replies again.
        """
        self.output_paused = False
        if self.phase is CLOSING or self.phase is CLOSED:
            return
        if self.timers.turn is None and self.intake.pending:
            self.process()
        else:
            self.update_reading()

    # -- events: the server's own

    def shut_down(self) -> None:
        """
        The server is stopping: the replies to every line already read are
        sent, then ``Closing down``, then the connection closes.
        """
        self.closer.wind_down(CLOSING_DOWN)

    # -- answering

    def _can_start(self) -> bool:
        """
        Whether the next line may be started now.
        """
        phase = self.phase
        replies = self.replies
        return (
            (phase is OPEN or phase is DRAINING)
            and not self.output_paused
            and not replies.blocking
            and not replies.answering
            and len(replies.queue or ()) < self.settings.max_unanswered
        )

    def process(self) -> None:
        """
        Answer one batch of the input held back, and come back on the next
        reactor turn for more; once the client's input has ended (or the
        connection is winding down) and everything is answered, close.
        """
        timers = self.timers
        timers.cancel(TURN)
        intake = self.intake
        if self._can_start() and intake.pending:
            self.answer_frames(intake.take_batch())
            if self._can_start() and intake.pending:
                timers.start(TURN, 0, self.process)
        if self.phase is OPEN and not self.input_ended:
            self.update_reading()
        else:
            self.closer.finish_if_done()

    def update_reading(self) -> None:
        """
        Read from the socket unless the client does not read its replies or
        too much of its input is unanswered; a closing connection reads (and
        drops) whatever arrives.
        """
        phase = self.phase
        intake = self.intake
        if phase is CLOSING:
            wanted = True
        elif phase is not OPEN or self.input_ended or self.output_paused:
            wanted = False
        elif intake.pending or self.replies.queue:
            wanted = intake.has_room(
                len(self.replies.queue or ()), self.settings.max_unanswered
            )
        else:
            wanted = True
        intake.read(wanted, self.io)

    def answer_frames(
        self, frames: Sequence[Frame], started: float | None = None
    ) -> None:
        """
        Answer a batch of lines; keep those not started for later.

        :param started: when the batch's read began (``perf_counter``), if
            the caller has timed it already.
        """
        rest = self.replies.answer_frames(frames, started)
        if rest and (self.phase is OPEN or self.phase is DRAINING):
            self.intake.keep(rest)

    def drop_work(self) -> None:
        """
        Forget the input not yet answered, and cancel commands still running:
        nobody will read their replies.
        """
        self.intake.drop()
        self.replies.drop()

    # -- what answering needs (Answered)

    def send(self, data: bytes) -> None:
        """
        Write encoded replies, counted.
        """
        self.stats.bytes_out += len(data)
        self.io.write(data)

    @property
    def gone(self) -> bool:
        """
        Closing or closed: a late reply is for nobody.
        """
        return self.phase is CLOSING or self.phase is CLOSED

    def close(self) -> None:
        """
        Close gracefully, after a reply that closes the connection.
        """
        self.closer.close()

    def finishing(self) -> None:
        """
        A reply that closes the connection is queued: nothing after it is
        read or started (nor timed: a line that was arriving never will).
        """
        self.phase = FINISHING
        self.timers.cancel(LINE)
        self.intake.drop()

    def go_on(self) -> None:
        """
        A command that held up the lines after it has answered: go on with
        them (unless a turn is already due to).
        """
        if self.timers.turn is None:
            self.process()
