"""
``--dashboard``: the server's numbers as a live page, with a console.

One HTTP listener, in the command server's process and reactor, serves:

- ``/``: the page (``dashboard_static/index.html``), whose script polls
  ``/stats`` once a second and draws charts with uPlot, shipped in
  ``dashboard_static/vendor`` (version :data:`UPLOT_VERSION`);
- ``/stats``: the counters as JSON (:func:`stats_json`);
- ``/console``: a WebSocket (autobahn's) that is a real connection of the
  command server: its protocol comes from the server factory's
  ``buildProtocol`` and writes to a :class:`LineFrames` transport, which sends
  each reply line as one text frame; each text frame the browser sends is
  one request line.  Its peer logs as ``ws:HOST:PORT``
  (:class:`ConsoleAddress`).
- ``/static/...``: the page's script, style and uPlot.

Like the metrics listener (:mod:`commandproto.ops.metrics`), it shares the
reactor with the commands, so what its clients can cost is bounded: one
request per HTTP connection (``Connection: close``), each connection closed
:data:`DEADLINE` seconds after it opened unless it became a console, at most
:data:`MAX_CONNECTIONS` open at once (consoles included), and at most
:data:`MAX_CONSOLES` consoles.  A console is then bounded as any connection
of the server is: ``--max-connections``, ``--idle-timeout``,
``--max-unanswered``, ``--max-line-length``.

A WebSocket upgrade must come from the dashboard's own page (its ``Origin``
is ``http://`` or ``https://`` and the request's own ``Host``), or it is
refused with 403: another site's page cannot drive the console with the
browser's access.  With a token, the page, ``/stats`` and ``/console`` need
``?token=TOKEN`` (the page passes its own on) or
``Authorization: Bearer TOKEN``.

Importing this module imports autobahn (the ``dashboard`` extra).
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Sequence
from importlib.resources import files
from typing import cast

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from ..server.factory import CommandServerFactory
from ..server.protocol import CommandServerProtocol, ServerTransport
from ..server.stats import (
    EVENTS,
    LATENCY_BUCKETS,
    OUTCOMES,
    REFUSAL_REASONS,
    TIMED_OUT,
    ServerStats,
)
from ..wire.addresses import describe_address
from ..wire.endpoints import AnnouncedEndpoint
from .bounded import BoundedChannel, BoundedSite

log = Logger()

UPLOT_VERSION = "1.6.32"
"""The version of uPlot in ``dashboard_static/vendor``."""

#: Seconds an HTTP connection to the dashboard may stay open, from accept to
#: close, unless it becomes a console.
DEADLINE = 10.0

#: Dashboard connections open at once, consoles included.
MAX_CONNECTIONS = 32

#: Consoles open at once (each is also one of the server's connections).
MAX_CONSOLES = 8

#: The largest WebSocket frame or message a console accepts, in bytes; a
#: line longer than ``--max-line-length`` but within this gets the server's
#: own ``Error: line too long``, and a bigger one closes the console.
MAX_MESSAGE = 1 << 20

TIMEOUTS = {
    "idle": "idle_timeout",
    "line": "line_timeout",
    "handshake": "handshake_timeout",
}
"""The ``timeouts`` of :func:`stats_json` that are events, by their name there."""

_STATIC = files("commandproto.ops").joinpath("dashboard_static")
_ASSETS = {
    b"dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    b"dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    b"uPlot.iife.min.js": (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
    ),
    b"uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    b"uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
}

# The page loads its script and style from /static only, and talks only to
# its own origin.
_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; "
    b"img-src 'self' data:; connect-src 'self' ws: wss:; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def read_asset(name: str) -> bytes:
    """
    One of the page's files, from the package's ``dashboard_static`` folder.
    """
    return _STATIC.joinpath(name).read_bytes()


def percentile(counts: Sequence[int], percent: float) -> float | None:
    """
    A percentile of a latency histogram, as its bucket's upper bound.

    :param counts: a count per bucket of
        :data:`~commandproto.server.stats.LATENCY_BUCKETS`, and one past the
        last.
    :param percent: from 0 to 100.
    :returns: seconds (the last bound for the bucket past it, so a lower
        bound there), or ``None`` with no samples.
    """
    total = sum(counts)
    if not total:
        return None
    rank = max(1, math.ceil(percent * total / 100))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return LATENCY_BUCKETS[min(index, len(LATENCY_BUCKETS) - 1)]
    return LATENCY_BUCKETS[-1]  # pragma: no cover (seen reaches total)


def _latency(counts: Sequence[int]) -> dict[str, object]:
    return {
        "count": sum(counts),
        "p50": percentile(counts, 50),
        "p99": percentile(counts, 99),
    }


def stats_json(stats: ServerStats) -> dict[str, object]:
    """
    Everything the page shows, JSON-ready, numbers as numbers.

    :returns: the ``stats`` command's keys first, with the same values
        (``version`` a string, the rest integers); then ``commands_by_name``,
        ``outcomes``, ``refused_by_reason``, ``events`` and ``timeouts``
        (counts, every known key present), and ``latency``: ``bounds`` (the
        buckets' upper bounds in seconds), ``counts`` (every command's
        histogram added up, one more count than bounds), ``count``, ``p50``
        and ``p99`` (seconds, ``null`` before any sample), and the same
        ``count``/``p50``/``p99`` by command in ``by_command``.
    """
    by_outcome = stats.commands_by_outcome()
    by_name: dict[str, int] = {}
    outcomes = dict.fromkeys(OUTCOMES, 0)
    for (name, outcome), count in sorted(by_outcome.items()):
        by_name[name] = by_name.get(name, 0) + count
        outcomes[outcome] = outcomes.get(outcome, 0) + count
    events = {
        kind: stats.events.get(kind, 0) for kind in sorted({*EVENTS, *stats.events})
    }
    timeouts = {name: events[kind] for name, kind in TIMEOUTS.items()}
    timeouts["command"] = outcomes[TIMED_OUT]
    histograms = stats.latency_by_name()
    merged = [0] * (len(LATENCY_BUCKETS) + 1)
    for histogram in histograms.values():
        merged = [a + b for a, b in zip(merged, histogram.counts, strict=True)]
    return {
        **stats.summary(),
        "commands_by_name": by_name,
        "outcomes": outcomes,
        "refused_by_reason": {
            reason: stats.refused.get(reason, 0)
            for reason in sorted({*REFUSAL_REASONS, *stats.refused})
        },
        "events": events,
        "timeouts": timeouts,
        "latency": {
            "bounds": list(LATENCY_BUCKETS),
            "counts": merged,
            **_latency(merged),
            "by_command": {
                name: _latency(histogram.counts)
                for name, histogram in sorted(histograms.items())
            },
        },
    }


# -- the console: a WebSocket that is one of the server's connections


@implementer(IAddress)
class ConsoleAddress:
    """
    A console's peer: the browser's address, written ``ws:HOST:PORT`` (what
    :func:`~commandproto.wire.addresses.describe_address` logs for an
    address it does not know: its ``repr``).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws:{host}:{self.port}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConsoleAddress):
            return NotImplemented
        return (self.host, self.port) == (other.host, other.port)

    def __hash__(self) -> int:
        return hash((self.host, self.port))


