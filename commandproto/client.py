"""
The commandproto client: ``python -m commandproto.client``.

Four ways to use it:

  - on a terminal, an interactive prompt with line editing, history, reverse
    search and completion (L{commandproto._lineedit});
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

from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorCore,
    IReactorTime,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from ._codec import CRLF, LF, OVERLONG, LineFramer, is_one_line
from ._commands import (
    CLOSING,
    HELP,
    QUIT,
    default_commands,
    is_error_reply,
    parse_help,
)
from ._connect import CONNECTION_OPTIONS, describe_failure, make_endpoint
from ._history import History, history_path
from ._lineedit import LineEditor, terminal_mode

_QUIT = QUIT.encode("utf-8")
PROMPT = "Execute command: "
RESPONSE_PREFIX = "Server response: "
PROGRAM = "commandproto.client"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REPLY_ERROR = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

# Replies are short; this bounds what a misbehaving server can make us hold.
MAX_REPLY_LENGTH = 1024 * 1024

DEFAULT_WINDOW = 10_000
"""
How many requests may await their replies at once before the client stops
reading its input; it reads again once half of them are answered.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"must be a number of seconds, 0 or more, not {text}")
    return value


class Options(usage.Options):
    """
    Command-line options of ``python -m commandproto.client``.
    """

    synopsis = "Usage: python -m commandproto.client [options] [COMMAND ...]"
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
    ]
    optParameters = [
        *CONNECTION_OPTIONS,
        [
            "repeat",
            "r",
            None,
            "Send the COMMANDs given as arguments COUNT times.",
            _positive_int,
        ],
        [
            "interval",
            "i",
            None,
            "With -r, wait SECONDS after each round of replies before the "
            "next (default 0).",
            _seconds,
        ],
    ]

    def parseArgs(self, *commands: str) -> None:
        self["commands"] = list(commands)

    def postOptions(self) -> None:
        if not 0 < self["port"] < 65536:
            raise usage.UsageError(f"--port must be 1-65535, not {self['port']}")
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
    SERVER_SHUT_DOWN = auto()
    FINISHING = auto()
    EXITED = auto()


_ENDED = (_State.FINISHING, _State.EXITED)


