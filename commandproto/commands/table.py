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

import asyncio
import inspect
import math
import re
import typing
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Annotated, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ..wire.codec import is_one_line
from . import coroutines

log = Logger()

GREETING = "Greetings!"
PRESENT = "Yes, I am here!"
CLOSING = "Closing down"
UNKNOWN_COMMAND = "Unknown command."
ERROR_PREFIX = "Error: "
INVALID_UTF8 = ERROR_PREFIX + "line is not valid UTF-8"
QUIT = "quit"
HELP = "help"
STATS = "stats"
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


_TOO_MANY_CONNECTIONS = ERROR_PREFIX + "too many connections (limit is {})"
_TOO_MANY_FROM_ADDRESS = (
    ERROR_PREFIX + "too many connections from your address (limit is {})"
)
_IDLE = ERROR_PREFIX + "idle for {} seconds, closing connection"
_LINE_TIMEOUT = ERROR_PREFIX + "line took too long (limit is {} seconds)"


def too_many_connections(limit: int) -> str:
    """
    The line sent to a client over the server's connection limit, before the
    server closes its connection.
    """
    return _TOO_MANY_CONNECTIONS.format(limit)


def too_many_from_address(limit: int) -> str:
    """
    The line sent to a client whose address has too many connections, before
    the server closes its connection.
    """
    return _TOO_MANY_FROM_ADDRESS.format(limit)


def line_took_too_long(seconds: float) -> str:
    """
    The line sent to a client whose request line did not arrive whole within
    the server's ``--line-timeout``, before the server closes its connection.
    """
    return _LINE_TIMEOUT.format(f"{seconds:g}")


def idle_timeout_reply(seconds: float) -> str:
    """
    The line sent to a client that said nothing for too long, before the
    server closes its connection.
    """
    return _IDLE.format(f"{seconds:g}")


TOO_MANY_CONNECTIONS = "too many connections"
IDLE = "idle"
LINE_TIMEOUT = "line timeout"


def _template(template: str) -> re.Pattern[str]:
    return re.compile(r"[0-9.e+-]+".join(map(re.escape, template.split("{}"))))


_UNSOLICITED = {
    TOO_MANY_CONNECTIONS: re.compile(
        f"{_template(_TOO_MANY_CONNECTIONS).pattern}"
        f"|{_template(_TOO_MANY_FROM_ADDRESS).pattern}"
    ),
    IDLE: _template(_IDLE),
    LINE_TIMEOUT: _template(_LINE_TIMEOUT),
}


def unsolicited_kind(text: str) -> str | None:
    """
    Recognise a line the server sends on its own, not in answer to a
    request, each followed by its closing the connection.

    :param text: one line from the server, without its terminator.
    :returns: :data:`TOO_MANY_CONNECTIONS` (the client was refused),
        :data:`IDLE` (it was disconnected for silence), :data:`CLOSING`
        (the server is shutting down, or answers ``quit``: only the client
        knows whether it sent one), or ``None`` for any other line.
    """
    if text == CLOSING:
        return CLOSING
    if text.startswith(ERROR_PREFIX):
        for kind, pattern in _UNSOLICITED.items():
            if pattern.fullmatch(text):
                return kind
    return None


def is_unsolicited(text: str) -> bool:
    """
    Tell whether the server may send this line on its own (see
    :func:`unsolicited_kind`).
    """
    return unsolicited_kind(text) is not None


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
    The reply to ``help NAME`` when no command is called ``NAME``.
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


class StatsSource(typing.Protocol):
    """
    What the ``stats`` command reads: the server's counters.
    """

    def line(self) -> str:
        """The ``stats`` reply."""
        ...


