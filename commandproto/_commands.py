"""
The command table: what each request line means, with no knowledge of bytes,
transports or reactors.

Both the server (which answers) and the client (which classifies replies and
knows when a session is over) read their strings from here, so no protocol
string exists twice.

A request line is a command name, then optionally a space and arguments.
Names may contain spaces (``Are you there?``): the longest registered name
that the line equals, or that is followed by a space, wins.  A handler is a
plain function; its parameters are filled from the arguments and converted by
their annotations (see :class:`CommandTable.command`).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._codec import is_one_line

log = Logger()

GREETING = "Greetings!"
PRESENT = "Yes, I am here!"
CLOSING = "Closing down"
UNKNOWN_COMMAND = "Unknown command."
ERROR_PREFIX = "Error: "
INVALID_UTF8 = ERROR_PREFIX + "line is not valid UTF-8"
QUIT = "quit"
HELP = "help"
HELP_PREFIX = "Commands: "
HELP_SEPARATOR = ", "
HELP_SUMMARY_SEPARATOR = " - "


def line_too_long(limit: int) -> str:
    """
    The reply to a request line longer than the server accepts.

    :param limit: the limit in bytes, not counting the line terminator.
    :returns: the reply text, naming the limit.
    """
    return f"{ERROR_PREFIX}line too long (limit is {limit} bytes)"


def too_many_connections(limit: int) -> str:
    """
    The line sent to a client over the server's connection limit, before the
    server closes its connection.
    """
    return f"{ERROR_PREFIX}too many connections (limit is {limit})"


def idle_timeout_reply(seconds: float) -> str:
    """
    The line sent to a client that said nothing for too long, before the
    server closes its connection.
    """
    return f"{ERROR_PREFIX}idle for {seconds:g} seconds, closing connection"


def usage_error(usage: str) -> str:
    """
    The reply to a command given wrong, missing or extra arguments.
    """
    return f"{ERROR_PREFIX}usage: {usage}"


def failed_reply(name: str) -> str:
    """
    The reply when a command's handler raised or returned something that is
    not a one-line reply: it names the command and nothing of the failure.
    """
    return f"{ERROR_PREFIX}{name} failed"


def timed_out_reply(name: str) -> str:
    """
    The reply when a command's handler did not answer within the server's
    ``--command-timeout``.
    """
    return f"{ERROR_PREFIX}{name} timed out"


def no_such_command(name: str) -> str:
    """
    The reply to ``help NAME`` when no command is called C{NAME}.
    """
    return f"{ERROR_PREFIX}no such command: {name}"


def is_error_reply(text: str) -> bool:
    """
    Tell whether a reply reports a failed request.

    :param text: one reply line, without its terminator.
    :returns: ``True`` for ``Unknown command.`` and any ``Error: ...`` reply.
    """
    return text == UNKNOWN_COMMAND or text.startswith(ERROR_PREFIX)


def format_help(names: Iterable[str]) -> str:
    """
    The reply to ``help``: one line listing command names.

    :param names: the names, none empty or containing ``", "`` (which
        :meth:`CommandTable.add` enforces, so the list can be split back
        apart).
    :returns: ``Commands: `` and the names joined by ``", "``.
    """
    return HELP_PREFIX + HELP_SEPARATOR.join(names)


def parse_help(text: str) -> list[str] | None:
    """
    Read back a reply made by :func:`format_help`.

    :param text: one reply line, without its terminator.
    :returns: the command names, or ``None`` if ``text`` is not a ``help``
        reply (an older server answers ``Unknown command.``).
    """
    if not text.startswith(HELP_PREFIX) or text == HELP_PREFIX:
        return None
    return text[len(HELP_PREFIX) :].split(HELP_SEPARATOR)


@dataclass(frozen=True, slots=True)
class Reply:
    """
    What the server answers to one request line.

    :ivar text: the reply line, without its terminator.
    :ivar close: whether the server closes the connection once this reply is
        flushed, running nothing that arrived after the request.
    """

    text: str
    close: bool = False


class CommandError(Exception):
    """
    Raised by a handler to answer ``Error: <message>``: a refusal the client
    should see (``no such key``), not a bug, so nothing is logged.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _RestOfLine:
    """
    The marker that :data:`Rest` carries in its annotation.
    """

    def __repr__(self) -> str:
        return "Rest"


Rest = Annotated[str, _RestOfLine()]
"""
Annotate a handler's last parameter with ``Rest`` to give it the rest of the
line verbatim, spaces included: ``def echo(text: Rest)`` answers
``echo hello  world`` with ``hello  world``.
"""


