"""
Why a server endpoint cannot listen, found before twistd daemonizes, in a
few words that say what to do.

twistd binds its listeners only after it has forked into the background, and
then reports a failure as a cut-off ``repr`` of the exception's last line;
in the foreground, as a traceback.  So the address is tried first, with a
socket of our own that is closed at once, while twistd is still in the
foreground and ``makeService`` can stop it with one line.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint


def _reason(code: int | None) -> str:
    if code == errno.EADDRINUSE:
        return (
            "address already in use (is another server running there? stop "
            "it, or choose another port with --listen)"
        )
    if code == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if code == errno.EADDRNOTAVAIL:
        return "no such address on this machine (check interface=)"
    return os.strerror(code) if code else "cannot listen"


def address_problem(endpoint: IStreamServerEndpoint) -> str | None:
    """
    Try the TCP address an endpoint would listen on.

    :returns: ``None`` if it is free, or not a fixed TCP port (port 0, a
        unix socket, an endpoint type we do not know), else why not.
    """
    port = getattr(endpoint, "_port", None)
    interface = getattr(endpoint, "_interface", None)
    if not isinstance(port, int) or not port or not isinstance(interface, str):
        return None
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As Twisted's own listening sockets do.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((interface, port))
        except OSError as e:
            return _reason(e.errno)
    return None


def listen_error(error: CannotListenError) -> str:
    """
    Say in a few words why Twisted could not listen.
    """
    cause = error.socketError
    code = getattr(cause, "errno", None)
    return _reason(code) if isinstance(code, int) else str(cause)


class Listener(StreamServerEndpointService):
    """
    A listener that listens at start-up and, if it cannot, stops the server
    with one line rather than a traceback.
    """

    def __init__(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        fail: Callable[[str], object],
    ) -> None:
        """
        :param description: the endpoint string, for the message.
        :param fail: stops the server with one line (raises ``SystemExit``).
        """
        super().__init__(endpoint, factory)  # type: ignore[no-untyped-call]
        self._description = description
        self._fail = fail
        # Fail at start-up, not later, if the address is taken.
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
        except CannotListenError as e:
            self._fail(f"cannot listen on {self._description}: {listen_error(e)}")
