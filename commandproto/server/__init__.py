"""
The command server, by role:

- :mod:`~commandproto.server.protocol`: the Twisted protocol, a
  ``LineReceiver`` that adapts the connection core to a transport and keeps
  the fast path;
- :mod:`~commandproto.server.connection`: one connection's life, with no I/O
  (its events, and the decisions they lead to);
- :mod:`~commandproto.server.phase`: where a connection is in its life;
- :mod:`~commandproto.server.intake`: a connection's input not yet
  answered, batches, and whether to read;
- :mod:`~commandproto.server.answering`: answering a connection's lines in
  order, a batch's replies in one write;
- :mod:`~commandproto.server.closing`: how a connection ends (refusal,
  wind-down, graceful close, abort, the closing log line);
- :mod:`~commandproto.server.dispatch`: from a line to its reply;
- :mod:`~commandproto.server.replies`: the ordered queue of replies;
- :mod:`~commandproto.server.timers`: a connection's named timers;
- :mod:`~commandproto.server.admission`: limits, handshakes, refusals, drain;
- :mod:`~commandproto.server.factory`: the factory that owns what connections
  share, the drain service;
- :mod:`~commandproto.server.stats`, :mod:`~commandproto.server.histogram`:
  the counters.
"""

from ..wire.addresses import address_key, describe_address
from .admission import REFUSAL_RESERVE, Admission
from .closing import CLOSE_TIMEOUT, REFUSAL_LINGER
from .connection import Connection
from .dispatch import Dispatcher
from .factory import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LINE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_UNANSWERED,
    DEFAULT_SEND_BUFFER,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SLOW_THRESHOLD,
    CommandServerFactory,
    DrainService,
    LoggingServerEndpoint,
)
from .intake import BATCH, HOLD_LIMIT
from .phase import Phase
from .protocol import CommandServerProtocol
from .settings import Settings

__all__ = [
    "BATCH",
    "CLOSE_TIMEOUT",
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_LINE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_ADDRESS",
    "DEFAULT_MAX_HANDSHAKES",
    "DEFAULT_MAX_UNANSWERED",
    "DEFAULT_SEND_BUFFER",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_SLOW_THRESHOLD",
    "HOLD_LIMIT",
    "REFUSAL_LINGER",
    "REFUSAL_RESERVE",
    "Admission",
    "CommandServerFactory",
    "CommandServerProtocol",
    "Connection",
    "Dispatcher",
    "DrainService",
    "LoggingServerEndpoint",
    "Phase",
    "Settings",
    "address_key",
    "describe_address",
]
