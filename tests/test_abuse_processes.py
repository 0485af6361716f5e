"""
The defences against abuse, against the real ``twistd -n commandserver``:
slow senders, address hogs, TLS squatters, stalled pipeliners, descriptor
exhaustion, stray signals, and hostile unix peer names.  Loopback only; every
loop bounded.
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import trustme

from commandproto.commands.table import (
    GREETING,
    line_took_too_long,
    too_many_from_address,
)

from ._helpers import replies
from ._processes import (
    IO_TIMEOUT,
    ServerProcess,
    read_exactly,
    read_until_closed,
)
from .test_hardening import HardeningTestCase, assert_served, rss_kib

LISTENING_TCP = re.compile(r"listening on tcp:127\.0\.0\.1:(\d+)")


def trickle(sock: socket.socket, seconds: float) -> bytes:
    """
    Send one byte of a never-ending line every 50 ms for up to ``seconds``,
    and return what the server sent back once it closed.
    """
    sock.settimeout(0.05)
    deadline = time.monotonic() + seconds
    received = b""
    while time.monotonic() < deadline:
        try:
            sock.send(b"x")
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    sock.settimeout(IO_TIMEOUT)
    return received


class SlowSenderTests(HardeningTestCase):
    """
    A line that trickles in for ever no longer holds a connection.
    """

    def test_line_timeout(self) -> None:
        server = self.start_server("--line-timeout", "0.5")
        with server.connect() as sock:
            started = time.monotonic()
            received = trickle(sock, 10)
            self.assertEqual(received, replies(line_took_too_long(0.5)))
            self.assertLess(time.monotonic() - started, 5)

    def test_unfinished_line_is_not_activity(self) -> None:
        server = self.start_server("--line-timeout", "0", "--idle-timeout", "0.5")
        with server.connect() as sock:
            received = trickle(sock, 10)
            self.assertEqual(
                received, replies("Error: idle for 0.5 seconds, closing connection")
            )


class PerAddressTests(HardeningTestCase):
    """
    One address cannot take every slot.
    """

    def test_one_address_over_its_limit(self) -> None:
        server = self.start_server("--max-connections-per-ip", "2")
        first, second = server.connect(), server.connect()
        with first, second:
            for sock in (first, second):
                sock.sendall(b"Hello\n")
                read_exactly(sock, len(replies(GREETING)))
            with server.connect() as third:
                self.assertEqual(
                    read_until_closed(third), replies(too_many_from_address(2))
                )
            with socket.create_connection(
                ("127.0.0.1", server.port),
                timeout=IO_TIMEOUT,
                source_address=("127.0.0.2", 0),
            ) as other:
                other.sendall(b"Hello\n")
                self.assertEqual(
                    read_exactly(other, len(replies(GREETING))), replies(GREETING)
                )
        server.expect_log(re.compile("too many connections from your address"))


class TLSSquatterTests(HardeningTestCase):
    """
    TCP connections to a TLS port that never handshake hold no connection
    slot, and time out.
    """

    def setUp(self) -> None:
        super().setUp()
        self.ca = trustme.CA()
        self.dir = Path(self.directory)
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(self.dir / "server.key"))
        cert.cert_chain_pems[0].write_to_path(str(self.dir / "server.pem"))

    def start_pair(self, *options: str) -> tuple[ServerProcess, int, int]:
        keys = f"privateKey={self.dir}/server.key:certKey={self.dir}/server.pem"
        server = self.start_server(
            "--listen",
            f"ssl:0:interface=127.0.0.1:{keys}",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            *options,
        )
        tls_port = server.port
        line = server.wait_for_log(LISTENING_TCP)
        plain = int(LISTENING_TCP.search(line).group(1))  # type: ignore[union-attr]
        if plain == tls_port:
            line = server.wait_for_log(LISTENING_TCP)
            plain = int(LISTENING_TCP.search(line).group(1))  # type: ignore[union-attr]
        return server, tls_port, plain

    def tls_hello(self, port: int) -> bytes:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        raw = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"Hello\n")
            return read_exactly(sock, len(replies(GREETING)))

    def test_squatters_lock_out_no_one(self) -> None:
        server, tls_port, plain = self.start_pair("--max-connections", "2")
        before = server.socket_count()
        squatters = [
            socket.create_connection(("127.0.0.1", tls_port), timeout=IO_TIMEOUT)
            for _ in range(5)
        ]
        try:
            # Accepted, not left in the backlog: else this proves nothing.
            server.wait_for_sockets(before + len(squatters))
            with socket.create_connection(
                ("127.0.0.1", plain), timeout=IO_TIMEOUT
            ) as sock:
                sock.sendall(b"Hello\n")
                self.assertEqual(
                    read_exactly(sock, len(replies(GREETING))), replies(GREETING)
                )
            self.assertEqual(self.tls_hello(tls_port), replies(GREETING))
        finally:
            for sock in squatters:
                sock.close()

    def test_handshake_timeout(self) -> None:
        server, tls_port, _ = self.start_pair("--handshake-timeout", "0.5")
        with socket.create_connection(
            ("127.0.0.1", tls_port), timeout=IO_TIMEOUT
        ) as sock:
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                self.assertEqual(sock.recv(100), b"")
            self.assertLess(time.monotonic() - started, 5)
        server.expect_log(re.compile(r"handshake took longer than 0\.5s"))

    def test_squatters_make_room_for_a_real_handshake(self) -> None:
        server, tls_port, _ = self.start_pair("--max-handshakes", "5")
        before = server.socket_count()
        squatters = [
            socket.create_connection(("127.0.0.1", tls_port), timeout=IO_TIMEOUT)
            for _ in range(5)
        ]
        try:
            server.wait_for_sockets(before + len(squatters))
            self.assertEqual(self.tls_hello(tls_port), replies(GREETING))
        finally:
            for sock in squatters:
                sock.close()
        server.expect_log(re.compile("too many handshakes in progress"))


class StalledPipelinerTests(HardeningTestCase):
    """
    Clients that pipeline short lines and never read hold little memory.
    """

    def test_memory_per_stalled_client(self) -> None:
        server = self.start_server()
        before = rss_kib(server.process.pid)
        clients = [server.connect() for _ in range(40)]
        try:
            for sock in clients:
                sock.setblocking(False)
            chunk = b"ab\n" * 20000
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                progress = False
                for sock in clients:
                    try:
                        if sock.send(chunk):
                            progress = True
                    except BlockingIOError:
                        pass
                if not progress:
                    time.sleep(0.5)
                    if not any(_can_send(sock, chunk) for sock in clients):
                        break
            # Served: the server has handled what it read before measuring.
            assert_served(self, server)
            after = rss_kib(server.process.pid)
        finally:
            for sock in clients:
                sock.close()
        per_client = (after - before) / len(clients)
        self.assertLess(per_client, 256, (before, after))


def _can_send(sock: socket.socket, chunk: bytes) -> bool:
    try:
        return sock.send(chunk) > 0
    except BlockingIOError:
        return False


class DescriptorTests(HardeningTestCase):
    """
    Out of descriptors, a client over the limit still gets the error line.
    """

    def test_no_silent_resets(self) -> None:
        def low_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

        server = ServerProcess(self.directory, preexec_fn=low_limit)
        self.addCleanup(server.stop)
        served = refused = 0
        clients = []
        try:
            for _ in range(220):
                sock = server.connect()
                clients.append(sock)
                sock.sendall(b"Hello\n")
                reply = read_exactly(sock, len(replies(GREETING)))
                if reply == replies(GREETING):
                    served += 1
                else:
                    rest = read_until_closed(sock)
                    self.assertTrue(
                        (reply + rest).startswith(b"Error: too many connections"),
                        reply + rest,
                    )
                    refused += 1
        finally:
            for sock in clients:
                sock.close()
        self.assertEqual(served + refused, 220)
        self.assertGreater(refused, 0)
        self.assertIn("open-file limit 256", server.log_text())


class SignalTests(HardeningTestCase):
    """
    Stray signals do not end the server; a second stop signal ends a stuck
    drain at once.
    """

    def test_hup_usr1_usr2_keep_serving(self) -> None:
        server = self.start_server()
        assert_served(self, server)
        for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            server.signal(signum)
            server.wait_for_log(re.compile(signal.Signals(signum).name))
            assert_served(self, server)
        self.assertIsNone(server.process.poll())

    def test_second_sigterm_aborts_the_drain(self) -> None:
        server = self.start_server("--shutdown-timeout", "60")
        with server.connect() as stuck:
            # Answered: the reactor runs, its signal handlers are in place.
            stuck.sendall(b"Hello\n")
            read_exactly(stuck, len(replies(GREETING)))
            stuck.setblocking(False)
            # Fill the buffers both ways so the drain cannot finish.
            try:
                for _ in range(2000):
                    stuck.send(b"Hello\n" * 10000)
            except BlockingIOError:
                pass
            server.signal(signal.SIGTERM)
            server.wait_for_log(re.compile("shutting down: closing"))
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            server.process.wait(timeout=20)
            self.assertLess(time.monotonic() - started, 10)
        self.assertIn("SIGTERM during shutdown: aborting", server.log_text())


class LogHygieneTests(HardeningTestCase):
    """
    A unix peer's name cannot write control characters into the log.
    """

    def test_hostile_unix_peer_name(self) -> None:
        path = f"{self.directory}/s.sock"
        server = self.start_server("--listen", f"unix:{path}")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(f"{self.directory}/evil\x1b[31m\n")
            sock.settimeout(IO_TIMEOUT)
            sock.connect(path)
            sock.sendall(b"Hello\n")
            self.assertEqual(
                read_exactly(sock, len(replies(GREETING))), replies(GREETING)
            )
        server.expect_log(re.compile(re.escape("evil\\x1b[31m\\n")))
        text = server.log_text()
        self.assertNotIn("\x1b", text)


class BacklogTests(HardeningTestCase):
    """
    The listen backlog is 511 unless the endpoint sets one.
    """

    def test_backlog(self) -> None:
        server = self.start_server()
        result = subprocess.run(
            ["ss", "-ltnH", f"sport = :{server.port}"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if result.returncode != 0:
            self.skipTest("ss (iproute2) cannot list sockets here")
        fields = result.stdout.split()
        self.assertEqual(fields[2], "511", result.stdout)


def tls_half_close(
    ca: trustme.CA, port: int, lines: int, *, tcp_fin: bool
) -> tuple[int, bool]:
    """
    Send ``Hello`` lines over TLS, then ``close_notify`` (and a TCP FIN if
    ``tcp_fin``), and read on.

    :returns: how many ``Greetings!`` came back, and whether the server's
        ``close_notify`` ended them.
    """
    context = ssl.create_default_context()
    ca.configure_trust(context)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:

        def flush() -> None:
            data = outgoing.read()
            if data:
                sock.sendall(data)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                incoming.write(sock.recv(65536))
        flush()
        tls.write(b"Hello\n" * lines)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()
        flush()
        if tcp_fin:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                received += tls.read(65536)
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                if not data:
                    return received.count(b"Greetings!"), False
                incoming.write(data)
            except ssl.SSLZeroReturnError:
                return received.count(b"Greetings!"), True


class TLSHalfCloseTests(HardeningTestCase):
    """
    A TLS client that sends ``close_notify`` after its lines gets every reply,
    then the server's ``close_notify``.
    """

    def test_every_reply_then_close_notify(self) -> None:
        ca = trustme.CA()
        directory = Path(self.directory)
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(directory / "server.key"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        server = self.start_server(
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={directory}/server.key"
            f":certKey={directory}/server.pem",
        )
        for lines in (1, 10000):
            for tcp_fin in (False, True):
                self.assertEqual(
                    tls_half_close(ca, server.port, lines, tcp_fin=tcp_fin),
                    (lines, True),
                    (lines, tcp_fin),
                )