@implementer(IPushProducer)
class ClientSession:
    """
    The client's state, apart from any I/O: which requests await replies,
    when to read more input, how replies are printed, and how the session
    ends.

    Input (standard input, or the line editor) is an ``IPushProducer`` that
    the session pauses while ``window`` requests are outstanding or the
    connection's send buffer is full (the session registers itself as the
    connection's producer for that), and resumes once half of the window is
    answered.  The connection in turn is registered as the producer of
    standard output, so a slow reader of our output slows everything down
    instead of filling memory.

    The session's life is one explicit :class:`_State`.  The events are its
    public methods (:meth:`connected`, :meth:`input_ended`,
    :meth:`replies_received`, :meth:`connection_lost`, :meth:`finish` and
    the ways to it, :meth:`output_closed`) and three that replies bring:
    the last outstanding reply, and ``Closing down`` answering our ``quit``
    or not.  Each event decides what the state means for it in one place:

    ``CONNECTING``
        No connection yet; input is paused.  Connecting leads to
        ``RUNNING``; input ending first, to ``DRAINING``.
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
    ``SERVER_SHUT_DOWN``
        The server said ``Closing down`` unasked, shutting down under us:
        the connection's loss ends the session with exit code 1.  In this
        and ``SERVER_CLOSING`` we close our end too once input has ended
        with nothing outstanding (the server closes its end anyway).
    ``FINISHING``
        The exit code is chosen; replies are ignored, and the session waits
        for standard output to be flushed and closed.  Every state before
        it leads here on :meth:`finish` (or :meth:`fail`, or
        :meth:`interrupt`), and losing the connection in ``RUNNING`` or
        ``DRAINING`` is a failure.
    ``EXITED``
        :attr:`done` has fired.

    What changes with every line stays plain data, outside the states: the
    count of outstanding requests, whether input and the connection are
    paused, and whether the prompt is on the screen.

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
    ) -> None:
        """
        :param address: how to name the server in messages.
        :param warn: writes one line to standard error.
        :param interactive: show the prompt when waiting for a command.
        :param raw: print only the reply text, without ``Server response:``.
        :param fail_on_error: end with L{EXIT_REPLY_ERROR} if any reply is
            an error.
        :param window: the most requests awaiting replies before input is
            paused; 1 for a person at a prompt.
        :param fetch_commands: ask the server for ``help`` on connecting,
            silently, to learn its command names.
        :param script: commands to send instead of reading input.
        :param clock: schedules the rounds of a repeated C{script}.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        if script is not None and script.count > 1 and clock is None:
            raise ValueError("a repeated script needs a clock")
        self.address = address
        self.interactive = interactive
        self.done: Deferred[int] = Deferred()
        self.command_names = default_commands().names()
        self._warn = warn
        self._raw = raw
        self._fail_on_error = fail_on_error
        self._window = window
        self._fetch_commands = fetch_commands
        self._script = script
        self._clock = clock
        self._state = _State.CONNECTING
        self._output: ITransport | None = None
        # The connection, while we may still write to it or close it.
        self._server: ITransport | None = None
        self._input: IPushProducer | None = None
        self._input_paused = False
        self._server_full = False
        self._output_producer = False
        self._outstanding = 0
        self._hidden = 0
        self._rounds_sent = 0
        self._next_round: IDelayedCall | None = None
        self._sent = 0
        self._answered = 0
        self._quits: deque[int] = deque()
        self._prompt_shown = False
        self._saw_error = False
        self._exit_code = EXIT_OK
        self._exit_messages: list[str] = []

    @property
    def outstanding(self) -> int:
        """
        How many requests await their replies.
        """
        return self._outstanding

    def attach_output(self, output: ITransport) -> None:
        """
        Write to C{output} (standard output), and close it when done.
        """
        self._output = output

    def attach_input(self, source: IPushProducer) -> None:
        """
        Take commands from C{source}, which calls L{send_lines} and
        L{input_ended}; it is paused until the server is there to take them.
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

    def connected(self, transport: ITransport) -> None:
        """
        The connection to the server is up.
        """
        if self._state not in (_State.CONNECTING, _State.DRAINING):
            # The session ended while we were connecting.
            transport.loseConnection()
            return
        self._server = transport
        if self._state is _State.CONNECTING:
            self._state = _State.RUNNING
        IConsumer(transport).registerProducer(self, True)
        if IConsumer.providedBy(self._output) and IPushProducer.providedBy(transport):
            IConsumer(self._output).registerProducer(transport, True)
            self._output_producer = True
        if self._fetch_commands:
            self._hidden += 1
            self.send_lines([HELP.encode("utf-8")])
        if self._script is not None:
            self._send_round()
        if self._outstanding <= 0:
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
        write.
        """
        server = self._server
        if (
            not lines
            or server is None
            or self._state not in (_State.RUNNING, _State.DRAINING)
        ):
            return
        self._prompt_shown = False
        if _QUIT in lines:
            self._quits.extend(
                self._sent + index for index, line in enumerate(lines) if line == _QUIT
            )
        self._sent += len(lines)
        self._outstanding += len(lines)
        server.write(CRLF.join(lines) + CRLF)
        self._update_flow()

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
                if self._outstanding <= 0:
                    self._all_answered()
            case _State.SERVER_CLOSING | _State.SERVER_SHUT_DOWN:
                if self._outstanding <= 0:
                    self._close_server()
            case _State.DRAINING | _State.CLOSED | _State.FINISHING | _State.EXITED:
                pass

    def replies_received(self, texts: list[str]) -> None:
        """
        The server answered the oldest outstanding requests, in order.
        """
        if not texts or self._state in _ENDED:
            return
        closing = CLOSING in texts
        if closing:
            answered_quit = self._answers_our_quit(
                self._answered + texts.index(CLOSING)
            )
        self._answered += len(texts)
        self._outstanding -= len(texts)
        if self._hidden:
            for text in texts[: self._hidden]:
                self._learn_commands(text)
            hidden = min(self._hidden, len(texts))
            self._hidden -= hidden
            texts = texts[hidden:]
        if texts:
            self._print_replies(texts)
        if closing:
            self._closing_down(answered_quit)
        elif self._outstanding <= 0:
            self._all_answered()
        self._update_flow()

    def _answers_our_quit(self, position: int) -> bool:
        # "Closing down" ends the session well only as the reply to our quit;
        # anywhere else the server is shutting down under us.
        while self._quits and self._quits[0] < position:
            self._quits.popleft()
        return bool(self._quits) and self._quits[0] == position

    def _all_answered(self) -> None:
        # No request awaits its reply (fewer than none when the server sent
        # lines unasked).
        match self._state:
            case _State.RUNNING if self._outstanding == 0:
                self._schedule_round()
                self._prompt()
            case _State.DRAINING:
                self._state = _State.CLOSED
                self._close_server()
            case _:
                # RUNNING after lines the server sent unasked: no prompt; the
                # other states close, or not, on their own events.
                pass

    def _closing_down(self, answered_quit: bool) -> None:
        # The server said "Closing down"; the last one it says decides.
        closing = _State.SERVER_CLOSING if answered_quit else _State.SERVER_SHUT_DOWN
        match self._state:
            case _State.RUNNING | _State.SERVER_CLOSING | _State.SERVER_SHUT_DOWN:
                self._state = closing
            case _State.DRAINING:
                self._state = closing
                if self._outstanding <= 0:
                    self._close_server()
            case _State.CLOSED if not answered_quit:
                self._state = closing
            case _:
                # We closed after our quit was answered, or it is all over.
                pass

    def _print_replies(self, texts: list[str]) -> None:
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

    def connection_lost(self, reason: Failure) -> None:
        """
        The connection to the server is gone.
        """
        self._server = None
        if self._output_producer and IConsumer.providedBy(self._output):
            self._output_producer = False
            IConsumer(self._output).unregisterProducer()
        match self._state:
            case _State.SERVER_SHUT_DOWN:
                self.fail(f"connection to {self.address} closed: the server shut down")
            case _State.CLOSED | _State.SERVER_CLOSING:
                self.finish(self._success_code())
            case _State.CONNECTING | _State.RUNNING | _State.DRAINING:
                self.fail(f"connection to {self.address} {describe_failure(reason)}")
            case _State.FINISHING | _State.EXITED:
                pass

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

    def finish(self, code: int) -> None:
        """
        End the session with this exit code, once output is flushed.
        """
        if self._state in _ENDED:
            return
        self._state = _State.FINISHING
        self._exit_code = code
        if self._next_round is not None and self._next_round.active():
            self._next_round.cancel()
        self._end_prompt_line()
        self._update_flow()
        self._close_server()
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

    # IPushProducer, for the connection: its send buffer is full or drained.

    def pauseProducing(self) -> None:
        self._server_full = True
        self._update_flow()

    def resumeProducing(self) -> None:
        self._server_full = False
        self._update_flow()

    def stopProducing(self) -> None:
        # The connection is going away; connection_lost says how.
        pass

    def _update_flow(self) -> None:
        source = self._input
        if source is None:
            return
        stopped = self._state is not _State.RUNNING or self._server_full
        if self._input_paused:
            if not stopped and self._outstanding <= self._window // 2:
                self._input_paused = False
                source.resumeProducing()
        elif stopped or self._outstanding >= self._window:
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
        if script is None or self._rounds_sent >= script.count:
            return
        assert self._clock is not None
        self._next_round = self._clock.callLater(script.interval, self._send_round)

    def _close_server(self) -> None:
        # Close the connection, once: we are done writing to it.
        server, self._server = self._server, None
        if server is None:
            return
        # A producer still registered on the connection (we are one, for
        # backpressure) holds a TLS close open for ever: unregister first.
        IConsumer(server).unregisterProducer()
        server.loseConnection()

    def _prompt(self) -> None:
        if self.interactive:
            self._prompt_shown = True
            self._write(PROMPT)

    def _end_prompt_line(self) -> None:
        # Leave the prompt's line before anything else is printed.
        if self._prompt_shown:
            self._prompt_shown = False
            self._write("\n")


