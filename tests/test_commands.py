"""
Unit tests for the command table.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    CLOSING,
    GREETING,
    PRESENT,
    UNKNOWN_COMMAND,
    Command,
    CommandTable,
    Reply,
    constant,
    default_commands,
    format_help,
    help_command,
    is_error_reply,
    line_too_long,
    parse_help,
)


class DefaultCommandsTests(SynchronousTestCase):
    """
    The seed's commands and replies.
    """

    def test_seed_replies(self) -> None:
        table = default_commands()
        self.assertEqual(table.dispatch("Hello"), Reply("Greetings!"))
        self.assertEqual(table.dispatch("Are you there?"), Reply("Yes, I am here!"))
        self.assertEqual(table.dispatch("quit"), Reply("Closing down", close=True))
        self.assertEqual(table.dispatch("anything"), Reply("Unknown command."))

    def test_constants_are_the_seeds(self) -> None:
        self.assertEqual(
            (GREETING, PRESENT, CLOSING, UNKNOWN_COMMAND),
            ("Greetings!", "Yes, I am here!", "Closing down", "Unknown command."),
        )

    def test_only_quit_closes(self) -> None:
        table = default_commands()
        closing = [name for name in table.names() if table.dispatch(name).close]
        self.assertEqual(closing, ["quit"])

    def test_default_names(self) -> None:
        self.assertEqual(
            default_commands().names(),
            ["Hello", "Are you there?", "quit", "help", "stats"],
        )

    def test_help_lists_every_command(self) -> None:
        self.assertEqual(
            default_commands().dispatch("help"),
            Reply("Commands: Hello, Are you there?, quit, help, stats"),
        )

    def test_help_lists_commands_added_later(self) -> None:
        table = default_commands()
        table.add(Command("ping", lambda: Reply("pong")))
        self.assertEqual(
            parse_help(table.dispatch("help").text),
            ["Hello", "Are you there?", "quit", "help", "stats", "ping"],
        )

    def test_each_call_builds_a_new_table(self) -> None:
        first = default_commands()
        first.add(Command("extra", lambda: Reply("x")))
        self.assertNotIn("extra", default_commands())


class CommandTableTests(SynchronousTestCase):
    """
    Registering and dispatching.
    """

    def test_dispatch_calls_handler(self) -> None:
        calls: list[int] = []

        def handler() -> Reply:
            calls.append(1)
            return Reply("pong")

        table = CommandTable((Command("ping", handler),))
        self.assertEqual(table.dispatch("ping"), Reply("pong"))
        self.assertEqual(calls, [1])

    def test_duplicate_name_rejected(self) -> None:
        table = CommandTable((Command("ping", lambda: Reply("a")),))
        self.assertRaises(ValueError, table.add, Command("ping", lambda: Reply("b")))

    def test_name_with_newline_rejected(self) -> None:
        table = CommandTable()
        self.assertRaises(ValueError, table.add, Command("a\nb", lambda: Reply("")))

    def test_name_ending_in_cr_rejected(self) -> None:
        table = CommandTable()
        self.assertRaises(ValueError, table.add, Command("a\r", lambda: Reply("")))

    def test_empty_name_rejected(self) -> None:
        table = CommandTable()
        self.assertRaises(ValueError, table.add, Command("", lambda: Reply("")))

    def test_name_with_help_separator_rejected(self) -> None:
        table = CommandTable()
        self.assertRaises(ValueError, table.add, Command("a, b", lambda: Reply("")))

    def test_name_with_comma_or_space_accepted(self) -> None:
        table = CommandTable()
        for name in ("a,b", "a,", " b", "c d"):
            table.add(Command(name, lambda: Reply("")))
        self.assertEqual(table.names(), ["a,b", "a,", " b", "c d"])

    def test_names_in_order_added(self) -> None:
        table = CommandTable()
        for name in ("b", "a", "c"):
            table.add(Command(name, lambda: Reply("")))
        self.assertEqual(table.names(), ["b", "a", "c"])

    def test_iteration_yields_commands(self) -> None:
        command = Command("ping", lambda: Reply("pong"), "check")
        self.assertEqual(list(CommandTable((command,))), [command])


class HelpFormatTests(SynchronousTestCase):
    """
    The ``help`` reply is one line that splits back into the names.
    """

    def test_format(self) -> None:
        self.assertEqual(format_help(["a", "b c"]), "Commands: a, b c")

    def test_round_trip_of_awkward_names(self) -> None:
        # Every name CommandTable accepts survives, commas and spaces at
        # either end included.
        names = ["a,", " b", ",", "c ,d", "e,,", "  ", " ", "f ,"]
        table = CommandTable()
        for name in names:
            table.add(Command(name, lambda: Reply("")))
        table.add(help_command(table))
        self.assertEqual(parse_help(table.dispatch("help").text), [*names, "help"])

    @given(st.lists(st.text(alphabet=", ab\r", min_size=1, max_size=6), unique=True))
    def test_any_accepted_names_round_trip(self, names: list[str]) -> None:
        table = CommandTable()
        accepted = []
        for name in names:
            try:
                table.add(Command(name, lambda: Reply("")))
            except ValueError:
                continue
            accepted.append(name)
        if accepted:
            self.assertEqual(parse_help(format_help(table.names())), accepted)

    def test_parse_rejects_other_replies(self) -> None:
        for text in (UNKNOWN_COMMAND, GREETING, "Commands: ", "commands: a"):
            self.assertIsNone(parse_help(text), text)

    def test_help_is_not_an_error(self) -> None:
        self.assertFalse(is_error_reply(format_help(["a"])))


class ErrorReplyTests(SynchronousTestCase):
    """
    Which replies count as errors.
    """

    def test_unknown_command_is_error(self) -> None:
        self.assertTrue(is_error_reply(UNKNOWN_COMMAND))

    def test_error_prefix_is_error(self) -> None:
        self.assertTrue(is_error_reply(line_too_long(10)))

    def test_normal_replies_are_not_errors(self) -> None:
        for text in (GREETING, PRESENT, CLOSING):
            self.assertFalse(is_error_reply(text), text)

    def test_line_too_long_names_limit(self) -> None:
        self.assertEqual(line_too_long(10), "Error: line too long (limit is 10 bytes)")


class ConstantRepliesTests(SynchronousTestCase):
    """
    What the server may answer from a cache.
    """

    def test_seed_constant_replies_exclude_quit(self) -> None:
        self.assertEqual(
            default_commands().constant_replies(),
            {"Hello": Reply(GREETING), "Are you there?": Reply(PRESENT)},
        )

    def test_non_constant_commands_excluded(self) -> None:
        table = CommandTable((Command("now", lambda: Reply("x")),))
        self.assertEqual(table.constant_replies(), {})

    def test_constant_helper(self) -> None:
        command = constant("ping", "pong", "check")
        self.assertEqual(
            (command.name, command.handler(), command.summary, command.constant),
            ("ping", Reply("pong"), "check", True),
        )

    def test_version_changes_on_add(self) -> None:
        table = CommandTable()
        before = table.version
        table.add(constant("ping", "pong"))
        self.assertNotEqual(table.version, before)
