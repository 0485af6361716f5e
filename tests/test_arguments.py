"""
Unit tests for commands with arguments: the decorator, how a request line is
split into a name and arguments, conversion, usage errors, ``help NAME``, and
how a handler's result or failure becomes one reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    GREETING,
    UNKNOWN_COMMAND,
    Command,
    CommandError,
    CommandTable,
    Reply,
    Rest,
    Session,
    default_commands,
    with_builtins,
)

from ._helpers import LogCapture


def answer(table: CommandTable, line: str, session: Session | None = None) -> str:
    """
    The reply to one line of a table whose commands answer at once.
    """
    reply = table.execute(line, session)
    assert isinstance(reply, Reply), reply
    return reply.text


def sample_table() -> CommandTable:
    table = CommandTable()

    @table.command("echo", usage="echo TEXT")
    def echo(text: Rest) -> str:
        """Answer with the text."""
        return text

    @table.command("add")
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @table.command("scale")
    def scale(x: float, factor: float = 2.0) -> str:
        return f"{x * factor:g}"

    @table.command("count")
    def count(*words: str) -> int:
        return len(words)

    @table.command("put")
    def put(key: str, value: Rest) -> str:
        return f"{key}={value}"

    @table.command("say it")
    def say_it(word: str) -> str:
        return word.upper()

    return with_builtins(table)


class DecoratorTests(SynchronousTestCase):
    """
    ``CommandTable.command`` registers a handler.
    """

    def test_returns_the_function_unchanged(self) -> None:
        table = CommandTable()

        def ping() -> str:
            return "pong"

        self.assertIs(table.command("ping")(ping), ping)
        self.assertEqual(answer(table, "ping"), "pong")

    def test_summary_is_the_docstrings_first_line(self) -> None:
        table = sample_table()
        command = table.get("echo")
        assert command is not None
        self.assertEqual(command.summary, "Answer with the text.")

    def test_explicit_summary_wins(self) -> None:
        table = CommandTable()
        table.command("a", summary="mine")(lambda: "x")
        command = table.get("a")
        assert command is not None
        self.assertEqual(command.summary, "mine")

    def test_usage_written_from_parameters(self) -> None:
        table = sample_table()
        usages = {name: table.get(name).usage for name in ("add", "scale", "count")}  # type: ignore[union-attr]
        self.assertEqual(
            usages,
            {
                "add": "add A B",
                "scale": "scale X [FACTOR]",
                "count": "count [WORDS...]",
            },
        )

    def test_duplicate_rejected(self) -> None:
        table = sample_table()
        self.assertRaises(ValueError, table.command("echo"), lambda: "")

    def test_unconvertible_annotation_rejected(self) -> None:
        table = CommandTable()

        def bad(flag: bool) -> str:
            return ""

        self.assertRaises(ValueError, table.command("bad"), bad)

    def test_rest_must_come_last(self) -> None:
        table = CommandTable()

        def bad(text: Rest, n: int) -> str:
            return ""

        self.assertRaises(ValueError, table.command("bad"), bad)

    def test_add_still_takes_command_objects(self) -> None:
        table = CommandTable()
        table.add(Command("ping", lambda: Reply("pong"), "check"))
        self.assertEqual(answer(table, "ping"), "pong")


class MatchingTests(SynchronousTestCase):
    """
    The longest name that the line equals, or that a space follows, wins.
    """

    def test_name_alone(self) -> None:
        self.assertEqual(answer(sample_table(), "Hello"), GREETING)

    def test_name_with_spaces_and_arguments(self) -> None:
        self.assertEqual(answer(sample_table(), "say it loud"), "LOUD")

    def test_longest_name_wins(self) -> None:
        table = CommandTable()
        table.command("say")(lambda word: f"short {word}")
        table.command("say it")(lambda word: f"long {word}")
        self.assertEqual(answer(table, "say it now"), "long now")
        self.assertEqual(answer(table, "say now"), "short now")

    def test_name_must_be_followed_by_a_space(self) -> None:
        self.assertEqual(answer(sample_table(), "echoes"), UNKNOWN_COMMAND)

    def test_case_sensitive(self) -> None:
        self.assertEqual(answer(sample_table(), "ECHO hi"), UNKNOWN_COMMAND)

    def test_seed_commands_with_text_after_are_unknown(self) -> None:
        table = sample_table()
        for line in ("Hello world", "quit now", "Are you there? yes", "Hello "):
            self.assertEqual(answer(table, line), UNKNOWN_COMMAND, line)


class ArgumentTests(SynchronousTestCase):
    """
    Arguments are split, converted, and checked against the parameters.
    """

    def test_rest_is_verbatim(self) -> None:
        self.assertEqual(answer(sample_table(), "echo hello  world "), "hello  world ")

    def test_rest_may_be_empty(self) -> None:
        self.assertEqual(answer(sample_table(), "echo "), "")

    def test_words_then_rest(self) -> None:
        self.assertEqual(answer(sample_table(), "put k a b  c"), "k=a b  c")

    def test_rest_starts_after_one_space(self) -> None:
        table = sample_table()
        self.assertEqual(answer(table, "put  k   a"), "k=  a")
        self.assertEqual(answer(table, "put k "), "k=")

    def test_words_are_separated_by_spaces_only(self) -> None:
        self.assertEqual(answer(sample_table(), "count a\tb c"), "2")

    def test_keyword_only_session_after_words(self) -> None:
        table = CommandTable()

        @table.command("keys")
        def keys(*names: str, session: Session) -> str:
            return f"{len(names)} {session.peer}"

        session = Session("tcp:127.0.0.1:1", None, Clock())
        self.assertEqual(answer(table, "keys a b", session), "2 tcp:127.0.0.1:1")

    def test_session_after_missing_optional(self) -> None:
        table = CommandTable()

        @table.command("opt")
        def opt(a: int = 1, *, session: Session) -> str:
            return f"{a} {session.peer}"

        session = Session("p", None, Clock())
        self.assertEqual(answer(table, "opt", session), "1 p")
        self.assertEqual(answer(table, "opt 5", session), "5 p")

    def test_unresolvable_return_annotation_is_ignored(self) -> None:
        namespace: dict[str, Any] = {}
        exec(
            "from __future__ import annotations\n"
            "def later(seconds: float) -> NotImported[str]:\n"
            "    return f'{seconds:g}'\n",
            namespace,
        )
        table = CommandTable()
        table.command("later")(namespace["later"])
        self.assertEqual(answer(table, "later 1.5"), "1.5")

    def test_int_conversion(self) -> None:
        self.assertEqual(answer(sample_table(), "add 2 40"), "42")

    def test_optional_parameter(self) -> None:
        table = sample_table()
        self.assertEqual(answer(table, "scale 1.5"), "3")
        self.assertEqual(answer(table, "scale 1.5 3"), "4.5")

    def test_variadic(self) -> None:
        table = sample_table()
        self.assertEqual(answer(table, "count"), "0")
        self.assertEqual(answer(table, "count a b  c"), "3")

    def test_usage_errors(self) -> None:
        table = sample_table()
        cases = {
            "echo": "Error: usage: echo TEXT",
            "add 1": "Error: usage: add A B",
            "add 1 2 3": "Error: usage: add A B",
            "add one 2": "Error: usage: add A B",
            "scale": "Error: usage: scale X [FACTOR]",
            "put k": "Error: usage: put KEY VALUE",
        }
        for line, reply in cases.items():
            self.assertEqual(answer(table, line), reply, line)

    def test_rest_command_with_only_spaces_is_usage(self) -> None:
        self.assertEqual(
            answer(sample_table(), "put    "), "Error: usage: put KEY VALUE"
        )

    def test_omitted_optional_rest_takes_its_default(self) -> None:
        table = CommandTable()

        @table.command("note")
        def note(key: str, text: Rest = "none") -> str:
            return f"{key}:{text}"

        self.assertEqual(answer(table, "note k"), "k:none")
        self.assertEqual(answer(table, "note k a  b "), "k:a  b ")

    def test_non_numeric_word_for_int_args_is_usage(self) -> None:
        table = CommandTable()

        @table.command("sum")
        def total(*numbers: int) -> int:
            return sum(numbers)

        self.assertEqual(answer(table, "sum 1 2"), "3")
        self.assertEqual(answer(table, "sum 1 x"), "Error: usage: sum [NUMBERS...]")

    def test_session_after_missing_optional_binds_by_name(self) -> None:
        table = CommandTable()
        unbound = Session("unbound", None, Clock())

        @table.command("who")
        def who(name: str = "anon", session: Session = unbound) -> str:
            return f"{name}@{session.peer}"

        session = Session("p", None, Clock())
        self.assertEqual(answer(table, "who", session), "anon@p")
        self.assertEqual(answer(table, "who z", session), "z@p")

    def test_var_keyword_rejected_at_definition(self) -> None:
        def handler(**options: str) -> str:
            return ""

        with self.assertRaises(ValueError) as caught:
            CommandTable().command("h")(handler)
        self.assertIn("'options'", str(caught.exception))

    def test_keyword_only_word_rejected_at_definition(self) -> None:
        def handler(*, word: str) -> str:
            return word

        with self.assertRaises(ValueError) as caught:
            CommandTable().command("h")(handler)
        self.assertIn("only a Session may be keyword-only", str(caught.exception))

    def test_numbers_are_ascii_decimal_only(self) -> None:
        table = sample_table()
        for words in (
            "\u0663 1",  # ARABIC-INDIC DIGIT THREE
            "\uff11 1",  # FULLWIDTH DIGIT ONE
            "1_000 1",
            "0x10 1",
        ):
            line = f"add {words}"
            self.assertEqual(answer(table, line), "Error: usage: add A B", line)
        for word in ("nan", "inf", "-Infinity", "1e999", "1_0.5", "\u0663.5", "."):
            line = f"scale {word}"
            self.assertEqual(
                answer(table, line), "Error: usage: scale X [FACTOR]", line
            )

    def test_ascii_decimal_numbers_accepted(self) -> None:
        table = sample_table()
        self.assertEqual(answer(table, "add -2 +44"), "42")
        self.assertEqual(answer(table, "add 007 0"), "7")
        for word, reply in (("-0.5", "-1"), (".5", "1"), ("2.", "4"), ("1e1", "20")):
            self.assertEqual(answer(table, f"scale {word}"), reply, word)


class ResultTests(SynchronousTestCase):
    """
    Whatever a handler does, the client gets exactly one line.
    """

    def run_handler(self, handler: Any) -> str:
        table = CommandTable()
        table.command("h")(handler)
        return answer(table, "h")

    def test_command_error_is_the_clients_to_see(self) -> None:
        def refuse() -> str:
            raise CommandError("no such key")

        logged = LogCapture(self)
        self.assertEqual(self.run_handler(refuse), "Error: no such key")
        self.assertEqual(logged.events, [])

    def test_exception_is_contained_and_logged_once(self) -> None:
        def broken() -> str:
            raise ZeroDivisionError("secret detail")

        logged = LogCapture(self)
        self.assertEqual(self.run_handler(broken), "Error: h failed")
        self.assertEqual(len(logged.events), 1)
        self.assertIn("ZeroDivisionError", str(logged.events[0]["log_failure"]))
        self.flushLoggedErrors(ZeroDivisionError)

    def test_reply_with_line_feed_is_a_bug(self) -> None:
        logged = LogCapture(self)
        self.assertEqual(self.run_handler(lambda: "two\nlines"), "Error: h failed")
        self.assertEqual(len(logged.events), 1)
        self.flushLoggedErrors(ValueError)

    def test_none_is_a_bug(self) -> None:
        LogCapture(self)
        self.assertEqual(self.run_handler(lambda: None), "Error: h failed")
        self.flushLoggedErrors(TypeError)

    def test_numbers_become_text(self) -> None:
        self.assertEqual(self.run_handler(lambda: 7), "7")
        self.assertEqual(self.run_handler(lambda: 0.5), "0.5")

    def test_reply_object_may_close(self) -> None:
        table = CommandTable()
        table.command("bye")(lambda: Reply("bye", close=True))
        self.assertEqual(table.execute("bye"), Reply("bye", close=True))

    def test_already_fired_deferred_answers_at_once(self) -> None:
        self.assertEqual(self.run_handler(lambda: succeed("now")), "now")

    def test_async_def_that_awaits_nothing_slow_answers_at_once(self) -> None:
        async def quick() -> str:
            return await succeed("quick")

        self.assertEqual(self.run_handler(quick), "quick")


class SessionTests(SynchronousTestCase):
    """
    A handler that asks for the session gets the connection's.
    """

    def setUp(self) -> None:
        self.table = CommandTable()

        @self.table.command("visits")
        def visits(session: Session) -> int:
            session.state["visits"] = session.state.get("visits", 0) + 1
            return int(session.state["visits"])

        @self.table.command("bye")
        def bye(session: Session, word: str) -> str:
            session.close_after_reply()
            return word

        self.session = Session("tcp:127.0.0.1:1", None, Clock())

    def test_state_lasts_for_the_session(self) -> None:
        answer(self.table, "visits", self.session)
        self.assertEqual(answer(self.table, "visits", self.session), "2")
        other = Session("tcp:127.0.0.1:2", None, Clock())
        self.assertEqual(answer(self.table, "visits", other), "1")

    def test_session_is_not_an_argument(self) -> None:
        command = self.table.get("bye")
        assert command is not None
        self.assertEqual(command.usage, "bye WORD")

    def test_close_after_reply(self) -> None:
        self.assertEqual(
            self.table.execute("bye ok", self.session), Reply("ok", close=True)
        )
        self.assertEqual(answer(self.table, "visits", self.session), "1")


class AsyncResultTests(SynchronousTestCase):
    """
    A handler that answers later: its failure and its timeout are contained.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.session = Session("tcp:127.0.0.1:1", None, self.clock)
        self.pending: Deferred[str] = Deferred()
        self.table = CommandTable()
        self.table.command("later")(lambda: self.pending)

    def execute(self, timeout: float | None = None) -> list[Reply]:
        result = self.table.execute("later", self.session, timeout)
        assert isinstance(result, Deferred)
        replies: list[Reply] = []
        result.addCallback(replies.append)
        return replies

    def test_reply_when_it_fires(self) -> None:
        replies = self.execute()
        self.assertEqual(replies, [])
        self.pending.callback("done")
        self.assertEqual(replies, [Reply("done")])

    def test_failure_is_contained(self) -> None:
        LogCapture(self)
        replies = self.execute()
        self.pending.errback(RuntimeError("boom"))
        self.assertEqual(replies, [Reply("Error: later failed")])
        self.flushLoggedErrors(RuntimeError)

    def test_timeout_cancels(self) -> None:
        cancelled: list[bool] = []
        self.pending = Deferred(lambda d: cancelled.append(True))
        LogCapture(self)
        replies = self.execute(timeout=5)
        self.clock.advance(4.9)
        self.assertEqual(replies, [])
        self.clock.advance(0.1)
        self.assertEqual(replies, [Reply("Error: later timed out")])
        self.assertEqual(cancelled, [True])

    def test_answer_in_time_cancels_the_timer(self) -> None:
        replies = self.execute(timeout=5)
        self.pending.callback("ok")
        self.assertEqual(replies, [Reply("ok")])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HelpTests(SynchronousTestCase):
    """
    ``help`` lists; ``help NAME`` describes one command.
    """

    def test_help_name(self) -> None:
        self.assertEqual(
            answer(sample_table(), "help echo"), "echo TEXT - Answer with the text."
        )

    def test_help_name_with_spaces(self) -> None:
        self.assertEqual(
            answer(default_commands(), "help Are you there?"),
            "Are you there? - a liveness check",
        )

    def test_help_unknown_name(self) -> None:
        self.assertEqual(
            answer(default_commands(), "help nope"), "Error: no such command: nope"
        )

    def test_help_lists_added_commands(self) -> None:
        self.assertIn(", echo, add,", answer(sample_table(), "help"))