class Session:
    """
    One connection, as the handlers that ask for it see it: a handler gets it
    by annotating a parameter with ``Session``.

    :ivar peer: the client's address, as the server's log lines write it
        (``tcp:127.0.0.1:51234``).
    :ivar connection_id: the connection's short id in the server's log lines.
    :ivar stats: the server's counters, for ``stats``; ``None`` outside a
        server.
    :ivar address: the client's address object, or ``None``.
    :ivar clock: the server's clock, for handlers that answer later
        (``task.deferLater(session.clock, ...)``).
    :ivar state: a dictionary of the handlers' own, kept for the life of the
        connection.
    """

    __slots__ = (
        "_close_after_reply",
        "address",
        "clock",
        "connection_id",
        "peer",
        "state",
        "stats",
    )

    def __init__(
        self,
        peer: str,
        address: IAddress | None,
        clock: IReactorTime,
        *,
        connection_id: str = "-",
        stats: StatsSource | None = None,
    ) -> None:
        self.peer = peer
        self.address = address
        self.clock = clock
        self.connection_id = connection_id
        self.stats = stats
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


_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _ascii_int(word: str) -> int:
    """
    An ``int`` parameter's word: ASCII decimal digits with an optional sign.
    Python's ``int`` would also take ``1_000``, ``٣`` and other scripts'
    digits: not numbers a client means.

    :raises ValueError: for anything else.
    """
    if _INTEGER.fullmatch(word) is None:
        raise ValueError(f"not a decimal integer: {word!r}")
    return int(word)


def _ascii_float(word: str) -> float:
    """
    A ``float`` parameter's word: an ASCII decimal number (``2``, ``-0.5``,
    ``1e3``), finite. Python's ``float`` would also take ``nan``, ``inf``,
    ``1_000.5`` and other scripts' digits.

    :raises ValueError: for anything else.
    """
    if _DECIMAL.fullmatch(word) is None:
        raise ValueError(f"not a decimal number: {word!r}")
    number = float(word)
    if not math.isfinite(number):
        raise ValueError(f"out of range: {word!r}")
    return number


_CONVERTERS: dict[object, Callable[[str], Any]] = {
    str: str,
    int: _ascii_int,
    float: _ascii_float,
}


def _resolve(handler: Callable[..., Any], given: inspect.Parameter) -> Any:
    """
    Resolve one parameter's annotation, written as a string or not.

    :raises ValueError: naming the parameter, if it cannot be resolved.
    """
    annotation = given.annotation
    if not isinstance(annotation, str):
        return annotation
    namespace = dict(getattr(handler, "__globals__", {}))
    namespace.setdefault("Annotated", Annotated)
    try:
        return eval(annotation, namespace)
    except Exception:
        raise ValueError(
            f"parameter {given.name!r}: cannot resolve its annotation "
            f"{annotation!r}; import the names it uses at module level"
        ) from None


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
        # Some annotation cannot be resolved (the return type's, say, or
        # the handler is not a plain function): resolve the parameters'
        # one by one, and name the one that fails.
        hints = {
            given.name: _resolve(handler, given)
            for given in signature.parameters.values()
            if given.annotation is not inspect.Parameter.empty
        }
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


def _split_rest(arguments: str, count: int) -> tuple[list[str], str | None]:
    """
    Take ``count`` words, separated by runs of spaces, from the start of
    ``arguments``, and the rest: everything after the one space that follows
    the last word (``None`` if nothing follows it).
    """
    words: list[str] = []
    position = 0
    end = len(arguments)
    for _ in range(count):
        while position < end and arguments[position] == " ":
            position += 1
        if position == end:
            return words, None
        stop = arguments.find(" ", position)
        if stop < 0:
            words.append(arguments[position:])
            return words, None
        words.append(arguments[position:stop])
        position = stop + 1
    return words, arguments[position:]


_Bound = tuple[list[Any], dict[str, Any]]
# Handlers are called with ``**`` this: never changed.
_NO_KEYWORDS: dict[str, Any] = {}


