"""
The server: a L{LineReceiver} that answers request lines from a
L{CommandTable}, the factory that makes one per connection and enforces the
server-wide limits, and the service that drains connections at shutdown.

The protocol only moves bytes: framing is L{LineFramer}'s, meaning is the
command table's.
"""

from __future__ import annotations

import resource
from typing import Protocol, cast

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from ._codec import (
    CRLF,
    DEFAULT_MAX_LINE_LENGTH,
    OVERLONG,
    Frame,
    LineFramer,
    decode_line,
    encode_line,
)
from ._commands import (
    CLOSING,
    INVALID_UTF8,
    CommandTable,
    default_commands,
    idle_timeout_reply,
    line_too_long,
    too_many_connections,
)

log = Logger()

DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_SHUTDOWN_TIMEOUT = 5.0

CLOSE_TIMEOUT = 10.0
"""
Seconds a closing connection may take to finish (the client reading the last
replies and closing its side) before it is aborted.
"""

FLUSH_EVERY = 1024
"""
Replies gathered before they are written mid-read, so that a client that
stops reading is noticed (and paused) within one batch, not one whole read.
"""


class ServerTransport(Protocol):
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
        return f"tcp6:[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name or '(unnamed)'}"
    return repr(address)


@implementer(IHalfCloseableProtocol, IPushProducer)
class CommandServerProtocol(LineReceiver, TimeoutMixin):
    """
    One client's session: each request line gets exactly one reply line, in
    order.

    Replies are gathered and written in batches (one write per read for a
    pipelining client).  The protocol is a streaming producer on its own
    transport: when the client stops reading and unsent replies pile up past
    the transport's buffer size, the transport pauses us, we stop reading the
    socket and hold the lines already framed; when the replies drain we are
    resumed and answer them.

    :ivar peer: the client's address, for log lines.
    """

    delimiter = CRLF
    factory: CommandServerFactory

    def __init__(
        self,
        commands: CommandTable,
        max_line_length: int,
        idle_timeout: float | None,
        clock: IReactorTime,
        reply_cache: dict[bytes, bytes] | None = None,
    ) -> None:
        self.commands = commands
        self._reply_cache = {} if reply_cache is None else reply_cache
        self.MAX_LENGTH = max_line_length
        self.idle_timeout = idle_timeout
        self.callLater = clock.callLater  # type: ignore[method-assign,assignment]
        self._framer = LineFramer(max_line_length)
        self._batch: list[bytes] | None = None
        self._backlog: list[Frame] = []
        self._done_reading = False
        self._closing = False
        self._producing = False
        self._complaints: dict[str, int] | None = None
        # Answer the backlog whatever the backpressure: set when closing.
        self._answer_all = False
        self.peer = "(not connected)"

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._transport = cast(ServerTransport, self.transport)
        self.peer = describe_address(self._transport.getPeer())
        refusal = self.factory.admit(self)
        if refusal is not None:
            log.info(
                "refused connection from {peer}: {why}", peer=self.peer, why=refusal
            )
            self._done_reading = True
            self._transport.write(encode_line(refusal))
            self._close()
            return
        log.info("connection from {peer}", peer=self.peer)
        self._transport.registerProducer(self, True)
        self._producing = True
        self.setTimeout(self.idle_timeout)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)  # type: ignore[no-untyped-call]
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
                "connection from {peer} closed: {why}{counts}",
                peer=self.peer,
                why=reason.getErrorMessage(),
                counts=counts,
            )

    def dataReceived(self, data: bytes) -> None:
        if self._done_reading:
            return
        self.resetTimeout()  # type: ignore[no-untyped-call]
        frames = self._framer.feed(data)
        if self.paused:
            self._backlog.extend(frames)
        elif self._backlog or len(frames) > FLUSH_EVERY:
            self._answer(frames)
        elif len(frames) == 1:
            reply = self._reply_cache.get(frames[0])  # type: ignore[arg-type]
            if reply is None:
                self._answer(frames)
            else:
                self._transport.write(reply)
        else:
            # The fast path: when every line of this read is a constant
            # command, the replies come from the cache in one write.
            get = self._reply_cache.get
            cached = [get(frame) for frame in frames]  # type: ignore[arg-type]
            if None in cached:
                self._answer(frames)
            elif cached:
                self._transport.write(b"".join(cached))  # type: ignore[arg-type]

    def readConnectionLost(self) -> None:
        """
        The client closed its sending side: answer what it sent, then close.
        """
        if not self._done_reading:
            last = self._framer.finish()
            # Closing: every line held back by backpressure is answered now.
            self._answer_all = True
            self._answer([last] if last is not None else [])
        self._close(peer_done=True)

    def writeConnectionLost(self) -> None:
        """
        Our sending side is closed: either we closed it (and wait for the
        client to close its side), or the client can no longer receive
        replies, and there is no point in reading more requests.
        """
        if not self._closing:
            self._close(peer_done=True)

    def timeoutConnection(self) -> None:
        """
        Nothing arrived for ``idle_timeout`` seconds (or a close did not finish
        in that time): say why and close, or abort if a close is stuck.
        """
        if self._closing or self.paused:
            log.info("aborting stalled connection from {peer}", peer=self.peer)
            self._transport.abortConnection()
            return
        log.info(
            "idle timeout ({seconds}s) for {peer}",
            seconds=self.idle_timeout,
            peer=self.peer,
        )
        assert self.idle_timeout is not None
        self.send_reply(idle_timeout_reply(self.idle_timeout))
        self._close()

    def shut_down(self) -> None:
        """
        The server is stopping: the replies to every line already read are
        sent, then ``Closing down``, then the connection closes.
        """
        if self._closing:
            return
        self._answer_all = True
        self._answer([])
        if not self._done_reading:
            self.send_reply(CLOSING)
        self._close()

    def resumeProducing(self) -> None:
        # LineReceiver's resumeProducing resumes the transport and calls
        # dataReceived(b""), which answers the backlog.
        if not self._closing:
            super().resumeProducing()  # type: ignore[no-untyped-call]

    def _answer(self, frames: list[Frame]) -> None:
        if self._backlog:
            frames = self._backlog + frames
            self._backlog = []
        get = self._reply_cache.get
        batch = self._batch = []
        try:
            for index, frame in enumerate(frames):
                cached = get(frame)  # type: ignore[arg-type]
                if cached is not None:
                    batch.append(cached)
                elif frame is OVERLONG:
                    self._line_too_long()
                else:
                    self.lineReceived(frame)
                    if self._done_reading:
                        break
                if len(batch) >= FLUSH_EVERY:
                    self._transport.write(b"".join(batch))
                    batch.clear()
                    if self.paused and not self._answer_all:
                        self._backlog = frames[index + 1 :]
                        break
        finally:
            self._batch = None
            if batch:
                self._transport.write(b"".join(batch))
        if self._done_reading:
            self._close()

    def lineReceived(self, line: bytes) -> None:
        try:
            text = decode_line(line)
        except UnicodeDecodeError:
            self._complain("invalid UTF-8 lines", "invalid UTF-8 from {peer}")
            self.send_reply(INVALID_UTF8)
            return
        reply = self.commands.dispatch(text)
        self.send_reply(reply.text)
        if reply.close:
            self._done_reading = True

    def _line_too_long(self) -> None:
        self._complain(
            "over-long lines",
            "line longer than {limit} bytes from {peer}",
            limit=self.MAX_LENGTH,
        )
        self.send_reply(line_too_long(self.MAX_LENGTH))

    def _complain(self, kind: str, message: str, **fields: object) -> None:
        """
        Log a client's misbehaviour once per kind and connection; later ones
        are counted, and the counts go in the line that logs the close, so
        that one client cannot flood the log.
        """
        if self._complaints is None:
            self._complaints = {}
        count = self._complaints.get(kind, 0)
        self._complaints[kind] = count + 1
        if not count:
            log.info(message, peer=self.peer, **fields)

    def send_reply(self, text: str) -> None:
        """
        Send one reply line, batched with the others of the current read.

        :param text: the reply, without its terminator.
        """
        encoded = encode_line(text)
        if self._batch is not None:
            self._batch.append(encoded)
        else:
            self._transport.write(encoded)

    def _close(self, *, peer_done: bool = False) -> None:
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
        self._done_reading = True
        if self._closing:
            if peer_done:
                self._transport.loseConnection()
            return
        self._closing = True
        self.factory.release(self)
        if self._producing:
            # A producer still registered on its own transport would hold the
            # close open for ever.
            self._producing = False
            self._transport.unregisterProducer()
        if self.paused:
            self.paused = False
            self._transport.resumeProducing()
        # Cancel the idle timer and start a new one, rather than move it
        # sooner: the reactor finds a call moved sooner by a linear search of
        # all its timers, which made 10,000 closing connections cost seconds.
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        if not peer_done:
            self.setTimeout(CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]
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
    Makes a L{CommandServerProtocol} for each connection, all sharing one
    command table, and keeps the server-wide limits.

    :ivar commands: the command table.
    :ivar max_line_length: the longest request line accepted, in bytes.
    :ivar max_connections: how many clients may be connected at once.
    :ivar idle_timeout: seconds of silence before a client is disconnected,
        or ``None`` for no limit.
    """

    noisy = False

    def __init__(
        self,
        commands: CommandTable | None = None,
        *,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.commands = default_commands() if commands is None else commands
        self.max_line_length = max_line_length
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.connections: set[CommandServerProtocol] = set()
        self._active: set[CommandServerProtocol] = set()
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

    def admit(self, protocol: CommandServerProtocol) -> str | None:
        """
        Take a new connection into account, if the limits allow.

        :returns: ``None`` if admitted, else the line to send before closing.
        """
        if self._draining:
            return CLOSING
        if len(self._active) >= self.max_connections:
            return too_many_connections(self.max_connections)
        self.connections.add(protocol)
        self._active.add(protocol)
        return None

    def release(self, protocol: CommandServerProtocol) -> None:
        """
        A connection has started to close: its slot is free for a new one
        (it stays in ``connections`` until it is gone).
        """
        self._active.discard(protocol)

    def forget(self, protocol: CommandServerProtocol) -> bool:
        """
        A connection is gone; its slot is free at once.

        :returns: whether it had been admitted.
        """
        if protocol not in self.connections:
            return False
        self.connections.remove(protocol)
        self._active.discard(protocol)
        if not self.connections:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)
        return True

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close every connection gracefully: each gets the replies already due,
        then ``Closing down``.  Connections still open after C{timeout}
        seconds are aborted.  New connections are refused from now on.

        :returns: a L{Deferred} that fires once every connection is gone.
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
        for protocol in list(self.connections):
            protocol._transport.abortConnection()


def _cancel_call(result: object, call: IDelayedCall) -> object:
    if call.active():
        call.cancel()
    return result


class DrainService(Service):
    """
    Drains the factory's connections when the application stops: twistd
    waits for the L{Deferred} that C{stopService} returns.
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


def ensure_file_limit(connections: int, spare: int = 32) -> int:
    """
    Raise this process's open-file limit so that C{connections} clients fit,
    as far as the hard limit allows (as Redis does for ``maxclients``).

    :returns: how many connections the limit now allows for.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
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
