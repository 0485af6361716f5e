"""
One connection's life, with no I/O: events in (bytes received, input
ended, output paused or resumed, a timer fired, the TLS handshake done, a
shutdown), decisions out through :class:`ConnectionIO` (write, pause or
resume reading, half-close, close, abort, schedule a call).

How one connection's input flows:

- a read whose lines all have cached replies (the constant commands) is
  answered with one write: the fast path, which the Twisted adapter
  (:class:`~commandproto.server.protocol.CommandServerProtocol`) keeps in its
  ``dataReceived`` and takes only while :attr:`Connection.idle` holds;
- otherwise each line is started in order; a command that answers at once
  has its reply queued at once, one that answers later holds its place in
  the queue of replies (:class:`~commandproto.server.replies.ReplyQueue`),
  and (unless it may overlap) the lines after it wait until it has answered;
- input that cannot be started yet is held as the raw bytes it arrived as,
  and framed when its turn comes; at most :data:`BATCH` lines are answered
  per connection per reactor turn, so one pipelining client cannot keep the
  others waiting;
- reading stops while the client does not read its replies (the transport
  pauses us), while more than ``max_unanswered`` lines are unanswered, or
  while more than :data:`HOLD_LIMIT` bytes are held.

Every state is in one place: :class:`Phase` for where the connection is in
its life, :attr:`Connection.input_ended` for whether the client still sends,
:attr:`Connection.output_paused` for whether it reads, and the named timers
of :class:`~commandproto.server.timers.Timers`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.logger import Logger

from ..commands.table import (
    CLOSING,
    Session,
    idle_timeout_reply,
    line_took_too_long,
)
from ..wire.codec import LF, Frame, LineFramer, encode_line
from .admission import Admission, Member
from .answering import Answering
from .dispatch import INVALID, OVER_LONG, Dispatcher
from .settings import Settings
from .stats import ServerStats
from .timers import HANDSHAKE, IDLE, LINE, LINGER, TURN, Timers

log = Logger()

BATCH = 1024
"""
The most lines of one connection answered in one reactor turn (and written
with one write); the rest wait for the next turn, so that a client that
pipelines a flood is noticed (and paused) within one batch and does not keep
other clients waiting.
"""

HOLD_LIMIT = 65536
"""
Bytes of input held unanswered past which the server stops reading a
connection (one read of the socket is at most 64 KiB).
"""

CLOSE_TIMEOUT = 10.0
"""
Seconds a closing connection may take to finish (the client reading the last
replies and closing its side) before it is aborted.
"""

REFUSAL_LINGER = 1.0
"""
Seconds a refused connection may take to close gracefully before it is
aborted.
"""

MISBEHAVIOUR_LINGER = 1.0
"""
Seconds a connection closed for misbehaving (the line or idle timeout) may
take to close gracefully before it is aborted: its slot is free within about
a second, however the client goes on sending.
"""

_LF_BYTE = LF[0]
# The counted misbehaviour as the line that logs a close names it.
_COMPLAINTS = {OVER_LONG: "over-long lines", INVALID: "invalid UTF-8 lines"}


class Phase(enum.Enum):
    """
    Where a connection is in its life.  Every event is handled according to
    the phase, in one place each.  Whether the client still sends is apart
    from it (:attr:`Connection.input_ended`): a client may end its input in
    any phase.
    """

    HANDSHAKING = "handshaking"
    """A TLS connection whose handshake is in progress: not yet admitted."""
    OPEN = "open"
    """Admitted: reading requests and answering them (once the client has
    ended its input: answering what it sent, then closing)."""
    DRAINING = "draining"
    """Winding down (a shutdown, a line timeout): answering what was
    already read, then a last line (``Closing down``, or why), then
    closing."""
    FINISHING = "finishing"
    """A reply that closes the connection (``quit``) waits behind others:
    nothing more is started or read; once it is sent, closing."""
    CLOSING = "closing"
    """Our sending side is closed (or closing); reading and dropping input
    until the client closes too."""
    CLOSED = "closed"
    """The connection is gone."""


# The phases as module constants: an enum member's lookup through its class
# costs about 100 ns in Python 3.11, and every read checks the phase.
_HANDSHAKING, _OPEN, _DRAINING, _FINISHING, _CLOSING, _CLOSED = Phase


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
        every line: see :attr:`Connection.plain`), which hands it back to
        :meth:`Connection.answer`.
        """