class Session:
    """
    One connection, as the handlers that ask for it see it: a handler gets it
    by annotating a parameter with ``Session``.

    :ivar peer: the client's address, as the server's log lines write it
        (``tcp:127.0.0.1:51234``).
    :ivar address: the client's address object, or ``None``.
    :ivar clock: the server's clock, for handlers that answer later
        (``task.deferLater(session.clock, ...)``).
    :ivar state: a dictionary of the handlers' own, kept for the life of the
        connection.
    """

    __slots__ = ("_close_after_reply", "address", "clock", "peer", "state")

    def __init__(
        self, peer: str, address: IAddress | None, clock: IReactorTime
    ) -> None:
        self.peer = peer
        self.address = address
        self.clock = clock
        self.state: dict[str, Any] = {}
        self._close_after_reply = False

    def close_after_reply(self) -> None:
        """
        Close the connection once the reply to the current command is sent;
        nothing the client sent after it is run (as with ``quit``).
        """
        self._close_after_reply = True

    def _take_close(self) -> bool:
        close, self._close_after_reply = self._close_after_reply, False
        return close


class ArgumentError(Exception):
    """
    A request's arguments do not fit its command's parameters.
    """


@dataclass(frozen=True, slots=True)
class _Parameter:
    """
    One parameter of a handler, as filled from a request line.

    :ivar kind: ``"session"``, ``"word"`` (one space-separated word),
        ``"words"`` (``*args``: every remaining word) or ``"rest"`` (the rest
        of the line verbatim).
    """

    name: str
    kind: str
    convert: Callable[[str], Any]
    required: bool
    keyword: bool = False


_CONVERTERS: dict[object, Callable[[str], Any]] = {str: str, int: int, float: float}


def _parameters(handler: Callable[..., Any]) -> tuple[_Parameter, ...]:
    """
    Read a handler's signature: which parameters come from the request line,
    how each is converted, and where the session goes.

    :raises ValueError: for a parameter that cannot be filled from a line.
    """
    signature = inspect.signature(handler)
    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except Exception:
        # Not a plain function (a functools.partial, a callable object):
        # take the annotations as they stand, if none is a string.
        hints = {
            p.name: p.annotation
            for p in signature.parameters.values()
            if p.annotation is not inspect.Parameter.empty
        }
        unresolved = [name for name, hint in hints.items() if isinstance(hint, str)]
        if unresolved:
            raise ValueError(
                f"parameter {unresolved[0]!r}: cannot resolve its annotation"
            ) from None
    parameters: list[_Parameter] = []
    for given in signature.parameters.values():
        hint = hints.get(given.name, str)
        required = given.default is inspect.Parameter.empty
        keyword = given.kind is inspect.Parameter.KEYWORD_ONLY
        if hint is Session:
            parameters.append(_Parameter(given.name, "session", str, True, keyword))
            continue
        if given.kind is inspect.Parameter.VAR_KEYWORD or keyword:
            raise ValueError(
                f"parameter {given.name!r}: only a Session may be keyword-only"
            )
        kind = "words" if given.kind is inspect.Parameter.VAR_POSITIONAL else "word"
        convert: Callable[[str], Any] | None
        if typing.get_origin(hint) is Annotated and any(
            isinstance(extra, _RestOfLine) for extra in hint.__metadata__
        ):
            kind, convert = "rest", str
        else:
            convert = _CONVERTERS.get(hint)
            if convert is None:
                raise ValueError(
                    f"parameter {given.name!r}: {hint!r} cannot be converted "
                    "from a request line; use str, int, float, Rest or Session"
                )
        if kind == "words":
            required = False
        parameters.append(_Parameter(given.name, kind, convert, required))
    from_line = [p for p in parameters if p.kind != "session"]
    for position, parameter in enumerate(from_line):
        last = position == len(from_line) - 1
        if parameter.kind == "rest" and not last:
            raise ValueError(f"parameter {parameter.name!r}: Rest must come last")
        if parameter.kind == "words" and any(p.kind == "rest" for p in from_line):
            raise ValueError("a handler cannot take both *args and Rest")
    return tuple(parameters)


