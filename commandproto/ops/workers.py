"""
``--workers N``: a supervising process and N worker processes that share
the listeners, balanced by the kernel (as nginx and gunicorn do).

The supervisor holds one socket per ``--listen`` and passes it to every
worker it starts:

  - for a TCP listener (``tcp:``, ``tcp6:``, and ``ssl:``, ``mtls:``,
    ``proxy:`` over them) it is bound, not listening, with ``SO_REUSEPORT``:
    it holds the address (the port the OS picked for port 0 too), and each
    worker binds a listening socket of its own to the same address with
    ``SO_REUSEPORT``, so that the kernel spreads new connections over the
    workers evenly;
  - for a unix-socket listener (or where ``SO_REUSEPORT`` is missing) it is
    one listening socket that every worker accepts from.

The supervisor restarts a worker that dies, after a back-off; on SIGTERM or
SIGINT it tells each worker to stop (each drains as one server does) and
exits once all have.  A worker stops (draining) when its supervisor dies.

Workers run the same ``twistd -n commandserver`` command line; the
environment tells them they are workers and which descriptors hold the
listeners (as systemd's ``LISTEN_FDS`` does).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    UNIXServerEndpoint,
    _TCPServerEndpoint,
)
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ReactorNotRunning
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProcessTransport,
    IProtocolFactory,
    IReactorProcess,
    IReactorSocket,
    IReactorTCP,
    IReadDescriptor,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..listeners.proxy import ProxyServerEndpoint
from ..ops.signals import SignalReactor, SignalService

log = Logger()

WORKER_ENVIRONMENT = "COMMANDPROTO_WORKER"
"""``INDEX:COUNT:SUPERVISOR_PID`` in a worker's environment."""
FDS_ENVIRONMENT = "COMMANDPROTO_LISTEN_FDS"
"""The descriptor of each ``--listen``, in order, comma-separated."""

TWISTD = (
    "import sys; from twisted.scripts.twistd import run; "
    "sys.argv[0] = 'twistd'; sys.exit(run())"
)
RESTART_DELAY = 0.5
"""Seconds before restarting a worker that died; doubled for each death in
a row, up to :data:`MAX_RESTART_DELAY`."""
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 10.0
"""A worker that ran this long before dying is restarted after
:data:`RESTART_DELAY` again."""
KILL_GRACE = 10.0
"""Seconds past the workers' own shutdown timeout before they are killed."""


def parse_workers(value: str) -> int:
    """
    ``--workers``: a number of at least 1, or ``auto`` for one per CPU.
    """
    if value == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"--workers takes a number or 'auto', not {value!r}") from None
    if number < 1:
        raise ValueError("--workers must be at least 1")
    return number


parse_workers.coerceDoc = "A number, or 'auto' (one per CPU)."  # type: ignore[attr-defined]


@dataclass(frozen=True)
class WorkerIdentity:
    """
    Who this worker is, from its environment.

    :ivar index: 1 to ``count``.
    :ivar count: how many workers the supervisor runs.
    :ivar supervisor: the supervisor's process id.
    :ivar fds: the descriptor of each ``--listen``, in order.
    """

    index: int
    count: int
    supervisor: int
    fds: tuple[int, ...]


def worker_identity() -> WorkerIdentity | None:
    """
    This process's identity as a worker, or ``None`` if it is not one.
    """
    value = os.environ.get(WORKER_ENVIRONMENT)
    if not value:
        return None
    index, count, supervisor = (int(part) for part in value.split(":"))
    fds = tuple(int(fd) for fd in os.environ.get(FDS_ENVIRONMENT, "").split(",") if fd)
    return WorkerIdentity(index, count, supervisor, fds)


def share(total: int, workers: int) -> int:
    """
    One worker's share of a server-wide limit: the shares never add up to
    more than ``total``.

    :raises ValueError: if ``total`` is less than ``workers``: some worker's
        share would be nothing.
    """
    if total < workers:
        raise ValueError(f"{total} cannot be shared among {workers} workers")
    return total // workers


# -- the endpoints under a listener


