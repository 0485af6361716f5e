"""
How our command-line tools (the client and the load tester) reach a server:
the connection options they share, the endpoint those options name, and a
few words for why a connection failed.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IProtocol,
    IProtocolFactory,
    IReactorCore,
    IReactorTCP,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345

TLS_EXTRA = "TLS needs the tls extra: pip install 'commandproto[tls]'"
"""
What to do when TLS is asked for and pyOpenSSL is not installed.
"""

TYPE_ENFORCEMENT = "Parameter type enforcement failed: "
"""
What ``usage.Options`` puts before a coerce function's message; our coerce
functions say all there is to say.
"""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValueError(f"--port takes a number from 1 to 65535, not {text!r}")
    return port


_port.coerceDoc = "A number from 1 to 65535."  # type: ignore[attr-defined]

CONNECTION_OPTIONS: list[list[Any]] = [
    ["host", None, DEFAULT_HOST, "The server's host name or address."],
    ["port", None, DEFAULT_PORT, "The server's TCP port.", _port],
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
    # twisted.internet.endpoints imports TLS (pyOpenSSL, cryptography) as it
    # loads, a fifth of a second: only endpoint strings and host names need it.
    if connect is None and (isIPAddress(host) or isIPv6Address(host)):
        return AddressEndpoint(cast(IReactorTCP, reactor), host, port), (
            f"{host}:{port}"
        )
    from twisted.internet.endpoints import HostnameEndpoint, clientFromString

    if connect is not None:
        kind = connect.partition(":")[0]
        if kind in ("tls", "ssl"):
            require_tls()
        try:
            return clientFromString(reactor, connect), connect
        except Exception as e:
            raise ValueError(
                f"bad endpoint {connect!r}: {explain_endpoint_error(kind, e)}"
            ) from None
    return HostnameEndpoint(reactor, host, port), f"{host}:{port}"


def require_tls() -> None:
    """
    Make sure TLS can be used.

    :raises ValueError: saying how to install it, if it cannot.
    """
    try:
        import OpenSSL  # noqa: F401
    except ImportError:
        raise ValueError(TLS_EXTRA) from None


def explain_endpoint_error(kind: str, error: Exception) -> str:
    """
    Say in a few words what is wrong with an endpoint string, for which
    Twisted's parsers raise whatever the constructor they call raises.

    :param kind: the endpoint's type, the text before its first colon.
    """
    name = type(error).__name__
    if name == "UnlistableError":
        return (
            "trustRoots= must name a directory holding the CA certificates "
            "(*.pem files), not a file"
        )
    if isinstance(error, TypeError):
        examples = {
            "tcp": "tcp:HOST:PORT",
            "tls": "tls:HOST:PORT",
            "unix": "unix:PATH",
        }
        return (
            f"missing or unknown parts (write it as {examples.get(kind, 'TYPE:...')})"
        )
    if isinstance(error, ValueError) and "invalid literal for int()" in str(error):
        return "the port must be a number"
    return str(error) or name


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
    if value is not None and type(value).__module__.startswith("OpenSSL"):
        # pyOpenSSL's errors are lists of (library, function, reason).
        entries = value.args[0] if value.args else []
        reasons = [
            entry[-1]
            for entry in entries
            if isinstance(entry, tuple) and entry and entry[-1]
        ]
        return "closed: TLS handshake failed: " + (
            "; ".join(reasons) or "no reason given"
        )
    return str(value) or type(value).__name__


@implementer(IStreamClientEndpoint)
class AddressEndpoint:
    """
    A TCP client endpoint for a literal IPv4 or IPv6 address: what
    ``HostnameEndpoint`` does for one, without importing
    ``twisted.internet.endpoints``.
    """

    def __init__(self, reactor: IReactorTCP, host: str, port: int) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect; cancelling the result stops connecting.
        """
        connectors: list[IConnector] = []
        connected: Deferred[IProtocol] = Deferred(
            lambda _: connectors[0].stopConnecting()
        )
        connectors.append(
            self._reactor.connectTCP(
                self._host, self._port, _Connecting(factory, connected)
            )
        )
        return connected


class _Connecting(ClientFactory):
    """
    Fires a Deferred when the connection is made (with the protocol) or
    fails.
    """

    noisy = False

    def __init__(self, factory: IProtocolFactory, connected: Deferred[IProtocol]):
        self._factory = factory
        self._connected = connected

    def buildProtocol(  # type: ignore[override]
        self, addr: IAddress | None
    ) -> IProtocol | None:
        try:
            protocol = self._factory.buildProtocol(cast(IAddress, addr))
        except BaseException:
            self._connected.errback()
            return None
        if protocol is None:
            return None
        connected = self._connected
        make_connection = protocol.makeConnection

        def made(transport: ITransport) -> None:
            # As HostnameEndpoint does: the result fires once the protocol
            # has its transport.
            make_connection(transport)
            if not connected.called:
                connected.callback(protocol)

        protocol.makeConnection = made  # type: ignore[method-assign]
        return protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self._connected.called:
            self._connected.errback(reason)
