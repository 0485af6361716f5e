"""
The commandproto client: ``commandproto`` (or ``python -m commandproto.client``).

Four ways to use it:

  - on a terminal, an interactive prompt with line editing, history, reverse
    search and completion (:mod:`commandproto.client.lineedit`);
  - with commands as arguments, one-shot: send them, print the replies, exit
    (``-r COUNT -i SECONDS`` repeats them);
  - with piped input, every line is a command, sent pipelined with a bounded
    window of outstanding requests;
  - in any of these, ``--raw`` prints only the replies' text.

By default each reply is printed as ``Server response: <reply>`` and the
prompt is ``Execute command: ``, as in the seed's client.

Exit codes: 0 on success; 1 when the connection fails or the server goes
away mid-session; 2 on a usage error; 3 with ``--fail-on-error`` when a reply
was an error; 130 on Ctrl-C (or SIGINT); 143 on SIGTERM.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import TextIO, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorCore,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from .._version import __version__
from ..commands import table as _commands
from ..commands.table import (
    CLOSING,
    ERROR_PREFIX,
    HELP,
    default_commands,
    is_error_reply,
    parse_help,
    unsolicited_kind,
)
from ..wire.codec import CRLF, OVERLONG, LineFramer, escape_controls, is_one_line
from .connect import (
    CONNECTION_OPTIONS,
    TYPE_ENFORCEMENT,
    describe_failure,
    make_endpoint,
)
from .connection import ClientProtocol, ReplyListener
from .core import Outcome
from .errors import ConnectionClosed, ReplyError

PROMPT = "Execute command: "
RESPONSE_PREFIX = "Server response: "
PROGRAM = "commandproto"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REPLY_ERROR = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

# Replies are short; this bounds what a misbehaving server can make us hold.
MAX_REPLY_LENGTH = 1024 * 1024

DEFAULT_TIMEOUT = 5.0
"""
Seconds to wait for the connection, and for each awaited reply.
"""

DEFAULT_WINDOW = 10_000
"""
How many requests may await their replies at once before the client stops
reading its input; it reads again once half of them are answered.
"""


def _count(option: str) -> Callable[[str], int]:
    """
    An option's value as a whole number of at least 1; its errors name the
    option.
    """

    def coerce(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(
                f"{option} takes a whole number of at least 1, not {text!r}"
            )
        return value

    return coerce


def _seconds(option: str) -> Callable[[str], float]:
    """
    An option's value as a number of seconds, 0 or more; its errors name
    the option.
    """

    def coerce(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"{option} takes a number of seconds, 0 or more, not {text!r}"
            )
        return value

    return coerce


class Options(usage.Options):
    """
    Command-line options of ``python -m commandproto.client``.
    """

    synopsis = "Usage: commandproto [options] [COMMAND ...]"
    longdesc = (
        "Send commands to a commandproto server and print each reply as "
        "'Server response: <reply>'.  The commands are the arguments if any "
        "are given, else the lines of standard input; on a terminal, an "
        "interactive prompt.  Exit status: 0 success, 1 connection or I/O "
        "failure, 2 usage error, 3 a reply was an error (with -e), 130 "
        "interrupted."
    )
    optFlags = [
        ["raw", None, "Print only each reply's text, one per line."],
        [
            "fail-on-error",
            "e",
            "Exit with status 3 if any reply is an error ('Unknown command.' "
            "or 'Error: ...').",
        ],
        [
            "legacy",
            None,
            "Talk to a server in the seed's wire format: each command sent "
            "with no line end, one at a time, one read being one reply.",
        ],
    ]
    optParameters = [
        *CONNECTION_OPTIONS,
        [
            "repeat",
            "r",
            None,
            "Send the COMMANDs given as arguments COUNT times.",
            _count("-r/--repeat"),
        ],
        [
            "interval",
            "i",
            None,
            "With -r, wait SECONDS after each round of replies before the "
            "next (default 0).",
            _seconds("-i/--interval"),
        ],
        [
            "timeout",
            None,
            DEFAULT_TIMEOUT,
            "Seconds to wait for the connection and for each reply before "
            "giving up with exit status 1 (0: wait for ever).",
            _seconds("--timeout"),
        ],
    ]

    def opt_version(self) -> None:
        """Print commandproto's version and exit."""
        print(f"commandproto {__version__}")
        raise SystemExit(EXIT_OK)

    def parseArgs(self, *commands: str) -> None:
        self["commands"] = list(commands)

    def postOptions(self) -> None:
        if self["interval"] is not None and self["repeat"] is None:
            raise usage.UsageError("-i/--interval needs -r/--repeat")
        if self["repeat"] is not None and not self["commands"]:
            raise usage.UsageError("-r/--repeat needs commands as arguments")
        for command in self["commands"]:
            if not is_one_line(command):
                raise usage.UsageError(
                    f"a command is one line, without line breaks: {command!r}"
                )