def _specialised_binder(
    parameters: tuple[_Parameter, ...],
) -> Callable[[str | None, Session | None], _Bound] | None:
    """
    Work out once, when a command is made, how a line's arguments become
    its handler's, for the common signatures: some required words (``str``,
    ``int``, ``float``), then perhaps a required :data:`Rest`, passed by
    position.  It does what :meth:`Command.bind` does for them, without
    going through every parameter's kind on every call.

    :returns: the binder, or ``None`` for any other signature (then
        :meth:`Command.bind` does the work).
    """
    if not parameters or any(
        p.keyword or not p.required or p.kind not in ("word", "rest")
        for p in parameters
    ):
        return None
    if any(p.kind == "rest" for p in parameters[:-1]):
        return None
    rest = parameters[-1].kind == "rest"
    words = parameters[:-1] if rest else parameters
    count = len(words)
    converters = [p.convert for p in words]
    plain = all(convert is str for convert in converters)

    def convert(values: list[str]) -> list[Any]:
        if plain:
            return values
        try:
            return [c(v) for c, v in zip(converters, values, strict=True)]
        except (ValueError, ArithmeticError):
            raise ArgumentError("bad argument") from None

    if rest:

        def bind_rest(arguments: str | None, session: Session | None) -> _Bound:
            if arguments is None:
                raise ArgumentError("missing arguments")
            if not count:
                return [arguments], _NO_KEYWORDS
            values, text = _split_rest(arguments, count)
            if text is None:
                raise ArgumentError("missing text")
            values = convert(values)
            values.append(text)
            return values, _NO_KEYWORDS

        if count != 1:
            return bind_rest

        def bind_word_rest(arguments: str | None, session: Session | None) -> _Bound:
            # The commonest shape (``set KEY VALUE``): one word, one space,
            # the rest; anything else (leading spaces, no text) as above.
            if arguments is not None:
                word, space, text = arguments.partition(" ")
                if word and space:
                    values = [word] if plain else convert([word])
                    values.append(text)
                    return values, _NO_KEYWORDS
            return bind_rest(arguments, session)

        return bind_word_rest

    def bind_words(arguments: str | None, session: Session | None) -> _Bound:
        if arguments is None:
            raise ArgumentError("missing arguments")
        values = arguments.split(" ")
        if len(values) != count or "" in values:
            values = [value for value in values if value]
            if len(values) != count:
                raise ArgumentError("wrong number of arguments")
        return (values if plain else convert(values)), _NO_KEYWORDS

    return bind_words


class _Miss:
    """
    The type of :data:`MISS`.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS = _Miss()
"""
What a command's :attr:`~Command.quick` runner returns when a line's
arguments do not take its one quick shape: nothing was called, and
:meth:`Command.run_text` does the whole work.
"""

QuickRunner = Callable[[str | None], Any]
"""
A command's handler fused with the binding of the commonest shape of its
arguments: called with the text after the name (``None`` for none), it
returns what the handler returned, or :data:`MISS` without calling it.
"""


def _quick_runner(
    handler: Handler, parameters: tuple[_Parameter, ...]
) -> QuickRunner | None:
    """
    Work out once, when a command is made, the quickest way to call its
    handler with a line's arguments, for handlers whose parameters are all
    plain ``str`` words and perhaps a last :data:`Rest`, none of them
    optional and no :class:`Session`: no lists or tuples of arguments are
    built, and the handler is called with its arguments by position.  Only
    the shape every well-formed line has is taken (words separated by one
    space, no CR anywhere); anything else is :data:`MISS`, for
    :meth:`Command.run_text` to bind, or answer with its usage.

    :returns: the runner, or ``None`` for any other signature.
    """
    if any(
        p.keyword or not p.required or p.kind not in ("word", "rest")
        for p in parameters
    ) or any(p.convert is not str for p in parameters):
        return None
    if any(p.kind == "rest" for p in parameters[:-1]):
        return None
    rest = bool(parameters) and parameters[-1].kind == "rest"
    count = len(parameters) - 1 if rest else len(parameters)
    if not parameters:

        def no_arguments(arguments: str | None) -> Any:
            return handler() if arguments is None else MISS

        return no_arguments
    if rest and not count:

        def only_rest(arguments: str | None) -> Any:
            if arguments is None or "\r" in arguments:
                return MISS
            return handler(arguments)

        return only_rest
    if rest and count == 1:

        def word_rest(arguments: str | None) -> Any:
            if arguments is None or "\r" in arguments:
                return MISS
            word, space, text = arguments.partition(" ")
            if not word or not space:
                return MISS
            return handler(word, text)

        return word_rest
    if not rest and count == 1:

        def one_word(arguments: str | None) -> Any:
            if not arguments or " " in arguments or "\r" in arguments:
                return MISS
            return handler(arguments)

        return one_word
    if rest:
        return None

    def words(arguments: str | None) -> Any:
        if arguments is None or "\r" in arguments:
            return MISS
        values = arguments.split(" ")
        if len(values) != count or "" in values:
            return MISS
        return handler(*values)

    return words


def _usage(name: str, parameters: tuple[_Parameter, ...]) -> str:
    """
    Write a usage line from a handler's parameters: ``set KEY VALUE``,
    ``[COUNT]`` for an optional one, ``[KEYS...]`` for ``*keys``.
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

