"""
Where a connection is in its life: one explicit state, with the phases also
as module constants for the hot path.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    """
    Where a connection is in its life.  Every event is handled according to
    the phase, in one place each.  Whether the client still sends is apart
    from it (:attr:`~commandproto.server.connection.Connection.input_ended`):
    a client may end its input in any phase.
    """

    HANDSHAKING = "handshaking"
    """A TLS connection whose handshake is in progress: not yet admitted."""
    OPEN = "open"
    """Admitted: reading requests and answering them (once the client has
    ended its input: answering what it sent, then closing)."""
    DRAINING = "draining"
    """Winding down (a shutdown, a line timeout): answering what was
    already read, then a last line (``Closing down``, or why), then
    closing."""
    FINISHING = "finishing"
    """A reply that closes the connection (``quit``) waits behind others:
    nothing more is started or read; once it is sent, closing."""
    CLOSING = "closing"
    """Our sending side is closed (or closing); reading and dropping input
    until the client closes too."""
    CLOSED = "closed"
    """The connection is gone."""


# The phases as module constants: an enum member's lookup through its class
# costs about 100 ns in Python 3.11, and every read checks the phase.
HANDSHAKING, OPEN, DRAINING, FINISHING, CLOSING, CLOSED = Phase
