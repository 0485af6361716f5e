"""
Small helpers shared by the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast, overload

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import CommandTable, with_builtins
from commandproto.server import CommandServerFactory, CommandServerProtocol
from commandproto.server.stats import ServerStats
from commandproto.wire.codec import encode_line


def replies(*texts: str) -> bytes:
    """
    The bytes the server sends for these reply lines.
    """
    return b"".join(encode_line(text) for text in texts)


class LogCapture:
    """
    Collects what is logged during a test.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        test.addCleanup(globalLogPublisher.removeObserver, observer)

    def messages(self) -> list[str]:
        """
        The log lines so far, formatted.
        """
        return [formatEvent(event) for event in self.events]


_Transport = TypeVar("_Transport", bound=StringTransport)


class InMemoryServer:
    """
    A :class:`CommandServerFactory` on a :class:`Clock`, whose connections
    are made on in-memory transports: the one harness of the tests that
    drive the server protocol directly.

    :ivar clock: the factory's clock; :meth:`advance` moves it.
    :ivar factory: the factory, serving ``table`` (the default commands when
        it is ``None``) with ``settings``.
    """

    def __init__(
        self,
        table: CommandTable | None = None,
        *,
        protocol: type[CommandServerProtocol] | None = None,
        clock: Clock | None = None,
        transport_factory: Callable[[], StringTransport] = StringTransport,
        **settings: object,
    ) -> None:
        """
        :param table: the command table, served as given.
        :param protocol: a protocol class to build in place of the factory's.
        :param clock: the clock, a new one when ``None``.
        :param transport_factory: makes the transport of a connection made
            without one.
        :param settings: further keyword arguments of the factory.
        """
        self.clock = Clock() if clock is None else clock
        self.transport_factory = transport_factory
        self.factory = CommandServerFactory(table, clock=self.clock, **settings)  # type: ignore[arg-type]
        if protocol is not None:
            self.factory.protocol = protocol

    @property
    def stats(self) -> ServerStats:
        """
        The factory's statistics.
        """
        return self.factory.stats

    @overload
    def connect(self) -> tuple[CommandServerProtocol, StringTransport]: ...

    @overload
    def connect(
        self, transport: _Transport
    ) -> tuple[CommandServerProtocol, _Transport]: ...

    def connect(
        self, transport: StringTransport | None = None
    ) -> tuple[CommandServerProtocol, StringTransport]:
        """
        A new connection, on ``transport`` (a new one from
        :attr:`transport_factory` when ``None``).
        """
        protocol = self.factory.buildProtocol(None)
        transport = self.transport_factory() if transport is None else transport
        protocol.makeConnection(transport)
        return protocol, transport

    def advance(self, seconds: float) -> None:
        """
        Let ``seconds`` pass on the clock.
        """
        self.clock.advance(seconds)


def serve(
    table: CommandTable, **settings: object
) -> tuple[Clock, CommandServerProtocol, StringTransport, CommandServerFactory]:
    """
    One connection, on a StringTransport, to a server of ``table`` and the
    built-in commands, with a Clock.
    """
    server = InMemoryServer(with_builtins(table), **settings)  # type: ignore[arg-type]
    protocol, transport = server.connect()
    return server.clock, protocol, transport, server.factory