_H = typing.TypeVar("_H", bound=Handler)


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
    :ivar quick: the handler fused with the binding of its arguments' one
        common shape (see ``QuickRunner``), when its parameters are
        plain words; ``None`` otherwise.
    """

    name: str
    handler: Handler
    summary: str = ""
    constant: bool = False
    usage: str = ""
    overlap: bool = False
    parameters: tuple[_Parameter, ...] = field(default=(), init=False, repr=False)
    _takes_arguments: bool = field(default=False, init=False, repr=False)
    _rest: bool = field(default=False, init=False, repr=False)
    _words: int = field(default=0, init=False, repr=False)
    _only_rest: bool = field(default=False, init=False, repr=False)
    _binder: Callable[[str | None, Session | None], _Bound] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    quick: QuickRunner | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for what in ("usage", "summary"):
            if not is_one_line(getattr(self, what)):
                raise ValueError(f"command {self.name!r}: its {what} must be one line")
        parameters = _parameters(self.handler)
        from_line = [p for p in parameters if p.kind != "session"]
        object.__setattr__(self, "parameters", parameters)
        object.__setattr__(self, "_takes_arguments", bool(from_line))
        rest = bool(from_line) and from_line[-1].kind == "rest"
        object.__setattr__(self, "_rest", rest)
        object.__setattr__(self, "_words", len(from_line) - 1 if rest else 0)
        object.__setattr__(self, "_only_rest", rest and len(parameters) == 1)
        object.__setattr__(self, "_binder", _specialised_binder(parameters))
        object.__setattr__(self, "quick", _quick_runner(self.handler, parameters))
        if not self.usage:
            object.__setattr__(self, "usage", _usage(self.name, parameters))

    @property
    def takes_arguments(self) -> bool:
        """
        Whether any parameter is filled from the request line.
        """
        return self._takes_arguments

    def bind(
        self, arguments: str | None, session: Session | None
    ) -> tuple[list[Any], dict[str, Any]]:
        """
        Fill the handler's parameters from a request's arguments.

        Words are separated by runs of spaces; a :data:`Rest` parameter gets
        everything after the space that follows the last word, verbatim.

        :param arguments: the text after the name and one space, or ``None``
            when the line is the name alone.
        :param session: what a ``Session`` parameter gets.
        :returns: the positional and keyword arguments.
        :raises ArgumentError: if the arguments do not fit.
        """
        parameters = self.parameters
        if not parameters:
            if arguments is not None:
                raise ArgumentError("takes no arguments")
            return [], {}
        if self._only_rest and arguments is not None:
            # The commonest handler with arguments: ``def echo(text: Rest)``.
            return [arguments], {}
        words: list[str]
        rest: str | None = None
        if arguments is None:
            words = []
        elif self._rest:
            words, rest = _split_rest(arguments, self._words)
        elif not self._takes_arguments:
            raise ArgumentError("takes no arguments")
        else:
            words = [word for word in arguments.split(" ") if word]
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        skipping = False
        position = 0
        for parameter in self.parameters:
            kind = parameter.kind
            if kind == "session":
                if session is None:
                    raise ArgumentError("needs a session")
                value: Any = session
            elif kind == "rest":
                if rest is None:
                    if parameter.required:
                        raise ArgumentError("missing text")
                    skipping = True
                    continue
                value = rest
            elif kind == "words":
                try:
                    positional.extend(map(parameter.convert, words[position:]))
                except (ValueError, ArithmeticError):
                    raise ArgumentError(f"bad {parameter.name}") from None
                position = len(words)
                continue
            elif position < len(words):
                try:
                    value = parameter.convert(words[position])
                except (ValueError, ArithmeticError):
                    raise ArgumentError(f"bad {parameter.name}") from None
                position += 1
            elif parameter.required:
                raise ArgumentError(f"missing {parameter.name}")
            else:
                # Missing and optional: the rest go by name.
                skipping = True
                continue
            if parameter.keyword or skipping:
                keywords[parameter.name] = value
            else:
                positional.append(value)
        if position < len(words):
            raise ArgumentError("too many arguments")
        return positional, keywords

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
            clock for ``timeout``.
        :param timeout: seconds an asynchronous handler may take before it is
            cancelled and answered ``Error: <name> timed out``; ``None`` for
            no limit.
        :returns: the reply, or a Deferred that fires with it (never with a
            failure).  A handler that raises, fails, or returns something
            that is not a one-line reply is answered ``Error: <name> failed``
            and logged once with its traceback.
        """
        result = self.run_text(arguments, session, timeout)
        return Reply(result) if type(result) is str else result  # type: ignore[return-value]

    def run_text(
        self,
        arguments: str | None,
        session: Session | None,
        timeout: float | None = None,
    ) -> str | Reply | Deferred[Reply]:
        """
        As :meth:`run`, but a reply that is one line of text and does not
        close the connection comes back as the text alone, unwrapped: what
        the server calls for every line it cannot answer from its cache.
        """
        if arguments is not None and arguments[-1:] == "\r":
            # A CR before the line's CRLF is content, but no reply could
            # carry it back: arguments never end with one.
            arguments = arguments.rstrip("\r")
        binder = self._binder
        try:
            positional, keywords = (
                self.bind(arguments, session)
                if binder is None
                else binder(arguments, session)
            )
        except ArgumentError:
            if not self._takes_arguments:
                return Reply(UNKNOWN_COMMAND)
            return Reply(usage_error(self.usage))
        try:
            result = self.handler(*positional, **keywords)
        except Exception:
            return self.contain(Failure(), session)
        return self.settle(result, session, timeout)

    def settle(
        self, result: object, session: Session | None, timeout: float | None
    ) -> str | Reply | Deferred[Reply]:
        """
        What :meth:`run_text` answers once the handler has returned
        ``result``: the server calls it itself for a result of the
        ``quick`` runner that is not plain one-line text.
        """
        if type(result) is CoroutineType:
            # An ``async def``: its first step runs now, and only one that
            # waits is handed on (see commandproto.commands.coroutines).
            result = coroutines.start(result)
            if type(result) is coroutines.Raised:
                return self.contain(result.failure, session)
        # Whatever the handler asked while it ran (before any wait) is this
        # command's, not a later one's.
        close = False
        if session is not None and session._close_after_reply:
            close = session._take_close()
        if type(result) is str and "\n" not in result and result[-1:] != "\r":
            # The common case, first: a one-line text.
            return Reply(result, True) if close else result
        if inspect.iscoroutine(result):
            result = Deferred.fromCoroutine(
                typing.cast(Coroutine[Deferred[Any], Any, Any], result)
            )
        if isinstance(result, Deferred):
            return self._later(result, session, timeout, close)
        return self._reply(result, session, close)

    def _reply(self, result: object, session: Session | None, close: bool) -> Reply:
        """
        Turn a handler's result into its reply, or ``Error: <name> failed``:
        a one-line text that UTF-8 can encode.
        """
        try:
            if isinstance(result, Reply):
                text, close = result.text, close or result.close
            elif isinstance(result, int | float) and not isinstance(result, bool):
                text = str(result)
            else:
                text = result  # type: ignore[assignment]
            if not isinstance(text, str):
                raise TypeError(
                    f"handler returned {type(text).__name__}, not a reply "
                    "(return a str, an int, a float or a Reply)"
                )
            if not is_one_line(text):
                raise ValueError(_NOT_ONE_LINE)
            text.encode("utf-8")
        except Exception:
            return self.contain(Failure(), session)
        return Reply(text, close)

    def _later(
        self,
        result: Deferred[Any],
        session: Session | None,
        timeout: float | None,
        close: bool,
    ) -> Reply | Deferred[Reply]:
        """
        Wait for an asynchronous handler's result, within ``timeout``.

        :returns: the reply at once if the result is already there; else a
            Deferred that fires with the reply, whose cancellation (the
            client has gone) answers quietly.
        """
        if result.called and not result.paused:
            # Already answered (an ``async def`` that awaited nothing slow):
            # take the result now rather than a reactor turn later.
            outcome: list[object] = []
            result.addBoth(outcome.append)
            if outcome:
                if isinstance(outcome[0], Failure):
                    return self.contain(outcome[0], session)
                return self._reply(outcome[0], session, close)
        timer = None
        why_cancelled: list[str] = []
        if timeout is not None and session is not None:

            def expire() -> None:
                why_cancelled.append("timeout")
                result.cancel()

            timer = session.clock.callLater(timeout, expire)

        def cancel(_: Deferred[Reply]) -> None:
            why_cancelled.append("caller")
            result.cancel()

        reply: Deferred[Reply] = Deferred(cancel)

        def done(outcome: object) -> None:
            if timer is not None and timer.active():
                timer.cancel()
            late_close = session is not None and session._take_close()
            if isinstance(outcome, Failure):
                if why_cancelled and outcome.check(
                    CancelledError, asyncio.CancelledError
                ):
                    answer = self._cancelled(why_cancelled[0], timeout, session)
                else:
                    answer = self.contain(outcome, session)
            else:
                answer = self._reply(outcome, session, close or late_close)
            reply.callback(answer)

        result.addBoth(done)
        return reply

    def _cancelled(
        self, why: str, timeout: float | None, session: Session | None
    ) -> Reply:
        if why == "caller":
            # The client has gone: nobody reads this reply.
            return Reply(failed_reply(self.name))
        log.warn(
            "[{conn}] command {command!r} timed out after {timeout}s for {peer}",
            command=self.name,
            timeout=timeout,
            peer=session.peer if session is not None else "(no session)",
            conn=session.connection_id if session is not None else "-",
        )
        return Reply(timed_out_reply(self.name))

    def contain(self, failure: Failure, session: Session | None) -> Reply:
        """
        Contain a handler's failure: a :class:`CommandError` is the client's
        to see; anything else is a bug, logged once with its traceback and
        answered ``Error: <name> failed``.
        """
        error = failure.value
        if isinstance(error, CommandError) and is_one_line(error.message):
            return Reply(ERROR_PREFIX + error.message)
        log.failure(
            "[{conn}] command {command!r} failed for {peer}",
            failure,
            LogLevel.error,
            command=self.name,
            peer=session.peer if session is not None else "(no session)",
            conn=session.connection_id if session is not None else "-",
        )
        return Reply(failed_reply(self.name))