def _usage(name: str, parameters: tuple[_Parameter, ...]) -> str:
    """
    Write a usage line from a handler's parameters: ``set KEY VALUE``,
    ``[COUNT]`` for an optional one, ``KEY...`` for ``*args``.
    """
    words = [name]
    for parameter in parameters:
        if parameter.kind == "session":
            continue
        shown = parameter.name.upper()
        if parameter.kind == "words":
            shown = f"[{shown}...]"
        elif not parameter.required:
            shown = f"[{shown}]"
        words.append(shown)
    return " ".join(words)


Handler = Callable[..., Any]
"""
A command's handler: a plain function of its arguments that returns the
reply (a ``str``, an ``int`` or ``float`` shown as text, or a
:class:`Reply`), or a :class:`~twisted.internet.defer.Deferred` or coroutine
that gives it later.
"""


@dataclass(frozen=True, slots=True)
class Command:
    """
    One entry of a :class:`CommandTable`.

    :ivar name: the command's name: the request line selects it when the line
        is the name, or the name followed by a space and arguments.
    :ivar handler: called with the arguments, converted as its annotations
        say, to produce the reply.
    :ivar summary: one line of help for people.
    :ivar constant: the handler takes no arguments, always returns the same
        reply and does nothing else, so the server may answer from a cache
        without calling it.
    :ivar usage: how to call it, for ``help NAME`` and ``Error: usage: ...``;
        written from the handler's parameters when not given.
    :ivar overlap: later commands of the same connection may start while this
        one's asynchronous reply is pending (replies still go out in order).
    """

    name: str
    handler: Handler
    summary: str = ""
    constant: bool = False
    usage: str = ""
    overlap: bool = False
    parameters: tuple[_Parameter, ...] = field(default=(), init=False, repr=False)
    # Read from the parameters once, for bind: those filled from the line,
    # and the shape of the two commonest handlers, bound without a loop.
    _from_line: tuple[_Parameter, ...] = field(
        default=(), init=False, repr=False, compare=False
    )
    _shape: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parameters = _parameters(self.handler)
        object.__setattr__(self, "parameters", parameters)
        from_line = tuple(p for p in parameters if p.kind != "session")
        object.__setattr__(self, "_from_line", from_line)
        shape = ""
        if not parameters:
            shape = "none"
        elif len(parameters) == 1 and parameters[0].kind == "rest":
            shape = "rest" if parameters[0].required else ""
        object.__setattr__(self, "_shape", shape)
        if not self.usage:
            object.__setattr__(self, "usage", _usage(self.name, parameters))

    @property
    def takes_arguments(self) -> bool:
        """
        Whether any parameter is filled from the request line.
        """
        return bool(self._from_line)

    def bind(self, arguments: str | None, session: Session | None) -> list[Any]:
        """
        Fill the handler's parameters from a request's arguments.

        :param arguments: the text after the name and one space, or ``None``
            when the line is the name alone.
        :param session: what a ``Session`` parameter gets.
        :returns: the positional arguments, in order.
        :raises ArgumentError: if the arguments do not fit.
        """
        shape = self._shape
        if shape == "rest":
            if arguments is None:
                raise ArgumentError("missing text")
            return [arguments]
        if shape == "none":
            if arguments is not None:
                raise ArgumentError("takes no arguments")
            return []
        parameters = self.parameters
        from_line = self._from_line
        words: list[str]
        rest: str | None = None
        if from_line and from_line[-1].kind == "rest":
            count = len(from_line) - 1
            if arguments is None:
                words = []
            elif count == 0:
                words, rest = [], arguments
            else:
                words = arguments.split(None, count)
                if len(words) > count:
                    rest = words.pop()
        else:
            words = arguments.split() if arguments is not None else []
            if arguments is not None and not from_line:
                raise ArgumentError("takes no arguments")
        values: list[Any] = []
        position = 0
        for parameter in parameters:
            kind = parameter.kind
            if kind == "session":
                if session is None:
                    raise ArgumentError("needs a session")
                values.append(session)
                continue
            if kind == "rest":
                if rest is None:
                    if parameter.required:
                        raise ArgumentError("missing text")
                    break
                values.append(rest)
                continue
            if kind == "words":
                taken = words[position:]
                position = len(words)
            elif position < len(words):
                taken = [words[position]]
                position += 1
            elif parameter.required:
                raise ArgumentError(f"missing {parameter.name}")
            else:
                break
            try:
                values.extend(parameter.convert(word) for word in taken)
            except (ValueError, ArithmeticError):
                raise ArgumentError(f"bad {parameter.name}") from None
        if position < len(words):
            raise ArgumentError("too many arguments")
        return values

    def run(
        self,
        arguments: str | None,
        session: Session | None,
        timeout: float | None = None,
    ) -> Reply | Deferred[Reply]:
        """
        Run the command for one request, containing every failure.

        :param arguments: as for :meth:`bind`.
        :param session: the connection, for handlers that ask for it, and its
            clock for C{timeout}.
        :param timeout: seconds an asynchronous handler may take before it is
            cancelled and answered ``Error: <name> timed out``; ``None`` for
            no limit.
        :returns: the reply, or a Deferred that fires with it (never with a
            failure).  A handler that raises, fails, or returns something
            that is not a one-line reply is answered ``Error: <name> failed``
            and logged once with its traceback.
        """
        result = self._run(arguments, session, timeout)
        if type(result) is str:
            return Reply(result)
        return typing.cast(Reply | Deferred[Reply], result)

    def _run(
        self,
        arguments: str | None,
        session: Session | None,
        timeout: float | None = None,
    ) -> str | Reply | Deferred[Reply]:
        """
        As :meth:`run`, but a reply that is one line of text and does not
        close the connection comes back as that text, not wrapped in a
        :class:`Reply`: what the server's read path calls, per line.
        """
        positional: list[Any] | None = None
        if self._shape != "rest" or arguments is None:
            try:
                positional = self.bind(arguments, session)
            except ArgumentError:
                if not self._from_line:
                    return Reply(UNKNOWN_COMMAND)
                return Reply(usage_error(self.usage))
        try:
            if positional is None:
                # A handler of the rest of the line alone (the commonest
                # with arguments): called as bind would, without binding.
                result = self.handler(arguments)
            else:
                result = self.handler(*positional)
        except Exception:
            return self._failed(Failure(), session)
        if type(result) is str:
            # The common case, first: a one-line text.
            if "\n" in result or result.endswith("\r"):
                return self._failed(Failure(ValueError(_NOT_ONE_LINE)), session)
            if session is not None and session._close_after_reply:
                return Reply(result, session._take_close())
            return result
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(
                typing.cast(Coroutine[Deferred[Any], Any, Any], result)
            )
        if isinstance(result, Deferred):
            return self._later(result, session, timeout)
        return self._text(result, session)

    def _reply(self, result: object, session: Session | None) -> Reply:
        """
        Turn a handler's result into its reply, or ``Error: <name> failed``.
        """
        reply = self._text(result, session)
        return Reply(reply) if type(reply) is str else typing.cast(Reply, reply)

    def _text(self, result: object, session: Session | None) -> str | Reply:
        """
        As :meth:`_reply`, but a one-line text that does not close the
        connection comes back as the text.
        """
        if isinstance(result, Reply):
            reply = result
        elif isinstance(result, str):
            if is_one_line(result) and not (
                session is not None and session._close_after_reply
            ):
                return str(result)
            reply = Reply(result)
        elif isinstance(result, int | float) and not isinstance(result, bool):
            reply = Reply(str(result))
        else:
            return self._failed(
                Failure(
                    TypeError(
                        f"handler returned {type(result).__name__}, not a reply "
                        "(return a str, an int, a float or a Reply)"
                    )
                ),
                session,
            )
        if not is_one_line(reply.text):
            return self._failed(Failure(ValueError(_NOT_ONE_LINE)), session)
        if session is not None and session._take_close() and not reply.close:
            reply = Reply(reply.text, True)
        return reply

    def _later(
        self, result: Deferred[Any], session: Session | None, timeout: float | None
    ) -> str | Reply | Deferred[Reply]:
        """
        Wait for an asynchronous handler's result, within C{timeout}.
        """
        if result.called and not result.paused:
            # Already answered (an ``async def`` that awaited nothing slow):
            # take the result now rather than a reactor turn later.
            outcome: list[object] = []
            result.addBoth(outcome.append)
            if outcome:
                if isinstance(outcome[0], Failure):
                    return self._failed(outcome[0], session)
                return self._text(outcome[0], session)
        timer = None
        timed_out: list[bool] = []
        if timeout is not None and session is not None:

            def expire() -> None:
                timed_out.append(True)
                result.cancel()

            timer = session.clock.callLater(timeout, expire)

        def done(outcome: object) -> Reply:
            if timer is not None and timer.active():
                timer.cancel()
            if isinstance(outcome, Failure):
                if not timed_out and outcome.check(CancelledError):
                    # Cancelled by the server: the client has gone, and
                    # nobody reads this reply.
                    return Reply(failed_reply(self.name))
                if outcome.check(CancelledError):
                    log.warn(
                        "command {name!r} timed out after {timeout}s for {peer}",
                        name=self.name,
                        timeout=timeout,
                        peer=session.peer if session is not None else "(no session)",
                    )
                    return Reply(timed_out_reply(self.name))
                return self._failed(outcome, session)
            return self._reply(outcome, session)

        return result.addBoth(done)

    def _failed(self, failure: Failure, session: Session | None) -> Reply:
        """
        Contain a handler's failure: a :class:`CommandError` is the client's
        to see; anything else is a bug, logged once with its traceback and
        answered ``Error: <name> failed``.
        """
        if session is not None:
            session._take_close()
        error = failure.value
        if isinstance(error, CommandError) and is_one_line(error.message):
            return Reply(ERROR_PREFIX + error.message)
        log.failure(
            "command {name!r} failed for {peer}",
            failure,
            name=self.name,
            peer=session.peer if session is not None else "(no session)",
        )
        return Reply(failed_reply(self.name))


