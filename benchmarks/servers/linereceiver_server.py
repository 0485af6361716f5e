"""
The floor: a plain Twisted :class:`~twisted.protocols.basic.LineReceiver`
serving the same protocol and nothing else (no UTF-8 check, no limits, no
logging, one write per reply).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.internet.protocol import Factory
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver

from _common import announce, answer, parse_port, strip_terminator


class PlainLineServer(LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        reply, close = answer(strip_terminator(line))
        assert self.transport is not None
        self.transport.write(reply)
        if close:
            self.transport.loseConnection()


async def main(reactor: IReactorTCP, port: int) -> None:
    endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    listening: IListeningPort = await endpoint.listen(
        Factory.forProtocol(PlainLineServer)
    )
    announce(listening.getHost().port)  # type: ignore[attr-defined]
    await Deferred()


if __name__ == "__main__":
    react(main, [parse_port(__doc__ or "")])