_NOT_ONE_LINE = "the reply holds a line break: a reply must be one line"


class CommandTable:
    """
    A mapping from command names to commands.

    Matching is exact and case-sensitive, as in the seed server: ``hello`` is
    not ``Hello``.  A line that names no command is answered with
    ``Unknown command.``.

    :ivar per_process_state: whether the commands keep state in the
        server's process (a store in memory): such a set cannot be served
        by more than one worker, as each would hold a state of its own.

    :ivar one_word: the commands a line names by its first word alone: those
        whose name is one word that starts no longer name (a line
        ``NAME ARGUMENTS`` can name no other).  Read-only; :meth:`add` keeps
        it.
    """

    def __init__(
        self, commands: Iterable[Command] = (), *, per_process_state: bool = False
    ) -> None:
        """
        :param commands: the commands to start with.
        :param per_process_state: see :attr:`per_process_state`.
        """
        self.per_process_state = per_process_state
        self._commands: dict[str, Command] = {}
        self._version = 0
        # The most spaces in any name: how far into a line a name can reach.
        self._name_spaces = 0
        # The first words of the names that hold a space: a line whose first
        # word is none of these can only name a one-word command.
        self._spaced_heads: set[str] = set()
        self.one_word: dict[str, Command] = {}
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
        if command.constant:
            reply = command.handler()
            if not isinstance(reply, Reply) or not is_one_line(reply.text):
                raise ValueError(
                    f"constant command {name!r} must answer a one-line Reply"
                )
        self._commands[command.name] = command
        self._name_spaces = max(self._name_spaces, name.count(" "))
        if " " in name:
            head = name.partition(" ")[0]
            self._spaced_heads.add(head)
            self.one_word.pop(head, None)
        elif name not in self._spaced_heads:
            self.one_word[name] = command
        self._version += 1

    def command(
        self,
        name: str,
        *,
        usage: str = "",
        summary: str | None = None,
        overlap: bool = False,
    ) -> Callable[[_H], _H]:
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

        def register(handler: _H) -> _H:
            text = summary
            if text is None:
                doc = inspect.getdoc(handler) or ""
                text = doc.strip().splitlines()[0] if doc.strip() else ""
            self.add(Command(name, handler, text, usage=usage, overlap=overlap))
            return handler

        return register

    def update(self, other: CommandTable) -> None:
        """
        Register every command of ``other``.

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
        :returns: the command called ``name``, or ``None``.
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
        head, space, arguments = line.partition(" ")
        if not space:
            command = commands.get(line)
            return None if command is None else (command, None)
        if head not in self._spaced_heads:
            # No name with a space starts with this word, so the line with
            # its space is no name either: one lookup.
            command = commands.get(head)
            return None if command is None else (command, arguments)
        command = commands.get(line)
        if command is not None:
            return command, None
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
    A ``help`` command for ``table``: ``help`` lists every name, ``help NAME``
    gives one command's usage and summary.

    :param table: the table whose names it lists; it reads them at each
        call, so commands added later are listed too.
    :returns: the command; add it to ``table``.
    """

    def help(name: Rest = "") -> str:
        name = name.strip(" ")
        if name:
            return table.describe(name)
        return format_help(table.names())

    return Command(
        HELP, help, "list the commands, or describe one", usage="help [NAME]"
    )


def stats_command() -> Command:
    """
    The ``stats`` command: the server's numbers as one line of ``key=value``
    pairs (see :mod:`commandproto.server.stats`).
    """

    def stats(session: Session) -> str:
        if session.stats is None:
            raise CommandError("no statistics here")
        return session.stats.line()

    return Command(STATS, stats, "the server's numbers, as key=value pairs")


def default_commands() -> CommandTable:
    """
    Build the seed's command table, plus ``help`` and ``stats``.

    :returns: a new table with ``Hello``, ``Are you there?``, ``quit``,
        ``help`` and ``stats``.
    """
    table = CommandTable(
        (
            constant("Hello", GREETING, "a greeting"),
            constant("Are you there?", PRESENT, "a liveness check"),
            constant(QUIT, CLOSING, "end the session", close=True),
        )
    )
    table.add(help_command(table))
    table.add(stats_command())
    return table


def with_builtins(*tables: CommandTable) -> CommandTable:
    """
    The table a server serves: the built-in commands (``Hello``,
    ``Are you there?``, ``quit``, ``help``, ``stats``) and every command of
    ``tables``.

    :raises ValueError: if two tables (the built-ins included) define the
        same name.
    """
    served = default_commands()
    for table in tables:
        served.update(table)
    return served
