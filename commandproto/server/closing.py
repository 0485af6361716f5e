"""
How a connection ends, with no I/O: refused at the door, dropped in its TLS
handshake, wound down (every line already read answered, then a last line
saying why), closed gracefully with a bounded linger, aborted when the
client stalls or to make room, and the line that logs the close with the
counts of the client's misbehaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from ..commands.table import CLOSING as CLOSING_DOWN
from ..commands.table import idle_timeout_reply, line_took_too_long
from ..wire.codec import encode_line
from .dispatch import INVALID, OVER_LONG
from .phase import CLOSED, CLOSING, DRAINING, OPEN
from .timers import HANDSHAKE, IDLE, LINE, LINGER

if TYPE_CHECKING:
    from .connection import Connection

log = Logger()

CLOSE_TIMEOUT = 10.0
"""
Seconds a closing connection may take to finish (the client reading the last
replies and closing its side) before it is aborted.
"""

REFUSAL_LINGER = 1.0
"""
Seconds a refused connection may take to close gracefully before it is
aborted.
"""

MISBEHAVIOUR_LINGER = 1.0
"""
Seconds a connection closed for misbehaving (the line or idle timeout) may
take to close gracefully before it is aborted: its slot is free within about
a second, however the client goes on sending.
"""

# The counted misbehaviour as the line that logs a close names it.
_COMPLAINTS = {OVER_LONG: "over-long lines", INVALID: "invalid UTF-8 lines"}


class Closer:
    """
    One connection's end.

    :ivar complaints: the client's misbehaviour, counted by kind (made on
        the first).
    :ivar last_words: what a wind-down sends last: ``Closing down``, or why.
    :ivar linger: how long the close after them may take: a client closed
        for misbehaving gets its slot back within a second.
    """

    # Made for each connection: no more than it needs.
    __slots__ = ("_connection", "complaints", "last_words", "linger")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.complaints: dict[str, int] | None = None
        self.last_words = CLOSING_DOWN
        self.linger = CLOSE_TIMEOUT

    def complain(self, event: str) -> bool:
        """
        Count a client's misbehaviour.  It is logged once per kind and
        connection; later ones are counted, and the counts go in the line
        that logs the close, so that one client cannot flood the log.

        :returns: whether this is the first of its kind, to be logged.
        """
        complaints = self.complaints
        if complaints is None:
            complaints = self.complaints = {}
        count = complaints.get(event, 0)
        complaints[event] = count + 1
        self._connection.stats.event(event)
        return not count

    # -- at the door

    def refuse(self, refusal: str) -> None:
        """
        Tell a client the server will not take it, and close.
        """
        connection = self._connection
        admission = connection.admission
        log.warn(
            "[{conn}] refused connection from {peer}: {reason}",
            peer=connection.peer,
            reason=refusal,
            conn=connection.conn,
        )
        connection.send(encode_line(refusal))
        if admission.may_linger(connection.member):
            # Close gracefully (a request the client already sent, left
            # unread, would make the close a reset that destroys the line),
            # but briefly: refusals come in floods, and each holds a
            # descriptor from the reserve.
            self.close(linger=REFUSAL_LINGER)
        else:
            connection.phase = CLOSING
            connection.io.close()

    def drop_handshake(self, why: str, event: str) -> None:
        """
        Give up on a TLS handshake: log why, count it as ``event``, and
        abort.
        """
        connection = self._connection
        connection.timers.cancel(HANDSHAKE)
        connection.admission.end_handshake(connection.member)
        connection.stats.event(event)
        log.warn(
            "[{conn}] closing TLS connection from {peer}: {why}",
            peer=connection.peer,
            why=why,
            conn=connection.conn,
        )
        connection.phase = CLOSING
        connection.io.abort()

    # -- winding down

    def wind_down(self, last_words: str, linger: float = CLOSE_TIMEOUT) -> None:
        """
        Stop reading; answer every line already read, then send
        ``last_words`` and close.
        """
        connection = self._connection
        phase = connection.phase
        if phase is not OPEN or connection.input_ended:
            # Closing already, or the client ended its input (it gets every
            # reply, then the close).
            return
        self.last_words = last_words
        self.linger = linger
        connection.phase = DRAINING
        connection.timers.cancel(LINE)
        connection.update_reading()
        if connection.timers.turn is None:
            connection.process()

    def finish_if_done(self) -> None:
        """
        Input ended or winding down: once every line is answered, close.
        """
        connection = self._connection
        if connection.intake.pending or connection.replies.queue:
            return
        phase = connection.phase
        if phase is DRAINING:
            connection.send(encode_line(self.last_words))
            self.close(linger=self.linger)
        elif phase is OPEN and connection.input_ended:
            self.close()

    def line_too_slow(self) -> None:
        """
        A line took longer than ``line_timeout`` to arrive: say so, and
        close.
        """
        connection = self._connection
        timeout = connection.settings.line_timeout
        assert timeout is not None
        connection.stats.event("line_timeout")
        log.warn(
            "[{conn}] line from {peer} took longer than {seconds}s: closing",
            peer=connection.peer,
            seconds=timeout,
            conn=connection.conn,
        )
        self.wind_down(line_took_too_long(timeout), linger=MISBEHAVIOUR_LINGER)

    def idle(self) -> None:
        """
        Nothing arrived for ``idle_timeout`` seconds: say why and close; but
        a client that does not read its replies meanwhile is stalled, and
        one waiting for a reply of ours is not idle.
        """
        connection = self._connection
        timeout = connection.settings.idle_timeout
        assert timeout is not None
        if connection.output_paused:
            self.stalled()
            return
        if connection.replies.queue:
            # Waiting for our own replies (bounded by the command timeout).
            connection.timers.start(IDLE, timeout, self.idle)
            return
        connection.stats.event("idle_timeout")
        log.info(
            "[{conn}] idle timeout ({seconds}s) for {peer}",
            seconds=timeout,
            peer=connection.peer,
            conn=connection.conn,
        )
        connection.send(encode_line(idle_timeout_reply(timeout)))
        # A client that ignores the line (and keeps sending) must not hold
        # its slot for long: a second to read it.
        self.close(linger=MISBEHAVIOUR_LINGER)

    # -- aborting

    def stalled(self) -> None:
        """
        The client reads nothing and a close cannot finish: abort.
        """
        connection = self._connection
        connection.stats.event("stalled")
        log.warn(
            "[{conn}] aborting stalled connection from {peer}",
            peer=connection.peer,
            conn=connection.conn,
        )
        connection.io.abort()

    def make_room(self) -> None:
        """
        The server is at its connection limit and this client has ended its
        input, waiting only for replies: give up on them for a new client.
        """
        connection = self._connection
        connection.stats.event("made_room")
        log.warn(
            "[{conn}] closing half-closed connection from {peer} that waits "
            "for a command: the server is full",
            peer=connection.peer,
            conn=connection.conn,
        )
        connection.io.abort()

    # -- closing

    def close(self, *, full: bool = False, linger: float = CLOSE_TIMEOUT) -> None:
        """
        Close gracefully: the replies already written go out, then our end of
        the connection.  Closing a socket with requests still unread makes the
        kernel send a reset, which can destroy replies the client has not read
        yet; so where the transport can, we close only our sending side, read
        and drop whatever else the client sends, and close for good when it
        closes too (or after ``linger`` seconds: even a full close can stall,
        when the client reads nothing).

        :param full: close for good now: the client can no longer receive.
        """
        connection = self._connection
        full = full or connection.input_ended
        phase = connection.phase
        if phase is CLOSED:
            return
        io = connection.io
        if phase is CLOSING:
            if full:
                io.close()
            return
        connection.phase = CLOSING
        timers = connection.timers
        timers.cancel_all()
        connection.drop_work()
        connection.output_paused = False
        connection.update_reading()
        timers.start(LINGER, linger, self.stalled)
        if full or not io.half_close():
            io.close()

    def lost(self, reason: str) -> None:
        """
        The connection is gone; if it had been admitted, log so, with the
        counts of the client's misbehaviour.
        """
        connection = self._connection
        connection.phase = CLOSED
        connection.timers.cancel_all()
        connection.drop_work()
        if not connection.admission.forget(connection.member):
            return
        if connection.quiet:
            log.debug(
                "[{conn}] connection from {peer} closed: {reason} (the proxy's own)",
                peer=connection.peer,
                reason=reason,
                conn=connection.conn,
            )
            return
        counts = ""
        if self.complaints:
            counts = (
                " ("
                + ", ".join(
                    f"{count} {_COMPLAINTS.get(kind, kind)}"
                    for kind, count in self.complaints.items()
                )
                + ")"
            )
        log.info(
            "[{conn}] connection from {peer} closed: {reason}{counts}",
            peer=connection.peer,
            reason=reason,
            counts=counts,
            conn=connection.conn,
        )
