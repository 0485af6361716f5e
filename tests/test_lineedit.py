"""
Tests for the line editor, driven through ``twisted.conch.insults``'s terminal
protocol with keys as a terminal sends them, and checked on an emulated
screen.
"""

from __future__ import annotations

import os
import pty
import termios

from twisted.conch.insults import insults
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from commandproto.client.history import History
from commandproto.client.lineedit import (
    EditLine,
    LineEditor,
    char_width,
    complete,
    terminal_mode,
    text_width,
    visible_span,
)
from commandproto.wire.codec import DEFAULT_MAX_LINE_LENGTH

from ._screen import Screen

PROMPT = "Execute command: "
NAMES = ["Hello", "Are you there?", "quit", "help"]

LEFT = b"\x1b[D"
RIGHT = b"\x1b[C"
UP = b"\x1b[A"
DOWN = b"\x1b[B"
HOME = b"\x1b[H"
END = b"\x1b[F"
DELETE = b"\x1b[3~"
BACKSPACE = b"\x7f"


class Editor:
    """
    A line editor on an in-memory terminal, with its prompt shown.
    """

    def __init__(
        self, history: tuple[str, ...] = (), columns: int = 80, resume: bool = True
    ) -> None:
        self.submitted: list[str] = []
        self.events: list[str] = []
        self.names = list(NAMES)
        self.columns = columns
        self.history = History(None, self.events.append)
        for line in history:
            self.history.add(line)
        self.editor = LineEditor(
            prompt=PROMPT,
            history=self.history,
            submit=self.submitted.append,
            end=lambda: self.events.append("end"),
            interrupt=lambda: self.events.append("interrupt"),
            lost=lambda: self.events.append("lost"),
            command_names=lambda: self.names,
            columns=lambda: self.columns,
        )
        self.transport = StringTransport()
        self.terminal = insults.ServerProtocol(lambda: self.editor)
        self.terminal.makeConnection(self.transport)
        if resume:
            self.prompt()

    def prompt(self) -> None:
        # What the session does: write the prompt, then resume the editor.
        self.transport.write(PROMPT.encode())
        self.editor.resumeProducing()

    def keys(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.terminal.dataReceived(chunk)

    def screen(self) -> Screen:
        screen = Screen()
        screen.feed(self.transport.value())
        return screen

    def row(self) -> str:
        return self.screen().cursor_row()

    def column(self) -> int:
        return self.screen().cursor()[0]


class TypingTests(SynchronousTestCase):
    """
    Typed characters appear, Enter sends the line.
    """

    def test_enter_submits(self) -> None:
        editor = Editor()
        editor.keys(b"Hello\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_line_stays_on_screen(self) -> None:
        editor = Editor()
        editor.keys(b"Hello\r")
        self.assertEqual(editor.screen().rows()[:2], [PROMPT + "Hello", ""])
        self.assertEqual(editor.screen().cursor(), (0, 1))

    def test_echo(self) -> None:
        editor = Editor()
        editor.keys(b"Hel")
        self.assertEqual(editor.row(), PROMPT + "Hel")
        self.assertEqual(editor.column(), len(PROMPT) + 3)

    def test_line_feed_also_submits(self) -> None:
        editor = Editor()
        editor.keys(b"quit\n")
        self.assertEqual(editor.submitted, ["quit"])

    def test_keys_one_byte_at_a_time(self) -> None:
        editor = Editor()
        for byte in b"Hllo" + LEFT * 3 + b"e\r":
            editor.keys(bytes([byte]))
        self.assertEqual(editor.submitted, ["Hello"])

    def test_utf8_split_across_reads(self) -> None:
        editor = Editor()
        encoded = "héllo".encode()
        editor.keys(encoded[:2], encoded[2:], LEFT, b"X\r")
        self.assertEqual(editor.submitted, ["héllXo"])

    def test_wide_characters_move_cursor_two_columns(self) -> None:
        editor = Editor()
        editor.keys("日本".encode(), LEFT)
        self.assertTrue(editor.transport.value().endswith(b"\x1b[K\x1b[2D"))

    def test_control_keys_not_inserted(self) -> None:
        editor = Editor()
        editor.keys(b"a\x1b[15~\x00\x1fb\r")
        self.assertEqual(editor.submitted, ["ab"])

    def test_line_length_is_bounded(self) -> None:
        editor = Editor()
        editor.keys(b"x" * (DEFAULT_MAX_LINE_LENGTH + 10) + b"\r")
        self.assertEqual(editor.submitted, ["x" * DEFAULT_MAX_LINE_LENGTH])

    def test_terminal_gone(self) -> None:
        editor = Editor()
        editor.terminal.connectionLost(Failure(EOFError()))
        self.assertEqual(editor.events, ["lost"])


class EditingKeyTests(SynchronousTestCase):
    """
    Left/Right, Home/End, Ctrl-A/Ctrl-E, Backspace/Delete, Ctrl-U, Ctrl-K,
    Ctrl-W, and the screen keeps up.
    """

    def edit(self, *keys: bytes) -> Editor:
        editor = Editor()
        editor.keys(*keys)
        return editor

    def test_left_then_insert(self) -> None:
        editor = self.edit(b"Hllo", LEFT * 3, b"e")
        self.assertEqual(editor.row(), PROMPT + "Hello")
        self.assertEqual(editor.column(), len(PROMPT) + 2)

    def test_right(self) -> None:
        editor = self.edit(b"Helo", LEFT * 2, RIGHT, b"l\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_left_stops_at_start(self) -> None:
        editor = self.edit(b"ello", LEFT * 9, b"H\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_right_stops_at_end(self) -> None:
        editor = self.edit(b"Hell", RIGHT * 3, b"o\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_home_and_end(self) -> None:
        editor = self.edit(b"ell", HOME, b"H", END, b"o\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_ctrl_a_and_ctrl_e(self) -> None:
        editor = self.edit(b"ell\x01H\x05o\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_ctrl_b_and_ctrl_f(self) -> None:
        editor = self.edit(b"Helo\x02\x02\x06l\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_backspace_mid_line(self) -> None:
        editor = self.edit(b"Helxlo", LEFT * 2, BACKSPACE)
        self.assertEqual(editor.row(), PROMPT + "Hello")
        self.assertEqual(editor.column(), len(PROMPT) + 3)

    def test_ctrl_h_is_backspace(self) -> None:
        editor = self.edit(b"Hellox\x08\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_delete_under_cursor(self) -> None:
        editor = self.edit(b"Helxlo", LEFT * 3, DELETE)
        self.assertEqual(editor.row(), PROMPT + "Hello")

    def test_ctrl_d_deletes_on_non_empty_line(self) -> None:
        editor = self.edit(b"Helxlo", LEFT * 3, b"\x04\r")
        self.assertEqual(editor.submitted, ["Hello"])
        self.assertEqual(editor.events, [])

    def test_ctrl_u_deletes_to_start(self) -> None:
        editor = self.edit(b"xx yyHello", LEFT * 5, b"\x15")
        self.assertEqual(editor.row(), PROMPT + "Hello")
        self.assertEqual(editor.column(), len(PROMPT))

    def test_ctrl_k_deletes_to_end(self) -> None:
        editor = self.edit(b"Hello there", LEFT * 6, b"\x0b")
        self.assertEqual(editor.row(), PROMPT + "Hello")

    def test_ctrl_w_deletes_word_before(self) -> None:
        editor = self.edit(b"Are you  xyz  ", b"\x17")
        self.assertEqual(editor.row(), PROMPT + "Are you")
        editor.keys(b"there?\r")
        self.assertEqual(editor.submitted, ["Are you  there?"])

    def test_ctrl_w_mid_line(self) -> None:
        editor = self.edit(b"Hello wrong?", LEFT, b"\x17\r")
        self.assertEqual(editor.submitted, ["Hello ?"])

    def test_ctrl_c_clears_line(self) -> None:
        editor = self.edit(b"Hel\x03")
        self.assertEqual(editor.row(), PROMPT.rstrip())
        editor.keys(b"quit\r")
        self.assertEqual(editor.submitted, ["quit"])
        self.assertEqual(editor.events, [])

    def test_ctrl_d_on_empty_line_ends(self) -> None:
        editor = self.edit(b"\x04")
        self.assertEqual(editor.events, ["end"])

    def test_ctrl_l_clears_screen_keeps_line(self) -> None:
        editor = self.edit(b"one\r")
        editor.prompt()
        editor.keys(b"two\x0c")
        self.assertEqual(editor.screen().text(), PROMPT + "two")

    def test_alt_keys_ignored(self) -> None:
        editor = self.edit(b"ab\x1bxc\r")
        self.assertEqual(editor.submitted, ["abc"])


class HistoryKeyTests(SynchronousTestCase):
    """
    Up/Down walk the history; what was being typed comes back.
    """

    def test_up_recalls_newest(self) -> None:
        editor = Editor(history=("Hello", "Are you there?"))
        editor.keys(UP)
        self.assertEqual(editor.row(), PROMPT + "Are you there?")
        editor.keys(UP, b"\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_up_stops_at_oldest(self) -> None:
        editor = Editor(history=("Hello",))
        editor.keys(UP * 3, b"\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_down_returns_to_draft(self) -> None:
        editor = Editor(history=("Hello",))
        editor.keys(b"qu", UP, DOWN)
        self.assertEqual(editor.row(), PROMPT + "qu")
        editor.keys(b"it\r")
        self.assertEqual(editor.submitted, ["quit"])

    def test_draft_not_added_to_history(self) -> None:
        editor = Editor(history=("Hello",))
        editor.keys(b"qu", UP, DOWN)
        self.assertEqual(editor.history.entries, ["Hello"])

    def test_ctrl_p_and_ctrl_n(self) -> None:
        editor = Editor(history=("Hello", "quit"))
        editor.keys(b"\x10\x10\x0e\r")
        self.assertEqual(editor.submitted, ["quit"])

    def test_entered_lines_join_history(self) -> None:
        editor = Editor()
        editor.keys(b"Hello\r")
        editor.prompt()
        editor.keys(UP, b"\r")
        self.assertEqual(editor.submitted, ["Hello", "Hello"])
        self.assertEqual(editor.history.entries, ["Hello"])

    def test_recalled_line_can_be_edited(self) -> None:
        editor = Editor(history=("Hxllo",))
        editor.keys(UP, LEFT * 3, BACKSPACE, b"e\r")
        self.assertEqual(editor.submitted, ["Hello"])


class SearchKeyTests(SynchronousTestCase):
    """
    Ctrl-R searches the history backwards as you type.
    """

    HISTORY = ("Hello", "help", "Are you there?", "quit")

    def test_finds_newest_match(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"\x12he")
        self.assertEqual(editor.row(), "(reverse-i-search)`he': Are you there?")

    def test_ctrl_r_again_finds_older(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"\x12he\x12\r")
        self.assertEqual(editor.submitted, ["help"])

    def test_narrowing_keeps_match_if_it_still_fits(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"\x12Hel\r")
        self.assertEqual(editor.submitted, ["Hello"])

    def test_failed_search(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"\x12xyz")
        self.assertTrue(editor.row().startswith("(failed reverse-i-search)`xyz'"))

    def test_backspace_widens_search(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"\x12qx", BACKSPACE, b"\r")
        self.assertEqual(editor.submitted, ["quit"])

    def test_ctrl_g_gives_up(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"typed", b"\x12he\x07")
        self.assertEqual(editor.row(), PROMPT + "typed")

    def test_other_key_keeps_match_for_editing(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"\x12qu", RIGHT)
        self.assertEqual(editor.row(), PROMPT + "quit")
        self.assertEqual(editor.submitted, [])
        editor.keys(BACKSPACE, b"z\r")
        self.assertEqual(editor.submitted, ["quiz"])

    def test_ctrl_c_ends_search_and_clears(self) -> None:
        editor = Editor(history=self.HISTORY)
        editor.keys(b"x\x12qu\x03")
        self.assertEqual(editor.row(), PROMPT.rstrip())
        self.assertIsNone(editor.editor.search)


class CompletionKeyTests(SynchronousTestCase):
    """
    Tab completes command names, spaces and all.
    """

    def test_multi_word_name(self) -> None:
        editor = Editor()
        editor.keys(b"Ar\t")
        self.assertEqual(editor.row(), PROMPT + "Are you there?")
        editor.keys(b"\r")
        self.assertEqual(editor.submitted, ["Are you there?"])

    def test_case_corrected(self) -> None:
        editor = Editor()
        editor.keys(b"are\t\r")
        self.assertEqual(editor.submitted, ["Are you there?"])

    def test_names_from_server(self) -> None:
        editor = Editor()
        editor.names = [*NAMES, "ping"]
        editor.keys(b"p\t\r")
        self.assertEqual(editor.submitted, ["ping"])

    def test_ambiguous_lists_candidates(self) -> None:
        editor = Editor()
        editor.names = ["Hello", "Help me"]
        editor.keys(b"H\t")
        self.assertEqual(editor.row(), PROMPT + "Hel")
        editor.keys(b"\t")
        rows = editor.screen().rows()
        self.assertEqual(rows[:3], [PROMPT + "Hel", "Hello  Help me", PROMPT + "Hel"])

    def test_no_match_leaves_line(self) -> None:
        editor = Editor()
        editor.keys(b"zz\t\r")
        self.assertEqual(editor.submitted, ["zz"])

    def test_completes_before_cursor_keeping_rest(self) -> None:
        editor = Editor()
        editor.keys(b"q!", LEFT, b"\t\r")
        self.assertEqual(editor.submitted, ["quit!"])


class HostileNameTests(SynchronousTestCase):
    """
    A server's command names holding control characters reach the terminal
    and the history escaped, never raw.
    """

    HOSTILE = "Axx\x1b]0;PWNED\x07"

    def test_completed_name_drawn_escaped(self) -> None:
        editor = Editor()
        editor.names = [self.HOSTILE]
        editor.keys(b"A\t")
        drawn = editor.transport.value()
        self.assertNotIn(b"\x1b]0;", drawn)
        self.assertNotIn(b"\x07", drawn)
        self.assertEqual(editor.row(), PROMPT + "Axx\\x1b]0;PWNED\\x07")

    def test_listed_candidates_drawn_escaped(self) -> None:
        editor = Editor()
        editor.names = ["A\x1b[2J", "A\x1b]52;c;cHduZWQ=\x07"]
        editor.keys(b"A\t", b"\t")
        drawn = editor.transport.value()
        self.assertNotIn(b"\x1b[2J", drawn)
        self.assertNotIn(b"\x1b]52", drawn)
        self.assertIn("A\\x1b[2J  A\\x1b]52;c;cHduZWQ=\\x07", editor.screen().rows())

    def test_completed_name_stored_escaped(self) -> None:
        editor = Editor()
        editor.names = [self.HOSTILE]
        editor.keys(b"A\t\r")
        self.assertEqual(editor.history.entries, ["Axx\\x1b]0;PWNED\\x07"])


class PauseTests(SynchronousTestCase):
    """
    While a command awaits its reply, keys wait; Ctrl-C interrupts.
    """

    def test_typeahead_replayed_at_prompt(self) -> None:
        editor = Editor()
        editor.keys(b"Hello\rquit\r")
        self.assertEqual(editor.submitted, ["Hello"])
        editor.prompt()
        self.assertEqual(editor.submitted, ["Hello", "quit"])

    def test_typeahead_replayed_one_line_per_prompt(self) -> None:
        editor = Editor(resume=False)
        editor.keys(b"a\rb\rc")
        editor.prompt()
        self.assertEqual(editor.submitted, ["a"])
        editor.prompt()
        self.assertEqual(editor.submitted, ["a", "b"])
        editor.prompt()
        self.assertEqual(editor.row(), PROMPT + "c")

    def test_ctrl_c_while_paused_interrupts(self) -> None:
        editor = Editor()
        editor.keys(b"Hello\r\x03")
        self.assertEqual(editor.events, ["interrupt"])

    def test_nothing_drawn_while_paused(self) -> None:
        editor = Editor()
        editor.keys(b"Hello\r")
        written = editor.transport.value()
        editor.keys(b"abc", LEFT)
        self.assertEqual(editor.transport.value(), written)

    def test_ctrl_d_ends_and_pauses(self) -> None:
        editor = Editor()
        editor.keys(b"\x04Hello\r")
        self.assertEqual((editor.events, editor.submitted), (["end"], []))


class ScrollTests(SynchronousTestCase):
    """
    A line wider than the terminal scrolls sideways on its one row.
    """

    def test_long_line_shows_its_end(self) -> None:
        editor = Editor(columns=40)
        editor.keys(b"a" * 30 + b"XYZ")
        row = editor.row()
        self.assertTrue(row.startswith(PROMPT) and row.endswith("XYZ"), row)
        self.assertLess(len(row), 40)
        self.assertEqual(editor.screen().cursor()[1], 0)

    def test_cursor_kept_visible(self) -> None:
        editor = Editor(columns=40)
        editor.keys(b"START" + b"a" * 60, HOME)
        self.assertEqual(editor.row()[len(PROMPT) :][:5], "START")
        self.assertEqual(editor.column(), len(PROMPT))

    def test_whole_line_left_on_screen_when_sent(self) -> None:
        editor = Editor(columns=40)
        editor.keys(b"b" * 50 + b"\r")
        self.assertEqual(editor.submitted, ["b" * 50])
        self.assertEqual(editor.transport.value().count(b"b" * 50), 1)


class EditLineTests(SynchronousTestCase):
    """
    The editing model on its own.
    """

    def test_kill_word_at_start_does_nothing(self) -> None:
        line = EditLine("abc", 0)
        line.kill_word_before()
        self.assertEqual((line.text, line.cursor), ("abc", 0))

    def test_delete_at_end_does_nothing(self) -> None:
        line = EditLine("abc", 3)
        line.delete()
        self.assertEqual(line.text, "abc")

    def test_backspace_at_start_does_nothing(self) -> None:
        line = EditLine("abc", 0)
        line.backspace()
        self.assertEqual((line.text, line.cursor), ("abc", 0))


class CompleteTests(SynchronousTestCase):
    """
    :func:`complete` on its own.
    """

    def test_unique(self) -> None:
        self.assertEqual(complete("Ar", NAMES), ("Are you there?", ["Are you there?"]))

    def test_shared_start(self) -> None:
        self.assertEqual(complete("", ["abc", "abd"]), ("ab", ["abc", "abd"]))

    def test_exact_case_preferred(self) -> None:
        self.assertEqual(complete("h", NAMES), ("help", ["help"]))

    def test_other_case(self) -> None:
        self.assertEqual(complete("QU", NAMES), ("quit", ["quit"]))

    def test_nothing(self) -> None:
        self.assertEqual(complete("x", NAMES), ("x", []))

    def test_other_case_shared_start(self) -> None:
        self.assertEqual(complete("a", ["AB", "Ac"]), ("A", ["AB", "Ac"]))

    def test_other_cases_differing(self) -> None:
        self.assertEqual(complete("ab", ["AB", "aBc"]), ("ab", ["AB", "aBc"]))


class WidthTests(SynchronousTestCase):
    """
    Columns taken by text, and which part of a long line is shown.
    """

    def test_widths(self) -> None:
        self.assertEqual([char_width(c) for c in "a\u00e9\u65e5\u0301"], [1, 1, 2, 0])
        self.assertEqual(text_width("a\u65e5"), 3)

    def test_fits(self) -> None:
        self.assertEqual(visible_span("hello", 2, 10), (0, 5))

    def test_cursor_at_end_of_long_line(self) -> None:
        self.assertEqual(visible_span("x" * 20, 20, 10), (11, 20))

    def test_cursor_at_start_of_long_line(self) -> None:
        self.assertEqual(visible_span("x" * 20, 0, 10), (0, 9))

    def test_wide_characters(self) -> None:
        self.assertEqual(visible_span("\u65e5" * 10, 10, 10), (6, 10))


class TerminalModeTests(SynchronousTestCase):
    """
    :func:`terminal_mode` on a real pseudo-terminal.
    """

    def setUp(self) -> None:
        self.master, self.slave = pty.openpty()
        self.addCleanup(os.close, self.master)
        self.addCleanup(os.close, self.slave)

    def test_keys_unechoed_one_at_a_time(self) -> None:
        with terminal_mode(self.slave):
            lflag = termios.tcgetattr(self.slave)[3]
        self.assertFalse(lflag & (termios.ECHO | termios.ICANON | termios.ISIG))

    def test_every_byte_read_at_once(self) -> None:
        attributes = termios.tcgetattr(self.slave)
        attributes[6][termios.VMIN] = 0
        attributes[6][termios.VTIME] = 5
        termios.tcsetattr(self.slave, termios.TCSANOW, attributes)
        with terminal_mode(self.slave):
            attributes = termios.tcgetattr(self.slave)
        self.assertEqual(
            (attributes[6][termios.VMIN], attributes[6][termios.VTIME]), (1, 0)
        )
        self.assertFalse(attributes[0] & (termios.IXON | termios.ISTRIP))

    def test_newline_still_starts_a_line(self) -> None:
        with terminal_mode(self.slave):
            oflag = termios.tcgetattr(self.slave)[1]
        self.assertTrue(oflag & termios.OPOST)

    def test_restored_exactly(self) -> None:
        before = termios.tcgetattr(self.slave)
        with terminal_mode(self.slave):
            self.assertNotEqual(termios.tcgetattr(self.slave), before)
        self.assertEqual(termios.tcgetattr(self.slave), before)

    def test_restored_after_exception(self) -> None:
        before = termios.tcgetattr(self.slave)
        with self.assertRaises(ZeroDivisionError), terminal_mode(self.slave):
            1 / 0  # noqa: B018
        self.assertEqual(termios.tcgetattr(self.slave), before)