class LineFrames:
    """
    The command server protocol's transport for a console: each reply line
    it writes goes out as one text frame (without its CRLF); reading is
    paused and resumed, and producers registered, on the WebSocket's own
    TCP (or TLS) transport, so that a browser that stops reading stops the
    console as a socket client would.

    It is not half-closeable: closing closes the WebSocket (close code 1000).
    """

    disconnecting = False

    def __init__(self, socket: ConsoleProtocol, peer: ConsoleAddress) -> None:
        self._socket = socket
        self._peer = peer
        self._partial = b""

    def write(self, data: bytes) -> None:
        if self.disconnecting or not self._open():
            # The browser has closed (or is closing): nobody will read it,
            # and autobahn refuses to send it.
            return
        *lines, self._partial = (self._partial + data).split(b"\r\n")
        for line in lines:
            self._socket.sendMessage(line, isBinary=False)

    def writeSequence(self, data: Sequence[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self.disconnecting:
            return
        self.disconnecting = True
        self._socket.sendClose(1000)

    loseWriteConnection = loseConnection

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._tcp().abortConnection()

    def getPeer(self) -> ConsoleAddress:
        return self._peer

    def getHost(self) -> IAddress:
        return cast(ITCPTransport, self._socket.transport).getHost()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        tcp = self._tcp()
        # The HTTP channel that the WebSocket took over is still registered.
        tcp.unregisterProducer()
        tcp.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._tcp().unregisterProducer()

    def pauseProducing(self) -> None:
        if self._open():
            self._tcp().pauseProducing()

    def resumeProducing(self) -> None:
        if self._open():
            self._tcp().resumeProducing()

    def _open(self) -> bool:
        return bool(self._socket.state == WebSocketProtocol.STATE_OPEN)

    def _tcp(self) -> ServerTransport:
        return cast(ServerTransport, self._socket.transport)


class ConsoleProtocol(WebSocketServerProtocol):
    """
    One console: a WebSocket carrying one line per text frame each way, to
    and from a command server protocol of its own.
    """

    factory: ConsoleFactory
    server: CommandServerProtocol | None = None
    _released = False

    def onOpen(self) -> None:
        tcp_peer = cast(ServerTransport, self.transport).getPeer()
        peer = ConsoleAddress(
            str(getattr(tcp_peer, "host", "?")), int(getattr(tcp_peer, "port", 0))
        )
        server = self.factory.commands.buildProtocol(peer)
        self.server = server
        server.makeConnection(LineFrames(self, peer))

    def onMessage(self, payload: bytes, is_binary: bool) -> None:
        if self.server is None:
            return
        if is_binary:
            # One line per text frame: a binary frame is not a line.
            # (autobahn sends only 1000 or an application's 3000-4999.)
            self.sendClose(1000, "text frames only")
            return
        self.server.dataReceived(payload + b"\n")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        server, self.server = self.server, None
        if server is not None:
            # After a clean close handshake autobahn aborts the TCP
            # connection: for the server's log, that is a clean close.
            server.connectionLost(connectionDone if self.wasClean else reason)
        if not self._released:
            self._released = True
            self.factory.site.release(console=True)


class ConsoleFactory(WebSocketServerFactory):
    """
    Makes a :class:`ConsoleProtocol` for each console.

    :ivar commands: the command server's factory.
    :ivar site: the dashboard's site, which counts consoles.
    """

    protocol = ConsoleProtocol  # type: ignore[assignment]

    def __init__(
        self,
        commands: CommandServerFactory,
        site: DashboardSite,
        reactor: IReactorTime,
    ) -> None:
        super().__init__(reactor=reactor)
        self.commands = commands
        self.site = site
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_MESSAGE,
            maxMessagePayloadSize=MAX_MESSAGE,
            openHandshakeTimeout=DEADLINE,
            closeHandshakeTimeout=DEADLINE,
        )


def own_origin(request: Request) -> bool:
    """
    Whether a request's ``Origin`` is the dashboard's own: its scheme, and
    the host and port the request was sent to.
    """
    origin = request.getHeader(b"origin")
    host = request.getHeader(b"host")
    if origin is None or host is None:
        return False
    scheme = b"https" if request.isSecure() else b"http"
    return hmac.compare_digest(origin.lower(), scheme + b"://" + host.lower())


class ConsoleResource(Resource):
    """
    ``/console``: the WebSocket upgrade, from the dashboard's own page only.
    """

    isLeaf = True

    def __init__(self, site: DashboardSite, sockets: ConsoleFactory) -> None:
        super().__init__()
        self._site = site
        self._upgrade = WebSocketResource(sockets)

    def render(self, request: Request) -> bytes | int:
        peer = describe_address(request.getClientAddress())
        if not own_origin(request):
            log.warn(
                "dashboard: refused a console for {peer}: Origin {origin} is not "
                "this dashboard's, http(s)://{host}",
                peer=peer,
                origin=_text(request.getHeader(b"origin")),
                host=_text(request.getHeader(b"host")),
            )
            return _plain(request, http.FORBIDDEN, "Forbidden: not this page's origin")
        if (request.getHeader(b"upgrade") or b"").lower() != b"websocket":
            request.setHeader(b"upgrade", b"websocket")
            return _plain(
                request, 426, "Upgrade Required: /console is the dashboard's WebSocket"
            )
        if self._site.consoles >= self._site.max_consoles:
            log.warn("dashboard: refused a console for {peer}: too many", peer=peer)
            return _plain(
                request,
                http.SERVICE_UNAVAILABLE,
                f"Too many consoles open (limit is {self._site.max_consoles})",
            )
        channel = request.channel
        assert isinstance(channel, DashboardChannel)
        # From here the connection belongs to the WebSocket, which may live
        # as long as a server connection may, and gives back its slot when
        # it closes (the HTTP channel will never hear of it).
        channel.become_console()
        self._site.consoles += 1
        return cast(bytes | int, self._upgrade.render(request))


def _text(header: bytes | None) -> str:
    """
    A client's header for a log line: quoted, control characters escaped.
    """
    return "(none)" if header is None else repr(header.decode("latin-1"))


def _plain(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8") + b"\n"


class StatsResource(Resource):
    """
    ``/stats``: :func:`stats_json`.
    """

    isLeaf = True

    def __init__(self, stats: ServerStats) -> None:
        super().__init__()
        self._stats = stats

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(stats_json(self._stats)).encode("utf-8")


class Asset(Resource):
    """
    One file, read once, served with its type.
    """

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self._body = body
        self._type = content_type.encode("ascii")

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._type)
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self._body


class Page(Resource):
    """
    ``/``: the page; its children are the rest.
    """

    def __init__(self) -> None:
        super().__init__()
        self._body = read_asset("index.html")

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return super().getChild(path, request)  # type: ignore[no-any-return]

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", _POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return self._body


class _Unauthorized(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _plain(
            request,
            http.UNAUTHORIZED,
            "Unauthorized: this dashboard needs its token (open /?token=TOKEN)",
        )


class DashboardChannel(BoundedChannel):
    """
    An HTTP connection that answers one request, then closes; and closes
    anyway at its deadline, unless it became a console.
    """

    def become_console(self) -> None:
        """
        A WebSocket took the connection over: it is a console, counted and
        bounded as one.
        """
        self.keep()


class DashboardSite(BoundedSite):
    """
    The dashboard's site: no access log, the token checked before any
    resource but the static files, and its connections bounded in number
    and lifetime (:mod:`~commandproto.ops.bounded`).

    :ivar open: connections open now, consoles included.
    :ivar consoles: consoles open now.
    """

    protocol = DashboardChannel

    def __init__(
        self,
        resource: Resource,
        clock: IReactorTime,
        *,
        token: str | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_consoles: int = MAX_CONSOLES,
        deadline: float = DEADLINE,
    ) -> None:
        super().__init__(
            resource, clock, max_connections=max_connections, deadline=deadline
        )
        self._token = token.encode("utf-8") if token is not None else None
        self.max_consoles = max_consoles
        self.consoles = 0

    def release(self, *, console: bool = False) -> None:
        """
        A connection (a console, if ``console``) has closed.
        """
        super().release()
        if console:
            self.consoles -= 1

    def authorized(self, request: Request) -> bool:
        """
        Whether a request carries the token (or none is needed).
        """
        if self._token is None:
            return True
        offered = [*(request.args or {}).get(b"token", [])]
        authorization = request.getHeader(b"authorization")
        if authorization is not None and authorization.startswith(b"Bearer "):
            offered.append(authorization[len(b"Bearer ") :].strip())
        return any(hmac.compare_digest(token, self._token) for token in offered)

    def getResourceFor(self, request: Request) -> IResource:
        if (request.postpath or [])[:1] != [b"static"] and not self.authorized(request):
            return _Unauthorized()
        return super().getResourceFor(request)  # type: ignore[no-any-return]


def dashboard_site(
    stats: ServerStats,
    commands: CommandServerFactory,
    clock: IReactorTime,
    *,
    token: str | None = None,
) -> DashboardSite:
    """
    The dashboard's HTTP site: ``/``, ``/stats``, ``/console``, ``/static/``.

    :param stats: the server's counters.
    :param commands: the server's factory, which builds each console's
        protocol.
    :param token: required of the page, ``/stats`` and ``/console``, if
        given.
    """
    root = Page()
    site = DashboardSite(root, clock, token=token)
    root.putChild(b"stats", StatsResource(stats))
    root.putChild(
        b"console", ConsoleResource(site, ConsoleFactory(commands, site, clock))
    )
    static = Resource()
    for name, (path, content_type) in _ASSETS.items():
        static.putChild(name, Asset(read_asset(path), content_type))
    root.putChild(b"static", static)
    return site


def _announce(address: str) -> None:
    log.info("dashboard on {address} at /", address=address)


def dashboard_service(
    reactor: IReactorTime,
    description: str,
    stats: ServerStats,
    commands: CommandServerFactory,
    *,
    token: str | None = None,
) -> IService:
    """
    A service that serves the dashboard on a Twisted server endpoint.

    :param description: the endpoint string (``tcp:8080:interface=127.0.0.1``).
    """
    endpoint = AnnouncedEndpoint(serverFromString(reactor, description), _announce)
    site = dashboard_site(stats, commands, reactor, token=token)
    service = StreamServerEndpointService(endpoint, site)
    service._raiseSynchronously = True
    return service
