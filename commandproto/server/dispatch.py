"""
From a request line to its reply: decode, find the command, run it, encode
the reply, count it, log it if slow.  No I/O: what it needs of the
connection is :class:`Caller`.
"""

from __future__ import annotations

from contextvars import copy_context
from time import perf_counter
from types import CoroutineType
from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..commands.coroutines import give_back_runner, go_on, new_runner, take_runner
from ..commands.table import (
    ERROR_PREFIX,
    INVALID_UTF8,
    MISS,
    UNKNOWN_COMMAND,
    Command,
    CommandTable,
    Reply,
    Session,
    line_too_long,
)
from ..wire.codec import CRLF, OVERLONG, Frame, encode_line
from .replies import Pending
from .stats import CANCELLED, OK, UNKNOWN, UNKNOWN_LABEL, ServerStats, outcome_of

log = Logger()

_UNKNOWN = encode_line(UNKNOWN_COMMAND)
_INVALID_UTF8 = encode_line(INVALID_UTF8)

#: The counters' names for what a client does wrong.
OVER_LONG = "over_long_line"
INVALID = "invalid_utf8"


class Caller(Protocol):
    """
    What the dispatcher needs of the connection a line came on.
    """

    conn: str
    peer: str

    def session(self) -> Session:
        """
        The connection's session, made on first use.
        """

    def complain(self, event: str) -> bool:
        """
        Count a client's misbehaviour; whether it is the first of its kind.
        """


