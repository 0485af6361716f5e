"""
Out of file descriptors, the server makes clients wait in its listen backlog
rather than reset them (:mod:`commandproto.listeners.accepting`).

Real processes: a server whose open-file limit is 128, and a burst of
clients that connect at once, each sending ``Hello``.
"""

from __future__ import annotations

import errno
import re
import resource
import selectors
import socket
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from ._processes import IO_TIMEOUT, ServerProcess

FILES = 128
CLIENTS = 200
GREETING = b"Greetings!"
REFUSAL = b"Error: too many connections"


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
