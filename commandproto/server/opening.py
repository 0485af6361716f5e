"""
How a connection begins, with no I/O: a TLS connection waits for its
handshake (bounded by ``handshake_timeout``, and counted apart from
connections, so that a client that never finishes one takes no connection's
slot); then admission takes the client in, or the
:class:`~commandproto.server.closing.Closer` tells it why not.

These steps keep no state of their own: the connection's
:class:`~commandproto.server.phase.Phase` and its named timers say where it
is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from .phase import HANDSHAKING, OPEN
from .timers import HANDSHAKE, IDLE

if TYPE_CHECKING:
    from .connection import Connection

log = Logger()


def begin(connection: Connection, tls: bool) -> None:
    """
    The transport is connected: admit a plain connection now, a TLS one
    once its handshake is done.
    """
    if not tls:
        admit(connection)
        return
    connection.admission.begin_handshake(connection.member)
    timeout = connection.settings.handshake_timeout
    if timeout is not None:
        connection.timers.start(
            HANDSHAKE, timeout, lambda: _handshake_too_slow(connection)
        )


def handshake_done(connection: Connection) -> None:
    """
    The TLS handshake is done: now the client is a connection.
    """
    if connection.phase is not HANDSHAKING:
        return
    connection.timers.cancel(HANDSHAKE)
    connection.admission.end_handshake(connection.member)
    admit(connection)


def _handshake_too_slow(connection: Connection) -> None:
    connection.closer.drop_handshake(
        f"handshake took longer than {connection.settings.handshake_timeout}s",
        "handshake_timeout",
    )


def admit(connection: Connection) -> None:
    """
    Take the client in and start serving it, or tell it why not and close.
    """
    refusal = connection.admission.admit(connection.member, connection.peer_address)
    if refusal is not None:
        connection.closer.refuse(refusal)
        return
    if not connection.quiet:
        log.info(
            "[{conn}] connection from {peer}",
            peer=connection.peer,
            conn=connection.conn,
        )
    connection.phase = OPEN
    connection.io.serve()
    idle = connection.settings.idle_timeout
    if idle is not None:
        connection.timers.start(IDLE, idle, connection.closer.idle)
    # Catch up with what happened while the handshake went on: the client
    # may have ended its input already, or the transport resumed us.
    if connection.input_ended:
        connection.process()
    else:
        connection.update_reading()
