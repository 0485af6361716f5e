"""
A third-party command set for the set/get benchmark: a key-value store
outside the package, written with the decorator API as ``examples/kvstore``
is, served from the directory it is started in::

    cd benchmarks && twistd -n commandserver --commands kvbench:commands

  - ``set KEY VALUE`` stores VALUE (a :class:`~commandproto.Rest`: the rest
    of the line) and answers ``OK``;
  - ``get KEY`` answers the value, or ``Error: no such key``;
  - ``aget KEY`` is ``get`` as an ``async def`` that returns without
    awaiting anything;
  - ``dget KEY`` is ``get`` as an ``async def`` that awaits a Deferred the
    server's clock fires on its next turn (``callLater(0, ...)``): a
    command that really waits.

The store starts with :data:`KEYS` set to :data:`VALUES`, so that runs of
gets alone find their keys; ``benchmarks/side_by_side.py`` sends the same
keys and values to redis-server (``SET``/``GET``), built from the same two
lists.
"""

from __future__ import annotations

# Handlers' annotations are read at registration (from __future__ makes them
# strings, resolved in this module): Session is imported for real.
from twisted.internet.defer import Deferred

from commandproto import CommandError, CommandTable, Rest, Session

__all__ = ["KEYS", "VALUES", "commands", "make_commands"]

KEYS = [f"key:{n:02d}" for n in range(64)]
"""
The 64 keys every set/get run uses.
"""

VALUES = [f"value-{n:02d}" for n in range(64)]
"""
What each key holds: no spaces, so that redis-server's inline ``SET`` takes
it as one argument too.
"""


def make_commands(store: dict[str, str] | None = None) -> CommandTable:
    """
    Build the set/get commands over a store.

    :param store: the data; a new one holding :data:`KEYS` when ``None``.
    :returns: a new table with ``set``, ``get``, ``aget`` and ``dget``.
    """
    data = dict(zip(KEYS, VALUES, strict=True)) if store is None else store
    commands = CommandTable()

    @commands.command("set")
    def set_value(key: str, value: Rest) -> str:
        """Store VALUE (the rest of the line) under KEY."""
        data[key] = value
        return "OK"

    @commands.command("get")
    def get_value(key: str) -> str:
        """Answer the value stored under KEY."""
        try:
            return data[key]
        except KeyError:
            raise CommandError("no such key") from None

    @commands.command("aget")
    async def get_at_once(key: str) -> str:
        """Answer the value stored under KEY, from a coroutine."""
        try:
            return data[key]
        except KeyError:
            raise CommandError("no such key") from None

    @commands.command("dget")
    async def get_later(session: Session, key: str) -> str:
        """Answer the value stored under KEY on the server's next turn."""
        later: Deferred[None] = Deferred()
        session.clock.callLater(0, later.callback, None)
        await later
        try:
            return data[key]
        except KeyError:
            raise CommandError("no such key") from None

    return commands


commands = make_commands()
"""
The table ``--commands kvbench:commands`` serves: one store for the life of
the server.
"""