@dataclass(frozen=True)
class Script:
    """
    Commands given on the command line, to send instead of reading input.

    :ivar commands: the request lines, sent pipelined as one round.
    :ivar count: how many rounds to send.
    :ivar interval: seconds to wait after a round's last reply before the
        next round.
    """

    commands: tuple[str, ...]
    count: int = 1
    interval: float = 0.0


class _State(Enum):
    """
    Where a :class:`ClientSession` is in its life; the session's docstring
    says what each state means and which events move it on.
    """

    CONNECTING = auto()
    RUNNING = auto()
    DRAINING = auto()
    CLOSED = auto()
    SERVER_CLOSING = auto()
    SERVER_DROPPING = auto()
    DISCONNECTED = auto()
    FINISHING = auto()
    EXITED = auto()


_ENDED = (_State.FINISHING, _State.EXITED)
_LIVE = (_State.RUNNING, _State.DRAINING, _State.CLOSED, _State.SERVER_CLOSING)


@implementer(IPushProducer)
class _OutputFlow:
    """
    The producer of standard output: the connection, whose replies are not
    read while our output is not being read (the connection's reply time
    limit stops meanwhile: a slow reader of our output is not a server that
    does not answer).
    """

    def __init__(self, connection: ClientProtocol[None]) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection.pause_reading()

    def resumeProducing(self) -> None:
        self._connection.resume_reading()

    def stopProducing(self) -> None:
        self._connection.transport.stopProducing()