_NOT_ONE_LINE = "the reply holds a line break: a reply must be one line"


class CommandTable:
    """
    A mapping from command names to commands.

    Matching is exact and case-sensitive, as in the seed server: ``hello`` is
    not ``Hello``.  A line that names no command is answered with
    ``Unknown command.``.
    """

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        self._commands: dict[str, Command] = {}
        self._version = 0
        # The most spaces in any name: how far into a line a name can reach.
        self._name_spaces = 0
        # The first words of the names that hold a space: a line whose first
        # word is none of these can only name a one-word command.
        self._spaced_heads: set[str] = set()
        for command in commands:
            self.add(command)

    @property
    def version(self) -> int:
        """
        A number that changes whenever a command is added, so that anything
        derived from the table (a cache of replies) knows to rebuild.
        """
        return self._version

    def add(self, command: Command) -> None:
        """
        Register a command.

        :raises ValueError: if a command of that name is already registered,
            the name could never arrive as one request line, or it could not
            be listed unambiguously by ``help`` (it is empty or contains
            ``", "``).
        """
        name = command.name
        if name in self._commands:
            raise ValueError(f"command {name!r} is already registered")
        if not is_one_line(name):
            raise ValueError(f"command {name!r} cannot be sent as a line")
        if not name or HELP_SEPARATOR in name:
            raise ValueError(
                f"command {name!r} cannot be listed by help: names must be "
                f"non-empty and not contain {HELP_SEPARATOR!r}"
            )
        self._commands[command.name] = command
        self._name_spaces = max(self._name_spaces, name.count(" "))
        if " " in name:
            self._spaced_heads.add(name.partition(" ")[0])
        self._version += 1

    def command(
        self,
        name: str,
        *,
        usage: str = "",
        summary: str | None = None,
        overlap: bool = False,
    ) -> Callable[[Handler], Handler]:
        """
        A decorator that registers a function as the handler of a command::

            @commands.command("echo", usage="echo TEXT")
            def echo(text: Rest) -> str:
                \"\"\"Answer with the text.\"\"\"
                return text

        Each parameter takes one space-separated word, converted by its
        annotation (``str``, ``int`` or ``float``; a bad value is a usage
        error); a parameter with a default is optional; ``*args`` takes every
        remaining word; a last parameter annotated :data:`Rest` takes the
        rest of the line verbatim; a parameter annotated :class:`Session`
        gets the connection.  The function may be ``async def`` or return a
        Deferred.  It is returned unchanged, so it can still be called
        directly.

        :param name: the command's name.
        :param usage: how to call it; written from the parameters when empty.
        :param summary: one line of help; the docstring's first line when
            ``None``.
        :param overlap: later commands of the same connection may start
            while this one's asynchronous reply is pending.
        :raises ValueError: as :meth:`add` does, or for a parameter that
            cannot be filled from a line.
        """

        def register(handler: Handler) -> Handler:
            text = summary
            if text is None:
                doc = inspect.getdoc(handler) or ""
                text = doc.strip().splitlines()[0] if doc.strip() else ""
            self.add(Command(name, handler, text, usage=usage, overlap=overlap))
            return handler

        return register

    def update(self, other: CommandTable) -> None:
        """
        Register every command of C{other}.

        :raises ValueError: if any name is already registered here; nothing is
            added then.
        """
        clashes = [name for name in other.names() if name in self._commands]
        if clashes:
            raise ValueError(f"command {clashes[0]!r} is already registered")
        for command in other:
            self.add(command)

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __len__(self) -> int:
        return len(self._commands)

    def get(self, name: str) -> Command | None:
        """
        :returns: the command called C{name}, or ``None``.
        """
        return self._commands.get(name)

    def names(self) -> list[str]:
        """
        :returns: the command names, in the order they were added.
        """
        return list(self._commands)

    def constant_replies(self) -> dict[str, Reply]:
        """
        The replies of the constant commands that do not close the
        connection: what a server may answer from a cache.
        """
        replies = {
            command.name: command.handler()
            for command in self._commands.values()
            if command.constant
        }
        return {name: reply for name, reply in replies.items() if not reply.close}

    def find(self, line: str) -> tuple[Command, str | None] | None:
        """
        Find the command a request line names.

        :param line: the request, decoded, without its terminator.
        :returns: the command and its arguments (the text after the name and
            one space, or ``None`` when the line is the name alone), or
            ``None`` if the line names no command.
        """
        commands = self._commands
        command = commands.get(line)
        if command is not None:
            return command, None
        head, space, arguments = line.partition(" ")
        if not space:
            return None
        if head not in self._spaced_heads:
            command = commands.get(head)
            return None if command is None else (command, arguments)
        # The longest name followed by a space: a name holds at most
        # _name_spaces spaces, so only that many words need joining.
        parts = line.split(" ", self._name_spaces + 1)
        for count in range(min(len(parts) - 1, self._name_spaces + 1), 0, -1):
            name = " ".join(parts[:count])
            command = commands.get(name)
            if command is not None:
                return command, line[len(name) + 1 :]
        return None

    def execute(
        self, line: str, session: Session | None = None, timeout: float | None = None
    ) -> Reply | Deferred[Reply]:
        """
        Answer one request line.

        :param line: the request, decoded, without its terminator.
        :param session: the connection, for handlers that ask for it.
        :param timeout: as for :meth:`Command.run`.
        :returns: the reply, or a Deferred that fires with it.
        """
        found = self.find(line)
        if found is None:
            return Reply(UNKNOWN_COMMAND)
        command, arguments = found
        return command.run(arguments, session, timeout)

    def dispatch(self, line: str) -> Reply:
        """
        Answer one request line now, with no session: for commands that
        answer at once (the load tester uses it to know the replies to
        expect).

        :raises ValueError: if the command answers asynchronously.
        """
        reply = self.execute(line)
        if isinstance(reply, Deferred):
            reply.cancel()
            reply.addErrback(lambda _: None)
            raise ValueError(f"{line!r} answers asynchronously")
        return reply

    def describe(self, name: str) -> str:
        """
        The reply to ``help NAME``: the command's usage and summary.
        """
        command = self._commands.get(name)
        if command is None:
            return no_such_command(name)
        if not command.summary:
            return command.usage
        return command.usage + HELP_SUMMARY_SEPARATOR + command.summary


