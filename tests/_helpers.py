"""
Small helpers shared by the tests.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import CommandTable, with_builtins
from commandproto.server import CommandServerFactory, CommandServerProtocol
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


def serve(
    table: CommandTable, **settings: object
) -> tuple[Clock, CommandServerProtocol, StringTransport, CommandServerFactory]:
    """
    One connection, on a StringTransport, to a server of ``table`` and the
    built-in commands, with a Clock.
    """
    clock = Clock()
    factory = CommandServerFactory(with_builtins(table), clock=clock, **settings)  # type: ignore[arg-type]
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return clock, protocol, transport, factory
