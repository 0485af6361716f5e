"""
Who may be a connection of the server: the connection limits, the count per
address, TLS handshakes in progress, refused clients still closing, and the
drain at shutdown, in one object that the factory owns.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..commands.table import CLOSING, too_many_connections, too_many_from_address
from ..wire.addresses import address_key
from .stats import ServerStats

log = Logger()

REFUSAL_RESERVE = 64
"""
Descriptors kept free beyond the connection limit, so that a client over it
can still be accepted, told why, and closed, rather than left unaccepted
until the kernel resets it.
"""


class Member(Protocol):
    """
    What admission asks of a connection.
    """

    def shut_down(self) -> None:
        """
        Answer what was read, then ``Closing down``, then close.
        """

    def drop_handshake(self, why: str, event: str) -> None:
        """
        Give up on the TLS handshake in progress: log why, count ``event``,
        abort.
        """

    def abort(self) -> None:
        """
        Close at once, unsent replies dropped.
        """

    def make_room(self) -> None:
        """
        Its client has ended its input and waits only for replies: give up
        on them (log why, count it, abort), to make room for a new client.
        """


class Admission:
    """
    The server-wide limits on connections.

    :ivar connections: the connections admitted and not yet gone.
    :ivar handshakes: TLS connections whose handshake is in progress, oldest
        first.
    :ivar refusing: refused connections still closing gracefully (at most
        half of :data:`REFUSAL_RESERVE`).
    """

    def __init__(
        self,
        stats: ServerStats,
        clock: IReactorTime,
        *,
        max_connections: int,
        max_connections_per_address: int | None,
        max_handshakes: int,
    ) -> None:
        self.stats = stats
        self.clock = clock
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        self.max_handshakes = max_handshakes
        self.connections: set[Member] = set()
        # In the order they started: a dict, so the oldest is first.
        self.handshakes: dict[Member, None] = {}
        self.refusing: set[Member] = set()
        # Admitted connections whose client has ended its input while
        # commands of theirs still run, oldest first.
        self.ended: dict[Member, None] = {}
        self._per_address: dict[str, int] = {}
        self._keys: dict[Member, str] = {}
        self.draining = False
        self._drained: list[Deferred[None]] = []

    # -- TLS handshakes

    def begin_handshake(self, member: Member) -> None:
        """
        A TLS connection starts its handshake.

        Handshakes in progress have a bound of their own, apart from the
        connection limit, so that clients that never finish one cannot lock
        out those that do; past it, the oldest handshake is dropped: an
        honest client's handshake takes milliseconds, and the one that has
        waited longest is most likely one that never will finish.
        """
        if len(self.handshakes) >= self.max_handshakes:
            oldest = next(iter(self.handshakes))
            oldest.drop_handshake(
                "too many handshakes in progress", "handshake_dropped"
            )
        self.handshakes[member] = None

    def end_handshake(self, member: Member) -> None:
        """
        A TLS handshake finished, failed or timed out.
        """
        self.handshakes.pop(member, None)

    # -- connections

    def admit(self, member: Member, peer: IAddress | None) -> str | None:
        """
        Take a new connection into account, if the limits allow.

        :returns: ``None`` if admitted, else the line to send before closing.
        """
        stats = self.stats
        if self.draining:
            stats.refuse("shutting_down")
            return CLOSING
        if len(self.connections) >= self.max_connections and self.ended:
            # A client that sent a slow command and closed holds a slot, and
            # maybe no socket of its own: at the limit, the oldest such makes
            # room (as the oldest TLS handshake does).
            oldest = next(iter(self.ended))
            self.forget(oldest)
            oldest.make_room()
        if len(self.connections) >= self.max_connections:
            stats.refuse("max_connections")
            return too_many_connections(self.max_connections)
        limit = self.max_connections_per_address
        if limit is not None:
            key = address_key(peer)
            if key is not None:
                count = self._per_address.get(key, 0)
                if count >= limit:
                    stats.refuse("max_connections_per_ip")
                    return too_many_from_address(limit)
                self._per_address[key] = count + 1
                self._keys[member] = key
        self.connections.add(member)
        stats.accepted += 1
        stats.open += 1
        return None

    def input_ended(self, member: Member) -> None:
        """
        An admitted connection's client has ended its input while commands
        of its still run: at the connection limit it may make room.
        """
        if member in self.connections:
            self.ended[member] = None

    def may_linger(self, member: Member) -> bool:
        """
        Whether a refused connection may close gracefully (taking a
        descriptor from the reserve for a moment), rather than at once; if
        it may, it is counted among those closing so until it is gone.
        """
        if len(self.refusing) >= REFUSAL_RESERVE // 2:
            return False
        self.refusing.add(member)
        return True

    def forget(self, member: Member) -> bool:
        """
        A connection is gone: its slot, and its address's, are free.

        :returns: whether it had been admitted.
        """
        self.refusing.discard(member)
        self.handshakes.pop(member, None)
        self.ended.pop(member, None)
        if member not in self.connections:
            return False
        self.connections.remove(member)
        self.stats.open -= 1
        key = self._keys.pop(member, None)
        if key is not None:
            count = self._per_address[key] - 1
            if count:
                self._per_address[key] = count
            else:
                del self._per_address[key]
        if not self.connections:
            drained, self._drained = self._drained, []
            for waiter in drained:
                waiter.callback(None)
        return True

    # -- shutdown

    def drain(self, timeout: float) -> Deferred[None]:
        """
        Close every connection gracefully: each gets the replies already due,
        then ``Closing down``.  Connections still open after ``timeout``
        seconds are aborted.  New connections are refused from now on.

        :returns: a ``Deferred`` that fires once every connection is gone.
        """
        self.draining = True
        if not self.connections:
            return succeed(None)
        log.info(
            "shutting down: closing {count} connection(s)", count=len(self.connections)
        )
        done: Deferred[None] = Deferred()
        self._drained.append(done)
        for member in list(self.connections):
            member.shut_down()
        if self.connections:
            deadline = self.clock.callLater(timeout, self._abort_all, timeout)
            done.addBoth(_cancel_call, deadline)
        return done

    def _abort_all(self, timeout: float) -> None:
        log.info(
            "shutdown timeout ({seconds}s): aborting {count} connection(s)",
            seconds=timeout,
            count=len(self.connections),
        )
        self.abort_all()

    def abort_all(self) -> None:
        """
        Abort every connection still open, TLS handshakes included.
        """
        for member in [*self.connections, *self.handshakes]:
            member.abort()


def _cancel_call(result: object, call: IDelayedCall) -> object:
    if call.active():
        call.cancel()
    return result