def constant(
    name: str, text: str, summary: str = "", *, close: bool = False
) -> Command:
    """
    A command that always answers the same text.

    :param close: whether the server closes the connection after the reply.
    """
    reply = Reply(text, close)
    return Command(name, lambda: reply, summary, constant=True)


def help_command(table: CommandTable) -> Command:
    """
    A ``help`` command for C{table}: ``help`` lists every name, ``help NAME``
    gives one command's usage and summary.

    :param table: the table whose names it lists; it reads them at each
        call, so commands added later are listed too.
    :returns: the command; add it to C{table}.
    """

    def help(name: Rest = "") -> str:
        if name:
            return table.describe(name)
        return format_help(table.names())

    return Command(
        HELP, help, "list the commands, or describe one", usage="help [NAME]"
    )


def default_commands() -> CommandTable:
    """
    Build the seed's command table, plus ``help``.

    :returns: a new table with ``Hello``, ``Are you there?``, ``quit`` and
        ``help``.
    """
    table = CommandTable(
        (
            constant("Hello", GREETING, "a greeting"),
            constant("Are you there?", PRESENT, "a liveness check"),
            constant(QUIT, CLOSING, "end the session", close=True),
        )
    )
    table.add(help_command(table))
    return table


def with_builtins(*tables: CommandTable) -> CommandTable:
    """
    The table a server serves: the built-in commands (``Hello``,
    ``Are you there?``, ``quit``, ``help``) and every command of C{tables}.

    :raises ValueError: if two tables (the built-ins included) define the
        same name.
    """
    served = default_commands()
    for table in tables:
        served.update(table)
    return served
