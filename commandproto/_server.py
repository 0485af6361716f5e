"""
The server: a L{LineReceiver} that answers request lines from a
L{CommandTable}, and the factory that makes one per connection.

The protocol only moves bytes: framing is L{LineFramer}'s, meaning is the
command table's.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
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
from ._commands import INVALID_UTF8, CommandTable, default_commands, line_too_long

log = Logger()


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


@implementer(IHalfCloseableProtocol)
class CommandServerProtocol(LineReceiver):
    """
    One client's session: each request line gets exactly one reply line, in
    order.

    All replies produced by one read are written with a single
    C{transport.write}, so a pipelining client costs one write per read, not
    one per line.
    """

    delimiter = CRLF

    def __init__(self, commands: CommandTable, max_line_length: int) -> None:
        self.commands = commands
        self.MAX_LENGTH = max_line_length
        self._framer = LineFramer(max_line_length)
        self._batch: list[bytes] | None = None
        self._done_reading = False
        self.peer = "(not connected)"

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._transport = cast(ITCPTransport, self.transport)
        self.peer = describe_address(self._transport.getPeer())
        log.info("connection from {peer}", peer=self.peer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        log.info(
            "connection from {peer} closed: {why}",
            peer=self.peer,
            why=reason.getErrorMessage(),
        )

    def dataReceived(self, data: bytes) -> None:
        if self._done_reading:
            return
        self._answer(self._framer.feed(data))

    def readConnectionLost(self) -> None:
        """
        The client closed its sending side: answer what it sent, then close.
        """
        if self._done_reading:
            return
        last = self._framer.finish()
        self._answer([last] if last is not None else [])
        self._close()

    def writeConnectionLost(self) -> None:
        """
        The client can no longer receive replies, so there is no point in
        reading more requests.
        """
        self._close()

    def _answer(self, frames: list[Frame]) -> None:
        batch = self._batch = []
        try:
            for frame in frames:
                if frame is OVERLONG:
                    self._line_too_long()
                else:
                    self.lineReceived(frame)
                if self._done_reading:
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
            log.info("invalid UTF-8 from {peer}", peer=self.peer)
            self.send_reply(INVALID_UTF8)
            return
        reply = self.commands.dispatch(text)
        self.send_reply(reply.text)
        if reply.close:
            self._done_reading = True

    def _line_too_long(self) -> None:
        log.info(
            "line longer than {limit} bytes from {peer}",
            limit=self.MAX_LENGTH,
            peer=self.peer,
        )
        self.send_reply(line_too_long(self.MAX_LENGTH))

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

    def _close(self) -> None:
        self._done_reading = True
        self._transport.loseConnection()


class CommandServerFactory(Factory):
    """
    Makes a L{CommandServerProtocol} for each connection, all sharing one
    command table.

    :ivar commands: the command table.
    :ivar max_line_length: the longest request line accepted, in bytes.
    """

    noisy = False

    def __init__(
        self,
        commands: CommandTable | None = None,
        *,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
    ) -> None:
        self.commands = default_commands() if commands is None else commands
        self.max_line_length = max_line_length

    def buildProtocol(self, addr: IAddress | None) -> CommandServerProtocol:
        protocol = CommandServerProtocol(self.commands, self.max_line_length)
        protocol.factory = self
        return protocol


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