class ClientSession(ReplyListener[None]):
    """
    The client's state, apart from any I/O: which requests await replies,
    when to read more input, how replies are printed, and how the session
    ends.

    The session talks to the server through the client library's Twisted
    adapter, :class:`~commandproto.client.connection.ClientProtocol`, as
    the listener of its streaming interface: the adapter frames replies,
    matches them to requests in order, recognises the lines the server
    sends on its own, keeps the reply time limit (``--timeout``) and speaks
    the seed's format (``--legacy``), as for every client of the library;
    the session decides what to send and when, and what to print.

    Input (standard input, or the line editor) is an ``IPushProducer`` that
    the session pauses while ``window`` requests are outstanding or the
    connection's send buffer is full (the adapter says so:
    :meth:`sending_paused`), and resumes once half of the window is
    answered.  The connection in turn is registered as the producer of
    standard output, so a slow reader of our output slows everything down
    instead of filling memory.

    A line the server sends on its own (:func:`unsolicited_kind`: too many
    connections, idle, ``Closing down`` that does not answer our ``quit``)
    is never taken as a reply: it is the server's last line before it
    closes, and says why.

    The session's life is one explicit :class:`_State`.  The events are its
    public methods (:meth:`connection_made`, :meth:`input_ended`,
    :meth:`replies_received`, :meth:`reply_overdue`,
    :meth:`connection_ended`, :meth:`finish` and the ways to it,
    :meth:`output_closed`) and those that replies bring: the last
    outstanding reply, ``Closing down`` answering our ``quit``, a line the
    server sends on its own.  Each event decides what the state means for
    it in one place:

    ``CONNECTING``
        No connection yet; input is paused, lines already taken wait.
        Connecting leads to ``RUNNING``; input ending first, to
        ``DRAINING``.
    ``RUNNING``
        Input is read (unless the window is full), each line sent, each
        reply printed, and the prompt shown or the script's next round
        scheduled whenever nothing is outstanding.  Input ending, or the
        script's last round going out, leads to ``DRAINING``.
    ``DRAINING``
        Input has ended: no more is read, and once nothing is outstanding we
        close the connection, to ``CLOSED``.
    ``CLOSED``
        We closed the connection; its loss ends the session well.
    ``SERVER_CLOSING``
        The server said ``Closing down`` in answer to our ``quit``: nothing
        more is sent, and the connection's loss ends the session well.
    ``SERVER_DROPPING``
        The server sent a line on its own and is closing the connection:
        the connection's loss ends the session with exit code 1, or, for an
        idle or shut-down connection at the prompt (or an idle one between
        the rounds of a script), leads to ``DISCONNECTED``.  In this and
        ``SERVER_CLOSING`` we close our end too once input has ended with
        nothing outstanding (the server closes its end anyway).
    ``DISCONNECTED``
        The server closed the connection, and the next command reconnects
        (to ``CONNECTING``), as redis-cli does; input ending ends the
        session well.
    ``FINISHING``
        The exit code is chosen; replies are ignored, and the session waits
        for standard output to be flushed and closed.  Every state before
        it leads here on :meth:`finish` (or :meth:`fail`, or
        :meth:`interrupt`), and losing the connection in ``RUNNING`` or
        ``DRAINING`` is a failure.
    ``EXITED``
        :attr:`done` has fired.

    What changes with every line stays plain data, outside the states: the
    count of outstanding requests, the lines not sent yet, whether input and
    the connection are paused, and whether the prompt is on the screen.

    :ivar done: fires with the exit code once the session is over and all
        output is written.
    :ivar command_names: the commands the server knows, for completion: the
        local default table's until the server's ``help`` says otherwise.
    """

    def __init__(
        self,
        address: str,
        warn: Callable[[str], None],
        *,
        interactive: bool,
        raw: bool = False,
        fail_on_error: bool = False,
        window: int = DEFAULT_WINDOW,
        fetch_commands: bool = False,
        script: Script | None = None,
        clock: IReactorTime | None = None,
        legacy: bool = False,
        timeout: float | None = None,
        reconnect: Callable[[], None] | None = None,
        escape_controls: bool = False,
    ) -> None:
        """
        :param address: how to name the server in messages.
        :param warn: writes one line to standard error.
        :param interactive: show the prompt when waiting for a command.
        :param raw: print only the reply text, without ``Server response:``.
        :param fail_on_error: end with :data:`EXIT_REPLY_ERROR` if any reply
            is an error.
        :param window: the most requests awaiting replies before input is
            paused; 1 for a person at a prompt.
        :param fetch_commands: ask the server for ``help`` on connecting,
            silently, to learn its command names; the prompt does not wait
            for the answer.
        :param script: commands to send instead of reading input.
        :param clock: schedules the rounds of a repeated ``script`` and
            the reply timeout.
        :param legacy: speak the seed's wire format: each command sent with
            no line end, the next only once the last is answered.
        :param timeout: seconds to wait for each awaited reply before
            failing, or ``None`` to wait for ever.
        :param reconnect: opens a new connection (whose protocol calls
            :meth:`connected`); without it, a connection the server closes
            ends the session.
        :param escape_controls: show control characters in replies escaped
            (``\x1b``), for a terminal, which would interpret them.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        if clock is None and (
            (script is not None and script.count > 1) or timeout is not None
        ):
            raise ValueError("a repeated script or a timeout needs a clock")
        self.address = address
        self.interactive = interactive
        self.done: Deferred[int] = Deferred()
        self.command_names = default_commands().names()
        self._warn = warn
        self._raw = raw
        self._escape_controls = escape_controls
        self._fail_on_error = fail_on_error
        self._window = window
        self._fetch_commands = fetch_commands
        self._script = script
        self._clock = clock
        self._legacy = legacy
        self._timeout = timeout
        self._reconnect = reconnect
        self._state = _State.CONNECTING
        self._output: ITransport | None = None
        # The connection, while we may still write to it or close it.
        self._server: ClientProtocol[None] | None = None
        # The connection, until it is gone: replies may come after we close.
        self._connection: ClientProtocol[None] | None = None
        self._input: IPushProducer | None = None
        self._input_paused = False
        self._server_full = False
        self._output_producer = False
        self._outstanding = 0
        self._unsent: deque[bytes] = deque()
        self._hidden = 0
        self._rounds_sent = 0
        self._next_round: IDelayedCall | None = None
        self._prompt_shown = False
        self._saw_error = False
        self._dropped = ""
        self._exit_code = EXIT_OK
        self._exit_messages: list[str] = []

    @property
    def outstanding(self) -> int:
        """
        How many requests await their replies.
        """
        return self._outstanding

    def _awaited(self) -> int:
        # Requests whose replies someone waits for: the silent start-up help
        # is not one of them.
        return self._outstanding - self._hidden

    def _in_flight(self) -> int:
        return self._outstanding - len(self._unsent)

    def attach_output(self, output: ITransport) -> None:
        """
        Write to ``output`` (standard output), and close it when done.
        """
        self._output = output

    def attach_input(self, source: IPushProducer) -> None:
        """
        Take commands from ``source``, which calls :meth:`send_lines` and
        :meth:`input_ended`; it is paused until the server is there to take
        them.
        """
        self._input = source
        self._input_paused = True
        source.pauseProducing()
        self._update_flow()

    def warn_at_exit(self, message: str) -> None:
        """
        Print one line on standard error once output is flushed, so that it
        lands after everything on standard output.
        """
        self._exit_messages.append(f"{PROGRAM}: {message}")

    def new_protocol(self) -> ClientProtocol[None]:
        """
        A connection to the server for this session: the library's Twisted
        adapter, with the session as its listener.
        """
        return ClientProtocol(
            self._clock,
            MAX_REPLY_LENGTH,
            self,
            reply_timeout=self._timeout,
            legacy=self._legacy,
        )

    def connection_made(self, protocol: ClientProtocol[None]) -> None:
        """
        The connection to the server is up.
        """
        if self._state not in (_State.CONNECTING, _State.DRAINING):
            # The session ended while we were connecting.
            protocol.close()
            return
        self._server = self._connection = protocol
        if self._state is _State.CONNECTING:
            self._state = _State.RUNNING
        if IConsumer.providedBy(self._output) and IPushProducer.providedBy(
            protocol.transport
        ):
            IConsumer(self._output).registerProducer(_OutputFlow(protocol), True)
            self._output_producer = True
        if self._fetch_commands:
            # On every connection: a server restarted in between may serve
            # other commands (one short line each time).  Its reply is not
            # awaited: the reply time limit does not wait for it.
            self._hidden += 1
            self._outstanding += 1
            protocol.send_lines((HELP.encode("utf-8"),), None, timed=False)
        self._pump()
        if self._script is not None and self._rounds_sent == 0:
            self._send_round()
        if self._awaited() <= 0:
            self._all_answered()
        self._update_flow()

    def _write(self, text: str) -> None:
        if self._output is not None:
            self._output.write(text.encode("utf-8"))

    def send(self, line: bytes) -> None:
        """
        Send one command line, exactly as typed, to the server.
        """
        self.send_lines([line])

    def send_lines(self, lines: Sequence[bytes]) -> None:
        """
        Send command lines, each exactly as typed, to the server, in one
        write (in the seed's format, one at a time as the replies come).
        """
        if not lines:
            return
        match self._state:
            case _State.RUNNING | _State.DRAINING | _State.CONNECTING:
                pass
            case _State.DISCONNECTED:
                assert self._reconnect is not None
                self._state = _State.CONNECTING
                self._reconnect()
            case _:
                return
        self._prompt_shown = False
        self._outstanding += len(lines)
        server = self._server
        if server is not None and not self._unsent:
            # The common case, kept short: a pipelined batch in one write.
            server.send_lines(lines, None)
        else:
            self._unsent.extend(lines)
            self._pump()
        self._update_flow()

    def _pump(self) -> None:
        # Send what was taken before the connection was up (the adapter
        # paces them in the seed's format).
        server = self._server
        unsent = self._unsent
        if not unsent or server is None:
            return
        server.send_lines(list(unsent), None)
        unsent.clear()

    def input_ended(self) -> None:
        """
        Standard input reached its end (or Ctrl-D on a terminal).
        """
        self._end_prompt_line()
        self._end_of_input()
        self._update_flow()

    def _end_of_input(self) -> None:
        match self._state:
            case _State.CONNECTING:
                self._state = _State.DRAINING
            case _State.RUNNING:
                self._state = _State.DRAINING
                if self._awaited() <= 0:
                    self._all_answered()
            case _State.SERVER_CLOSING | _State.SERVER_DROPPING:
                if self._outstanding <= 0:
                    self._close_server()
            case _State.DISCONNECTED:
                self.finish(self._success_code())
            case _State.DRAINING | _State.CLOSED | _State.FINISHING | _State.EXITED:
                pass

    def replies_received(self, waiters: list[None], outcomes: list[Outcome]) -> None:
        """
        Replies to the oldest outstanding requests, in order, from the
        library's adapter; after them, perhaps, the line the server sent on
        its own before it closes the connection, or its breach of the
        protocol (the adapter's core says which).
        """
        connection = self._connection
        if self._state in _ENDED or connection is None:
            return
        core = connection.core
        texts: list[str]
        overlong = False
        if not set(map(type, outcomes)) - {str}:
            # The common case, decided at C speed: every outcome is a reply.
            texts = cast(list[str], outcomes)
        else:
            # Error replies come as exceptions: print their lines.  An
            # overlong reply ends the session.
            texts = []
            for outcome in outcomes:
                if type(outcome) is str:
                    texts.append(outcome)
                elif isinstance(outcome, ReplyError):
                    texts.append(outcome.reply)
                else:
                    overlong = True
                    break
        answered = len(texts)
        self._outstanding -= answered
        if self._hidden:
            for text in texts[: self._hidden]:
                self._learn_commands(text)
            hidden = min(self._hidden, answered)
            self._hidden -= hidden
            texts = texts[hidden:]
        if texts:
            self._print_replies(texts)
        if overlong or core.overlong:
            self.fail(f"reply from {self.address} too long")
            self._close_server(abort=True)
            return
        if core.broken is not None:
            self.fail(
                f"{self.address} sent more replies than requests: protocol "
                "error (is it a commandproto server?)"
            )
            return
        if core.last_word is not None:
            self._server_dropping(core.last_word)
        elif core.quit_answered:
            self._closing_down()
        else:
            if self._awaited() <= 0:
                self._all_answered()
        self._update_flow()

    def _all_answered(self) -> None:
        # No request awaits its reply.
        match self._state:
            case _State.RUNNING:
                self._schedule_round()
                self._prompt()
            case _State.DRAINING:
                self._state = _State.CLOSED
                self._close_server()
            case _:
                # The other states close, or not, on their own events.
                pass

    def _closing_down(self) -> None:
        # The server said "Closing down" in answer to our quit.
        match self._state:
            case _State.RUNNING:
                self._state = _State.SERVER_CLOSING
            case _State.DRAINING:
                self._state = _State.SERVER_CLOSING
                if self._outstanding <= 0:
                    self._close_server()
            case _:
                # We closed after our quit was answered, or it is all over.
                pass

    def _server_dropping(self, text: str) -> None:
        # The server sent its last line on its own, and closes.
        match self._state:
            case (
                _State.RUNNING
                | _State.DRAINING
                | _State.CLOSED
                | _State.SERVER_CLOSING
                | _State.SERVER_DROPPING
            ):
                draining = self._state is _State.DRAINING
                self._state = _State.SERVER_DROPPING
                self._dropped = text
                if draining and self._outstanding <= 0:
                    self._close_server()
            case _:
                pass

    def _drop_message(self) -> str:
        text = self._dropped
        match unsolicited_kind(text):
            case _commands.TOO_MANY_CONNECTIONS:
                return (
                    f"{self.address} refused the connection: "
                    f"{text.removeprefix(ERROR_PREFIX)}; try again later"
                )
            case _commands.IDLE:
                detail = text.removeprefix(ERROR_PREFIX).split(",")[0]
                return f"connection to {self.address} closed by the server: {detail}"
            case _:
                return f"connection to {self.address} closed: the server shut down"

    def _may_reconnect(self) -> bool:
        if self._reconnect is None:
            return False
        kind = unsolicited_kind(self._dropped)
        if self.interactive and self._script is None:
            return kind in (_commands.IDLE, CLOSING)
        return self._script is not None and kind == _commands.IDLE

    def _print_replies(self, texts: list[str]) -> None:
        self._end_prompt_line()
        if self._escape_controls:
            texts = [escape_controls(text) for text in texts]
        if self._raw:
            self._write("\n".join(texts) + "\n")
        else:
            self._write(RESPONSE_PREFIX + ("\n" + RESPONSE_PREFIX).join(texts) + "\n")
        if self._fail_on_error and not self._saw_error:
            self._saw_error = any(map(is_error_reply, texts))
        if self.interactive:
            for text in texts:
                self._learn_commands(text)

    def _learn_commands(self, text: str) -> None:
        names = parse_help(text)
        if names is not None:
            self.command_names = names

    def connection_ended(
        self, exception: ConnectionClosed, waiters: list[None], reason: Failure
    ) -> None:
        """
        The connection to the server is gone; ``exception`` is the adapter's
        word on why (the server's last line, if it sent one).
        """
        self._server = self._connection = None
        self._server_full = False
        if exception.line is not None and self._state in _LIVE:
            # The server's last line came while requests were outstanding:
            # only the connection's end shows it was not a reply.
            self._server_dropping(exception.line)
        if self._output_producer and IConsumer.providedBy(self._output):
            self._output_producer = False
            IConsumer(self._output).unregisterProducer()
        match self._state:
            case _State.SERVER_DROPPING if self._may_reconnect():
                self._disconnected()
            case _State.SERVER_DROPPING:
                self.fail(self._drop_message())
            case _State.CLOSED | _State.SERVER_CLOSING:
                self.finish(self._success_code())
            case _State.CONNECTING | _State.RUNNING | _State.DRAINING:
                self.fail(f"connection to {self.address} {describe_failure(reason)}")
            case _State.DISCONNECTED | _State.FINISHING | _State.EXITED:
                pass

    def _disconnected(self) -> None:
        # The server closed an idle or shut-down connection; the next command
        # reconnects.  Replies still owed will never come.
        lost = self._in_flight()
        self._outstanding -= lost
        self._hidden = 0
        self._state = _State.DISCONNECTED
        if self.interactive:
            self._end_prompt_line()
            self._write(
                f"{PROGRAM}: {self._drop_message()}; the next command reconnects\n"
            )
            if lost:
                self._write(f"{PROGRAM}: the last command was not answered\n")
            self._prompt()
        self._update_flow()

    def _success_code(self) -> int:
        return EXIT_REPLY_ERROR if self._saw_error else EXIT_OK

    def interrupt(self, code: int = EXIT_INTERRUPTED) -> None:
        """
        The user pressed Ctrl-C (or we got SIGINT, or SIGTERM).

        :param code: the exit status, by the shell's convention 128 plus the
            signal's number.
        """
        if self._state is _State.FINISHING:
            # Already ending, but waiting for output to drain: a second
            # signal ends it now.
            self.output_closed()
        else:
            self.finish(code)

    def fail(self, message: str) -> None:
        """
        End the session with exit code 1 and one line on standard error.
        """
        if self._state not in _ENDED:
            self.warn_at_exit(message)
            self.finish(EXIT_FAILURE)

    def finish(self, code: int, *, abort: bool = False) -> None:
        """
        End the session with this exit code, once output is flushed.

        :param abort: drop the connection rather than close it gracefully
            (a server that does not answer may not read either).
        """
        if self._state in _ENDED:
            return
        self._state = _State.FINISHING
        self._exit_code = code
        if self._next_round is not None and self._next_round.active():
            self._next_round.cancel()
        self._end_prompt_line()
        self._update_flow()
        self._close_server(abort=abort)
        if self._output is not None:
            self._output.loseConnection()
        else:
            self.output_closed()

    def output_closed(self) -> None:
        """
        Standard output is flushed and closed: the session is over.
        """
        if self._state is _State.FINISHING:
            self._state = _State.EXITED
            for message in self._exit_messages:
                self._warn(message)
            self.done.callback(self._exit_code)

    def reply_overdue(self, timeout: float) -> None:
        """
        No reply came within ``--timeout`` (the adapter's reply time limit).
        """
        message = f"no reply from {self.address} within {_seconds_phrase(timeout)}"
        if self._connection is not None and self._connection.partial_reply:
            message += (
                "; it sent text without a line end: for a server in the "
                "seed's format, use --legacy"
            )
        else:
            message += " (--timeout SECONDS, 0 waits for ever)"
        self.warn_at_exit(message)
        self.finish(EXIT_FAILURE, abort=True)

    def sending_paused(self, paused: bool) -> None:
        """
        The connection's send buffer is full, or drained again.
        """
        self._server_full = paused
        self._update_flow()

    def _update_flow(self) -> None:
        source = self._input
        if source is None:
            return
        stopped = (
            self._state is not _State.RUNNING and self._state is not _State.DISCONNECTED
        ) or self._server_full
        awaited = self._awaited()
        if self._input_paused:
            if not stopped and awaited <= self._window // 2:
                self._input_paused = False
                source.resumeProducing()
        elif stopped or awaited >= self._window:
            self._input_paused = True
            source.pauseProducing()

    def _send_round(self) -> None:
        assert self._script is not None
        self._next_round = None
        self._rounds_sent += 1
        self.send_lines([command.encode("utf-8") for command in self._script.commands])
        if self._rounds_sent >= self._script.count:
            # The script's last round is the end of its input.
            self._end_of_input()

    def _schedule_round(self) -> None:
        script = self._script
        if (
            script is None
            or self._rounds_sent >= script.count
            or self._next_round is not None
        ):
            return
        assert self._clock is not None
        self._next_round = self._clock.callLater(script.interval, self._send_round)

    def _close_server(self, *, abort: bool = False) -> None:
        # Close the connection, once: we are done writing to it.
        server, self._server = self._server, None
        if server is not None:
            server.close(abort=abort)

    def _prompt(self) -> None:
        if self.interactive and not self._prompt_shown:
            self._prompt_shown = True
            self._write(PROMPT)

    def _end_prompt_line(self) -> None:
        # Leave the prompt's line before anything else is printed.
        if self._prompt_shown:
            self._prompt_shown = False
            self._write("\n")


@implementer(IHalfCloseableProtocol)
class InputReceiver(LineReceiver):
    """
    Standard input, when it is not a terminal we edit on: each line is one
    command, sent as soon as it is read.
    """

    delimiter = CRLF

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self._framer = LineFramer(MAX_REPLY_LENGTH)

    def dataReceived(self, data: bytes) -> None:
        frames = self._framer.feed(data)
        if OVERLONG in frames:
            self.session.send_lines(cast(list[bytes], frames[: frames.index(OVERLONG)]))
            self.session.fail("input line too long")
            return
        self.session.send_lines(cast(list[bytes], frames))

    def lineReceived(self, line: bytes) -> None:
        self.session.send(line)

    def readConnectionLost(self) -> None:
        last = self._framer.finish()
        if last is not None:
            self.lineReceived(last)
        self.session.input_ended()

    def writeConnectionLost(self) -> None:
        # Nobody reads our output any more (a closed pipe, a full disk).
        # StandardIO has dropped its writer, so no connectionLost follows:
        # the output is as closed as it will get.
        self.session.warn_at_exit("cannot write to standard output")
        self.session.finish(EXIT_FAILURE)
        self.session.output_closed()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.output_closed()


def make_script(options: Options) -> Script | None:
    """
    The commands given as arguments, if any.
    """
    if not options["commands"]:
        return None
    return Script(
        tuple(options["commands"]),
        options["repeat"] or 1,
        options["interval"] or 0.0,
    )


def uses_line_editor(options: Options) -> bool:
    """
    Whether this run is interactive with the line editor: no commands as
    arguments, and standard input and output both a terminal.
    """
    return not options["commands"] and os.isatty(0) and os.isatty(1)


def attach_line_editor(
    session: ClientSession, reactor: IReactorCore, warn: Callable[[str], None]
) -> StandardIO:
    """
    Take input from a :class:`LineEditor` on the terminal, with the history file.

    :param warn: prints a line at once (a history file that cannot be read);
        later warnings (one that cannot be written) wait for the end of the
        session, so as not to break into the line being edited.
    :returns: standard I/O, for output.
    """
    # Only the prompt needs the line editor (and conch): one-shot and piped
    # runs start faster without them.
    from twisted.conch.insults.insults import ServerProtocol

    from ..client.history import History, history_path
    from ..client.lineedit import LineEditor

    messages: list[str] = []
    history = History(
        history_path(os.environ, os.path.expanduser("~")), messages.append
    )
    history.load()
    for message in messages:
        warn(f"{PROGRAM}: {message}")
    history.warn = session.warn_at_exit

    def lost() -> None:
        session.finish(EXIT_FAILURE)
        session.output_closed()

    editor = LineEditor(
        prompt=PROMPT,
        history=history,
        submit=lambda text: session.send(text.encode("utf-8")),
        end=session.input_ended,
        interrupt=session.interrupt,
        lost=lost,
        command_names=lambda: session.command_names,
        columns=_terminal_columns,
    )
    stdio = StandardIO(ServerProtocol(lambda: editor), reactor=reactor)
    session.attach_input(editor)
    return stdio


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(1).columns or 80
    except OSError:
        return 80


async def run(reactor: IReactorCore, options: Options, *, editor: bool) -> int:
    """
    Connect, talk to the server until input ends or the server says
    ``Closing down``, and return the exit code.

    :param editor: edit lines on the terminal (which the caller has put in
        the mode :func:`commandproto.client.lineedit.terminal_mode` sets).
    """

    def warn(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        endpoint, address = make_endpoint(
            reactor, options["host"], options["port"], options["connect"]
        )
    except ValueError as e:
        warn(f"{PROGRAM}: {e}")
        return EXIT_USAGE
    script = make_script(options)
    clock = cast(IReactorTime, reactor)
    timeout: float | None = options["timeout"] or None
    legacy = options["legacy"]

    def connect() -> None:
        connecting = endpoint.connect(Factory.forProtocol(session.new_protocol))
        if timeout is not None:
            deadline = clock.callLater(timeout, connecting.cancel)
            connecting.addBoth(_cancel_call, deadline)

        def failed(reason: Failure) -> None:
            why = describe_failure(reason)
            if reason.check(CancelledError):
                why = f"timed out after {_seconds_phrase(timeout)}"
            session.fail(f"cannot connect to {address}: {why}")

        connecting.addErrback(failed)

    session = ClientSession(
        address,
        warn,
        interactive=script is None and os.isatty(0),
        raw=options["raw"],
        escape_controls=os.isatty(1),
        fail_on_error=options["fail-on-error"],
        window=1 if editor or legacy else DEFAULT_WINDOW,
        fetch_commands=editor and not legacy,
        script=script,
        clock=clock,
        legacy=legacy,
        timeout=timeout,
        reconnect=connect,
    )
    stdio: StandardIO
    if editor:
        stdio = attach_line_editor(session, reactor, warn)
    else:
        stdio = StandardIO(InputReceiver(session), reactor=reactor)
        if script is None:
            session.attach_input(stdio)
        else:
            stdio.pauseProducing()
    session.attach_output(stdio)
    reactor.callWhenRunning(
        signal.signal, signal.SIGINT, lambda *_: session.interrupt()
    )
    reactor.callWhenRunning(
        signal.signal,
        signal.SIGTERM,
        lambda *_: session.interrupt(EXIT_TERMINATED),
    )
    connect()
    return await session.done


def _seconds_phrase(seconds: float | None) -> str:
    return "1 second" if seconds == 1 else f"{seconds:g} seconds"


def _cancel_call(result: object, call: IDelayedCall) -> object:
    if call.active():
        call.cancel()
    return result


def main(argv: list[str] | None = None, stderr: TextIO = sys.stderr) -> None:
    """
    The console entry point: parse arguments, run, exit.
    """
    options = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(  # type: ignore[no-untyped-call]
            sys.argv[1:] if argv is None else argv
        )
    except usage.UsageError as e:
        print(f"{PROGRAM}: {str(e).removeprefix(TYPE_ENFORCEMENT)}", file=stderr)
        print(f"Try '{PROGRAM} --help' for usage.", file=stderr)
        raise SystemExit(EXIT_USAGE) from None

    if not _standard_io_open(stderr):
        raise SystemExit(EXIT_FAILURE)
    editor = uses_line_editor(options)

    async def go(reactor: IReactorCore) -> None:
        code = await run(reactor, options, editor=editor)
        if code:
            raise SystemExit(code)

    with (
        _restored_fd_flags((0, 1)),
        _terminal_mode(editor),
        _without_tls(uses_tls(options)),
    ):
        react(go)


def uses_tls(options: Options) -> bool:
    """
    Whether the server is reached over TLS: an endpoint string other than
    ``tcp:`` and ``unix:`` may be (``tls:``, ``ssl:``, or a plugin's).
    """
    connect: str | None = options["connect"]
    return connect is not None and connect.partition(":")[0] not in ("tcp", "unix")


@contextlib.contextmanager
def _without_tls(needed: bool) -> Iterator[None]:
    """
    Keep pyOpenSSL out of a run that does not use TLS.

    Importing the reactor imports ``twisted.internet.tcp``, which imports
    ``twisted.internet._newtls`` for ``startTLS`` if pyOpenSSL can be
    imported, and with it pyOpenSSL and cryptography: 12 MiB of the
    client's 45 MiB, and a tenth of a second, for nothing when the server
    is reached over plain TCP or a unix socket.  Twisted treats pyOpenSSL
    it cannot import as not installed, so while the run lasts it cannot be
    imported (and afterwards it can again).
    """
    if needed or "OpenSSL" in sys.modules or "twisted.internet.tcp" in sys.modules:
        yield
        return
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("OpenSSL", False) is None:
            del sys.modules["OpenSSL"]


def _standard_io_open(stderr: TextIO) -> bool:
    """
    Make sure standard input and output are open, so that no socket we open
    takes their place: a closed input reads as empty, a closed output is an
    error.
    """
    try:
        os.fstat(0)
    except OSError:
        os.open(os.devnull, os.O_RDONLY)  # the lowest free descriptor: 0
    try:
        os.fstat(1)
    except OSError:
        print(f"{PROGRAM}: standard output is closed", file=stderr)
        return False
    return True


@contextlib.contextmanager
def _terminal_mode(editor: bool) -> Iterator[None]:
    if not editor:
        yield
        return
    from ..client.lineedit import terminal_mode

    with terminal_mode(0):
        yield


@contextlib.contextmanager
def _restored_fd_flags(fds: tuple[int, ...]) -> Iterator[None]:
    # twisted.internet.stdio makes standard I/O non-blocking, and a terminal's
    # flags are shared with the shell that started us: put them back.
    import fcntl

    saved = {}
    for fd in fds:
        with contextlib.suppress(OSError):
            saved[fd] = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        yield
    finally:
        for fd, flags in saved.items():
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
