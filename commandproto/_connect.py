"""
How our command-line tools (the client and the load tester) reach a server:
the connection options they share, the endpoint those options name, and a
few words for why a connection failed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import IReactorCore, IStreamClientEndpoint
from twisted.python.failure import Failure

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345

CONNECTION_OPTIONS: list[list[Any]] = [
    ["host", None, DEFAULT_HOST, "The server's host name or address."],
    ["port", None, DEFAULT_PORT, "The server's TCP port.", int],
    [
        "connect",
        None,
        None,
        "A Twisted client endpoint instead of --host/--port, e.g. "
        "tcp:host=example.org:port=12345, unix:path=/run/commandproto.sock, "
        "tls:example.org:12345.",
    ],
]
"""
``optParameters`` entries for ``--host``, ``--port`` and ``--connect``.
"""


def make_endpoint(
    reactor: IReactorCore, host: str, port: int, connect: str | None
) -> tuple[IStreamClientEndpoint, str]:
    """
    Build the client endpoint that ``--host``/``--port`` or ``--connect``
    name.

    :returns: the endpoint and how to name it in messages.
    :raises ValueError: for a bad ``--connect`` description, whatever Twisted's
        parser raised (a missing keyword, a missing trustRoots directory, a
        bad certificate...).
    """
    if connect is not None:
        try:
            return clientFromString(reactor, connect), connect
        except Exception as e:
            detail = str(e) or type(e).__name__
            raise ValueError(f"bad endpoint {connect!r}: {detail}") from None
    return HostnameEndpoint(reactor, host, port), f"{host}:{port}"


def describe_failure(reason: Failure | BaseException | None) -> str:
    """
    Say in a few words why a connection failed or ended.

    :param reason: what Twisted reported.
    :returns: a short lower-case phrase.
    """
    value = reason.value if isinstance(reason, Failure) else reason
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, error.DNSLookupError):
        return "unknown host"
    if isinstance(value, error.TimeoutError):
        return "timed out"
    if isinstance(value, error.ConnectionDone):
        return "closed by the server"
    if isinstance(value, error.ConnectionLost):
        return "connection lost"
    return str(value) or type(value).__name__