def _innermost(endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """
    The TCP or unix endpoint under any ``proxy:`` and TLS.
    """
    if isinstance(endpoint, ProxyServerEndpoint):
        return _innermost(endpoint.inner)
    if isinstance(endpoint, SSL4ServerEndpoint):
        from ..listeners.halfclose import from_ssl_endpoint

        return _innermost(from_ssl_endpoint(endpoint))
    tcp = getattr(endpoint, "_tcp", None)
    if tcp is not None:
        # Our TLS endpoint (commandproto.listeners.halfclose), ssl: and mtls:.
        return cast(IStreamServerEndpoint, tcp)
    return endpoint


def _replace_innermost(
    endpoint: IStreamServerEndpoint, new: IStreamServerEndpoint
) -> IStreamServerEndpoint:
    if isinstance(endpoint, ProxyServerEndpoint):
        endpoint.inner = _replace_innermost(endpoint.inner, new)
        return endpoint
    if isinstance(endpoint, SSL4ServerEndpoint):
        from ..listeners.halfclose import from_ssl_endpoint

        endpoint = from_ssl_endpoint(endpoint)
    if getattr(endpoint, "_tcp", None) is not None:
        endpoint._tcp = new  # type: ignore[attr-defined]
        return endpoint
    return new


def listening_socket(endpoint: IStreamServerEndpoint) -> socket.socket:
    """
    The supervisor's socket for one listener: bound with ``SO_REUSEPORT``
    (not listening) for TCP, bound and listening for unix sockets.

    :raises ValueError: for a kind of listener workers cannot share.
    :raises OSError: if the address cannot be bound.
    """
    inner = _innermost(endpoint)
    if isinstance(inner, _TCPServerEndpoint):
        interface = inner._interface
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((interface, inner._port))
        else:
            sock.bind((interface, inner._port))
            sock.listen(inner._backlog)
        sock.set_inheritable(True)
        return sock
    if isinstance(inner, UNIXServerEndpoint):
        address = inner._address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
        except FileNotFoundError:
            pass
        except ConnectionRefusedError:
            # A stale socket file from an earlier run.
            os.unlink(address)
        else:
            sock.close()
            raise OSError(f"{address}: a server is already listening there")
        sock.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address)
        os.chmod(address, inner._mode)
        sock.listen(inner._backlog)
        sock.set_inheritable(True)
        return sock
    raise ValueError(
        "--workers shares tcp:, tcp6:, unix:, ssl:, mtls: and proxy: listeners only"
    )


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """
    A worker's TCP listener: its own socket with ``SO_REUSEPORT`` on the
    address the supervisor holds.
    """

    def __init__(self, reactor: IReactorTCP, address: Any, backlog: int) -> None:
        self._reactor = reactor
        self._address = address
        self._backlog = backlog

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        from twisted.internet.defer import execute

        return execute(self._listen, factory)

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        from twisted.internet import tcp

        host, port = self._address[:2]
        binding = tcp.makeBinding(host, port, reuseAddress=True, reusePort=True)
        return self._reactor.listenTCP(
            binding,  # type: ignore[arg-type]
            factory,  # type: ignore[arg-type]
            self._backlog,
            host,
        )


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """
    A worker's share of a listening socket the supervisor made.
    """

    def __init__(self, reactor: IReactorSocket, fd: int, family: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._stopped = False
        self._family = family

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        from twisted.internet.defer import execute

        def adopt() -> IListeningPort:
            port = self._reactor.adoptStreamPort(
                self._fd,
                socket.AddressFamily(self._family),
                factory,  # type: ignore[arg-type]
            )
            # The port has a copy of its own.
            os.close(self._fd)
            return port

        return execute(adopt)


def worker_endpoint(
    reactor: Any, endpoint: IStreamServerEndpoint, fd: int
) -> IStreamServerEndpoint:
    """
    A worker's listener for ``endpoint``, on the supervisor's socket ``fd``.
    """
    sock = socket.socket(fileno=fd)
    try:
        family = sock.family
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        address = sock.getsockname()
        backlog = getattr(_innermost(endpoint), "_backlog", 50)
    finally:
        sock.detach()
    if listening:
        os.set_blocking(fd, False)
        return _replace_innermost(endpoint, AdoptedEndpoint(reactor, fd, family))
    os.close(fd)
    return _replace_innermost(endpoint, ReusePortEndpoint(reactor, address, backlog))


@implementer(IReadDescriptor)
class SupervisorWatch:
    """
    A worker's end of the pipe from its supervisor (its standard input): the
    supervisor never writes to it, and closes it to stop the worker; when the
    supervisor dies, even by SIGKILL, the kernel closes it.  Either way the
    worker stops as on SIGTERM, draining.

    A pipe rather than a forwarded SIGTERM: where the supervisor's SIGTERM
    came to every process at once (systemd stops a whole control group, a
    terminal's Ctrl-C a whole process group), a second one would abort the
    workers' drain.
    """

    def __init__(self, reactor: Any, fd: int = 0) -> None:
        self._reactor = reactor
        self._fd = fd
        self._stopped = False

    def start(self) -> None:
        os.set_blocking(self._fd, False)
        self._reactor.addReader(self)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "supervisor"

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return
        self._reactor.removeReader(self)
        self._stop()

    def connectionLost(self, reason: Failure) -> None:
        # The reactor saw the pipe's end (its reader already removed).
        self._stop()

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        log.info("the supervisor is stopping or gone: stopping")
        # Stopping already, if a signal came too.
        with contextlib.suppress(ReactorNotRunning):
            self._reactor.stop()


def become_worker(reactor: Any, identity: WorkerIdentity) -> None:
    """
    Start this worker's watch on its supervisor, and say who it is.
    """
    SupervisorWatch(reactor).start()
    log.info(
        "worker {index} of {count} (pid {pid})",
        index=identity.index,
        count=identity.count,
        pid=os.getpid(),
    )


# -- the supervisor


class _Worker(ProcessProtocol):
    """
    One worker process, as the supervisor sees it.
    """

    def __init__(self, supervisor: SupervisorService, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = 0.0
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)
        self.ended.callback(None)


class SupervisorService(Service):
    """
    Starts the workers, restarts those that die, and stops them all (each
    draining) when it stops.

    :param arguments: the ``commandserver`` command line the workers run.
    :param sockets: the listeners' sockets, in ``--listen`` order.
    :param shutdown_timeout: the workers' ``--shutdown-timeout``.
    """

    def __init__(
        self,
        reactor: Any,
        count: int,
        arguments: Sequence[str],
        sockets: Sequence[socket.socket],
        shutdown_timeout: float,
    ) -> None:
        self._reactor = reactor
        self.count = count
        self.arguments = list(arguments)
        self.sockets = list(sockets)
        self.shutdown_timeout = shutdown_timeout
        self.workers: dict[int, _Worker] = {}
        self._processes: dict[int, IProcessTransport] = {}
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, IDelayedCall] = {}
        self._stopping = False

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping:
            return
        fds = [sock.fileno() for sock in self.sockets]
        environment = {
            **os.environ,
            WORKER_ENVIRONMENT: f"{index}:{self.count}:{os.getpid()}",
            FDS_ENVIRONMENT: ",".join(str(fd) for fd in fds),
        }
        worker = _Worker(self, index)
        worker.started = self._reactor.seconds()
        # The worker's standard input is a pipe that only its end tells it
        # anything: see SupervisorWatch.
        child_fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        child_fds.update({fd: fd for fd in fds})
        process = cast(IReactorProcess, self._reactor).spawnProcess(
            worker,
            sys.executable,
            [
                sys.executable,
                "-c",
                TWISTD,
                "-n",
                "--pidfile=",
                "commandserver",
                *self.arguments,
            ],
            env=environment,
            childFDs=child_fds,
        )
        worker.pid = process.pid
        self.workers[index] = worker
        self._processes[index] = process
        log.info(
            "started worker {index} of {count} (pid {pid})",
            index=index,
            count=self.count,
            pid=process.pid,
        )

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        index = worker.index
        self._processes.pop(index, None)
        self.workers.pop(index, None)
        pid = worker.pid
        how = (
            "exited cleanly"
            if reason.check(ProcessDone)
            else reason.getErrorMessage().rstrip(".")
        )
        if self._stopping:
            log.info(
                "worker {index} (pid {pid}) stopped: {how}",
                index=index,
                pid=pid,
                how=how,
            )
            return
        lived = self._reactor.seconds() - worker.started
        failures = 0 if lived >= STABLE_AFTER else self._failures.get(index, 0) + 1
        self._failures[index] = failures
        delay = min(RESTART_DELAY * 2 ** max(failures - 1, 0), MAX_RESTART_DELAY)
        log.warn(
            "worker {index} (pid {pid}) died: {how}; restarting it in {delay:g}s",
            index=index,
            pid=pid,
            how=how,
            delay=delay,
        )
        self._restarts[index] = self._reactor.callLater(delay, self._spawn, index)

    def signal_all(self, signum: int) -> None:
        """
        Send every worker a signal.
        """
        for process in list(self._processes.values()):
            # One already gone has its processEnded on its way.
            with contextlib.suppress(ProcessExitedAlready):
                process.signalProcess(signum)

    def stopService(self) -> Deferred[None]:
        """
        Stop every worker (each drains), and fire once all have exited; kill
        those still running well past their shutdown timeout.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if not self.workers:
            return succeed(None)
        log.info("stopping {count} worker(s)", count=len(self.workers))
        waiting = [worker.ended for worker in self.workers.values()]
        for process in self._processes.values():
            process.closeStdin()
        kill = self._reactor.callLater(
            self.shutdown_timeout + KILL_GRACE, self.signal_all, signal.SIGKILL
        )

        def done(_: object) -> None:
            if kill.active():
                kill.cancel()
            for sock in self.sockets:
                sock.close()

        return DeferredList(waiting).addCallback(done)


def supervisor_service(
    reactor: Any,
    endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
    count: int,
    arguments: Sequence[str],
    shutdown_timeout: float,
) -> IService:
    """
    The supervisor of ``count`` workers that serve these listeners, with its
    signal handling: a second SIGTERM or SIGINT aborts the workers'
    connections, as it does one server's.

    :param endpoints: each ``--listen`` and its endpoint.
    :param arguments: the ``commandserver`` command line the workers run.
    :raises ValueError: with a one-line message, if a listener cannot be
        shared or its address cannot be bound.
    """
    sockets = []
    for description, endpoint in endpoints:
        try:
            sockets.append(listening_socket(endpoint))
        except (ValueError, OSError) as e:
            for sock in sockets:
                sock.close()
            raise ValueError(f"--listen {description}: {e}") from None
    service = MultiService()
    supervisor = SupervisorService(reactor, count, arguments, sockets, shutdown_timeout)
    supervisor.setServiceParent(service)  # type: ignore[no-untyped-call]
    SignalService(
        cast(SignalReactor, reactor),
        lambda: supervisor.signal_all(signal.SIGTERM),
    ).setServiceParent(service)  # type: ignore[no-untyped-call]
    return service