class Dispatcher:
    """
    Runs request lines against a command table, for every connection of a
    server.

    :ivar commands: the command table.
    :ivar stats: the server's counters.
    :ivar max_line_length: the limit named in the over-long line's error.
    :ivar command_timeout: seconds before a command is cancelled, or
        ``None``.
    :ivar slow_threshold: seconds past which a reply is logged as slow, or
        ``None``.
    :ivar mark: the clock reading (``perf_counter``) that the line being
        started is timed from: when its batch began, or when the line
        before it was answered, whichever is later.  Whoever starts a batch
        sets it (when anything is timed); each line answered sets it
        again, so one clock reading a line both ends its time and begins
        the next's.  A line's time so measured is never less than its own.
    """

    _commands: CommandTable
    _one_word: dict[str, Command]

    def __init__(
        self,
        commands: CommandTable,
        stats: ServerStats,
        *,
        max_line_length: int,
        command_timeout: float | None,
        slow_threshold: float | None,
    ) -> None:
        self.commands = commands
        self.stats = stats
        # The list the statistics count ok answers from, kept in place by
        # ServerStats (never replaced): appended to once per command.
        self._answered = stats.answered
        self.max_line_length = max_line_length
        self.command_timeout = command_timeout
        self.slow_threshold = slow_threshold
        self.mark = perf_counter()

    @property
    def commands(self) -> CommandTable:
        return self._commands

    @commands.setter
    def commands(self, table: CommandTable) -> None:
        self._commands = table
        # Looked up once per line; the table keeps it in place.
        self._one_word = table.one_word

    def start(self, frame: Frame, caller: Caller) -> bytes | Pending:
        """
        Start the command one line names.

        A command answered ``ok`` at once goes on the statistics' list
        ``ServerStats.answered``, which the
        caller counts when its batch of lines ends
        (``ServerStats.count_answered``).

        :returns: its encoded reply, or its place in the queue of replies if
            it answers later or closes the connection; a :class:`Pending`
            whose ``deferred`` is set is still running, and
            :meth:`finish` must be called with its reply.
        """
        if frame is OVERLONG:
            if caller.complain(OVER_LONG):
                log.warn(
                    "[{conn}] line longer than {limit} bytes from {peer}",
                    conn=caller.conn,
                    peer=caller.peer,
                    limit=self.max_line_length,
                )
            return encode_line(line_too_long(self.max_line_length))
        try:
            text = frame.decode()
        except UnicodeDecodeError:
            if caller.complain(INVALID):
                log.warn(
                    "[{conn}] invalid UTF-8 from {peer}",
                    conn=caller.conn,
                    peer=caller.peer,
                )
            return _INVALID_UTF8
        head, space, arguments = text.partition(" ")
        command = self._one_word.get(head)
        result: object
        if command is not None and command.quick is not None:
            # The quick way (Command.quick): no session, the arguments bound
            # by position as the line gives them.
            started = self.mark
            try:
                result = command.quick(arguments if space else None)
            except Exception:
                result = command.contain(Failure(), caller.session())
            else:
                if type(result) is CoroutineType:
                    # An ``async def``: its first step now, as Command.settle
                    # would (a quick command takes no session, so it cannot
                    # ask to close), through commandproto.commands.coroutines'
                    # start, inline: a call costs about a sixth of the step.
                    coroutine = result
                    context = copy_context()
                    try:
                        send = take_runner()
                    except IndexError:
                        send = new_runner()
                    try:
                        result = context.run(send, coroutine)
                    except BaseException:
                        result = command.contain(Failure(), caller.session())
                    else:
                        if coroutine.cr_frame is None:
                            give_back_runner(send)
                        else:
                            result = go_on(send, coroutine, context, result)
                # Plain one-line text goes on below; anything else, and text
                # with a CR anywhere (one that ends it is not one line),
                # Command.settle judges.  (Two ``in`` tests cost less than
                # a slice.)
                if type(result) is not str or "\n" in result or "\r" in result:
                    session = caller.session()
                    result = (
                        command.run_text(
                            arguments if space else None,
                            session,
                            self.command_timeout,
                        )
                        if result is MISS
                        else command.settle(result, session, self.command_timeout)
                    )
        else:
            found = (
                (command, arguments if space else None)
                if command is not None
                else self.commands.find(text)
            )
            if found is None:
                self.stats.command_done(UNKNOWN_LABEL, UNKNOWN, None)
                return _UNKNOWN
            command, given = found
            session = caller.session()
            started = self.mark
            result = command.run_text(given, session, self.command_timeout)
        if type(result) is str:
            try:
                encoded = result.encode() + CRLF
            except UnicodeEncodeError:
                result = command.contain(Failure(), caller.session()).text
                encoded = encode_line(result)
            name = command.name
            # An error reply starts with "E"; the chained comparison rules
            # out almost every other reply for less than startswith costs.
            if (
                "E" <= result < "F" and result.startswith(ERROR_PREFIX)
            ) or result == UNKNOWN_COMMAND:
                self.done(name, outcome_of(name, result), started, caller)
                return encoded
            # The commonest answer: counted, and timed, with its batch
            # (ServerStats.count_answered), logged here if it was slow.
            self._answered.append(name)
            threshold = self.slow_threshold
            if threshold is not None:
                now = self.mark = perf_counter()
                if now - started >= threshold:
                    self._slow(name, OK, now - started, caller)
            return encoded
        if type(result) is Reply:
            text = result.text
            try:
                encoded = encode_line(text)
            except UnicodeEncodeError:
                text = command.contain(Failure(), caller.session()).text
                encoded = encode_line(text)
                result = Reply("", False)
            self.done(command.name, outcome_of(command.name, text), started, caller)
            if not result.close:
                return encoded
            pending = Pending(False, encoded)
            pending.close = True
            return pending
        pending = Pending(not command.overlap)
        pending.name = command.name
        pending.started = started
        pending.deferred = cast(Deferred[Reply], result)
        return pending

    def finish(self, pending: Pending, reply: Reply | None, caller: Caller) -> None:
        """
        A command that answered later has its reply (``None``: its connection
        went away first, and nobody will read it).
        """
        pending.deferred = None
        if reply is None:
            self.done(pending.name, CANCELLED, pending.started, caller)
            return
        self.done(
            pending.name, outcome_of(pending.name, reply.text), pending.started, caller
        )
        pending.reply = encode_line(reply.text)
        pending.close = reply.close

    def done(self, name: str, outcome: str, started: float, caller: Caller) -> None:
        """
        A command has its reply: count it, and log it if it was slow.
        """
        now = self.mark = perf_counter()
        seconds = now - started
        stats = self.stats
        stats.command_done(name, outcome, seconds if stats.timing else None)
        threshold = self.slow_threshold
        if threshold is not None and seconds >= threshold:
            self._slow(name, outcome, seconds, caller)

    def _slow(self, name: str, outcome: str, seconds: float, caller: Caller) -> None:
        log.warn(
            "[{conn}] slow command {command!r} from {peer}: {ms:.1f} ms",
            command=name,
            ms=seconds * 1000,
            peer=caller.peer,
            conn=caller.conn,
            outcome=outcome,
        )
