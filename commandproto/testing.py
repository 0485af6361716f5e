"""
Test helpers for command tables: an in-memory server, driven by a
:class:`~twisted.internet.task.Clock`, with no sockets and no sleeping.

::

    from commandproto.testing import CommandTester
    from myapp import commands

    def test_echo() -> None:
        client = CommandTester(commands).connect()
        assert client.request("echo hello  world") == "hello  world"

With pytest, the ``command_server`` fixture (installed with commandproto as a
pytest plugin) makes testers: ``command_server(commands).connect()``.

A tester serves the table beside the built-in commands, exactly as
``twistd -n commandserver --commands`` would, through the real server
protocol connected to a client over Twisted's :mod:`twisted.test.iosim`.
Asynchronous handlers that wait on ``session.clock`` are driven by
:meth:`CommandTester.advance`.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect

from .commands.table import CommandTable, with_builtins
from .server import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_MAX_UNANSWERED,
    CommandServerFactory,
)
from .wire.codec import LineFramer, decode_line, encode_line, is_one_line

__all__ = ["CommandTester", "TesterConnection"]


class _ReplyCollector(Protocol):
    """
    The client's side of a test connection: collects reply lines.
    """

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.closed = False
        self._framer = LineFramer(2**30)

    def dataReceived(self, data: bytes) -> None:
        for frame in self._framer.feed(data):
            assert isinstance(frame, bytes)
            self.replies.append(decode_line(frame))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True


class TesterConnection:
    """
    One client connected to a :class:`CommandTester`'s server.

    :ivar peer: the address the server sees for this client.
    """

    # Not a test class, whatever pytest guesses from its name.
    __test__ = False

    def __init__(self, tester: CommandTester, port: int) -> None:
        self._tester = tester
        self.peer = IPv4Address("TCP", "127.0.0.1", port)
        self.server = tester.factory.buildProtocol(self.peer)
        self._client = _ReplyCollector()
        self._client_transport = FakeTransport(self._client, False, peerAddress=None)
        self._pump: IOPump = connect(
            self.server,
            FakeTransport(self.server, True, peerAddress=self.peer),
            self._client,
            self._client_transport,
            clock=tester.clock,
        )
        tester._connections.append(self)

    @property
    def closed(self) -> bool:
        """
        Whether the server has closed the connection (or it was closed).
        """
        return self._client.closed

    def send(self, *lines: str) -> None:
        """
        Send request lines, pipelined, and let the server answer what it can
        without time passing.

        :param lines: the requests, without terminators.
        :raises ValueError: for a line that would not arrive as one line.
        """
        for line in lines:
            if not is_one_line(line):
                raise ValueError(f"{line!r} is not one line")
        self.send_bytes(b"".join(encode_line(line) for line in lines))

    def send_bytes(self, data: bytes) -> None:
        """
        Send raw bytes, as a misbehaving client would.
        """
        if self.closed:
            raise RuntimeError("the connection is closed")
        self._client_transport.write(data)
        self.flush()

    def replies(self) -> list[str]:
        """
        Take the replies received since the last call.

        :returns: the reply lines, in order, without terminators.
        """
        self.flush()
        replies, self._client.replies = self._client.replies, []
        return replies

    def request(self, line: str) -> str:
        """
        Send one request and return its reply, which must already have
        arrived (advance the clock first for a command that answers later:
        or use :meth:`send`, :meth:`CommandTester.advance` and
        :meth:`replies`).

        :raises AssertionError: unless exactly one reply arrived.
        """
        self.send(line)
        replies = self.replies()
        if len(replies) != 1:
            raise AssertionError(
                f"expected one reply to {line!r}, got {len(replies)}: {replies!r}"
            )
        return replies[0]

    def close(self) -> None:
        """
        Close the connection from the client's side.
        """
        self._client_transport.loseConnection()
        self.flush()

    def flush(self) -> None:
        """
        Deliver everything in flight, both ways, and run what is due now.
        """
        self._pump.flush()


class CommandTester:
    """
    An in-memory server for a command table.

    :ivar clock: the server's clock; handlers see it as ``session.clock``.
    :ivar factory: the server factory.
    """

    def __init__(
        self,
        *tables: CommandTable,
        command_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        max_unanswered: int = DEFAULT_MAX_UNANSWERED,
        idle_timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        """
        :param tables: the tables to serve beside the built-in commands.
        :param command_timeout: as ``--command-timeout`` (``None``: none).
        :param max_unanswered: as ``--max-unanswered``.
        :param idle_timeout: as ``--idle-timeout`` (``None``, the default
            here: never).
        :param clock: the clock to use; a new one by default.
        """
        self.clock = Clock() if clock is None else clock
        self.factory = CommandServerFactory(
            with_builtins(*tables),
            command_timeout=command_timeout,
            max_unanswered=max_unanswered,
            idle_timeout=idle_timeout,
            clock=self.clock,
        )
        self._connections: list[TesterConnection] = []

    def connect(self) -> TesterConnection:
        """
        Connect a new client.
        """
        return TesterConnection(self, 40000 + len(self._connections))

    def advance(self, seconds: float) -> None:
        """
        Let time pass: run what falls due, and deliver what it sends.
        """
        self.clock.advance(seconds)
        for connection in self._connections:
            connection.flush()
