"""
``twistd commandserver``: command-line options and the service they build.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from ._codec import DEFAULT_MAX_LINE_LENGTH
from ._server import CommandServerFactory, LoggingServerEndpoint

DEFAULT_LISTEN = "tcp:12345:interface=127.0.0.1"


class Options(usage.Options):
    """
    Options for ``twistd commandserver``.
    """

    synopsis = "[--listen ENDPOINT ...]"
    longdesc = (
        "Serve the commandproto line protocol. With no --listen, listens on "
        f"{DEFAULT_LISTEN} (loopback only). Any --listen replaces that "
        "default; examples: tcp:12345 (every interface), "
        "tcp6:12345:interface=\\:\\:1, unix:/run/commandproto.sock, "
        "ssl:12345:privateKey=key.pem:certKey=cert.pem."
    )

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
    :returns: a service that listens on every requested endpoint.
    """
    from twisted.internet import reactor

    factory = CommandServerFactory(max_line_length=DEFAULT_MAX_LINE_LENGTH)
    service = MultiService()
    for description in options["listen"]:
        endpoint = LoggingServerEndpoint(serverFromString(reactor, description))
        listener = StreamServerEndpointService(endpoint, factory)
        # Fail at start-up, not later, if the address is taken.
        listener._raiseSynchronously = True
        listener.setServiceParent(service)
    return service
