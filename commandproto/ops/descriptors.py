"""
The process's file descriptors, shared out among the kinds of connection it
accepts, so that no kind can starve the others.

Every descriptor the server holds is one of: a client connection (up to
``--max-connections``), a TLS handshake in progress (up to
``--max-handshakes``), a ``proxy:`` connection whose PROXY header has not
arrived yet, a metrics connection (at most
:data:`commandproto.ops.metrics.MAX_CONNECTIONS`), a refused client being
told why, or one of a few of the process's own (listening sockets, log
files, the event loop's).  At start-up the open-file limit is raised to fit
them all, as far as the hard limit allows (as Redis does for
``maxclients``).  When it cannot be, the reserves are cut down in proportion
to the limit rather than taken from it whole: a descriptor limit of 1024
with an ``ssl:`` listener still serves about 900 clients, with about 40
handshakes in progress at once and the whole refusal reserve.

:func:`plan` is the arithmetic, with no I/O; :func:`fit_file_limit` applies
it to this process.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass

from twisted.logger import Logger

log = Logger()

SPARE = 32
"""
Descriptors for the process's own use: listening sockets, log files, the
event loop's, a worker's pipes.
"""

REFUSALS = 64
"""
Descriptors kept beyond the connection limit, so that a client over it is
accepted, told why and closed rather than left unaccepted until the kernel
resets it (the server's ``REFUSAL_RESERVE``).
"""

RESERVE_SHARE = 24
"""
When the limit is short, a reserve for handshakes or PROXY headers takes at
most one part in this many of the descriptors left after the fixed ones: an
honest handshake or header takes milliseconds, so a few dozen in progress
serve a busy listener, and connections keep the rest.
"""

REFUSAL_SHARE = 8
"""
The refusal reserve stays whole (:data:`REFUSALS`) unless that is more than
one part in this many of what is left: a burst of clients over the limit is
exactly when it is needed.
"""


@dataclass(frozen=True)
class Budget:
    """
    How many descriptors each kind of connection may hold.

    :ivar file_limit: the soft open-file limit the budget is for (``None``:
        unlimited).
    :ivar connections: clients connected at once (``--max-connections`` or
        less).
    :ivar handshakes: TLS handshakes in progress at once (0 without a TLS
        listener).
    :ivar proxy_headers: ``proxy:`` connections awaiting their header at
        once (0 without a ``proxy:`` listener).
    :ivar metrics: metrics connections at once (0 without ``--metrics``).
    :ivar refusals: refused clients being told why.
    :ivar spare: descriptors left for the process's own use.
    """

    file_limit: int | None
    connections: int
    handshakes: int
    proxy_headers: int
    metrics: int
    refusals: int
    spare: int

    @property
    def total(self) -> int:
        """
        Every descriptor the budget gives out.
        """
        return (
            self.connections
            + self.handshakes
            + self.proxy_headers
            + self.metrics
            + self.refusals
            + self.spare
        )


def wanted(
    connections: int,
    *,
    handshakes: int = 0,
    proxy_headers: int = 0,
    metrics: int = 0,
) -> int:
    """
    The open-file limit at which every kind gets all it asks for.
    """
    return connections + handshakes + proxy_headers + metrics + REFUSALS + SPARE


def plan(
    file_limit: int | None,
    connections: int,
    *,
    handshakes: int = 0,
    proxy_headers: int = 0,
    metrics: int = 0,
) -> Budget:
    """
    Share out ``file_limit`` descriptors.

    :param file_limit: the soft open-file limit, or ``None`` for none.
    :param connections: clients wanted at once (``--max-connections``).
    :param handshakes: TLS handshakes wanted in progress at once (0 without
        a TLS listener).
    :param proxy_headers: PROXY headers wanted pending at once (0 without a
        ``proxy:`` listener).
    :param metrics: metrics connections (0 without ``--metrics``).
    :returns: the budget; every part is at most what was asked, each kind
        asked for gets at least 1, and the parts add up to at most
        ``file_limit`` whenever that leaves a connection at all.
    """
    asked = wanted(
        connections,
        handshakes=handshakes,
        proxy_headers=proxy_headers,
        metrics=metrics,
    )
    if file_limit is None or file_limit >= asked:
        return Budget(
            file_limit,
            connections,
            handshakes,
            proxy_headers,
            metrics,
            REFUSALS,
            SPARE,
        )
    # Short: the fixed reserves first, then each variable reserve a share of
    # what is left, and the connections the rest.
    left = max(file_limit - SPARE - metrics, 0)
    cap = max(left // RESERVE_SHARE, 1)

    def share(want: int) -> int:
        return min(want, cap) if want else 0

    budget = Budget(
        file_limit,
        connections=0,
        handshakes=share(handshakes),
        proxy_headers=share(proxy_headers),
        metrics=metrics,
        refusals=min(REFUSALS, max(left // REFUSAL_SHARE, 1)),
        spare=SPARE,
    )
    room = left - budget.handshakes - budget.proxy_headers - budget.refusals
    return Budget(
        file_limit,
        connections=min(connections, max(room, 1)),
        handshakes=budget.handshakes,
        proxy_headers=budget.proxy_headers,
        metrics=metrics,
        refusals=budget.refusals,
        spare=SPARE,
    )


def fit_file_limit(
    connections: int,
    *,
    handshakes: int = 0,
    proxy_headers: int = 0,
    metrics: int = 0,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> Budget:
    """
    Raise this process's open-file limit to fit every kind of connection,
    as far as the hard limit allows, and share out what it allows.

    When the limit is short of what was asked, one warning says so with the
    numbers served.

    :param getrlimit: :func:`resource.getrlimit`, or a stand-in for tests.
    :param setrlimit: :func:`resource.setrlimit`, or a stand-in for tests.
    :returns: the budget for the limit now in force.
    """
    asked = wanted(
        connections,
        handshakes=handshakes,
        proxy_headers=proxy_headers,
        metrics=metrics,
    )
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < asked:
        raised = asked if hard == resource.RLIM_INFINITY else min(asked, hard)
        try:
            setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    file_limit = None if soft == resource.RLIM_INFINITY else soft
    budget = plan(
        file_limit,
        connections,
        handshakes=handshakes,
        proxy_headers=proxy_headers,
        metrics=metrics,
    )
    if budget.connections < connections:
        log.warn(
            "open-file limit {limit} allows only about {allowed} of "
            "--max-connections {connections}: serving at most {allowed}, with "
            "{handshakes} TLS handshakes and {headers} PROXY headers pending "
            "at once (raise the limit: ulimit -n, or LimitNOFILE= under systemd)",
            limit=file_limit,
            allowed=budget.connections,
            connections=connections,
            handshakes=budget.handshakes,
            headers=budget.proxy_headers,
        )
    return budget
