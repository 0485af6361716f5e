"""
The command table: what each request line means, with no knowledge of bytes,
transports or reactors.

Both the server (which answers) and the client (which classifies replies and
knows when a session is over) read their strings from here, so no protocol
string exists twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ._codec import is_one_line

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
        L{CommandTable.add} enforces, so the list can be split back apart).
    :returns: ``Commands: `` and the names joined by ``", "``.
    """
    return HELP_PREFIX + HELP_SEPARATOR.join(names)


def parse_help(text: str) -> list[str] | None:
    """
    Read back a reply made by L{format_help}.

    :param text: one reply line, without its terminator.
    :returns: the command names, or ``None`` if C{text} is not a ``help``
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


Handler = Callable[[], Reply]


@dataclass(frozen=True, slots=True)
class Command:
    """
    One entry of a L{CommandTable}.

    :ivar name: the exact request line that selects this command.
    :ivar handler: called with no arguments to produce the reply.
    :ivar summary: one line of help for people.
    :ivar constant: the handler always returns the same reply and does
        nothing else, so the server may answer from a cache without calling
        it.
    """

    name: str
    handler: Handler
    summary: str = ""
    constant: bool = False


class CommandTable:
    """
    A mapping from request lines to commands.

    Matching is exact and case-sensitive, as in the seed server: ``hello`` is
    not ``Hello``.  A line that names no command is answered with
    ``Unknown command.``.
    """

    def __init__(self, commands: tuple[Command, ...] = ()) -> None:
        self._commands: dict[str, Command] = {}
        self._version = 0
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
        self._version += 1

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())

    def __contains__(self, name: object) -> bool:
        return name in self._commands

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

    def dispatch(self, line: str) -> Reply:
        """
        Answer one request line.

        :param line: the request, decoded, without its terminator.
        :returns: the reply to send.
        """
        command = self._commands.get(line)
        if command is None:
            return Reply(UNKNOWN_COMMAND)
        return command.handler()


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
    A ``help`` command for C{table}.

    :param table: the table whose names it lists; it reads them at each
        call, so commands added later are listed too.
    :returns: the command; add it to C{table}.
    """
    return Command(HELP, lambda: Reply(format_help(table.names())), "list the commands")


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