class WithBuiltinsTests(SynchronousTestCase):
    """
    Tables served together must not share a name.
    """

    def test_clash_with_builtin(self) -> None:
        table = CommandTable()
        table.command("Hello")(lambda: "hi")
        self.assertRaises(ValueError, with_builtins, table)

    def test_clash_between_tables(self) -> None:
        first, second = CommandTable(), CommandTable()
        first.command("x")(lambda: "1")
        second.command("x")(lambda: "2")
        self.assertRaises(ValueError, with_builtins, first, second)


class SpecialisedBinderTests(SynchronousTestCase):
    """
    The binder worked out at registration for the common signatures fills
    the same arguments as the general one, and fails the same lines.
    """

    def handlers(self) -> list[Callable[..., str]]:
        def one(key: str) -> str:
            return key

        def two(key: str, count: int) -> str:
            return key

        def floats(x: float, y: float) -> str:
            return ""

        def keyed(key: str, value: Rest) -> str:
            return value

        def mixed(key: str, count: int, value: Rest) -> str:
            return value

        def only(text: Rest) -> str:
            return text

        def counted(count: int, value: Rest) -> str:
            return value

        return [one, two, floats, keyed, mixed, only, counted]

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.none(), st.text(alphabet=" ab1.-e\u0663", max_size=12)))
    def test_same_as_the_general_binder(self, arguments: str | None) -> None:
        from commandproto.commands.table import ArgumentError, Command

        for handler in self.handlers():
            command = Command("c", handler)
            binder = command._binder
            assert binder is not None, handler
            try:
                expected: object = command.bind(arguments, None)[0]
            except ArgumentError:
                expected = ArgumentError
            try:
                got: object = binder(arguments, None)[0]
            except ArgumentError:
                got = ArgumentError
            self.assertEqual(got, expected, (handler.__name__, arguments))

    def test_other_signatures_use_the_general_binder(self) -> None:
        from commandproto.commands.table import Command

        def optional(key: str = "k") -> str:
            return key

        def with_session(session: Session, key: str) -> str:
            return key

        def many(*keys: str) -> str:
            return ""

        for handler in (optional, with_session, many):
            self.assertIsNone(Command("c", handler)._binder, handler.__name__)


