"""
The command server's factory, which makes a protocol for each connection and
owns what they share (the command table's dispatcher, the settings, the
admission of connections, the counters); and the service that drains
connections at shutdown.  (The open-file limit is
:mod:`commandproto.ops.descriptors`'.)
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from ..commands.table import CommandTable, default_commands
from ..wire.addresses import describe_address
from ..wire.codec import DEFAULT_MAX_LINE_LENGTH, encode_line
from .admission import Admission
from .dispatch import Dispatcher
from .protocol import CommandServerProtocol
from .settings import Settings
from .stats import ServerStats

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

DEFAULT_SLOW_THRESHOLD = 0.1
"""
Seconds past which a command's reply is logged as slow: Redis's slowlog
logs commands that run over 10 ms; ours counts the wait for an asynchronous
reply too, so ten times that.
"""


class CommandServerFactory(Factory):
    """
    Makes a :attr:`protocol` (a :class:`CommandServerProtocol`, or a subclass
    set in its place) for each connection, all sharing one command table,
    and keeps the server-wide limits.

    :ivar commands: the command table.
    :ivar max_line_length: the longest request line accepted, in bytes.
    :ivar max_connections: how many clients may be connected at once, closing
        ones included (each holds a descriptor until it is gone).
    :ivar max_connections_per_address: how many of them may come from one
        address (see ``commandproto.wire.addresses.address_key``), or
        ``None`` for no limit.
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
    :ivar admission: who may connect
        (``commandproto.server.admission.Admission``).
    :ivar dispatcher: from a line to its reply
        (``commandproto.server.dispatch.Dispatcher``).
    :ivar settings: the limits each connection keeps
        (``commandproto.server.connection.Settings``).
    """

    protocol: type[CommandServerProtocol] = CommandServerProtocol  # type: ignore[assignment]
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
        self.clock = clock
        self.stats = ServerStats(wall=clock.seconds) if stats is None else stats
        self.send_buffer = send_buffer
        self.settings = Settings(
            idle_timeout=idle_timeout,
            line_timeout=line_timeout,
            handshake_timeout=handshake_timeout,
            max_unanswered=max_unanswered,
        )
        self.dispatcher = Dispatcher(
            default_commands() if commands is None else commands,
            self.stats,
            max_line_length=max_line_length,
            command_timeout=command_timeout,
            slow_threshold=slow_threshold,
        )
        self.admission = Admission(
            self.stats,
            clock,
            max_connections=max_connections,
            max_connections_per_address=max_connections_per_address,
            max_handshakes=max_handshakes,
        )
        self._connection_ids = 0
        self._reply_cache: dict[bytes, bytes] = {}
        self._reply_cache_version = -1

    def buildProtocol(self, addr: IAddress | None) -> CommandServerProtocol:  # type: ignore[override]
        protocol = self.protocol()
        protocol.factory = self
        return protocol

    # -- the settings, where they live: set here, they apply to connections
    # made from now on (the limits of the dispatcher and admission at once)

    @property
    def commands(self) -> CommandTable:
        return self.dispatcher.commands

    @commands.setter
    def commands(self, table: CommandTable) -> None:
        self.dispatcher.commands = table

    @property
    def max_line_length(self) -> int:
        return self.dispatcher.max_line_length

    @max_line_length.setter
    def max_line_length(self, value: int) -> None:
        self.dispatcher.max_line_length = value

    @property
    def command_timeout(self) -> float | None:
        return self.dispatcher.command_timeout

    @command_timeout.setter
    def command_timeout(self, value: float | None) -> None:
        self.dispatcher.command_timeout = value

    @property
    def slow_threshold(self) -> float | None:
        return self.dispatcher.slow_threshold

    @slow_threshold.setter
    def slow_threshold(self, value: float | None) -> None:
        self.dispatcher.slow_threshold = value

    @property
    def idle_timeout(self) -> float | None:
        return self.settings.idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, value: float | None) -> None:
        self.settings = replace(self.settings, idle_timeout=value)

    @property
    def line_timeout(self) -> float | None:
        return self.settings.line_timeout

    @line_timeout.setter
    def line_timeout(self, value: float | None) -> None:
        self.settings = replace(self.settings, line_timeout=value)

    @property
    def handshake_timeout(self) -> float | None:
        return self.settings.handshake_timeout

    @handshake_timeout.setter
    def handshake_timeout(self, value: float | None) -> None:
        self.settings = replace(self.settings, handshake_timeout=value)

    @property
    def max_unanswered(self) -> int:
        return self.settings.max_unanswered

    @max_unanswered.setter
    def max_unanswered(self, value: int) -> None:
        self.settings = replace(self.settings, max_unanswered=value)

    @property
    def max_connections(self) -> int:
        return self.admission.max_connections

    @max_connections.setter
    def max_connections(self, value: int) -> None:
        self.admission.max_connections = value

    @property
    def max_connections_per_address(self) -> int | None:
        return self.admission.max_connections_per_address

    @max_connections_per_address.setter
    def max_connections_per_address(self, value: int | None) -> None:
        self.admission.max_connections_per_address = value

    @property
    def max_handshakes(self) -> int:
        return self.admission.max_handshakes

    @max_handshakes.setter
    def max_handshakes(self, value: int) -> None:
        self.admission.max_handshakes = value

    @property
    def connections(self) -> set[CommandServerProtocol]:
        """
        The connections admitted and not yet gone.
        """
        return cast("set[CommandServerProtocol]", self.admission.connections)

    @property
    def handshakes(self) -> dict[CommandServerProtocol, None]:
        """
        TLS connections whose handshake is in progress, oldest first.
        """
        return cast("dict[CommandServerProtocol, None]", self.admission.handshakes)

    @property
    def refusing(self) -> set[CommandServerProtocol]:
        """
        Refused connections still closing.
        """
        return cast("set[CommandServerProtocol]", self.admission.refusing)

    # --

    def reply_cache(self) -> dict[bytes, bytes]:
        """
        The encoded replies of the table's constant commands, keyed by the
        request line's bytes; rebuilt when the table changes.
        """
        commands = self.commands
        if self._reply_cache_version != commands.version:
            self._reply_cache = {
                name.encode("utf-8"): encode_line(reply.text)
                for name, reply in commands.constant_replies().items()
            }
            self._reply_cache_version = commands.version
        return self._reply_cache

    def new_connection_id(self) -> str:
        """
        A short id for a new connection: a counter, in hexadecimal.
        """
        self._connection_ids += 1
        return format(self._connection_ids, "x")

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close every connection gracefully (see ``Admission.drain``).
        """
        return self.admission.drain(timeout)

    def abort_all(self) -> None:
        """
        Abort every connection still open, TLS handshakes included.
        """
        self.admission.abort_all()


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
    port the OS picked for ``tcp:0``, say) is logged, with what it serves
    there when it is not plain TCP.

    :param what: ``TLS``, ``mutual TLS``, ``PROXY protocol``...; empty for
        none.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, what: str = "") -> None:
        self._endpoint = endpoint
        self._what = f" ({what})" if what else ""

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        def listening(port: IListeningPort) -> IListeningPort:
            log.info(
                "listening on {address}{what}",
                address=describe_address(port.getHost()),
                what=self._what,
            )
            return port

        return self._endpoint.listen(factory).addCallback(listening)
