"""
``twistd commandserver``: command-line options and the service they build.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import NoReturn, cast

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import ILogObserver
from twisted.python import usage

from ._version import __version__
from .client.connect import explain_endpoint_error, require_tls
from .commands.loading import LoadError, installed_sets, load_table
from .commands.table import with_builtins
from .listeners.accepting import PacedReactor
from .listeners.legacy import LegacyServerEndpoint
from .listeners.listening import Listener, address_problem
from .listeners.proxy import PROXY, PendingHeaders, ProxyServerEndpoint
from .ops.descriptors import fit_file_limit
from .ops.logs import (
    DEFAULT_FORMAT,
    DEFAULT_LEVEL,
    FORMATS,
    LEVELS,
    LoggingService,
    log_file,
    log_observer,
)
from .ops.pidfile import pid_file_problem
from .ops.sharedstats import (
    SnapshotDirectory,
    SnapshotService,
    SupervisorStats,
    WorkerStats,
)
from .ops.signals import SignalReactor, SignalService
from .ops.systemd import NotifyService
from .ops.workers import (
    become_worker,
    parse_workers,
    share,
    supervisor_service,
    worker_endpoint,
    worker_identity,
)
from .server import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LINE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_UNANSWERED,
    DEFAULT_SEND_BUFFER,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SLOW_THRESHOLD,
    CommandServerFactory,
    DrainService,
    LoggingServerEndpoint,
)
from .server.stats import ServerStats
from .wire.codec import DEFAULT_MAX_LINE_LENGTH

DEFAULT_LISTEN = "tcp:12345:interface=127.0.0.1"
DEFAULT_BACKLOG = 511
"""
The listen backlog unless an endpoint string sets ``backlog=`` (Redis's
``tcp-backlog``; Twisted's own default is 50).
"""
_BACKLOG_KINDS = ("tcp", "tcp6", "unix", "ssl", "mtls")
_TLS_KINDS = ("ssl", "mtls")
PROGRAM = "twistd commandserver"


def _fail(message: str) -> NoReturn:
    """
    Stop at start-up with one line on standard error and exit status 1:
    twistd would print its whole usage before a UsageError's message.
    """
    raise SystemExit(f"{PROGRAM}: {message}")


_USAGE_WORDS = (
    (re.compile(r"Parameter type enforcement failed: (.*)", re.S), "{0}"),
    (re.compile(r"option (--?[^ ]+) not recognized"), "unknown option {0}"),
    (re.compile(r"No such option '(.*)'"), "unknown option --{0}"),
    (re.compile(r"option (--?[^ ]+) requires argument"), "{0} needs a value"),
    (re.compile(r"Parameter '(.*)' requires an argument\."), "--{0} needs a value"),
    (re.compile(r"option (--?[^ ]+) must not have an argument"), "{0} takes no value"),
    (re.compile(r"option (--?[^ ]+) not a unique prefix"), "{0} is ambiguous"),
    (re.compile(r"Wrong number of arguments\."), "takes options only, no arguments"),
)


def usage_problem(message: str) -> str:
    """
    A usage error of :class:`twisted.python.usage.Options` in our words, one
    line ending in where to look.
    """
    for pattern, words in _USAGE_WORDS:
        match = pattern.fullmatch(message)
        if match is not None:
            message = words.format(*match.groups())
            break
    line = " ".join(message.split())
    return f"{line} (see {PROGRAM} --help)"


def _at_least(
    name: str, minimum: float, kind: Callable[[str], float]
) -> Callable[[str], float]:
    def coerce(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"--{name} takes a number, not {value!r}") from None
        if not math.isfinite(number) or number < minimum:
            raise ValueError(f"--{name} must be a number of at least {minimum:g}")
        return number

    coerce.coerceDoc = f"At least {minimum:g}."  # type: ignore[attr-defined]
    return coerce


def _one_of(name: str, choices: tuple[str, ...]) -> Callable[[str], str]:
    def coerce(value: str) -> str:
        if value not in choices:
            raise ValueError(f"--{name} takes one of {', '.join(choices)}")
        return value

    coerce.coerceDoc = f"One of {', '.join(choices)}."  # type: ignore[attr-defined]
    return coerce


class Options(usage.Options):
    """
    Options for ``twistd commandserver``.
    """

    synopsis = "[--listen ENDPOINT ...] [options]"
    longdesc = (
        "Serve the commandproto line protocol. With no --listen, listens on "
        f"{DEFAULT_LISTEN} (loopback only). Any --listen replaces that "
        "default; examples: tcp:12345 (every interface), "
        "tcp6:12345:interface=\\:\\:1, unix:/run/commandproto.sock, "
        "ssl:12345:privateKey=key.pem:certKey=cert.pem, "
        "mtls:12345:privateKey=key.pem:certKey=cert.pem:caCerts=ca.pem, "
        "proxy:tcp:12345 (behind HAProxy: PROXY protocol v1 or v2). "
        "--commands adds command sets beside the built-in Hello, "
        "Are you there?, quit, help and stats; --list-commands shows the installed "
        "ones."
    )
    optParameters = [
        [
            "max-line-length",
            None,
            DEFAULT_MAX_LINE_LENGTH,
            "Longest request line, in bytes; longer lines get an error.",
            _at_least("max-line-length", 1, int),
        ],
        [
            "max-connections",
            None,
            DEFAULT_MAX_CONNECTIONS,
            "Clients connected at once; more are refused with an error.",
            _at_least("max-connections", 1, int),
        ],
        [
            "max-connections-per-ip",
            None,
            0,
            "Clients connected at once from one IPv4 address or IPv6 /64 "
            "(0, the default: no limit); more are refused with an error.",
            _at_least("max-connections-per-ip", 0, int),
        ],
        [
            "idle-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT or 0.0,
            "Seconds without a whole request line before a client is "
            "disconnected (0: never, as in Redis and memcached).",
            _at_least("idle-timeout", 0, float),
        ],
        [
            "line-timeout",
            None,
            DEFAULT_LINE_TIMEOUT,
            "Seconds a request line may take to arrive whole, from its first "
            "byte (0: no limit).",
            _at_least("line-timeout", 0, float),
        ],
        [
            "handshake-timeout",
            None,
            DEFAULT_HANDSHAKE_TIMEOUT,
            "Seconds a TLS client may take to complete its handshake, and a "
            "proxy: listener's client to send its PROXY header (0: no limit).",
            _at_least("handshake-timeout", 0, float),
        ],
        [
            "max-handshakes",
            None,
            DEFAULT_MAX_HANDSHAKES,
            "TLS handshakes in progress at once, apart from --max-connections; "
            "likewise proxy: connections awaiting their PROXY header.",
            _at_least("max-handshakes", 1, int),
        ],
        [
            "command-timeout",
            None,
            DEFAULT_COMMAND_TIMEOUT,
            "Seconds a command may take to answer before it is cancelled and "
            "the client gets 'Error: NAME timed out' (0: no limit).",
            _at_least("command-timeout", 0, float),
        ],
        [
            "max-unanswered",
            None,
            DEFAULT_MAX_UNANSWERED,
            "Lines of one client awaiting replies before the server stops reading it.",
            _at_least("max-unanswered", 1, int),
        ],
        [
            "send-buffer",
            None,
            DEFAULT_SEND_BUFFER,
            "Each connection's kernel send buffer in bytes (SO_SNDBUF; 0: the "
            "kernel's own, which grows to 4 MiB), so that backpressure starts "
            "soon after a client stops reading.",
            _at_least("send-buffer", 0, int),
        ],
        [
            "shutdown-timeout",
            None,
            DEFAULT_SHUTDOWN_TIMEOUT,
            "Seconds to drain connections on SIGTERM/SIGINT before aborting.",
            _at_least("shutdown-timeout", 0, float),
        ],
        [
            "workers",
            None,
            1,
            "Worker processes sharing the listeners (auto: one per CPU); "
            "--max-connections and --max-connections-per-ip are divided among "
            "them; stats and --metrics report them all.",
            parse_workers,
        ],
        [
            "log-format",
            None,
            DEFAULT_FORMAT,
            "How to write the log: text (twistd's), or json (one object per line).",
            _one_of("log-format", FORMATS),
        ],
        [
            "log-level",
            None,
            DEFAULT_LEVEL,
            "The least level logged: debug, info, warn, error or critical.",
            _one_of("log-level", tuple(LEVELS)),
        ],
        [
            "slow-log-threshold",
            None,
            DEFAULT_SLOW_THRESHOLD * 1000,
            "Milliseconds past which a command's reply is logged as slow (0: never).",
            _at_least("slow-log-threshold", 0, float),
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this Twisted server endpoint "
            "(e.g. tcp:9100:interface=127.0.0.1); needs the metrics extra.",
            None,
        ],
        [
            "dashboard",
            None,
            None,
            "Serve a live dashboard and a console in the browser on this Twisted "
            "server endpoint (e.g. tcp:8080:interface=127.0.0.1: keep it on "
            "loopback or behind authentication); needs the dashboard extra.",
            None,
        ],
        [
            "dashboard-token",
            None,
            None,
            "Require this token of the dashboard's page, /stats and /console "
            "(open /?token=TOKEN).",
            None,
        ],
    ]

    arguments: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        # Kept for the workers, which run the same command line.
        self.arguments = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            # twistd would print its whole usage on standard output first.
            _fail(usage_problem(str(e)))

    def opt_version(self) -> None:
        """Print commandproto's version and exit."""
        print(f"commandproto {__version__}")
        raise SystemExit(0)

    def opt_listen(self, description: str) -> None:
        """Listen on this Twisted server endpoint (repeatable)."""
        self._check_endpoint("--listen", description)
        self.setdefault("listen", []).append(description)

    opt_l = opt_listen

    def opt_legacy_listen(self, description: str) -> None:
        """
        Also listen on this Twisted server endpoint in the seed's wire format:
        one read is one command, replies have no line end (repeatable).
        """
        self._check_endpoint("--legacy-listen", description)
        self.setdefault("legacy-listen", []).append(description)

    def _check_endpoint(self, option: str, description: str) -> None:
        from twisted.internet import reactor

        if description.partition(":")[0] in ("ssl", "mtls"):
            try:
                require_tls()
            except ValueError as e:
                _fail(f"{option} {description!r}: {e}")
        try:
            serverFromString(reactor, description)
        except Exception as e:
            # One line, not twistd's whole usage before it.
            why = explain_endpoint_error(description.partition(":")[0], e)
            _fail(
                f"bad {option} endpoint {description!r}: {why} "
                "(examples: tcp:12345, unix:/run/commandproto.sock; see --help)"
            )

    def opt_commands(self, spec: str) -> None:
        """
        Serve the commands of this command set too: an installed set's name,
        or MODULE[:ATTRIBUTE] naming a CommandTable (ATTRIBUTE defaults to
        'commands'). Repeatable.
        """
        try:
            table = load_table(spec)
        except LoadError as e:
            _fail(str(e))
        self.setdefault("commands", []).append(table)
        self.setdefault("command-sets", []).append(spec)

    opt_c = opt_commands

    def opt_list_commands(self) -> None:
        """
        List the command sets that installed packages offer, and exit.
        """
        found = installed_sets()
        if not found:
            print(
                "No command sets are installed; --commands MODULE:ATTRIBUTE "
                "serves any CommandTable."
            )
        else:
            print("Installed command sets (serve one with --commands NAME):")
            width = max(len(entry.name) for entry in found)
            for entry in found:
                print(
                    f"  {entry.name:<{width}}  {entry.target}  "
                    f"(from {entry.distribution})"
                )
        raise SystemExit(0)

    def postOptions(self) -> None:
        if not self.get("listen"):
            self["listen"] = [DEFAULT_LISTEN]
        if self["metrics"] is not None:
            self._check_metrics(self["metrics"])
        if self["dashboard"] is not None:
            self._check_dashboard(self["dashboard"], self["dashboard-token"])
        elif self["dashboard-token"] is not None:
            _fail("--dashboard-token needs --dashboard")
        twistd: Mapping[str, object] = self.parent or {}
        problem = pid_file_problem(str(twistd.get("pidfile") or ""))
        if problem is not None:
            _fail(problem)
        if twistd.get("syslog") and self._own_observer():
            _fail("--log-format and --log-level do not work with twistd --syslog")
        if self["workers"] > 1:
            self._check_shared()
        try:
            self["table"] = with_builtins(*self.get("commands", []))
        except ValueError as e:
            _fail(f"--commands: {e}; a name can be served by one command set only")

    def _check_shared(self) -> None:
        """
        Refuse what --workers would silently split: command sets whose state
        lives in one process, and limits smaller than the worker count.
        """
        workers = self["workers"]
        for spec, table in zip(
            self.get("command-sets", []), self.get("commands", []), strict=True
        ):
            if table.per_process_state:
                _fail(
                    f"--commands {spec} keeps its state in each process, so "
                    f"--workers {workers} would split it: serve it with "
                    "--workers 1, or keep the state in an external store"
                )
        for name in ("max-connections", "max-connections-per-ip"):
            limit = self[name]
            if 0 < limit < workers:
                _fail(
                    f"--{name} {limit} cannot be shared among {workers} "
                    f"workers (each enforces its own share): give at least "
                    f"{workers}, or fewer --workers"
                )

    def _check_metrics(self, description: str) -> None:
        from twisted.internet import reactor

        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            _fail(
                "--metrics needs prometheus_client: pip install 'commandproto[metrics]'"
            )
        try:
            serverFromString(reactor, description)
        except Exception as e:
            _fail(f"bad --metrics endpoint {description!r}: {e}")

    def _check_dashboard(self, description: str, token: str | None) -> None:
        from twisted.internet import reactor

        try:
            import autobahn  # noqa: F401
        except ImportError:
            _fail("--dashboard needs autobahn: pip install 'commandproto[dashboard]'")
        try:
            serverFromString(reactor, description)
        except Exception as e:
            _fail(f"bad --dashboard endpoint {description!r}: {e}")
        if token is not None and not token.strip():
            _fail("--dashboard-token must not be empty")

    def _own_observer(self) -> bool:
        """
        Whether the server logs through its own observer rather than
        twistd's: for JSON, or a level other than the default.
        """
        return bool(
            self["log-format"] != DEFAULT_FORMAT or self["log-level"] != DEFAULT_LEVEL
        )


# twistd's --help shows an opt_ method's docstring as it is, indentation and
# all: one line each, so the help has no runs of spaces mid-sentence.
for _name in dir(Options):
    if _name.startswith("opt_"):
        _method = getattr(Options, _name)
        if _method.__doc__:
            _method.__doc__ = " ".join(_method.__doc__.split())


def _kind(description: str) -> str:
    """
    An endpoint string's kind (``tcp``, ``ssl``, ...), under any ``proxy:``.
    """
    kind, _, rest = description.partition(":")
    return _kind(rest) if kind == PROXY else kind


def served_as(description: str) -> str:
    """
    What a listener serves besides plain TCP, for the line that says where
    it listens: ``TLS``, ``mutual TLS``, ``PROXY protocol``, or both of one
    and the last; empty for none.
    """
    words = []
    kind, _, rest = description.partition(":")
    if kind == PROXY:
        words.append("PROXY protocol")
        kind = _kind(rest)
    if kind == "ssl":
        words.append("TLS")
    elif kind == "mtls":
        words.append("mutual TLS")
    return ", ".join(words)


def with_backlog(description: str) -> str:
    """
    Give a listening endpoint string our default backlog, unless it sets
    one or its kind takes none.
    """
    if description.startswith(f"{PROXY}:"):
        return f"{PROXY}:{with_backlog(description[len(PROXY) + 1 :])}"
    kind = description.split(":", 1)[0]
    if kind not in _BACKLOG_KINDS or re.search(r"(^|:)backlog=", description):
        return description
    return f"{description}:backlog={DEFAULT_BACKLOG}"


def _observer(options: Options) -> ILogObserver | None:
    """
    The log observer that --log-format and --log-level ask for, or ``None``
    for twistd's own.
    """
    if not options._own_observer():
        return None
    twistd: Mapping[str, object] = options.parent or {}
    return log_observer(
        log_file(str(twistd.get("logfile") or "")),
        options["log-format"],
        options["log-level"],
    )


def makeService(options: Options) -> IService:
    """
    Build the server's service from parsed options.

    :param options: the parsed ``twistd commandserver`` options.
    :returns: a service that listens on every requested endpoint and drains
        connections when it stops.
    """
    from twisted.internet import reactor

    listeners: list[
        tuple[str, Callable[[IStreamServerEndpoint], IStreamServerEndpoint]]
    ] = [
        (description, partial(LoggingServerEndpoint, what=served_as(description)))
        for description in options["listen"]
    ] + [
        (description, LegacyServerEndpoint)
        for description in options.get("legacy-listen", [])
    ]
    workers = options["workers"]
    worker = worker_identity()
    if worker is None and workers > 1:
        if options["dashboard"] is not None:
            _fail("--dashboard shows one process's counters: use it with --workers 1")
        # Before the workers are spawned: they inherit its name.
        snapshots = SnapshotDirectory.create()
        reactor.addSystemEventTrigger("after", "shutdown", snapshots.remove)
        try:
            supervisor = supervisor_service(
                reactor,
                [(d, serverFromString(reactor, with_backlog(d))) for d, _ in listeners],
                workers,
                options.arguments,
                options["shutdown-timeout"],
            )
        except ValueError as e:
            _fail(str(e))
        top = LoggingService(_observer(options))
        supervisor.setServiceParent(top)
        if options["metrics"] is not None:
            # One scrape for the whole server: the workers' numbers, summed.
            from .ops.metrics import metrics_service

            whole = SupervisorStats(snapshots, timing=True)
            metrics_service(
                reactor, options["metrics"], whole, whole.refresh
            ).setServiceParent(top)
        NotifyService(reactor).setServiceParent(top)  # type: ignore[no-untyped-call]
        return top
    if worker is not None:
        # Server-wide limits: each worker enforces its share.
        options["max-connections"] = share(options["max-connections"], worker.count)
        if options["max-connections-per-ip"]:
            options["max-connections-per-ip"] = share(
                options["max-connections-per-ip"], worker.count
            )
        become_worker(reactor, worker)

    # Past the open-file limit, clients would be dropped without a word:
    # every kind of connection gets its share of the descriptors, so that
    # clients over the limit get the error line instead and no kind starves
    # the others.
    described = [d for d, _ in listeners]
    tls = any(_kind(d) in _TLS_KINDS for d in described)
    proxied = any(d.startswith(f"{PROXY}:") for d in described)
    metrics = 0
    if options["metrics"] is not None:
        from .ops.metrics import MAX_CONNECTIONS

        metrics = MAX_CONNECTIONS
    if options["dashboard"] is not None:
        from .ops import dashboard

        # The dashboard's HTTP connections, like the metrics' (its consoles
        # are among the server's connections already).
        metrics += dashboard.MAX_CONNECTIONS - dashboard.MAX_CONSOLES
    budget = fit_file_limit(
        options["max-connections"],
        handshakes=options["max-handshakes"] if tls else 0,
        proxy_headers=options["max-handshakes"] if proxied else 0,
        metrics=metrics,
    )
    pending_headers = PendingHeaders(max(budget.proxy_headers, 1))
    timing = options["metrics"] is not None or options["dashboard"] is not None
    shared = SnapshotDirectory.from_environment() if worker is not None else None
    stats: ServerStats
    if worker is not None and shared is not None:
        # stats answers for the whole server; the supervisor's /metrics
        # reads this worker's snapshots.
        stats = WorkerStats(shared, worker.index, timing=timing)
    else:
        stats = ServerStats(timing=timing)
    factory = CommandServerFactory(
        options["table"],
        max_line_length=options["max-line-length"],
        max_connections=budget.connections,
        max_connections_per_address=options["max-connections-per-ip"] or None,
        idle_timeout=options["idle-timeout"] or None,
        line_timeout=options["line-timeout"] or None,
        handshake_timeout=options["handshake-timeout"] or None,
        max_handshakes=max(budget.handshakes, 1),
        send_buffer=options["send-buffer"] or None,
        command_timeout=options["command-timeout"] or None,
        max_unanswered=options["max-unanswered"],
        clock=reactor,
        stats=stats,
        slow_threshold=options["slow-log-threshold"] / 1000 or None,
    )
    service = LoggingService(_observer(options))
    # Services stop in reverse order: the listeners stop accepting first.
    drain = DrainService(factory, options["shutdown-timeout"])
    drain.setServiceParent(service)  # type: ignore[no-untyped-call]
    signals = SignalService(cast(SignalReactor, reactor), factory.abort_all)
    signals.setServiceParent(service)  # type: ignore[no-untyped-call]
    # Out of descriptors, a listener waits a moment rather than reset every
    # client in its backlog.
    paced = PacedReactor(reactor)
    for index, (description, kind) in enumerate(listeners):
        endpoint = serverFromString(paced, with_backlog(description))
        # Before twistd daemonizes, so that the parent can say so in one
        # line (a worker's addresses are its supervisor's, already bound).
        problem = address_problem(endpoint) if worker is None else None
        if problem is not None:
            _fail(f"cannot listen on {description}: {problem}")
        if description.split(":", 1)[0] == "ssl":
            # Imported only for TLS: the extra may not be installed.
            from .listeners.halfclose import from_ssl_endpoint

            endpoint = from_ssl_endpoint(endpoint)
        if isinstance(endpoint, ProxyServerEndpoint):
            endpoint.header_timeout = options["handshake-timeout"] or None
            endpoint.pending = pending_headers
        if worker is not None:
            endpoint = worker_endpoint(paced, endpoint, worker.fds[index])
        listener = Listener(description, kind(endpoint), factory, _fail)
        listener.setServiceParent(service)  # type: ignore[no-untyped-call]
    if isinstance(stats, WorkerStats) and shared is not None:
        snapshot_service = SnapshotService(reactor, shared, stats)
        snapshot_service.setServiceParent(service)  # type: ignore[no-untyped-call]
    if options["metrics"] is not None and worker is None:
        from .ops.metrics import metrics_service

        metrics_service(reactor, options["metrics"], stats).setServiceParent(service)
    if options["dashboard"] is not None:
        from .ops.dashboard import dashboard_service

        dashboard_service(
            reactor,
            options["dashboard"],
            stats,
            factory,
            token=options["dashboard-token"],
        ).setServiceParent(service)
    if worker is None:
        # Last: it says READY=1 once the listeners listen, and STOPPING=1
        # first. A worker leaves that to its supervisor.
        NotifyService(reactor).setServiceParent(service)  # type: ignore[no-untyped-call]
    return service
