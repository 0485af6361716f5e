"""
The command server's protocol: a :class:`~twisted.protocols.basic.LineReceiver`
that adapts one connection's I/O-free core
(:class:`~commandproto.server.connection.Connection`) to a Twisted transport.

It keeps only the transport calls and the fast path: a read whose lines all
have cached replies (the constant commands) is answered here, with one
write, without entering the core.  A subclass that overrides
:meth:`~CommandServerProtocol.lineReceived` or
:meth:`~CommandServerProtocol.sendLine` sees every line and every reply, and
the fast path steps aside for it (decided once per class).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ..wire.addresses import describe_address
from ..wire.codec import CRLF, DEFAULT_MAX_LINE_LENGTH, LF, OVERLONG, Frame
from .connection import Connection
from .intake import BATCH
from .phase import OPEN, Phase
from .stats import count_elements

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

    from .factory import CommandServerFactory


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


def _socket_of(transport: object) -> socket.socket | None:
    """
    The socket beneath a transport, through the wrappers of TLS and the
    PROXY protocol (whose handles are not sockets), if there is one.
    """
    for _ in range(4):
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def _tune_socket(transport: object, send_buffer: int | None) -> None:
    """
    Set a connection's socket options, where it has a socket: no Nagle delay
    on TCP (as redis-server, memcached and nginx's ``tcp_nodelay``: the last
    write of a burst of replies must not wait for the client's delayed
    acknowledgement, up to 40 ms), and ``SO_SNDBUF`` to ``send_buffer``.
    """
    handle = _socket_of(transport)
    if handle is None:
        return
    with contextlib.suppress(OSError):
        if handle.family in (socket.AF_INET, socket.AF_INET6):
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if send_buffer:
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)


class _TransportIO:
    """
    The core's decisions, acted on a Twisted transport
    (:class:`~commandproto.server.connection.ConnectionIO`).
    """

    # Made for each connection: no more than it needs (a bound method held
    # in an attribute would cost an object of its own).
    __slots__ = ("_clock", "_plain", "_protocol", "_registered", "_transport")

    def __init__(
        self,
        protocol: CommandServerProtocol,
        transport: ServerTransport,
        clock: IReactorTime,
        plain: bool,
    ) -> None:
        self._protocol = protocol
        self._transport = transport
        self._clock = clock
        self._plain = plain
        self._registered = False

    def write(self, data: bytes) -> None:
        if self._plain:
            self._transport.write(data)
            return
        # The protocol sees each reply through sendLine.
        send_line = self._protocol.sendLine
        for line in data.split(CRLF)[:-1]:
            send_line(line)

    def schedule(self, delay: float, function: Callable[[], None], /) -> IDelayedCall:
        call: IDelayedCall = self._clock.callLater(delay, function)
        return call

    def pause_reading(self) -> None:
        self._transport.pauseProducing()

    def resume_reading(self) -> None:
        self._transport.resumeProducing()

    def serve(self) -> None:
        _tune_socket(self._transport, self._protocol.factory.send_buffer)
        self._transport.registerProducer(self._protocol, True)
        self._registered = True

    def _unregister(self) -> None:
        # A producer still registered on its own transport would hold the
        # close open for ever.
        if self._registered:
            self._registered = False
            self._transport.unregisterProducer()

    def half_close(self) -> bool:
        transport = self._transport
        if not IHalfCloseableDescriptor.providedBy(
            transport
        ) or ISSLTransport.providedBy(transport):
            return False
        self._unregister()
        transport.loseWriteConnection()
        return True

    def close(self) -> None:
        self._unregister()
        self._transport.loseConnection()

    def abort(self) -> None:
        self._transport.abortConnection()

    def line_received(self, frame: Frame) -> None:
        if frame is OVERLONG:
            self._protocol.lineLengthExceeded(b"")
        else:
            self._protocol.lineReceived(frame)


@implementer(IHalfCloseableProtocol, IPushProducer, IHandshakeListener)
class CommandServerProtocol(LineReceiver):
    """
    One client's session: each request line gets exactly one reply line, in
    order.

    The protocol is a streaming producer on its own transport: when the
    client stops reading and unsent replies pile up past the transport's
    buffer size, the transport pauses us and we stop answering and reading;
    when the replies drain we are resumed.

    As a :class:`~twisted.protocols.basic.LineReceiver`:

    - :meth:`lineReceived` gets every request line, without its terminator
      (LF or CRLF), and answers it;
    - :meth:`sendLine` sends every reply; the terminator is :attr:`delimiter`;
    - :attr:`MAX_LENGTH` is the limit in force (the factory's
      ``max_line_length``, ``--max-line-length``), and
      :meth:`lineLengthExceeded` is called for every line over it;
    - raw mode (``setRawMode``) is not supported: every byte is a line's.

    :ivar factory: the factory that made it.
    """

    #: What ends every reply line.
    delimiter = CRLF
    #: The longest request line accepted, in bytes: the factory's
    #: ``max_line_length`` once connected.
    MAX_LENGTH = DEFAULT_MAX_LINE_LENGTH
    factory: CommandServerFactory
    _core: Connection
    # Whether neither lineReceived nor sendLine is overridden: then lines are
    # answered, and replies written, without going through them.
    _plain = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._plain = (
            cls.lineReceived is CommandServerProtocol.lineReceived
            and cls.sendLine is CommandServerProtocol.sendLine
        )

    @property
    def peer(self) -> str:
        """
        The client's address, for log lines.
        """
        core = getattr(self, "_core", None)
        return "(not connected)" if core is None else core.peer

    @property
    def conn(self) -> str:
        """
        The connection's short id, in every log line about it.
        """
        core = getattr(self, "_core", None)
        return "-" if core is None else core.conn

    @property
    def phase(self) -> Phase:
        """
        Where the connection is in its life.
        """
        return self._core.phase

    # -- events from the transport

    def connectionMade(self) -> None:
        factory = self.factory
        transport = cast(ServerTransport, self.transport)
        self.MAX_LENGTH = factory.max_line_length
        peer_address = transport.getPeer()
        plain = self._plain
        core = self._core = Connection(
            _TransportIO(self, transport, factory.clock, plain),
            self,
            settings=factory.settings,
            dispatcher=factory.dispatcher,
            admission=factory.admission,
            reply_cache=factory.reply_cache(),
            max_line_length=self.MAX_LENGTH,
            conn=factory.new_connection_id(),
            peer=describe_address(peer_address),
            peer_address=peer_address,
            plain=plain,
            # A proxy's health check is logged at debug (the PROXY wrapper
            # says so; any other transport has no such attribute).
            quiet=getattr(transport, "proxy_local", False),
        )
        core.connected(tls=ISSLTransport.providedBy(transport))

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: now the client is a connection.
        """
        self._core.handshake_done()

    def dataReceived(self, data: bytes) -> None:
        core = self._core
        stats = core.stats
        stats.bytes_in += len(data)
        intake = core.intake
        if (
            core.phase is not OPEN
            or intake.held
            or intake.frames
            or core.replies.queue
            or core.output_paused
            or not self._plain
            # intake.is_flood, inline: a call costs a one-line read 4 %.
            or (len(data) > BATCH and data.count(LF) > BATCH)
        ):
            core.data_received(data)
            return
        # Not busy: answer this read now.
        core.timers.watch(data, core.settings, core.closer)
        timing = stats.timing
        started = perf_counter() if timing else None
        frames = intake.framer.feed(data)
        get = core._cache.get
        # The general path times its batch from the clock read here.
        if len(frames) == 1:
            reply = get(frames[0])  # type: ignore[arg-type]
            if reply is None:
                core.answer_frames(frames, started)
                return
        elif not frames:
            # Part of a line.
            return
        elif get(frames[0]) is None:  # type: ignore[arg-type]
            # A read that starts with a general command: answered line by
            # line at once, without looking every line up here first.
            core.answer_frames(frames, started)
            return
        else:
            # The fast path: when every line of this read is a constant
            # command, the replies come from the cache in one write.
            cached = [get(frame) for frame in frames]  # type: ignore[arg-type]
            if None in cached:
                core.answer_frames(frames, started)
                return
            reply = b"".join(cached)  # type: ignore[arg-type]
        self.transport.write(reply)  # type: ignore[union-attr]
        # Counted per read, not per line: one C call counts the lines.
        stats.bytes_out += len(reply)
        count_elements(stats.cached, frames)
        if started is not None:
            stats.cached_read(frames, perf_counter() - started)

    def readConnectionLost(self) -> None:
        """
        The client closed its sending side: answer what it sent (a last line
        without a terminator included), then close.
        """
        self._core.end_of_input()

    def writeConnectionLost(self) -> None:
        """
        Our sending side is closed.
        """
        self._core.output_lost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._core.lost(reason.getErrorMessage())

    # -- LineReceiver

    def lineReceived(self, line: bytes) -> None:
        """
        Answer one request line (its terminator removed).  A subclass that
        overrides this sees every line, and answers it by calling up.
        """
        self._core.replies.answer(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line was longer than :attr:`MAX_LENGTH`: answer it with the error,
        and go on (LineReceiver's default would close the connection).

        :param line: ``b""``: the bytes of an over-long line are dropped as
            they arrive, so that no client can make the server hold more
            than :attr:`MAX_LENGTH` of them.
        """
        self._core.replies.answer(OVERLONG)

    def sendLine(self, line: bytes) -> None:
        """
        Send one reply line; :attr:`delimiter` ends it.  A subclass that
        overrides this sees every reply.
        """
        self.transport.write(line + self.delimiter)  # type: ignore[union-attr]

    # -- IPushProducer: the transport tells us whether the client reads

    def pauseProducing(self) -> None:
        self._core.pause_output()

    def resumeProducing(self) -> None:
        self._core.resume_output()

    def stopProducing(self) -> None:
        # The connection is going away; connectionLost follows.
        self._core.output_stopped()

    # -- the server's own events (admission's Member)

    def shut_down(self) -> None:
        """
        The server is stopping: the replies to every line already read are
        sent, then ``Closing down``, then the connection closes.
        """
        self._core.shut_down()

    def drop_handshake(self, why: str, event: str) -> None:
        """
        Give up on this connection's TLS handshake: log why, count it as
        ``event``, and abort.
        """
        self._core.closer.drop_handshake(why, event)

    def abort(self) -> None:
        """
        Close at once, unsent replies dropped.
        """
        self.transport.abortConnection()  # type: ignore[union-attr]

    def make_room(self) -> None:
        """
        Give up on the replies this half-closed client waits for, to make
        room for a new client.
        """
        self._core.closer.make_room()
