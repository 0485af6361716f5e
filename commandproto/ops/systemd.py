"""
systemd's readiness protocol (``sd_notify``): ``READY=1`` once the server
listens, ``STOPPING=1`` when its drain begins, and ``WATCHDOG=1`` pings when
the unit sets ``WatchdogSec=``.  Nothing happens when ``NOTIFY_SOCKET`` is
not set.

The protocol is one datagram per message on the unix socket that
``NOTIFY_SOCKET`` names (``@`` for the abstract namespace); a dozen lines
here need no library.  Socket activation needs nothing of ours: Twisted's
``systemd:`` endpoint adopts the sockets systemd passes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def notify_address(environ: Mapping[str, str]) -> str | None:
    """
    The socket address ``NOTIFY_SOCKET`` names, or ``None`` if it is unset.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        # The abstract namespace: a leading NUL byte instead of the @.
        return "\0" + address[1:]
    return address


def send_notification(address: str, message: str) -> None:
    """
    Send one message to systemd's notification socket.

    :raises OSError: if it cannot be sent.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode("utf-8"))


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """
    How often to ping systemd's watchdog: half of ``WATCHDOG_USEC``, as
    ``sd_watchdog_enabled`` advises; ``None`` if the watchdog is off or is
    meant for another process (``WATCHDOG_PID``).
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID")
    if usec <= 0 or (watchdog_pid and watchdog_pid != str(pid)):
        return None
    return usec / 2_000_000


class NotifyService(Service):
    """
    Tells systemd how the server is doing.  Add it last to the server's
    services: it starts after the listeners, and stops (the drain begins)
    before them.

    :param reactor: the reactor, for ``callWhenRunning`` and the watchdog's
        timer.
    :param environ: the process environment.
    :param send: sends one message to an address (tests replace it).
    """

    def __init__(
        self,
        reactor: IReactorCore,
        environ: Mapping[str, str] | None = None,
        send: Callable[[str, str], None] = send_notification,
    ) -> None:
        self._reactor = reactor
        self._environ = os.environ if environ is None else environ
        self._send = send
        self._address = notify_address(self._environ)
        self._watchdog: LoopingCall | None = None
        self._failed = False

    def notify(self, message: str) -> None:
        """
        Send ``message`` if systemd listens; a failure is logged once.
        """
        if self._address is None:
            return
        try:
            self._send(self._address, message)
        except OSError as e:
            if not self._failed:
                self._failed = True
                log.warn(
                    "cannot notify systemd at NOTIFY_SOCKET={socket}: {reason}",
                    socket=self._environ.get("NOTIFY_SOCKET"),
                    reason=e.strerror or str(e),
                )

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        if self._address is None:
            return
        # Once every service has started, every listener listens.
        self._reactor.callWhenRunning(self._ready)

    def _ready(self) -> None:
        self.notify("READY=1")
        interval = watchdog_interval(self._environ, os.getpid())
        if interval is not None and self._watchdog is None:
            self._watchdog = LoopingCall(self.notify, "WATCHDOG=1")
            self._watchdog.clock = self._reactor  # type: ignore[assignment]
            # The pings go on through the drain, until the process exits.
            self._watchdog.start(interval, now=True)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.notify("STOPPING=1")
