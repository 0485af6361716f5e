"""
What the daemon does on the signals that would otherwise end it without its
drain: ``SIGHUP`` reopens the log file (for logrotate), ``SIGUSR1`` and
``SIGUSR2`` are logged and ignored (twistd itself takes ``SIGUSR1`` to rotate
a log file it writes), and a second ``SIGTERM`` or ``SIGINT`` during the
drain aborts the connections still open at once.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.logger import Logger, globalLogPublisher
from twisted.python.logfile import BaseLogFile, LogFile

log = Logger()

SignalHandler = Callable[[int, FrameType | None], Any]


class SignalReactor(Protocol):
    """
    What the service needs of the reactor.
    """

    def callFromThread(self, f: Callable[..., object], *args: object) -> None: ...

    def callWhenRunning(self, f: Callable[..., object], *args: object) -> object: ...


def _log_files(observer: object, depth: int = 0) -> Iterator[BaseLogFile]:
    """
    The log files that observers write to, wherever twistd's observers keep
    them (a file observer's ``_outFile``, inside filters and publishers).
    """
    if depth > 4:
        return
    out = getattr(observer, "_outFile", None)
    if isinstance(out, BaseLogFile):
        yield out
    for inner in getattr(observer, "_observers", ()):
        yield from _log_files(inner, depth + 1)
    inner = getattr(observer, "_observer", None)
    if inner is not None:
        yield from _log_files(inner, depth + 1)


def reopen_log_files() -> int:
    """
    Reopen every log file the global log publisher writes to, so that one
    moved away by logrotate is written anew.

    :returns: how many were reopened.
    """
    files = list(_log_files(globalLogPublisher))
    for log_file in files:
        log_file.reopen()
    return len(files)


class SignalService(Service):
    """
    Installs the daemon's signal handlers while it runs, and the second
    stop signal's handler once the drain begins.

    :param abort: aborts every connection still open (the drain's last
        resort), called on a second ``SIGTERM`` or ``SIGINT``.
    """

    def __init__(self, reactor: SignalReactor, abort: Callable[[], None]) -> None:
        self._reactor = reactor
        self._abort = abort
        self._previous: dict[int, Any] = {}
        self._stopping = False

    def _install(self, signum: int, handler: SignalHandler) -> None:
        self._previous.setdefault(signum, signal.getsignal(signum))
        signal.signal(signum, handler)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        self._install(signal.SIGHUP, self._on_hup)
        self._install(signal.SIGUSR2, self._on_ignored)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            # Not logging to a file (twistd rotates one on SIGUSR1).
            self._install(signal.SIGUSR1, self._on_ignored)
        # The reactor's own handlers stop it on the first SIGTERM or SIGINT
        # (and twistd exits with that signal's status); a second one, even
        # before the first is handled, must not stop it again.  They are
        # installed as the reactor starts, so ours go in after them.
        self._reactor.callWhenRunning(self._install_stop_handlers)

    def _install_stop_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            if callable(signal.getsignal(signum)):
                self._install(signum, self._on_stop)
            # Otherwise the signal is ignored (``nohup``, a shell's
            # background job: the reactor then leaves SIGINT alone) or takes
            # its default action: so it stays.  Taking it over would make it
            # count as the first stop signal while stopping nothing, and the
            # real one (SIGTERM) then as a second.

    def stopService(self) -> None:
        # The drain begins: a stop signal from now on ends it at once.
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            self._reactor.callFromThread(self._second_stop, signal.Signals(signum).name)
            return
        self._stopping = True
        first = self._previous.get(signum)
        if callable(first):
            first(signum, frame)

    def restore(self) -> None:
        """
        Put back the handlers that were there before.
        """
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self._reopen)

    def _reopen(self) -> None:
        count = reopen_log_files()
        if count:
            log.info("SIGHUP: reopened the log file")
        else:
            log.info("SIGHUP: not logging to a file, nothing to reopen")

    def _on_ignored(self, signum: int, frame: FrameType | None) -> None:
        self._reactor.callFromThread(self._ignored, signal.Signals(signum).name)

    def _ignored(self, name: str) -> None:
        if name == "SIGUSR1":
            # Our own log file (--log-format json with twistd --logfile):
            # twistd rotates only the ones it opens itself.
            files = [
                f for f in _log_files(globalLogPublisher) if isinstance(f, LogFile)
            ]
            for log_file in files:
                log_file.rotate()
            if files:
                log.info("SIGUSR1: rotated the log file")
                return
        log.info("{signal} ignored", signal=name)

    def _on_second_stop(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self._reactor.callFromThread(self._second_stop, name)

    def _second_stop(self, name: str) -> None:
        log.info("{signal} during shutdown: aborting the connections", signal=name)
        self._abort()
