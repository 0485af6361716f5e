"""
A small key-value store, in the spirit of Redis, served by commandproto.

:data:`commands` is the table that ``twistd -n commandserver --commands
kvstore`` serves (it is registered under that name in the
``commandproto.commands`` entry point group).  :func:`make_commands` builds
a table over a store of its own, which is what tests want: no state leaks
from one test to the next.

Every handler is a plain function of its arguments: commandproto fills them
from the request line and converts them by their annotations, and a
parameter annotated ``Session`` gets the connection (its per-connection
``state`` and its ``clock``).
"""

from __future__ import annotations

import re

# Handlers' annotations are read at registration (from __future__ makes them
# strings, resolved in this module), so every name used in them, Deferred
# included, is imported for real rather than under TYPE_CHECKING.
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from commandproto import CommandError, CommandTable, Rest, Session

__all__ = ["DATABASES", "MAX_WAIT", "Store", "commands", "make_commands"]

DATABASES = 16
"""
How many databases a store has; ``select`` takes ``0`` to ``DATABASES - 1``.
"""

MAX_WAIT = 3600.0
"""
The longest ``wait``, in seconds: a client may not hold a timer for longer.
"""

# session.state is shared by every table a server serves: prefix our keys.
_SELECTED = "kvstore.db"

# What ``incr`` counts as an integer: decimal digits, an optional minus, and
# no more than a signed 64-bit integer holds (as Redis does).  int() alone
# would also take " 7", "+7", "1_000" and non-ASCII digits.
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_INT64 = range(-(2**63), 2**63)


class Store:
    """
    The data: numbered databases, each a mapping of keys to values, shared by
    every connection of the server.

    :ivar databases: the databases, indexed by number.
    """

    def __init__(self, databases: int = DATABASES) -> None:
        """
        :param databases: how many databases to have.
        """
        self.databases: list[dict[str, str]] = [{} for _ in range(databases)]


def make_commands(store: Store | None = None) -> CommandTable:
    """
    Build the key-value commands over a store.

    :param store: the data to serve; a new, empty store when ``None``.
    :returns: a new table with ``set``, ``get``, ``del``, ``incr``, ``wait``,
        ``select`` and ``whoami``.
    """
    store = Store() if store is None else store
    # The store lives in this process: twistd --workers N would split it.
    commands = CommandTable(per_process_state=True)

    def selected(session: Session) -> dict[str, str]:
        """
        The database this connection has selected (``0`` until ``select``).
        """
        index: int = session.state.get(_SELECTED, 0)
        return store.databases[index]

    # Each handler takes the session first: commandproto fills parameters
    # by their annotations, so it may stand anywhere (after *keys it must be
    # keyword-only, as Python requires).

    @commands.command("set")
    def set_value(session: Session, key: str, value: Rest) -> str:
        """Store VALUE (the rest of the line) under KEY."""
        selected(session)[key] = value
        return "OK"

    @commands.command("get")
    def get_value(session: Session, key: str) -> str:
        """Answer the value stored under KEY."""
        try:
            return selected(session)[key]
        except KeyError:
            raise CommandError("no such key") from None

    @commands.command("del", usage="del KEY [KEY...]")
    def delete(session: Session, key: str, *keys: str) -> int:
        """Delete each KEY; answer how many there were."""
        database = selected(session)
        deleted = 0
        for name in (key, *keys):
            if database.pop(name, None) is not None:
                deleted += 1
        return deleted

    @commands.command("incr")
    def increment(session: Session, key: str) -> int:
        """Add 1 to the integer under KEY (0 if unset); answer the result."""
        database = selected(session)
        value = database.get(key, "0")
        if _INTEGER.fullmatch(value) is None or int(value) not in _INT64:
            raise CommandError("value is not an integer")
        result = int(value) + 1
        if result not in _INT64:
            raise CommandError("increment would overflow")
        database[key] = str(result)
        return result

    @commands.command("wait")
    def wait(session: Session, seconds: float) -> Deferred[str]:
        """Answer after SECONDS, holding back later requests."""
        # Written so that nan, which compares false with everything, fails.
        if not 0 <= seconds <= MAX_WAIT:
            raise CommandError(f"seconds must be from 0 to {MAX_WAIT:g}")
        return deferLater(session.clock, seconds, lambda: f"waited {seconds:g}")

    @commands.command("select")
    def select(session: Session, db: int) -> str:
        """Use database DB for the rest of this connection."""
        last = len(store.databases) - 1
        if not 0 <= db <= last:
            raise CommandError(f"DB must be from 0 to {last}")
        session.state[_SELECTED] = db
        return "OK"

    @commands.command("whoami")
    def whoami(session: Session) -> str:
        """Answer the client's address, as the server sees it."""
        return session.peer

    return commands


commands = make_commands()
"""
The table the server loads by name: one store for the life of the server.
"""