class QuickRunnerTests(SynchronousTestCase):
    """
    The quick runner worked out at registration for handlers of plain words
    calls the handler with the same arguments as :meth:`Command.run_text`
    would, or not at all (``MISS``) for a line it leaves to it.
    """

    def handlers(self) -> list[Callable[..., str]]:
        def none() -> str:
            return "()"

        def one(key: str) -> str:
            return repr((key,))

        def two(key: str, other: str) -> str:
            return repr((key, other))

        def keyed(key: str, value: Rest) -> str:
            return repr((key, value))

        def only(text: Rest) -> str:
            return repr((text,))

        return [none, one, two, keyed, only]

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(st.none(), st.text(alphabet=" ab\r\u0663", max_size=10)))
    def test_same_as_run_text(self, arguments: str | None) -> None:
        from commandproto.commands.table import MISS, Command

        for handler in self.handlers():
            command = Command("c", handler)
            quick = command.quick
            assert quick is not None, handler
            got = quick(arguments)
            if got is MISS:
                continue
            self.assertEqual(
                got, command.run_text(arguments, None), (handler.__name__, arguments)
            )

    def test_common_shapes_are_taken(self) -> None:
        from commandproto.commands.table import MISS, Command

        for handler, arguments in zip(
            self.handlers(),
            [None, "k", "k v", "k some text", " any text "],
            strict=True,
        ):
            got = Command("c", handler).quick(arguments)  # type: ignore[misc]
            self.assertIsNot(got, MISS, handler.__name__)

    def test_other_signatures_have_none(self) -> None:
        from commandproto.commands.table import Command

        def optional(key: str = "k") -> str:
            return key

        def with_session(session: Session, key: str) -> str:
            return key

        def many(*keys: str) -> str:
            return ""

        def counted(count: int) -> str:
            return ""

        for handler in (optional, with_session, many, counted):
            self.assertIsNone(Command("c", handler).quick, handler.__name__)


class ServedMatchingTests(SynchronousTestCase):
    """
    A served line finds the command the table's matching rule names, also
    for names with spaces added while the server runs.
    """

    def test_longest_name_wins_when_served(self) -> None:
        from commandproto.testing import CommandTester

        table = CommandTable()
        table.command("say")(lambda word: f"short {word}")
        tester = CommandTester(table)
        client = tester.connect()
        self.assertEqual(client.request("say it"), "short it")
        tester.factory.commands.command("say it")(lambda word: f"long {word}")
        self.assertEqual(client.request("say it now"), "long now")
        self.assertEqual(client.request("say now"), "short now")
        self.assertEqual(client.request("say"), "Error: usage: say WORD")
