"""
Out of file descriptors, the server makes clients wait in its listen backlog
rather than reset them (:mod:`commandproto.listeners.accepting`).

The port on its own, with a fake listening socket and a memory reactor; and
real processes: a server whose open-file limit is 128, and a burst of
clients that connect at once, each sending ``Hello``.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import selectors
import socket
import tempfile
import time

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from commandproto.listeners.accepting import PAUSE, PacedPort

from ._helpers import LogCapture
from ._processes import IO_TIMEOUT, ServerProcess

FILES = 128
CLIENTS = 200
GREETING = b"Greetings!"
REFUSAL = b"Error: too many connections"


class FakeListener:
    """
    A listening socket whose ``accept()`` gives what a test lines up: a
    stand-in for a client's socket, or an error number.
    """

    def __init__(self) -> None:
        self.outcomes: list[int | object] = []

    def accept(self) -> tuple[object, tuple[str, int]]:
        outcome = self.outcomes.pop(0) if self.outcomes else errno.EAGAIN
        if isinstance(outcome, int):
            raise OSError(outcome, os.strerror(outcome))
        return outcome, ("127.0.0.1", 40000)


class PacedPortTests(SynchronousTestCase):
    """
    Out of descriptors, :class:`PacedPort` stops accepting for :data:`PAUSE`
    seconds, accepts nothing meanwhile, and says so once.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.built: list[Protocol] = []

        def build(address: object) -> Protocol:
            protocol = Protocol()
            self.built.append(protocol)
            return protocol

        factory = Factory.forProtocol(Protocol)
        factory.buildProtocol = build  # type: ignore[method-assign, assignment]
        self.port = PacedPort(0, factory, reactor=self.reactor)
        self.listener = FakeListener()
        self.port.socket = self.listener
        # No real sockets: each accepted client gets an in-memory transport.
        self.port.transport = lambda *args: StringTransport()  # type: ignore[assignment]
        self.port.fileno = lambda: -1  # type: ignore[method-assign]
        self.port.connected = True
        # As startListening sets it (no socket is bound here).
        self.port.numberAccepts = 100
        self.port.startReading()
        self.log = LogCapture(self)

    def pair(self) -> object:
        return object()

    def reading(self) -> bool:
        return self.port in self.reactor.getReaders()

    def test_out_of_descriptors_pauses(self) -> None:
        self.listener.outcomes = [self.pair(), errno.EMFILE, self.pair()]
        self.port.doRead()
        # The one before the error is served; the one after waits.
        self.assertEqual(len(self.built), 1)
        self.assertFalse(self.reading())
        self.reactor.advance(PAUSE)
        self.assertTrue(self.reading())
        self.port.doRead()
        self.assertEqual(len(self.built), 2)

    def test_says_so_once(self) -> None:
        for _ in range(3):
            self.listener.outcomes = [errno.EMFILE]
            self.port.doRead()
            self.reactor.advance(PAUSE)
        messages = self.log.messages()
        self.assertEqual(len(messages), 1, messages)
        self.assertIn("out of file descriptors (EMFILE)", messages[0])
        self.assertEqual(self.port.pauses, 3)

    def test_stopped_port_does_not_resume(self) -> None:
        self.listener.outcomes = [errno.EMFILE]
        self.port.doRead()
        self.port.connected = False
        self.reactor.advance(PAUSE)
        self.assertFalse(self.reading())


def limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILES, FILES))


def burst(port: int, clients: int) -> list[socket.socket]:
    """
    Start ``clients`` connections at once, without waiting for any.
    """
    socks = []
    for _ in range(clients):
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise AssertionError(f"connect failed at once: {errno.errorcode[code]}")
        socks.append(sock)
    return socks


def outcomes(socks: list[socket.socket], timeout: float) -> list[str]:
    """
    Send ``Hello`` on each socket once connected; how each one ended:
    ``served``, ``refused`` (the error line), ``reset`` or ``silent``
    (closed with nothing, or nothing within ``timeout``).
    """
    found: dict[socket.socket, str] = {}
    data = {sock: b"" for sock in socks}
    sent: set[socket.socket] = set()
    owner = {sock.fileno(): sock for sock in socks}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_WRITE)
        while len(found) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.1):
                sock = owner[key.fd]
                if sock not in sent:
                    sent.add(sock)
                    try:
                        sock.send(b"Hello\n")
                    except OSError:
                        found[sock] = "reset"
                        selector.unregister(sock)
                        continue
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                    found[sock] = "reset"
                data[sock] += chunk
                if sock not in found and chunk and b"\n" not in data[sock]:
                    continue
                if sock not in found:
                    line = data[sock]
                    if line.startswith(GREETING):
                        found[sock] = "served"
                    elif line.startswith(REFUSAL):
                        found[sock] = "refused"
                    else:
                        found[sock] = "silent"
                selector.unregister(sock)
    return [found.get(sock, "silent") for sock in socks]


class BurstPastTheDescriptorLimitTests(SynchronousTestCase):
    """
    A burst of clients past the open-file limit: each one is served or told
    why, none is reset or left without an answer.
    """

    def test_every_client_served_or_told_why(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < CLIENTS + 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        directory = tempfile.mkdtemp()
        server = ServerProcess(directory, preexec_fn=limit_files)
        self.addCleanup(server.stop)
        socks = burst(server.port, CLIENTS)
        for sock in socks:
            self.addCleanup(sock.close)
        ends = outcomes(socks, IO_TIMEOUT)
        counts = {
            end: ends.count(end) for end in ("served", "refused", "reset", "silent")
        }
        # All the clients stay connected, so the limit turns some away.
        self.assertGreater(counts["served"], 0, counts)
        self.assertGreater(counts["refused"], 0, counts)
        self.assertEqual(counts["served"] + counts["refused"], CLIENTS, counts)
        # It ran out of descriptors and said so, once, in one line.
        text = server.log_text()
        self.assertIn("out of file descriptors (EMFILE)", text)
        self.assertNotIn("Traceback", text)
        self.assertIsNone(re.search(r"EMFILE recovery", text))
