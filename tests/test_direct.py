"""
Tests for :mod:`commandproto.listeners.direct`: a write is sent in the same
turn when nothing is waiting before it, and bytes leave in the order they
were written however full the socket gets.  Real sockets on loopback.
"""

from __future__ import annotations

import io
import socket
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from twisted.trial.unittest import TestCase

from commandproto.listeners.accepting import PacedReactor
from commandproto.listeners.direct import DirectServer

reactor: Any = global_reactor

CHUNK = 4096
CHUNKS = 160


def numbered(index: int) -> bytes:
    """
    The ``index``-th chunk the server writes: its number, then filler.
    """
    head = b"%08d" % index
    return head + bytes([65 + index % 26]) * (CHUNK - len(head))


class Writer(Protocol):
    """
    Answers ``one`` with one line, and ``many`` with :data:`CHUNKS` numbered
    chunks, eight a reactor turn; notes whether the line went out at once.
    """

    def __init__(self) -> None:
        self.sent_at_once: list[bool] = []

    def connectionMade(self) -> None:
        assert self.transport is not None
        # A small send buffer, so that the chunks fill it.
        self.transport.getHandle().setsockopt(  # type: ignore[attr-defined]
            socket.SOL_SOCKET, socket.SO_SNDBUF, 8192
        )

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        if data.startswith(b"one"):
            transport.write(b"reply\r\n")
            self.sent_at_once.append(
                transport.held == 0 and transport not in reactor.getWriters()
            )
        else:
            # Several chunks a turn, each turn's on a timer: the reactor runs
            # timers before it reports the socket writable, so some turns
            # write while the socket has room and Twisted's buffer still
            # holds bytes from before.
            def write_some(first: int) -> None:
                for index in range(first, min(first + 8, CHUNKS)):
                    transport.write(numbered(index))
                if first + 8 < CHUNKS:
                    reactor.callLater(0, write_some, first + 8)

            write_some(0)


class DirectServerTests(TestCase):
    """
    Real connections to a :class:`~commandproto.listeners.accepting.PacedPort`,
    whose connections are :class:`DirectServer`.
    """

    def setUp(self) -> None:
        self.writers: list[Writer] = []

        def build(address: object) -> Writer:
            writer = Writer()
            self.writers.append(writer)
            return writer

        factory = Factory.forProtocol(Writer)
        factory.buildProtocol = build  # type: ignore[method-assign,assignment]
        self.port = PacedReactor(reactor).listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.client = socket.create_connection(
            ("127.0.0.1", self.port.getHost().port), timeout=10
        )
        self.addCleanup(self.client.close)
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.client.setblocking(False)

    def read_until(self, size: int, seconds: float = 10.0) -> Deferred[bytes]:
        """
        Read from the client socket, slowly, until ``size`` bytes came.
        """
        received = bytearray()
        done: Deferred[bytes] = Deferred()
        deadline = reactor.seconds() + seconds

        def poll() -> None:
            try:
                while len(received) < size:
                    chunk = self.client.recv(4096)
                    if not chunk:
                        break
                    received.extend(chunk)
                    if len(received) % (64 * 1024) < 4096:
                        # Now and then, let the server's buffer fill.
                        break
            except BlockingIOError:
                pass
            if len(received) >= size or reactor.seconds() > deadline:
                done.callback(bytes(received))
            else:
                reactor.callLater(0.001, poll)

        poll()
        return done

    async def test_reply_sent_in_the_same_turn(self) -> None:
        """
        With nothing waiting, a reply leaves during the write: the transport
        holds nothing and is not waiting for a writable event.
        """
        self.client.sendall(b"one\r\n")
        self.assertEqual(await self.read_until(7), b"reply\r\n")
        self.assertEqual(self.writers[0].sent_at_once, [True])
        self.assertIsInstance(self.writers[0].transport, DirectServer)

    async def test_order_kept_when_the_socket_is_full(self) -> None:
        """
        Writes past what the socket takes wait in Twisted's buffer, and every
        later write waits behind them, until all are sent: the client reads
        each chunk whole and in order, then a reply that went out at once.
        """
        self.client.sendall(b"many\r\n")
        got = await self.read_until(CHUNK * CHUNKS, seconds=30)
        self.assertEqual(len(got), CHUNK * CHUNKS)
        for index in range(CHUNKS):
            chunk = got[index * CHUNK : (index + 1) * CHUNK]
            self.assertEqual(chunk, numbered(index), f"chunk {index}")
        self.client.sendall(b"one\r\n")
        self.assertEqual(await self.read_until(7), b"reply\r\n")
        self.assertEqual(self.writers[0].sent_at_once, [True])


PULLED = 200_000


class Pulled(Protocol):
    """
    Sends :data:`PULLED` bytes through a pull (non-streaming) producer,
    which the transport asks for more each time its buffer has been sent;
    then closes.
    """

    def connectionMade(self) -> None:
        transport: Any = self.transport
        sent = FileSender().beginFileTransfer(io.BytesIO(b"x" * PULLED), transport)
        sent.addCallback(lambda _: transport.loseConnection())


class Aborted(Protocol):
    """
    Aborts the connection, then writes: Twisted drops what is written after
    ``abortConnection``.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]
        self.transport.write(b"written after abortConnection\r\n")


class TransportContractTests(TestCase):
    """
    What a Twisted TCP transport promises that a write sent at once could
    break: a pull producer is still asked for more, and an abort drops
    later writes.  Each test runs on Twisted's own transport too, as the
    reference.
    """

    def serve(self, protocol: type[Protocol], direct: bool) -> socket.socket:
        factory = Factory.forProtocol(protocol)
        listening: Any = PacedReactor(reactor) if direct else reactor
        port = listening.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(
            ("127.0.0.1", port.getHost().port), timeout=10
        )
        self.addCleanup(client.close)
        client.setblocking(False)
        return client

    def read_all(self, client: socket.socket, seconds: float) -> Deferred[bytes]:
        """
        What the client reads until the server closes, or ``seconds`` pass.
        """
        received = bytearray()
        done: Deferred[bytes] = Deferred()
        deadline = reactor.seconds() + seconds

        def poll() -> None:
            try:
                while True:
                    chunk = client.recv(65536)
                    if not chunk:
                        done.callback(bytes(received))
                        return
                    received.extend(chunk)
            except BlockingIOError:
                pass
            except OSError:
                # Reset: what came before it is what the server sent.
                done.callback(bytes(received))
                return
            if reactor.seconds() > deadline:
                done.callback(bytes(received))
            else:
                reactor.callLater(0.01, poll)

        poll()
        return done

    async def pulled(self, direct: bool) -> None:
        got = await self.read_all(self.serve(Pulled, direct), 5.0)
        self.assertEqual(len(got), PULLED)

    async def test_pull_producer(self) -> None:
        await self.pulled(direct=True)

    async def test_pull_producer_twisted(self) -> None:
        await self.pulled(direct=False)

    async def aborted(self, direct: bool) -> None:
        got = await self.read_all(self.serve(Aborted, direct), 1.0)
        self.assertNotIn(b"after abort", got)

    async def test_write_after_abort_dropped(self) -> None:
        await self.aborted(direct=True)

    async def test_write_after_abort_dropped_twisted(self) -> None:
        await self.aborted(direct=False)
