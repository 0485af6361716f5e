"""
``--dashboard``: the JSON at ``/stats``, the console's WebSocket bridge, the
token and Origin checks, and the bounds on the dashboard's connections.  In
memory: ``StringTransport`` and a ``Clock``; WebSocket frames made by hand
as a browser sends them (masked).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from commandproto import tap
from commandproto.commands.table import CLOSING, GREETING, with_builtins
from commandproto.ops.dashboard import (
    DEADLINE,
    MAX_CONNECTIONS,
    MAX_CONSOLES,
    UPLOT_VERSION,
    ConsoleProtocol,
    DashboardChannel,
    DashboardSite,
    dashboard_site,
    percentile,
    read_asset,
    stats_json,
)
from commandproto.server import CommandServerFactory
from commandproto.server.stats import LATENCY_BUCKETS, TIMED_OUT, ServerStats

from ._helpers import LogCapture
from ._processes import SOURCE_ROOT, TWISTD, subprocess_environment

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = "127.0.0.1:8080"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class AbortableTransport(StringTransport):
    aborted = False

    def unregisterProducer(self) -> None:
        # As a TCP transport does: with no producer, nothing to do (autobahn
        # unregisters whether or not one is registered).
        if self.producer is not None:
            super().unregisterProducer()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """
    One WebSocket frame as a browser sends it: final, masked.
    """
    mask = b"\x01\x02\x03\x04"
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """
    The (opcode, payload) of each unmasked frame the server sent.
    """
    frames = []
    while data:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            start = 4
        frames.append((opcode, data[start : start + length]))
        data = data[start + length :]
    return frames


def upgrade(origin: str | None = f"http://{HOST}", query: str = "") -> bytes:
    headers = [
        f"GET /console{query} HTTP/1.1",
        f"Host: {HOST}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        headers.append(f"Origin: {origin}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode("ascii")


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class Dashboard:
    """
    A dashboard site in memory, over a command server factory of its own.
    """

    def __init__(self, token: str | None = None) -> None:
        self.clock = Clock()
        self.stats = ServerStats(timing=True)
        self.factory = CommandServerFactory(
            with_builtins(), clock=self.clock, stats=self.stats
        )
        self.site = dashboard_site(self.stats, self.factory, self.clock, token=token)

    def connect(self) -> tuple[DashboardChannel, AbortableTransport]:
        channel = self.site.buildProtocol(PEER)
        assert isinstance(channel, DashboardChannel)
        transport = AbortableTransport(peerAddress=PEER)
        # As a TCP transport has: a WebSocket upgrade replaces it.
        transport.protocol = channel  # type: ignore[attr-defined]
        channel.makeConnection(transport)
        return channel, transport

    def request(self, data: bytes) -> tuple[int, bytes]:
        """
        One HTTP request: the status and the body.
        """
        channel, transport = self.connect()
        channel.dataReceived(data)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    def console(self) -> tuple[ConsoleProtocol, AbortableTransport]:
        """
        An open console, its handshake's response cleared.
        """
        channel, transport = self.connect()
        channel.dataReceived(upgrade())
        assert transport.value().startswith(b"HTTP/1.1 101 "), transport.value()
        transport.clear()
        socket = transport.protocol  # type: ignore[attr-defined]
        assert isinstance(socket, ConsoleProtocol)
        return socket, transport


class StatsJSONTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stats = ServerStats(wall=lambda: 100.0, server_version="1.2.3")

    def test_the_stats_commands_keys_and_values(self) -> None:
        """
        The ``stats`` line's pairs are the JSON's first keys, same values,
        numbers as numbers.
        """
        self.stats.command_done("Hello", "ok", 0.001)
        self.stats.command_done("nope", "unknown", None)
        self.stats.bytes_in = 17
        document = json.loads(json.dumps(stats_json(self.stats)))
        line = self.stats.line()
        pairs = dict(pair.split("=", 1) for pair in line.split(" "))
        self.assertEqual(list(document)[: len(pairs)], list(pairs))
        self.assertEqual({key: str(document[key]) for key in pairs}, pairs)
        numbers = {key: document[key] for key in pairs if key != "version"}
        self.assertTrue(all(type(value) is int for value in numbers.values()))
        self.assertEqual(
            (document["commands"], document["errors"], document["bytes_in"]),
            (2, 1, 17),
        )

    def test_commands_by_name_include_the_cached_ones(self) -> None:
        self.stats.cached[b"Hello"] = 5
        self.stats.command_done("Hello", "ok", None)
        self.stats.command_done("stats", "ok", None)
        document = stats_json(self.stats)
        self.assertEqual(document["commands_by_name"], {"Hello": 6, "stats": 1})

    def test_every_refusal_reason_and_timeout_is_there(self) -> None:
        self.stats.refuse("max_connections")
        self.stats.event("idle_timeout")
        self.stats.command_done("slow", TIMED_OUT, 30.0)
        document = stats_json(self.stats)
        self.assertEqual(
            document["refused_by_reason"],
            {"max_connections": 1, "max_connections_per_ip": 0, "shutting_down": 0},
        )
        self.assertEqual(
            document["timeouts"], {"idle": 1, "line": 0, "handshake": 0, "command": 1}
        )

    def test_latency_percentiles_from_every_command(self) -> None:
        # The 50th of 100 is the last fast one, the 99th the first slow one.
        for _ in range(50):
            self.stats.command_done("Hello", "ok", 0.0002)
        for _ in range(48):
            self.stats.command_done("Hello", "ok", 0.002)
        self.stats.command_done("slow", "ok", 0.04)
        self.stats.command_done("slow", "ok", 0.04)
        latency = stats_json(self.stats)["latency"]
        assert isinstance(latency, dict)
        self.assertEqual(latency["bounds"], list(LATENCY_BUCKETS))
        self.assertEqual((latency["count"], latency["p50"]), (100, 0.00025))
        self.assertEqual(latency["p99"], 0.05)
        self.assertEqual(latency["by_command"]["slow"]["p50"], 0.05)
        self.assertEqual(sum(latency["counts"]), 100)

    def test_no_latency_yet_is_null(self) -> None:
        latency = stats_json(self.stats)["latency"]
        assert isinstance(latency, dict)
        self.assertEqual((latency["p50"], latency["p99"]), (None, None))

    def test_percentile_past_the_last_bucket_is_the_last_bound(self) -> None:
        counts = [0] * (len(LATENCY_BUCKETS) + 1)
        counts[-1] = 3
        self.assertEqual(percentile(counts, 50), LATENCY_BUCKETS[-1])

    def test_stats_resource_serves_it(self) -> None:
        dashboard = Dashboard()
        status, body = dashboard.request(get("/stats"))
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["connections"], 0)


class ConsoleBridgeTests(SynchronousTestCase):
    """
    A console is a connection of the server: one line per text frame each
    way.
    """

    def setUp(self) -> None:
        self.dashboard = Dashboard()

    def test_a_text_frame_is_a_line_and_its_reply_a_frame(self) -> None:
        socket, transport = self.dashboard.console()
        socket.dataReceived(client_frame(b"Hello"))
        self.assertEqual(server_frames(transport.value()), [(1, GREETING.encode())])

    def test_frames_in_one_read_are_answered_in_order(self) -> None:
        socket, transport = self.dashboard.console()
        socket.dataReceived(
            client_frame(b"Are you there?")
            + client_frame(b"nope")
            + client_frame(b"Hello")
        )
        self.assertEqual(
            [payload for _, payload in server_frames(transport.value())],
            [b"Yes, I am here!", b"Unknown command.", GREETING.encode()],
        )

    def test_it_is_counted_and_logged_as_a_ws_peer(self) -> None:
        socket, _ = self.dashboard.console()
        self.assertEqual(
            (self.dashboard.stats.open, self.dashboard.stats.accepted), (1, 1)
        )
        assert socket.server is not None
        self.assertEqual(socket.server.peer, "ws:127.0.0.1:40000")
        self.assertEqual(len(self.dashboard.factory.connections), 1)
        socket.dataReceived(client_frame(b"Hello"))
        self.assertEqual(
            stats_json(self.dashboard.stats)["commands_by_name"], {"Hello": 1}
        )

    def test_its_own_session(self) -> None:
        first, _ = self.dashboard.console()
        second, _ = self.dashboard.console()
        assert first.server is not None and second.server is not None
        self.assertNotEqual(first.server.conn, second.server.conn)

    def test_quit_replies_then_closes_the_websocket(self) -> None:
        socket, transport = self.dashboard.console()
        socket.dataReceived(client_frame(b"quit"))
        frames = server_frames(transport.value())
        self.assertEqual(frames[0], (1, CLOSING.encode()))
        self.assertEqual(frames[1][0], 0x8)  # close
        self.assertEqual(struct.unpack("!H", frames[1][1][:2]), (1000,))

    def test_over_long_line_gets_the_servers_error(self) -> None:
        socket, transport = self.dashboard.console()
        socket.dataReceived(client_frame(b"x" * 20000))
        ((opcode, payload),) = server_frames(transport.value())
        self.assertEqual(opcode, 1)
        self.assertTrue(payload.startswith(b"Error: line too long"), payload)

    def test_binary_frame_closes_the_console(self) -> None:
        socket, transport = self.dashboard.console()
        socket.dataReceived(client_frame(b"Hello", opcode=0x2))
        ((opcode, payload),) = server_frames(transport.value())
        self.assertEqual(
            (opcode, payload), (0x8, struct.pack("!H", 1000) + b"text frames only")
        )
        self.assertEqual(self.dashboard.stats.commands_by_outcome(), {})

    def test_closing_frees_the_server_connection_and_the_slot(self) -> None:
        socket, transport = self.dashboard.console()
        self.assertEqual(
            (self.dashboard.site.open, self.dashboard.site.consoles), (1, 1)
        )
        transport.loseConnection()
        socket.connectionLost()
        self.assertEqual(self.dashboard.stats.open, 0)
        self.assertEqual(self.dashboard.factory.connections, set())
        self.assertEqual(
            (self.dashboard.site.open, self.dashboard.site.consoles), (0, 0)
        )

    def test_a_clean_close_is_logged_as_one(self) -> None:
        """
        autobahn aborts the TCP connection after a clean close handshake;
        the server's log says the connection closed cleanly all the same.
        """
        logs = LogCapture(self)
        socket, _ = self.dashboard.console()
        socket.dataReceived(client_frame(b"quit"))
        socket.dataReceived(client_frame(struct.pack("!H", 1000), opcode=0x8))
        socket.connectionLost(Failure(ConnectionAborted()))
        closed = [line for line in logs.messages() if "closed:" in line]
        self.assertEqual(len(closed), 1, logs.messages())
        self.assertIn(
            "ws:127.0.0.1:40000 closed: Connection was closed cleanly", closed[0]
        )

    def test_replies_after_the_browser_closed_are_dropped(self) -> None:
        """
        A reply written after the browser's close frame (a late reply, the
        server's ``Closing down``) is dropped, not an error.
        """
        socket, transport = self.dashboard.console()
        socket.dataReceived(client_frame(struct.pack("!H", 1000), opcode=0x8))
        transport.clear()
        self.dashboard.factory.drain(5.0)
        self.assertEqual(transport.value(), b"")

    def test_a_console_outlives_the_http_deadline(self) -> None:
        _, transport = self.dashboard.console()
        self.dashboard.clock.advance(DEADLINE * 2)
        self.assertFalse(transport.aborted)

    def test_server_shutdown_says_closing_down(self) -> None:
        _, transport = self.dashboard.console()
        self.dashboard.factory.drain(5.0)
        frames = server_frames(transport.value())
        self.assertEqual(frames[0], (1, CLOSING.encode()))


class OriginTests(SynchronousTestCase):
    """
    Another site's page cannot open a console with the browser's access.
    """

    def setUp(self) -> None:
        self.dashboard = Dashboard()

    def assert_refused(self, origin: str | None) -> None:
        status, _ = self.dashboard.request(upgrade(origin))
        self.assertEqual(status, 403)
        self.assertEqual(self.dashboard.stats.accepted, 0)
        self.assertEqual(self.dashboard.site.consoles, 0)

    def test_foreign_origin(self) -> None:
        logs = LogCapture(self)
        self.assert_refused("http://evil.example\x1b[2J")
        (line,) = [line for line in logs.messages() if "refused a console" in line]
        self.assertIn("Origin 'http://evil.example\\x1b[2J' is not this", line)

    def test_same_host_other_port(self) -> None:
        self.assert_refused("http://127.0.0.1:9999")

    def test_no_origin(self) -> None:
        self.assert_refused(None)

    def test_a_plain_get_is_told_to_upgrade(self) -> None:
        status, body = self.dashboard.request(get("/console", f"Origin: http://{HOST}"))
        self.assertEqual(status, 426)
        self.assertIn(b"WebSocket", body)
        self.assertEqual(
            (self.dashboard.site.open, self.dashboard.site.consoles), (1, 0)
        )

    def test_own_origin_is_upgraded(self) -> None:
        channel, transport = self.dashboard.connect()
        channel.dataReceived(upgrade(f"http://{HOST}"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))


class TokenTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dashboard = Dashboard(token="s3cret")

    def test_page_stats_and_console_need_it(self) -> None:
        for request in (get("/"), get("/stats"), upgrade()):
            status, body = self.dashboard.request(request)
            self.assertEqual(status, 401, request)
            self.assertIn(b"token", body)
        self.assertEqual(self.dashboard.stats.accepted, 0)

    def test_wrong_token(self) -> None:
        status, _ = self.dashboard.request(get("/stats?token=nope"))
        self.assertEqual(status, 401)

    def test_in_the_query(self) -> None:
        status, _ = self.dashboard.request(get("/stats?token=s3cret"))
        self.assertEqual(status, 200)

    def test_as_a_bearer_token(self) -> None:
        status, _ = self.dashboard.request(get("/", "Authorization: Bearer s3cret"))
        self.assertEqual(status, 200)

    def test_console_with_it(self) -> None:
        channel, transport = self.dashboard.connect()
        channel.dataReceived(upgrade(query="?token=s3cret"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))

    def test_static_files_do_not(self) -> None:
        status, body = self.dashboard.request(get("/static/uPlot.iife.min.js"))
        self.assertEqual(status, 200)
        self.assertIn(b"uPlot", body)


class BoundsTests(SynchronousTestCase):
    """
    The dashboard's clients cannot take the server's descriptors or time.
    """

    def setUp(self) -> None:
        self.dashboard = Dashboard()

    def test_one_request_per_connection(self) -> None:
        channel, transport = self.dashboard.connect()
        channel.dataReceived(get("/stats") * 100)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 OK"), 1)
        self.assertTrue(transport.disconnecting)

    def test_idle_connection_is_aborted_at_the_deadline(self) -> None:
        _, transport = self.dashboard.connect()
        self.dashboard.clock.advance(DEADLINE)
        self.assertTrue(transport.aborted)

    def test_connection_cap(self) -> None:
        site: DashboardSite = self.dashboard.site
        for _ in range(MAX_CONNECTIONS):
            self.assertIsNotNone(site.buildProtocol(PEER))
        self.assertIsNone(site.buildProtocol(PEER))

    def test_closed_connections_free_their_slots(self) -> None:
        channel, _ = self.dashboard.connect()
        channel.connectionLost()
        self.assertEqual(self.dashboard.site.open, 0)

    def test_console_cap(self) -> None:
        for _ in range(MAX_CONSOLES):
            self.dashboard.console()
        status, body = self.dashboard.request(upgrade())
        self.assertEqual(status, 503)
        self.assertIn(b"Too many consoles", body)
        self.assertEqual(self.dashboard.stats.accepted, MAX_CONSOLES)


class OptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_token_without_dashboard(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            self.parse("--dashboard-token", "x")
        self.assertEqual(
            raised.exception.code,
            "twistd commandserver: --dashboard-token needs --dashboard",
        )

    def test_bad_endpoint(self) -> None:
        with self.assertRaises(SystemExit) as raised:
            self.parse("--dashboard", "nonsense:1")
        self.assertIn("bad --dashboard endpoint 'nonsense:1'", str(raised.exception))

    def test_refused_with_workers(self) -> None:
        options = self.parse("--dashboard", "tcp:0", "--workers", "2")
        with self.assertRaises(SystemExit) as raised:
            tap.makeService(options)
        self.assertEqual(
            raised.exception.code,
            "twistd commandserver: --dashboard shows one process's counters: "
            "use it with --workers 1",
        )


class StartUpTests(SynchronousTestCase):
    """
    The real ``twistd`` stops at start-up with one line saying what to do.
    """

    def twistd(self, prelude: str, *arguments: str) -> tuple[int, str]:
        directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                prelude + TWISTD,
                "-n",
                "--pidfile=",
                "commandserver",
                *arguments,
            ],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=subprocess_environment(),
            timeout=60,
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        return result.returncode, result.stderr.strip()

    def test_without_the_extra(self) -> None:
        self.assertEqual(
            self.twistd(
                "import sys; sys.modules['autobahn'] = None; ",
                "--dashboard",
                "tcp:0:interface=127.0.0.1",
            ),
            (
                1,
                "twistd commandserver: --dashboard needs autobahn: pip install "
                "'commandproto[dashboard]'",
            ),
        )

    def test_with_workers(self) -> None:
        self.assertEqual(
            self.twistd(
                "",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--workers",
                "2",
                "--dashboard",
                "tcp:0:interface=127.0.0.1",
            ),
            (
                1,
                "twistd commandserver: --dashboard shows one process's counters: "
                "use it with --workers 1",
            ),
        )


class VendoredTests(SynchronousTestCase):
    def test_uplot_version_is_the_one_recorded(self) -> None:
        """
        UPLOT_VERSION and the vendor README name the uPlot that is shipped.
        """
        script = read_asset("vendor/uPlot.iife.min.js")
        self.assertTrue(
            script.startswith(
                f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION})".encode()
            ),
            script[:80],
        )
        self.assertIn(
            f"uPlot {UPLOT_VERSION} ".encode(), read_asset("vendor/README.txt")
        )
        self.assertIn(b"MIT License", read_asset("vendor/uPlot.LICENSE"))


class PackagingTests(SynchronousTestCase):
    """
    A non-editable install ships the page and uPlot: setuptools' build_py
    (what ``pip install .`` and a wheel build run) on a copy of the tree.
    """

    def test_assets_are_built_into_the_package(self) -> None:
        work = tempfile.mkdtemp(prefix="commandproto-build-")
        self.addCleanup(shutil.rmtree, work, ignore_errors=True)
        tree = os.path.join(work, "tree")
        os.mkdir(tree)
        for name in ("setup.cfg", "pyproject.toml", "README.rst"):
            shutil.copy(os.path.join(SOURCE_ROOT, name), tree)
        for name in ("commandproto", "twisted"):
            shutil.copytree(
                os.path.join(SOURCE_ROOT, name),
                os.path.join(tree, name),
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
        built = os.path.join(work, "lib")
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import setuptools; setuptools.setup()",
                "-q",
                "build_py",
                "--build-lib",
                built,
            ],
            cwd=tree,
            check=True,
            capture_output=True,
            timeout=120,
        )
        static = os.path.join(built, "commandproto", "ops", "dashboard_static")
        for name in (
            "index.html",
            "dashboard.js",
            "dashboard.css",
            "vendor/uPlot.iife.min.js",
            "vendor/uPlot.min.css",
            "vendor/uPlot.LICENSE",
        ):
            self.assertTrue(os.path.isfile(os.path.join(static, name)), name)
