"""
``twistd commandserver``: command-line options and the service they build.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from ._codec import DEFAULT_MAX_LINE_LENGTH
from ._server import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_SHUTDOWN_TIMEOUT,
    CommandServerFactory,
    DrainService,
    LoggingServerEndpoint,
    ensure_file_limit,
)

DEFAULT_LISTEN = "tcp:12345:interface=127.0.0.1"


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
        "mtls:12345:privateKey=key.pem:certKey=cert.pem:caCerts=ca.pem."
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
            "idle-timeout",
            None,
            DEFAULT_IDLE_TIMEOUT,
            "Seconds of silence before a client is disconnected (0: never).",
            _at_least("idle-timeout", 0, float),
        ],
        [
            "shutdown-timeout",
            None,
            DEFAULT_SHUTDOWN_TIMEOUT,
            "Seconds to drain connections on SIGTERM/SIGINT before aborting.",
            _at_least("shutdown-timeout", 0, float),
        ],
    ]

    def opt_listen(self, description: str) -> None:
        """Listen on this Twisted server endpoint (repeatable)."""
        from twisted.internet import reactor

        try:
            serverFromString(reactor, description)
        except Exception as e:
            raise usage.UsageError(
                f"bad --listen endpoint {description!r}: {e}"
            ) from None
        self.setdefault("listen", []).append(description)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if not self.get("listen"):
            self["listen"] = [DEFAULT_LISTEN]


def makeService(options: Options) -> IService:
    """
    Build the server's service from parsed options.

    :param options: the parsed ``twistd commandserver`` options.
    :returns: a service that listens on every requested endpoint and drains
        connections when it stops.
    """
    from twisted.internet import reactor

    # Past the open-file limit, clients would be dropped without a word:
    # lower the connection limit so that they get the error line instead.
    max_connections = ensure_file_limit(options["max-connections"])
    factory = CommandServerFactory(
        max_line_length=options["max-line-length"],
        max_connections=max_connections,
        idle_timeout=options["idle-timeout"] or None,
        clock=reactor,
    )
    service = MultiService()
    # Services stop in reverse order: the listeners stop accepting first.
    drain = DrainService(factory, options["shutdown-timeout"])
    drain.setServiceParent(service)  # type: ignore[no-untyped-call]
    for description in options["listen"]:
        endpoint = LoggingServerEndpoint(serverFromString(reactor, description))
        listener = StreamServerEndpointService(endpoint, factory)
        # Fail at start-up, not later, if the address is taken.
        listener._raiseSynchronously = True
        listener.setServiceParent(service)
    return service