class Connection:
    """
    One client's session: each request line gets exactly one reply line, in
    order.

    :ivar phase: where the connection is in its life.
    :ivar input_ended: the client has closed its sending side.
    :ivar output_paused: the client does not read its replies (the transport
        paused us).
    :ivar plain: the protocol neither watches lines nor replies, so lines are
        answered here directly; otherwise each goes through
        :meth:`ConnectionIO.line_received`.
    :ivar conn: the connection's short id, in every log line about it.
    :ivar peer: the client's address, as logged.
    """

    __slots__ = (
        "_cache",
        "_complaints",
        "_frames",
        "_held",
        "_io",
        "_last_words",
        "_linger",
        "_reading",
        "_session",
        "admission",
        "conn",
        "dispatcher",
        "framer",
        "input_ended",
        "member",
        "output_paused",
        "peer",
        "peer_address",
        "phase",
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
    ) -> None:
        self._io = io
        self.member = member
        self.settings = settings
        self.dispatcher = dispatcher
        self.admission = admission
        self.stats: ServerStats = dispatcher.stats
        self._cache = reply_cache
        self.framer = LineFramer(max_line_length)
        self.conn = conn
        self.peer = peer
        self.peer_address = peer_address
        self.timers = Timers(io)
        self.phase = _HANDSHAKING
        self.input_ended = False
        self.output_paused = False
        # Input read but not yet framed: raw bytes, so that a flood of short
        # lines held back costs its size, not an object per line.
        self._held = b""
        # Lines framed but not yet started (at most one batch).
        self._frames: Sequence[Frame] = ()
        self.replies = Answering(
            self,
            dispatcher=dispatcher,
            settings=settings,
            reply_cache=reply_cache,
            io=io,
            plain=plain,
        )
        self._reading = True
        self._session: Session | None = None
        self._complaints: dict[str, int] | None = None
        # What a wind-down sends last: ``Closing down``, or why.
        self._last_words = CLOSING
        # How long the close after them may take: a client closed for
        # misbehaving gets its slot back within a second.
        self._linger = CLOSE_TIMEOUT

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
        Count a client's misbehaviour.  It is logged once per kind and
        connection; later ones are counted, and the counts go in the line
        that logs the close, so that one client cannot flood the log.

        :returns: whether this is the first of its kind, to be logged.
        """
        if self._complaints is None:
            self._complaints = {}
        count = self._complaints.get(event, 0)
        self._complaints[event] = count + 1
        self.stats.event(event)
        return not count

    @property
    def idle(self) -> bool:
        """
        Open, and nothing held, queued or paused: a read can be answered at
        once (the adapter's fast path).
        """
        return (
            self.phase is _OPEN
            and not self._held
            and not self._frames
            and not self.replies.queue
            and not self.output_paused
        )

    # -- events: the connection's start

    def connected(self, tls: bool) -> None:
        """
        The transport is connected.  A TLS connection is not a connection
        until its handshake completes: a client that never finishes one must
        not take a connection's slot.
        """
        if not tls:
            self._admit()
            return
        self.admission.begin_handshake(self.member)
        timeout = self.settings.handshake_timeout
        if timeout is not None:
            self.timers.start(HANDSHAKE, timeout, self._handshake_too_slow)

    def handshake_done(self) -> None:
        """
        The TLS handshake is done: now the client is a connection.
        """
        if self.phase is not _HANDSHAKING:
            return
        self.timers.cancel(HANDSHAKE)
        self.admission.end_handshake(self.member)
        self._admit()

    def _handshake_too_slow(self) -> None:
        self.drop_handshake(
            f"handshake took longer than {self.settings.handshake_timeout}s",
            "handshake_timeout",
        )

    def drop_handshake(self, why: str, event: str) -> None:
        """
        Give up on this connection's TLS handshake: log why, count it as
        ``event``, and abort.
        """
        self.timers.cancel(HANDSHAKE)
        self.admission.end_handshake(self.member)
        self.stats.event(event)
        log.warn(
            "[{conn}] closing TLS connection from {peer}: {why}",
            peer=self.peer,
            why=why,
            conn=self.conn,
        )
        self.phase = _CLOSING
        self._io.abort()

    def _admit(self) -> None:
        """
        Take the connection in, or tell the client why not and close at once.
        """
        admission = self.admission
        refusal = admission.admit(self.member, self.peer_address)
        if refusal is not None:
            log.warn(
                "[{conn}] refused connection from {peer}: {reason}",
                peer=self.peer,
                reason=refusal,
                conn=self.conn,
            )
            self.send(encode_line(refusal))
            if admission.may_linger():
                # Close gracefully (a request the client already sent, left
                # unread, would make the close a reset that destroys the
                # line), but briefly: refusals come in floods, and each
                # holds a descriptor from the reserve.
                admission.refusing.add(self.member)
                self.phase = _OPEN
                self._close(linger=REFUSAL_LINGER)
            else:
                self.phase = _CLOSING
                self._io.close()
            return
        log.info("[{conn}] connection from {peer}", peer=self.peer, conn=self.conn)
        self.phase = _OPEN
        self._io.serve()
        idle = self.settings.idle_timeout
        if idle is not None:
            self.timers.start(IDLE, idle, self._idle)

    # -- events: input

    def data_received(self, data: bytes) -> None:
        """
        Bytes from the client (already counted in the statistics).
        """
        if self.phase is not _OPEN:
            # Closing: input is read only to be dropped.  Draining: only
            # what was read before the wind-down is answered.
            return
        self.watch(data)
        if self._held or self._frames or self.replies.queue or self.output_paused:
            # Busy: hold the input, raw, until its turn.
            self._held += data
            if self.timers.turn is None and self._can_start():
                self._process()
            else:
                self._update_reading()
            return
        if len(data) > BATCH and data.count(LF) > BATCH:
            self._held = data
            self._process()
            return
        self.answer_frames(self.framer.feed(data))

    def watch(self, data: bytes) -> None:
        """
        Keep the idle and line timers for a read: only whole lines are
        activity (a line that trickles in for ever does not keep a
        connection alive), and a line may take ``line_timeout`` to arrive.
        """
        # (The byte as an int: ``b"\n" in data`` first tries the bytes as an
        # int and formats an error, ten times slower.)
        if _LF_BYTE in data:
            timers = self.timers
            idle = timers.idle
            if idle is not None:
                idle.reset(cast(float, self.settings.idle_timeout))
            if timers.line is not None or data[-1] != _LF_BYTE:
                self._watch_line(data)
        else:
            self._watch_line(data)

    def _watch_line(self, data: bytes) -> None:
        """
        Time the line that is arriving: a read that ends in the middle of a
        line starts the line's timer (or keeps it, if the same line goes on);
        a read that ends a line stops it.
        """
        timeout = self.settings.line_timeout
        if timeout is None:
            return
        timers = self.timers
        if data[-1:] == LF:
            timers.cancel(LINE)
        elif timers.line is None or LF in data:
            # A line started, or a new one started in this read.
            timers.start(LINE, timeout, self._line_too_slow)

    def _line_too_slow(self) -> None:
        timeout = self.settings.line_timeout
        assert timeout is not None
        self.stats.event("line_timeout")
        log.warn(
            "[{conn}] line from {peer} took longer than {seconds}s: closing",
            peer=self.peer,
            seconds=timeout,
            conn=self.conn,
        )
        self._wind_down(line_took_too_long(timeout), linger=MISBEHAVIOUR_LINGER)

    def end_of_input(self) -> None:
        """
        The client closed its sending side: answer what it sent (a last line
        without a terminator included), then close.
        """
        self.input_ended = True
        phase = self.phase
        if phase is _CLOSING:
            self._close()
        if phase is not _OPEN:
            # Draining or finishing: the close that ends it is a full one.
            return
        self.timers.cancel(LINE)
        held = self._held
        if (not held.endswith(LF)) if held else self.framer.buffered:
            self._held = held + LF
        if self.timers.turn is None:
            self._process()
        if self.phase is _OPEN and self.replies.blocking:
            # Waiting on a command: it might be a client that sent a slow
            # one and went away, holding the slot with no socket of its own.
            self.admission.input_ended(self.member)

    def output_lost(self) -> None:
        """
        Our sending side is closed: either we closed it (and wait for the
        client to close its side), or the client can no longer receive
        replies, and there is no point in reading more requests.
        """
        if self.phase is not _CLOSING:
            self._close(full=True)

    def lost(self, reason: str) -> None:
        """
        The connection is gone; if it had been admitted, log so, with the
        counts of the client's misbehaviour.
        """
        self.phase = _CLOSED
        self.timers.cancel_all()
        self._drop_work()
        if self.admission.forget(self.member):
            counts = ""
            if self._complaints:
                counts = (
                    " ("
                    + ", ".join(
                        f"{count} {_COMPLAINTS.get(kind, kind)}"
                        for kind, count in self._complaints.items()
                    )
                    + ")"
                )
            log.info(
                "[{conn}] connection from {peer} closed: {reason}{counts}",
                peer=self.peer,
                reason=reason,
                counts=counts,
                conn=self.conn,
            )

    # -- events: output

    def pause_output(self) -> None:
        """
        The client does not read its replies: stop answering and reading.
        """
        self.stats.event("backpressure")
        self.output_paused = True
        self._update_reading()

    def resume_output(self) -> None:
        """
        The client reads its replies again.
        """
        self.output_paused = False
        if self.phase is _CLOSING or self.phase is _CLOSED:
            return
        if self.timers.turn is None and self._has_input():
            self._process()
        else:
            self._update_reading()

    # -- events: the server's own

    def shut_down(self) -> None:
        """
        The server is stopping: the replies to every line already read are
        sent, then ``Closing down``, then the connection closes.
        """
        self._wind_down(CLOSING)

    def _idle(self) -> None:
        """
        Nothing arrived for ``idle_timeout`` seconds: say why and close; but
        a client that does not read its replies meanwhile is stalled, and
        one waiting for a reply of ours is not idle.
        """
        timeout = self.settings.idle_timeout
        assert timeout is not None
        if self.output_paused:
            self._stalled()
            return
        if self.replies.queue:
            # Waiting for our own replies (bounded by the command timeout).
            self.timers.start(IDLE, timeout, self._idle)
            return
        self.stats.event("idle_timeout")
        log.info(
            "[{conn}] idle timeout ({seconds}s) for {peer}",
            seconds=timeout,
            peer=self.peer,
            conn=self.conn,
        )
        self.send(encode_line(idle_timeout_reply(timeout)))
        # A client that ignores the line (and keeps sending) must not hold
        # its slot for long: a second to read it.
        self._close(linger=MISBEHAVIOUR_LINGER)

    def make_room(self) -> None:
        """
        The server is at its connection limit and this client has ended its
        input, waiting only for replies: give up on them for a new client.
        """
        self.stats.event("made_room")
        log.warn(
            "[{conn}] closing half-closed connection from {peer} that waits "
            "for a command: the server is full",
            peer=self.peer,
            conn=self.conn,
        )
        self._io.abort()

    def _stalled(self) -> None:
        self.stats.event("stalled")
        log.warn(
            "[{conn}] aborting stalled connection from {peer}",
            peer=self.peer,
            conn=self.conn,
        )
        self._io.abort()

    def _wind_down(self, last_words: str, linger: float = CLOSE_TIMEOUT) -> None:
        """
        Stop reading; answer every line already read, then send
        ``last_words`` and close.
        """
        if self.phase is not _OPEN or self.input_ended:
            # Closing already, or the client ended its input (it gets every
            # reply, then the close).
            return
        self._last_words = last_words
        self._linger = linger
        self.phase = _DRAINING
        self.timers.cancel(LINE)
        self._update_reading()
        if self.timers.turn is None:
            self._process()

    # -- answering

    def _can_start(self) -> bool:
        """
        Whether the next line may be started now.
        """
        phase = self.phase
        return (
            (phase is _OPEN or phase is _DRAINING)
            and not self.output_paused
            and not self.replies.blocking
            and not self.replies.answering
            and len(self.replies.queue or ()) < self.settings.max_unanswered
        )

    def _has_input(self) -> bool:
        return bool(self._frames or self._held)

    def _process(self) -> None:
        """
        Answer one batch of the input held back, and come back on the next
        reactor turn for more; once the client's input has ended (or the
        connection is winding down) and everything is answered, close.
        """
        self.timers.cancel(TURN)
        if self._can_start() and self._has_input():
            frames = self._frames
            if frames:
                self._frames = ()
            else:
                frames = self._take_batch()
            self.answer_frames(frames)
            if self._can_start() and self._has_input():
                self.timers.start(TURN, 0, self._process)
        if self.phase is _OPEN and not self.input_ended:
            self._update_reading()
        else:
            self._finish_if_done()

    def _take_batch(self) -> list[Frame]:
        """
        Frame the next batch of held input: at most :data:`BATCH` lines.
        """
        held = self._held
        if len(held) > BATCH and held.count(LF) > BATCH:
            cut = -1
            for _ in range(BATCH):
                cut = held.find(LF, cut + 1)
            self._held = held[cut + 1 :]
            return self.framer.feed(held[: cut + 1])
        self._held = b""
        return self.framer.feed(held)

    def _finish_if_done(self) -> None:
        """
        Input ended or winding down: once every line is answered, close.
        """
        if self._has_input() or self.replies.queue:
            return
        if self.phase is _DRAINING:
            self.send(encode_line(self._last_words))
            self._close(linger=self._linger)
        elif self.phase is _OPEN and self.input_ended:
            self._close()

    def _update_reading(self) -> None:
        """
        Read from the socket unless the client does not read its replies or
        too much of its input is unanswered; a closing connection reads (and
        drops) whatever arrives.
        """
        phase = self.phase
        if phase is _CLOSING:
            wanted = True
        elif phase is not _OPEN or self.input_ended or self.output_paused:
            wanted = False
        elif self._held or self._frames or self.replies.queue:
            held = self._held
            wanted = len(held) <= HOLD_LIMIT and (
                held.count(LF) + len(self._frames) + len(self.replies.queue or ())
                < self.settings.max_unanswered
            )
        else:
            wanted = True
        if wanted is not self._reading:
            self._reading = wanted
            if wanted:
                self._io.resume_reading()
            else:
                self._io.pause_reading()

    # -- what answering needs (Answered)

    def send(self, data: bytes) -> None:
        """
        Write encoded replies, counted.
        """
        self.stats.bytes_out += len(data)
        self._io.write(data)

    @property
    def gone(self) -> bool:
        """
        Closing or closed: a late reply is for nobody.
        """
        return self.phase is _CLOSING or self.phase is _CLOSED

    def close(self) -> None:
        """
        Close gracefully, after a reply that closes the connection.
        """
        self._close()

    def finishing(self) -> None:
        """
        A reply that closes the connection is queued: nothing after it is
        read or started.
        """
        self.phase = _FINISHING
        self._held = b""
        self._frames = ()

    def go_on(self) -> None:
        """
        A command that held up the lines after it has answered: go on with
        them (unless a turn is already due to).
        """
        if self.timers.turn is None:
            self._process()

    def answer_frames(self, frames: Sequence[Frame]) -> None:
        """
        Answer a batch of lines; keep those not started for later.
        """
        rest = self.replies.answer_frames(frames)
        if rest and (self.phase is _OPEN or self.phase is _DRAINING):
            self._frames = rest

    def _drop_work(self) -> None:
        """
        Forget the input not yet answered, and cancel commands still running:
        nobody will read their replies.
        """
        self._held = b""
        self._frames = ()
        self.replies.drop()

    def _close(self, *, full: bool = False, linger: float = CLOSE_TIMEOUT) -> None:
        """
        Close gracefully: the replies already written go out, then our end of
        the connection.  Closing a socket with requests still unread makes the
        kernel send a reset, which can destroy replies the client has not read
        yet; so where the transport can, we close only our sending side, read
        and drop whatever else the client sends, and close for good when it
        closes too (or after ``linger`` seconds: even a full close can stall,
        when the client reads nothing).

        :param full: close for good now: the client can no longer receive.
        """
        full = full or self.input_ended
        phase = self.phase
        if phase is _CLOSED:
            return
        if phase is _CLOSING:
            if full:
                self._io.close()
            return
        self.phase = _CLOSING
        timers = self.timers
        timers.cancel_all()
        self._drop_work()
        self.output_paused = False
        self._update_reading()
        timers.start(LINGER, linger, self._stalled)
        if full or not self._io.half_close():
            self._io.close()
