"""
Tests for the client's history and its file.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from commandproto.client.history import History, history_path


class HistoryPathTests(SynchronousTestCase):
    """
    Where the history file is.
    """

    def test_variable_names_the_file(self) -> None:
        self.assertEqual(
            history_path({"COMMANDPROTO_HISTFILE": "/tmp/h"}, "/home/u"), "/tmp/h"
        )

    def test_empty_variable_turns_file_off(self) -> None:
        self.assertIsNone(
            history_path({"COMMANDPROTO_HISTFILE": "", "XDG_STATE_HOME": "/s"}, "/h")
        )

    def test_xdg_state_home(self) -> None:
        self.assertEqual(
            history_path({"XDG_STATE_HOME": "/state"}, "/home/u"),
            "/state/commandproto/history",
        )

    def test_default_is_local_state(self) -> None:
        self.assertEqual(
            history_path({}, "/home/u"), "/home/u/.local/state/commandproto/history"
        )

    def test_relative_xdg_state_home_ignored(self) -> None:
        self.assertEqual(
            history_path({"XDG_STATE_HOME": "state"}, "/home/u"),
            "/home/u/.local/state/commandproto/history",
        )


class HistoryFileTests(SynchronousTestCase):
    """
    History is kept across runs, and a broken file is a warning, never a
    crash.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-history-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.path = os.path.join(self.directory, "state", "commandproto", "history")
        self.warnings: list[str] = []

    def history(self, path: str | None = None, max_entries: int = 1000) -> History:
        history = History(
            self.path if path is None else path, self.warnings.append, max_entries
        )
        history.load()
        return history

    def read(self) -> str:
        with open(self.path, encoding="utf-8") as f:
            return f.read()

    def test_kept_across_runs(self) -> None:
        first = self.history()
        first.add("Hello")
        first.add("Are you there?")
        self.assertEqual(self.history().entries, ["Hello", "Are you there?"])
        self.assertEqual(self.warnings, [])

    def test_control_characters_never_stored_raw(self) -> None:
        self.history().add("Axx\x1b]0;PWNED\x07")
        self.assertEqual(self.read(), "Axx\\x1b]0;PWNED\\x07\n")

    def test_control_characters_in_old_file_loaded_escaped(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "wb") as f:
            f.write(b"Hello\nAxx\x1b]0;PWNED\x07\n")
        self.assertEqual(self.history().entries, ["Hello", "Axx\\x1b]0;PWNED\\x07"])

    def test_file_is_one_command_a_line(self) -> None:
        history = self.history()
        history.add("Hello")
        history.add("héllo")
        self.assertEqual(self.read(), "Hello\nhéllo\n")

    def test_directory_created_private(self) -> None:
        self.history().add("Hello")
        directory_mode = os.stat(os.path.dirname(self.path)).st_mode
        self.assertEqual(stat.S_IMODE(directory_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_blank_lines_and_repeats_not_recorded(self) -> None:
        history = self.history()
        for line in ("Hello", "Hello", "", "  ", "quit", "Hello"):
            history.add(line)
        self.assertEqual(history.entries, ["Hello", "quit", "Hello"])
        self.assertEqual(self.read(), "Hello\nquit\nHello\n")

    def test_keeps_newest_entries(self) -> None:
        history = self.history(max_entries=3)
        for number in range(5):
            history.add(str(number))
        self.assertEqual(history.entries, ["2", "3", "4"])
        self.assertEqual(self.history(max_entries=3).entries, ["2", "3", "4"])

    def test_long_file_cut_back_on_load(self) -> None:
        history = self.history(max_entries=3)
        for number in range(6):
            history.add(str(number))
        self.history(max_entries=3)
        self.assertEqual(self.read(), "3\n4\n5\n")
        self.assertEqual(os.listdir(os.path.dirname(self.path)), ["history"])

    def test_no_file_yet(self) -> None:
        self.assertEqual(self.history().entries, [])
        self.assertEqual(self.warnings, [])

    def test_none_keeps_history_in_memory(self) -> None:
        history = History(None, self.warnings.append)
        history.load()
        history.add("Hello")
        self.assertEqual(history.entries, ["Hello"])
        self.assertEqual(os.listdir(self.directory), [])

    def test_invalid_utf8_replaced(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "wb") as f:
            f.write(b"Hello\n\xff\n")
        self.assertEqual(self.history().entries, ["Hello", "\ufffd"])

    def test_unreadable_file_warns_once(self) -> None:
        os.makedirs(self.path)  # a directory where the file should be
        history = self.history()
        history.add("Hello")
        self.assertEqual(len(self.warnings), 1)
        self.assertIn(f"cannot read history file {self.path}", self.warnings[0])
        self.assertEqual(history.entries, ["Hello"])

    def test_unwritable_file_warns_once(self) -> None:
        history = self.history()
        # A file where the history's directory would be created.
        with open(os.path.join(self.directory, "state"), "w"):
            pass
        history.add("Hello")
        history.add("quit")
        self.assertEqual(len(self.warnings), 1)
        self.assertIn(f"cannot write history file {self.path}", self.warnings[0])
        self.assertNotIn("\n", self.warnings[0])
        self.assertEqual(history.entries, ["Hello", "quit"])


class SearchTests(SynchronousTestCase):
    """
    Reverse search finds the newest entry containing the text.
    """

    def setUp(self) -> None:
        self.history = History(None, print)
        for line in ("Hello", "Are you there?", "help", "quit"):
            self.history.add(line)

    def test_newest_match(self) -> None:
        self.assertEqual(self.history.search("e", 4), 2)

    def test_older_than(self) -> None:
        self.assertEqual(self.history.search("e", 2), 1)

    def test_no_match(self) -> None:
        self.assertIsNone(self.history.search("zzz", 4))

    def test_before_past_end(self) -> None:
        self.assertEqual(self.history.search("quit", 99), 3)
