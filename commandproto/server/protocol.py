"""
The server: a protocol that answers request lines from a
:class:`CommandTable`, the factory that makes one per connection and
enforces the server-wide limits, and the service that drains connections at
shutdown.

The protocol only moves bytes and keeps order: framing is
:class:`LineFramer`'s, meaning is the command table's.

How one connection's input flows (see :class:`CommandServerProtocol`):

  - a read whose lines all have cached replies (the constant commands) is
    answered with one write: the fast path;
  - otherwise each line is started in order; a command that answers at once
    has its reply queued at once, one that answers later holds its place in
    the queue of replies, and (unless it may overlap) the lines after it wait
    until it has answered;
  - input that cannot be started yet is held as the raw bytes it arrived as,
    and framed when its turn comes; at most :data:`BATCH` lines are answered
    per connection per reactor turn, so one pipelining client cannot keep
    the others waiting;
  - reading stops while the client does not read its replies (the transport
    pauses us), while more than ``max_unanswered`` lines are unanswered, or
    while more than :data:`HOLD_LIMIT` bytes are held.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import resource
import socket
from collections import deque
from collections.abc import Sequence
from time import perf_counter
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from ..commands.table import (
    CLOSING,
    INVALID_UTF8,
    UNKNOWN_COMMAND,
    CommandTable,
    Reply,
    Session,
    default_commands,
    idle_timeout_reply,
    line_too_long,
    line_took_too_long,
    too_many_connections,
    too_many_from_address,
)
from ..server.stats import (
    CANCELLED,
    UNKNOWN,
    UNKNOWN_LABEL,
    ServerStats,
    count_elements,
    outcome_of,
)
from ..wire.codec import (
    DEFAULT_MAX_LINE_LENGTH,
    LF,
    OVERLONG,
    Frame,
    LineFramer,
    encode_line,
    escape_controls,
)

log = Logger()

DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_IDLE_TIMEOUT: float | None = None
"""
Idle clients are never disconnected by default, as in Redis (``timeout 0``)
and memcached (``idle_timeout 0``): an idle connection costs about 1.6 KB
(10,000 of them, at the connection limit, 16 MB), and interactive sessions
and pooled connections sit idle for long stretches.
"""
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
DEFAULT_COMMAND_TIMEOUT = 30.0
DEFAULT_MAX_UNANSWERED = 1024
DEFAULT_LINE_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 1000
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
DEFAULT_MAX_HANDSHAKES = 1000
DEFAULT_SEND_BUFFER = 65536
"""
The kernel's send buffer for each connection, in bytes (``SO_SNDBUF``).
Linux grows an unbounded one to 4 MiB, which a client that does not read
fills with replies the server computed for nobody; bounded, backpressure
starts within about 200 KiB of unread replies (this, doubled by the kernel
for its bookkeeping, plus the transport's 64 KiB).
"""

REFUSAL_LINGER = 1.0
"""
Seconds a refused connection may take to close gracefully before it is
aborted.
"""

DEFAULT_SLOW_THRESHOLD = 0.1
"""
Seconds past which a command's reply is logged as slow: Redis's slowlog
logs commands that run over 10 ms; ours counts the wait for an asynchronous
reply too, so ten times that.
"""

REFUSAL_RESERVE = 64
"""
Descriptors kept free beyond the connection limit, so that a client over it
can still be accepted, told why, and closed, rather than left unaccepted
until the kernel resets it.
"""

CLOSE_TIMEOUT = 10.0
"""
Seconds a closing connection may take to finish (the client reading the last
replies and closing its side) before it is aborted.
"""

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

_LF_BYTE = LF[0]
_UNKNOWN = encode_line(UNKNOWN_COMMAND)
_INVALID_UTF8 = encode_line(INVALID_UTF8)
# The metrics' names for what a client does wrong.
_COMPLAINT_EVENTS = {
    "over-long lines": "over_long_line",
    "invalid UTF-8 lines": "invalid_utf8",
}


class ServerTransport(TypingProtocol):
    """
    What the protocol needs of its transport: TCP, unix and TLS transports
    all provide it (``ITCPTransport`` and ``IConsumer`` together).
    """

    disconnecting: bool

    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...
    def getPeer(self) -> IAddress: ...
    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def loseWriteConnection(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


def describe_address(address: IAddress | None) -> str:
    """
    Render an address the way people write it, for log lines.

    :param address: a transport's host or peer address.
    :returns: ``tcp:HOST:PORT``, ``tcp6:[HOST]:PORT``, ``unix:PATH`` or the
        address's own ``repr``.
    """
    if isinstance(address, IPv4Address):
        return f"tcp:{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        # A PROXY v1 header's zone id (fe80::1%zone) is the client's text.
        return f"tcp6:[{escape_controls(address.host)}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        # A client chooses its own unix socket name: never let it write
        # control characters into our log.
        return f"unix:{escape_controls(name) if name else '(unnamed)'}"
    return escape_controls(repr(address))


def _bound_send_buffer(transport: object, size: int) -> None:
    """
    Set a connection's ``SO_SNDBUF``, where it has a socket.
    """
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if isinstance(handle, socket.socket):
        with contextlib.suppress(OSError):
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def address_key(address: IAddress | None) -> str | None:
    """
    What ``--max-connections-per-ip`` counts connections by: the IPv4
    address, or the IPv6 address's /64 network (one host's share of IPv6
    addresses); ``None`` (not counted) for unix sockets.
    """
    if isinstance(address, IPv6Address):
        host = address.host.split("%", 1)[0]
        try:
            packed = ipaddress.IPv6Address(host)
        except ValueError:
            return host
        if packed.ipv4_mapped is not None:
            return str(packed.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(packed) >> 64 << 64, 64)))
    if isinstance(address, IPv4Address):
        return address.host
    return None


class Phase(enum.Enum):
    """
    Where a connection is in its life.  Every event (a read, the client's
    half-close, a shutdown, a reply becoming ready, a timeout) is handled
    according to the phase, in one place each.
    """

    OPEN = "open"
    """Reading requests and answering them."""
    INPUT_ENDED = "input ended"
    """The client closed its sending side: answering what it sent, then
    closing."""
    DRAINING = "draining"
    """The server is shutting down: answering what was already read, then
    ``Closing down``, then closing."""
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
_OPEN, _INPUT_ENDED, _DRAINING, _FINISHING, _CLOSING, _CLOSED = Phase


class _Pending:
    """
    A reply's place in the queue of replies, for a command that answers
    later (or one that answers at once but closes the connection).

    :ivar reply: the encoded reply, once known.
    :ivar close: close the connection once this reply is sent.
    :ivar blocking: the lines after this one wait until it has answered.
    :ivar deferred: the handler's result, cancelled if the client goes away.
    :ivar name: the command's name, for its statistics.
    :ivar started: when it started (:func:`time.perf_counter`).
    """

    __slots__ = ("blocking", "close", "deferred", "name", "reply", "started")

    def __init__(self, blocking: bool, reply: bytes | None = None) -> None:
        self.blocking = blocking
        self.reply = reply
        self.close = False
        self.deferred: Deferred[Reply] | None = None
        self.name = ""
        self.started = 0.0


@implementer(IHalfCloseableProtocol, IPushProducer, IHandshakeListener)
class CommandServerProtocol(Protocol, TimeoutMixin):
    """
    One client's session: each request line gets exactly one reply line, in
    order.

    The protocol is a streaming producer on its own transport: when the
    client stops reading and unsent replies pile up past the transport's
    buffer size, the transport pauses us and we stop answering and reading;
    when the replies drain we are resumed.

    :ivar peer: the client's address, for log lines.
    :ivar conn: the connection's short id, in every log line about it.
    :ivar phase: where the connection is in its life.
    """

    factory: CommandServerFactory

    def __init__(
        self,
        commands: CommandTable,
        max_line_length: int,
        idle_timeout: float | None,
        clock: IReactorTime,
        reply_cache: dict[bytes, bytes] | None = None,
        *,
        command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        max_unanswered: int = DEFAULT_MAX_UNANSWERED,
        line_timeout: float | None = DEFAULT_LINE_TIMEOUT,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        send_buffer: int | None = DEFAULT_SEND_BUFFER,
    ) -> None:
        self.commands = commands
        self.send_buffer = send_buffer
        self.line_timeout = line_timeout
        self.handshake_timeout = handshake_timeout
        self._reply_cache = {} if reply_cache is None else reply_cache
        self.max_line_length = max_line_length
        self.idle_timeout = idle_timeout
        self.command_timeout = command_timeout
        self.max_unanswered = max_unanswered
        self.clock = clock
        self.callLater = clock.callLater  # type: ignore[method-assign,assignment]
        self._framer = LineFramer(max_line_length)
        # What every read looks at, as instance attributes (found faster
        # than class attributes); the rest start as class attributes.
        self.phase = _OPEN
        # Input read but not yet framed: raw bytes, so that a flood of short
        # lines held back costs its size, not an object per line.
        self._held = b""
        # Lines framed but not yet started (at most one batch).
        self._frames: Sequence[Frame] = ()
        # Replies behind one that is not ready yet, in request order; made
        # when first needed.
        self._queue: deque[bytes | _Pending] | None = None
        self._write_paused = False
        # When a line has started to arrive and not finished: its timer.
        self._line_timer: IDelayedCall | None = None

    # The rest of the state starts as these class attributes, so that an
    # idle connection does not pay for an attribute of its own for each.
    peer = "(not connected)"
    conn = "-"
    _blocking = 0
    _reading = True
    _registered = False
    _turn: IDelayedCall | None = None
    _answering = False
    _session: Session | None = None
    _complaints: dict[str, int] | None = None
    # A TLS connection is admitted once its handshake completes.
    _handshake_timer: IDelayedCall | None = None
    # What a wind-down sends last: ``Closing down``, or why.
    _last_words = CLOSING
    # The client has closed its sending side: a close can be a full one.
    _peer_ended = False
    address_key: str | None = None

    # -- events from the transport

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._transport = cast(ServerTransport, self.transport)
        self.peer = describe_address(self._transport.getPeer())
        self.conn = self.factory.new_connection_id()
        if ISSLTransport.providedBy(self._transport):
            # Not a connection until its TLS handshake completes: a client
            # that never finishes one must not take a connection's slot.
            self.factory.begin_handshake(self)
            if self.handshake_timeout is not None:
                self._handshake_timer = self.clock.callLater(
                    self.handshake_timeout, self._handshake_too_slow
                )
            return
        self._admit()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: now the client is a connection.
        """
        if self._handshake_timer is None or self.phase is not _OPEN:
            return
        self._handshake_timer.cancel()
        self._handshake_timer = None
        self.factory.end_handshake(self)
        self._admit()

    def _handshake_too_slow(self) -> None:
        self._handshake_timer = None
        self.drop_handshake(
            f"handshake took longer than {self.handshake_timeout}s",
            "handshake_timeout",
        )

    def drop_handshake(self, why: str, event: str) -> None:
        """
        Give up on this connection's TLS handshake: log why, count it as
        ``event`` (one of :data:`~commandproto._stats.EVENTS`), and abort.
        """
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.factory.end_handshake(self)
        self.factory.stats.event(event)
        log.warn(
            "[{conn}] closing TLS connection from {peer}: {why}",
            peer=self.peer,
            why=why,
            conn=self.conn,
        )
        self.phase = _CLOSING
        self._transport.abortConnection()

    def _admit(self) -> None:
        """
        Take the connection in, or tell the client why not and close at once.
        """
        refusal = self.factory.admit(self)
        if refusal is not None:
            log.warn(
                "[{conn}] refused connection from {peer}: {reason}",
                peer=self.peer,
                reason=refusal,
                conn=self.conn,
            )
            line = encode_line(refusal)
            self.factory.stats.bytes_out += len(line)
            self._transport.write(line)
            if len(self.factory.refusing) < REFUSAL_RESERVE // 2:
                # Close gracefully (a request the client already sent, left
                # unread, would make the close a reset that destroys the
                # line), but briefly: refusals come in floods, and each
                # holds a descriptor from the reserve.
                self.factory.refusing.add(self)
                self._close(linger=REFUSAL_LINGER)
            else:
                self.phase = _CLOSING
                self._transport.loseConnection()
            return
        log.info("[{conn}] connection from {peer}", peer=self.peer, conn=self.conn)
        if self.send_buffer:
            _bound_send_buffer(self._transport, self.send_buffer)
        self._transport.registerProducer(self, True)
        self._registered = True
        self.setTimeout(self.idle_timeout)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        stats = self.factory.stats
        stats.bytes_in += len(data)
        if self.phase is not _OPEN:
            # Closing: input is read only to be dropped.  Draining: only
            # what was read before the shutdown is answered.
            return
        # (The byte as an int: ``b"\n" in data`` first tries the bytes as an
        # int and formats an error, ten times slower.)
        if _LF_BYTE in data:
            # Only whole lines are activity: a line that trickles in for
            # ever does not keep a connection alive.
            self.resetTimeout()  # type: ignore[no-untyped-call]
            if self._line_timer is not None or data[-1] != _LF_BYTE:
                self._watch_line(data)
        else:
            self._watch_line(data)
        if self._held or self._frames or self._queue or self._write_paused:
            # Busy: hold the input, raw, until its turn.
            self._held += data
            if self._turn is None and self._can_start():
                self._process()
            else:
                self._update_reading()
            return
        if len(data) > BATCH and data.count(LF) > BATCH:
            self._held = data
            self._process()
            return
        timing = stats.timing
        if timing:
            started = perf_counter()
        frames = self._framer.feed(data)
        get = self._reply_cache.get
        if len(frames) == 1:
            reply = get(frames[0])  # type: ignore[arg-type]
            if reply is None:
                self._answer(frames)
                return
        else:
            # The fast path: when every line of this read is a constant
            # command, the replies come from the cache in one write.
            cached = [get(frame) for frame in frames]  # type: ignore[arg-type]
            if None in cached:
                self._answer(frames, cached)
                return
            if not cached:
                return
            reply = b"".join(cached)  # type: ignore[arg-type]
        self._transport.write(reply)
        # Counted per read, not per line: one C call counts the lines.
        stats.bytes_out += len(reply)
        count_elements(stats.cached, frames)
        if timing:
            stats.cached_read(frames, perf_counter() - started)

    def readConnectionLost(self) -> None:
        """
        The client closed its sending side: answer what it sent (a last line
        without a terminator included), then close.
        """
        self._peer_ended = True
        if self.phase is _CLOSING:
            self._close(peer_done=True)
        if self.phase is not _OPEN:
            # Draining or finishing: the close that ends it is a full one.
            return
        held = self._held
        if (not held.endswith(LF)) if held else self._framer.buffered:
            self._held = held + LF
        self.phase = _INPUT_ENDED
        if self._turn is None:
            self._process()

    def writeConnectionLost(self) -> None:
        """
        Our sending side is closed: either we closed it (and wait for the
        client to close its side), or the client can no longer receive
        replies, and there is no point in reading more requests.
        """
        if self.phase is not _CLOSING:
            self._close(peer_done=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self.phase = _CLOSED
        self.factory.refusing.discard(self)
        self._stop_turn()
        self._stop_line_timer()
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
            self.factory.end_handshake(self)
        self._drop_work()
        if self.factory.forget(self):
            counts = ""
            if self._complaints:
                counts = (
                    " ("
                    + ", ".join(
                        f"{count} {kind}" for kind, count in self._complaints.items()
                    )
                    + ")"
                )
            log.info(
                "[{conn}] connection from {peer} closed: {reason}{counts}",
                peer=self.peer,
                reason=reason.getErrorMessage(),
                counts=counts,
                conn=self.conn,
            )

    def timeoutConnection(self) -> None:
        """
        Nothing arrived for ``idle_timeout`` seconds (or a close did not finish
        in that time): say why and close, or abort if a close is stuck.
        """
        if self.phase is _CLOSING or self._write_paused:
            self.factory.stats.event("stalled")
            log.warn(
                "[{conn}] aborting stalled connection from {peer}",
                peer=self.peer,
                conn=self.conn,
            )
            self._transport.abortConnection()
            return
        if self._queue:
            # Not idle: waiting for our own replies (bounded by the command
            # timeout).
            self.resetTimeout()  # type: ignore[no-untyped-call]
            return
        self.factory.stats.event("idle_timeout")
        log.info(
            "[{conn}] idle timeout ({seconds}s) for {peer}",
            seconds=self.idle_timeout,
            peer=self.peer,
            conn=self.conn,
        )
        assert self.idle_timeout is not None
        line = encode_line(idle_timeout_reply(self.idle_timeout))
        self.factory.stats.bytes_out += len(line)
        self._transport.write(line)
        self._close()

    # -- IPushProducer: the transport tells us whether the client reads

    def pauseProducing(self) -> None:
        self.factory.stats.event("backpressure")
        self._write_paused = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._write_paused = False
        if self.phase is _CLOSING or self.phase is _CLOSED:
            return
        if self._turn is None and self._has_input():
            self._process()
        else:
            self._update_reading()

    def stopProducing(self) -> None:
        # The connection is going away; connectionLost follows.
        self._write_paused = True

    # -- the server's own events

    def shut_down(self) -> None:
        """
        The server is stopping: the replies to every line already read are
        sent, then ``Closing down``, then the connection closes.
        """
        self._wind_down(CLOSING)

    def _wind_down(self, last_words: str) -> None:
        """
        Stop reading; answer every line already read, then send
        ``last_words`` and close.
        """
        if self.phase is not _OPEN:
            # Closing already, or the client ended its input (it gets every
            # reply, then the close).
            return
        self._last_words = last_words
        self.phase = _DRAINING
        self._stop_line_timer()
        self._update_reading()
        if self._turn is None:
            self._process()

    def _watch_line(self, data: bytes) -> None:
        """
        Time the line that is arriving: a read that ends in the middle of a
        line starts the line's timer (or keeps it, if the same line goes on);
        a read that ends a line stops it.
        """
        if self.line_timeout is None:
            return
        if data[-1:] == LF:
            self._stop_line_timer()
        elif self._line_timer is None:
            self._line_timer = self.clock.callLater(
                self.line_timeout, self._line_too_slow
            )
        elif LF in data:
            # A new line started in this read.
            self._line_timer.cancel()
            self._line_timer = self.clock.callLater(
                self.line_timeout, self._line_too_slow
            )

    def _stop_line_timer(self) -> None:
        if self._line_timer is not None:
            if self._line_timer.active():
                self._line_timer.cancel()
            self._line_timer = None

    def _line_too_slow(self) -> None:
        self._line_timer = None
        assert self.line_timeout is not None
        self.factory.stats.event("line_timeout")
        log.warn(
            "[{conn}] line from {peer} took longer than {seconds}s: closing",
            peer=self.peer,
            seconds=self.line_timeout,
            conn=self.conn,
        )
        self._wind_down(line_took_too_long(self.line_timeout))

    # -- answering

    def _can_start(self) -> bool:
        """
        Whether the next line may be started now.
        """
        phase = self.phase
        return (
            (phase is _OPEN or phase is _INPUT_ENDED or phase is _DRAINING)
            and not self._write_paused
            and not self._blocking
            and not self._answering
            and len(self._queue or ()) < self.max_unanswered
        )

    def _has_input(self) -> bool:
        return bool(self._frames or self._held)

    def _process(self) -> None:
        """
        Answer one batch of the input held back, and come back on the next
        reactor turn for more; once the client's input has ended (or the
        server is draining) and everything is answered, close.
        """
        self._turn = None
        if self._can_start() and self._has_input():
            frames = self._frames
            if frames:
                self._frames = ()
            else:
                frames = self._take_batch()
            self._answer(frames)
            if self._can_start() and self._has_input():
                self._turn = self.clock.callLater(0, self._process)
        if self.phase is _OPEN:
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
            return self._framer.feed(held[: cut + 1])
        self._held = b""
        return self._framer.feed(held)

    def _answer(
        self, frames: Sequence[Frame], cached: list[bytes | None] | None = None
    ) -> None:
        """
        Start each line in order, and send the replies that are ready, in one
        write.  Stops early (keeping the rest) at a command whose reply is
        pending and that the lines after it must wait for, and at a command
        that closes the connection (dropping the rest).

        :param cached: each frame's reply from the cache of constant replies
            (or ``None``), when the caller has looked them up already.
        """
        get = self._reply_cache.get
        stats = self.factory.stats
        counts = stats.cached
        # With timing, the cached replies of this batch, timed together.
        hits: list[Frame] | None = [] if stats.timing else None
        started = perf_counter()
        queue = self._queue
        out: list[bytes] = []
        self._answering = True
        try:
            for index, frame in enumerate(frames):
                reply: bytes | _Pending | None = (
                    get(frame)  # type: ignore[arg-type]
                    if cached is None
                    else cached[index]
                )
                if reply is None:
                    reply = self._start(frame)
                    if type(reply) is _Pending:
                        if queue is None:
                            queue = self._queue = deque()
                        queue.append(reply)
                        if reply.close:
                            # Nothing after it is run.
                            self.phase = _FINISHING
                            self._held = b""
                            self._frames = ()
                            break
                        if (reply.blocking and reply.reply is None) or len(
                            queue
                        ) >= self.max_unanswered:
                            # The rest wait: for this command, or for room.
                            self._frames = frames[index + 1 :]
                            break
                        continue
                else:
                    counts[frame] = counts.get(frame, 0) + 1  # type: ignore[index,arg-type]
                    if hits is not None:
                        hits.append(frame)
                if queue:
                    queue.append(cast(bytes, reply))
                    if len(queue) >= self.max_unanswered:
                        self._frames = frames[index + 1 :]
                        break
                else:
                    out.append(cast(bytes, reply))
        finally:
            self._answering = False
            if out:
                data = b"".join(out)
                stats.bytes_out += len(data)
                self._transport.write(data)
            if hits:
                stats.cached_read(hits, perf_counter() - started)
        if queue:
            self._flush_queue()

    def _start(self, frame: Frame) -> bytes | _Pending:
        """
        Start the command one line names.

        :returns: its encoded reply, or its place in the queue of replies if
            it answers later or closes the connection.
        """
        if frame is OVERLONG:
            if self._complain("over-long lines"):
                log.warn(
                    "[{conn}] line longer than {limit} bytes from {peer}",
                    conn=self.conn,
                    peer=self.peer,
                    limit=self.max_line_length,
                )
            return encode_line(line_too_long(self.max_line_length))
        try:
            text = frame.decode("utf-8")
        except UnicodeDecodeError:
            if self._complain("invalid UTF-8 lines"):
                log.warn(
                    "[{conn}] invalid UTF-8 from {peer}", conn=self.conn, peer=self.peer
                )
            return _INVALID_UTF8
        found = self.commands.find(text)
        if found is None:
            self.factory.stats.command_done(UNKNOWN_LABEL, UNKNOWN, None)
            return _UNKNOWN
        command, arguments = found
        session = self._session
        if session is None:
            session = self._session = Session(
                self.peer,
                self._transport.getPeer(),
                self.clock,
                connection_id=self.conn,
                stats=self.factory.stats,
            )
        started = perf_counter()
        result = command.run_text(arguments, session, self.command_timeout)
        if type(result) is str:
            try:
                encoded = encode_line(result)
            except UnicodeEncodeError:
                result = command.contain(Failure(), session).text
                encoded = encode_line(result)
            self._done(command.name, outcome_of(command.name, result), started)
            return encoded
        if type(result) is Reply:
            text = result.text
            try:
                encoded = encode_line(text)
            except UnicodeEncodeError:
                text = command.contain(Failure(), session).text
                encoded = encode_line(text)
                result = Reply("", False)
            self._done(command.name, outcome_of(command.name, text), started)
            if not result.close:
                return encoded
            pending = _Pending(False, encoded)
            pending.close = True
            return pending
        pending = _Pending(not command.overlap)
        pending.name = command.name
        pending.started = started
        pending.deferred = cast(Deferred[Reply], result)
        if pending.blocking:
            self._blocking += 1
        pending.deferred.addCallback(self._finished, pending)
        return pending

    def _finished(self, reply: Reply, pending: _Pending) -> None:
        """
        A command that answered later has its reply: send every reply now
        ready, in order, and go on with the lines that waited for it.
        """
        pending.deferred = None
        if pending.blocking:
            self._blocking -= 1
        if self.phase is _CLOSING or self.phase is _CLOSED:
            self._done(pending.name, CANCELLED, pending.started)
            return
        self._done(pending.name, outcome_of(pending.name, reply.text), pending.started)
        pending.reply = encode_line(reply.text)
        pending.close = reply.close
        if self._answering:
            # Answered while another command of ours ran: the loop that is
            # running sends it.
            return
        self._flush_queue()
        if self._turn is None:
            self._process()

    def _done(self, name: str, outcome: str, started: float) -> None:
        """
        A command has its reply: count it, and log it if it was slow.
        """
        seconds = perf_counter() - started
        factory = self.factory
        factory.stats.command_done(
            name, outcome, seconds if factory.stats.timing else None
        )
        threshold = factory.slow_threshold
        if threshold is not None and seconds >= threshold:
            log.warn(
                "[{conn}] slow command {command!r} from {peer}: {ms:.1f} ms",
                command=name,
                ms=seconds * 1000,
                peer=self.peer,
                conn=self.conn,
                outcome=outcome,
            )

    def _flush_queue(self) -> None:
        """
        Send the replies at the head of the queue that are ready, in one
        write; close after one that closes the connection.
        """
        queue = self._queue
        out: list[bytes] = []
        close = False
        while queue:
            head = queue[0]
            if type(head) is bytes:
                out.append(head)
            else:
                pending = cast(_Pending, head)
                if pending.reply is None:
                    break
                out.append(pending.reply)
                if pending.close:
                    close = True
                    queue.popleft()
                    break
            queue.popleft()
        if not queue:
            # An idle connection keeps no queue.
            self._queue = None
        if out:
            data = b"".join(out)
            self.factory.stats.bytes_out += len(data)
            self._transport.write(data)
        if close:
            self._close()

    def _finish_if_done(self) -> None:
        """
        Input ended or draining: once every line is answered, close.
        """
        if self._has_input() or self._queue:
            return
        if self.phase is _DRAINING:
            line = encode_line(self._last_words)
            self.factory.stats.bytes_out += len(line)
            self._transport.write(line)
            self._close()
        elif self.phase is _INPUT_ENDED:
            self._close(peer_done=True)

    def _update_reading(self) -> None:
        """
        Read from the socket unless the client does not read its replies or
        too much of its input is unanswered; a closing connection reads (and
        drops) whatever arrives.
        """
        phase = self.phase
        if phase is _CLOSING:
            wanted = True
        elif phase is not _OPEN or self._write_paused:
            wanted = False
        elif self._held or self._frames or self._queue:
            held = self._held
            wanted = len(held) <= HOLD_LIMIT and (
                held.count(LF) + len(self._frames) + len(self._queue or ())
                < self.max_unanswered
            )
        else:
            wanted = True
        if wanted is not self._reading:
            self._reading = wanted
            if wanted:
                self._transport.resumeProducing()
            else:
                self._transport.pauseProducing()

    def _stop_turn(self) -> None:
        if self._turn is not None:
            if self._turn.active():
                self._turn.cancel()
            self._turn = None

    def _drop_work(self) -> None:
        """
        Forget the input not yet answered, and cancel commands still running:
        nobody will read their replies.
        """
        self._held = b""
        self._frames = ()
        queue, self._queue = self._queue or (), None
        for item in queue:
            if type(item) is _Pending and item.deferred is not None:
                item.deferred.cancel()

    def _complain(self, kind: str) -> bool:
        """
        Count a client's misbehaviour.  It is logged once per kind and
        connection; later ones are counted, and the counts go in the line
        that logs the close, so that one client cannot flood the log.

        :returns: whether this is the first of its kind, to be logged.
        """
        if self._complaints is None:
            self._complaints = {}
        count = self._complaints.get(kind, 0)
        self._complaints[kind] = count + 1
        self.factory.stats.event(_COMPLAINT_EVENTS.get(kind, kind))
        return not count

    def _close(self, *, peer_done: bool = False, linger: float = CLOSE_TIMEOUT) -> None:
        """
        Close gracefully: the replies already written go out, then our end of
        the connection.  Closing a socket with requests still unread makes the
        kernel send a reset, which can destroy replies the client has not read
        yet; so where the transport can, we close only our sending side, read
        and drop whatever else the client sends, and close for good when it
        closes too (or after ``CLOSE_TIMEOUT``).

        :param peer_done: the client has closed its sending side (or can no
            longer receive), so the connection can close for good now.
        """
        peer_done = peer_done or self._peer_ended
        if self.phase is _CLOSED:
            return
        if self.phase is _CLOSING:
            if peer_done:
                self._transport.loseConnection()
            return
        self.phase = _CLOSING
        self._stop_turn()
        self._stop_line_timer()
        self._drop_work()
        if self._registered:
            # A producer still registered on its own transport would hold the
            # close open for ever.
            self._registered = False
            self._transport.unregisterProducer()
        self._write_paused = False
        self._update_reading()
        # Cancel the idle timer and start a new one, rather than move it
        # sooner: the reactor finds a call moved sooner by a linear search of
        # all its timers, which made 10,000 closing connections cost seconds.
        # Even a full close can stall (the client reads nothing), so it too
        # is aborted after CLOSE_TIMEOUT.
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self.setTimeout(linger)  # type: ignore[no-untyped-call]
        if (
            not peer_done
            and IHalfCloseableDescriptor.providedBy(self._transport)
            and not ISSLTransport.providedBy(self._transport)
        ):
            self._transport.loseWriteConnection()
        else:
            self._transport.loseConnection()


class CommandServerFactory(Factory):
    """
    Makes a :class:`CommandServerProtocol` for each connection, all sharing
    one command table, and keeps the server-wide limits.

    :ivar commands: the command table.
    :ivar max_line_length: the longest request line accepted, in bytes.
    :ivar max_connections: how many clients may be connected at once, closing
        ones included (each holds a descriptor until it is gone).
    :ivar max_connections_per_address: how many of them may come from one
        address (see :func:`address_key`), or ``None`` for no limit.
    :ivar idle_timeout: seconds without a whole line before a client is
        disconnected, or ``None`` for no limit.
    :ivar line_timeout: seconds a line may take to arrive from its first
        byte, or ``None`` for no limit.
    :ivar command_timeout: seconds a command may take to answer before it is
        cancelled, or ``None`` for no limit.
    :ivar max_unanswered: how many lines of one connection may await their
        replies before the server stops reading it.
    :ivar handshake_timeout: seconds a TLS client may take to complete its
        handshake, or ``None`` for no limit.
    :ivar max_handshakes: how many TLS handshakes may be in progress at once.
    :ivar send_buffer: each connection's ``SO_SNDBUF`` in bytes, or ``None``
        for the kernel's own.
    :ivar stats: the server's counters (``stats``, ``--metrics``).
    :ivar slow_threshold: seconds past which a command's reply is logged as
        slow, or ``None`` for never.
    """

    noisy = False

    def __init__(
        self,
        commands: CommandTable | None = None,
        *,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_address: int | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        line_timeout: float | None = DEFAULT_LINE_TIMEOUT,
        command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        max_unanswered: int = DEFAULT_MAX_UNANSWERED,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        send_buffer: int | None = DEFAULT_SEND_BUFFER,
        clock: IReactorTime | None = None,
        stats: ServerStats | None = None,
        slow_threshold: float | None = DEFAULT_SLOW_THRESHOLD,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.commands = default_commands() if commands is None else commands
        self.max_line_length = max_line_length
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.idle_timeout = idle_timeout
        self.line_timeout = line_timeout
        self.command_timeout = command_timeout
        self.max_unanswered = max_unanswered
        self.handshake_timeout = handshake_timeout
        self.max_handshakes = max_handshakes
        self.send_buffer = send_buffer
        self.clock = clock
        self.stats = ServerStats(wall=clock.seconds) if stats is None else stats
        self.slow_threshold = slow_threshold
        self._connection_ids = 0
        self.connections: set[CommandServerProtocol] = set()
        # In the order they started: a dict, so the oldest is first.
        self.handshakes: dict[CommandServerProtocol, None] = {}
        # Refused connections still closing (see REFUSAL_RESERVE).
        self.refusing: set[CommandServerProtocol] = set()
        self._per_address: dict[str, int] = {}
        self._reply_cache: dict[bytes, bytes] = {}
        self._reply_cache_version = -1
        self._draining = False
        self._drained: list[Deferred[None]] = []

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> CommandServerProtocol:
        protocol = CommandServerProtocol(
            self.commands,
            self.max_line_length,
            self.idle_timeout,
            self.clock,
            self.reply_cache(),
            command_timeout=self.command_timeout,
            max_unanswered=self.max_unanswered,
            line_timeout=self.line_timeout,
            handshake_timeout=self.handshake_timeout,
            send_buffer=self.send_buffer,
        )
        protocol.factory = self
        return protocol

    def reply_cache(self) -> dict[bytes, bytes]:
        """
        The encoded replies of the table's constant commands, keyed by the
        request line's bytes; rebuilt when the table changes.
        """
        if self._reply_cache_version != self.commands.version:
            self._reply_cache = {
                name.encode("utf-8"): encode_line(reply.text)
                for name, reply in self.commands.constant_replies().items()
            }
            self._reply_cache_version = self.commands.version
        return self._reply_cache

    def new_connection_id(self) -> str:
        """
        A short id for a new connection: a counter, in hexadecimal.
        """
        self._connection_ids += 1
        return format(self._connection_ids, "x")

    def begin_handshake(self, protocol: CommandServerProtocol) -> None:
        """
        A TLS connection starts its handshake.

        Handshakes in progress have a bound of their own, apart from the
        connection limit, so that clients that never finish one cannot lock
        out those that do; past it, the oldest handshake is dropped.
        """
        if len(self.handshakes) >= self.max_handshakes:
            # Full: make room by dropping the oldest.  An honest client's
            # handshake takes milliseconds; the one that has waited longest
            # is most likely one that never will finish.
            oldest = next(iter(self.handshakes))
            oldest.drop_handshake(
                "too many handshakes in progress", "handshake_dropped"
            )
        self.handshakes[protocol] = None

    def end_handshake(self, protocol: CommandServerProtocol) -> None:
        """
        A TLS handshake finished, failed or timed out.
        """
        self.handshakes.pop(protocol, None)

    def admit(self, protocol: CommandServerProtocol) -> str | None:
        """
        Take a new connection into account, if the limits allow.

        :returns: ``None`` if admitted, else the line to send before closing.
        """
        stats = self.stats
        if self._draining:
            stats.refuse("shutting_down")
            return CLOSING
        if len(self.connections) >= self.max_connections:
            stats.refuse("max_connections")
            return too_many_connections(self.max_connections)
        limit = self.max_connections_per_address
        key = address_key(protocol._transport.getPeer())
        if key is not None and limit is not None:
            count = self._per_address.get(key, 0)
            if count >= limit:
                stats.refuse("max_connections_per_ip")
                return too_many_from_address(limit)
            self._per_address[key] = count + 1
            protocol.address_key = key
        self.connections.add(protocol)
        stats.accepted += 1
        stats.open += 1
        return None

    def forget(self, protocol: CommandServerProtocol) -> bool:
        """
        A connection is gone: its slot, and its address's, are free.

        :returns: whether it had been admitted.
        """
        if protocol not in self.connections:
            return False
        self.connections.remove(protocol)
        self.stats.open -= 1
        key = protocol.address_key
        if key is not None:
            count = self._per_address[key] - 1
            if count:
                self._per_address[key] = count
            else:
                del self._per_address[key]
        if not self.connections:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)
        return True

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close every connection gracefully: each gets the replies already due,
        then ``Closing down``.  Connections still open after ``timeout``
        seconds are aborted.  New connections are refused from now on.

        :returns: a ``Deferred`` that fires once every connection is gone.
        """
        self._draining = True
        if not self.connections:
            return succeed(None)
        log.info(
            "shutting down: closing {count} connection(s)", count=len(self.connections)
        )
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        for protocol in list(self.connections):
            protocol.shut_down()
        if self.connections:
            deadline = self.clock.callLater(timeout, self._abort_all, timeout)
            done.addBoth(_cancel_call, deadline)
        return done

    def _abort_all(self, timeout: float) -> None:
        log.info(
            "shutdown timeout ({seconds}s): aborting {count} connection(s)",
            seconds=timeout,
            count=len(self.connections),
        )
        self.abort_all()

    def abort_all(self) -> None:
        """
        Abort every connection still open, TLS handshakes included.
        """
        for protocol in [*self.connections, *self.handshakes]:
            protocol._transport.abortConnection()


def _cancel_call(result: object, call: IDelayedCall) -> object:
    if call.active():
        call.cancel()
    return result


class DrainService(Service):
    """
    Drains the factory's connections when the application stops: twistd
    waits for the ``Deferred`` that ``stopService`` returns.
    """

    def __init__(self, factory: CommandServerFactory, timeout: float) -> None:
        self.factory = factory
        self.timeout = timeout

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        return self.factory.drain(self.timeout)


@implementer(IStreamServerEndpoint)
class LoggingServerEndpoint:
    """
    Wrap a server endpoint so that the address it actually listens on (the
    port the OS picked for ``tcp:0``, say) is logged.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            log.info("listening on {address}", address=describe_address(port.getHost()))
            return port

        return self._endpoint.listen(factory).addCallback(listening)


def ensure_file_limit(connections: int, others: int = 0, spare: int = 32) -> int:
    """
    Raise this process's open-file limit so that ``connections`` clients fit,
    as far as the hard limit allows (as Redis does for ``maxclients``),
    beside ``others`` descriptors of other kinds (TLS handshakes in progress)
    and :data:`REFUSAL_RESERVE` for refusing clients over the limit.

    :param spare: descriptors for everything else: listening sockets, log
        files, the event loop's own.
    :returns: how many connections the limit now allows for.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare += others + REFUSAL_RESERVE
    wanted = connections + spare
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return connections
    allowed = max(soft - spare, 1)
    if allowed < connections:
        log.warn(
            "open-file limit {soft} allows only about {allowed} of "
            "--max-connections {connections}: serving at most {allowed}",
            soft=soft,
            allowed=allowed,
            connections=connections,
        )
    return min(allowed, connections)