class ReplyReceiver(LineReceiver):
    """
    The connection to the server: frames reply lines with the shared codec
    and hands them to the session, all the replies of one read at once.
    """

    delimiter = CRLF

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self._framer = LineFramer(MAX_REPLY_LENGTH)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._transport = cast(ITCPTransport, self.transport)
        self.session.connected(self._transport)

    def dataReceived(self, data: bytes) -> None:
        frames = self._framer.feed(data)
        if not frames:
            return
        overlong = OVERLONG in frames
        if overlong:
            frames = frames[: frames.index(OVERLONG)]
        if frames:
            # One decode for the whole read: no frame holds a LF, and an
            # invalid sequence cannot run across one, so this is the same as
            # decoding line by line.
            joined = LF.join(cast(list[bytes], frames))
            self.session.replies_received(joined.decode("utf-8", "replace").split("\n"))
        if overlong:
            self.session.fail(f"reply from {self.session.address} too long")
            self._transport.abortConnection()

    def lineReceived(self, line: bytes) -> None:
        # LineReceiver's hook; dataReceived hands whole reads over at once.
        self.session.replies_received([line.decode("utf-8", "replace")])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.connection_lost(reason)


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
    Take input from a L{LineEditor} on the terminal, with the history file.

    :param warn: prints a line at once (a history file that cannot be read);
        later warnings (one that cannot be written) wait for the end of the
        session, so as not to break into the line being edited.
    :returns: standard I/O, for output.
    """
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
        the mode L{commandproto._lineedit.terminal_mode} sets).
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
    session = ClientSession(
        address,
        warn,
        interactive=script is None and os.isatty(0),
        raw=options["raw"],
        fail_on_error=options["fail-on-error"],
        window=1 if editor else DEFAULT_WINDOW,
        fetch_commands=editor,
        script=script,
        clock=cast(IReactorTime, reactor),
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

    def failed(reason: Failure) -> None:
        session.fail(f"cannot connect to {address}: {describe_failure(reason)}")

    connecting = endpoint.connect(Factory.forProtocol(lambda: ReplyReceiver(session)))
    connecting.addErrback(failed)
    return await session.done


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
        print(f"{PROGRAM}: {e}", file=stderr)
        print(f"Try '{PROGRAM} --help' for usage.", file=stderr)
        raise SystemExit(EXIT_USAGE) from None

    if not _standard_io_open(stderr):
        raise SystemExit(EXIT_FAILURE)
    editor = uses_line_editor(options)

    async def go(reactor: IReactorCore) -> None:
        code = await run(reactor, options, editor=editor)
        if code:
            raise SystemExit(code)

    with _restored_fd_flags((0, 1)), _terminal_mode(editor):
        react(go)


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


if __name__ == "__main__":
    main()
