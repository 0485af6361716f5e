"""
The interactive client's command history, kept across runs in a file.

The file holds one command per line, UTF-8, oldest first.  Each command is
appended as it is entered, so two clients at once both keep theirs, and a
client that is killed loses nothing; the file is cut back to the newest
entries when it is loaded.  Control characters are kept escaped (``\\x1b``),
never raw, as the editor draws entries as they are.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping

from ..wire.codec import escape_controls

HISTFILE_VARIABLE = "COMMANDPROTO_HISTFILE"
DEFAULT_MAX_ENTRIES = 1000


def history_path(environ: Mapping[str, str], home: str) -> str | None:
    """
    Where the history file is.

    :param environ: the environment: ``COMMANDPROTO_HISTFILE`` names the
        file (an empty value turns the file off), else it is
        ``commandproto/history`` in the user's state directory,
        ``XDG_STATE_HOME`` or ``~/.local/state``.
    :param home: the user's home directory.
    :returns: the path, or ``None`` for no history file.
    """
    if HISTFILE_VARIABLE in environ:
        return environ[HISTFILE_VARIABLE] or None
    state = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        # The XDG spec says to ignore a relative value.
        state = os.path.join(home, ".local", "state")
    return os.path.join(state, "commandproto", "history")


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


class History:
    """
    The commands entered, oldest first, and the file that keeps them.

    Failing to read or write the file is never fatal: it is reported once
    through ``warn``, and the history carries on in memory.

    :ivar entries: the commands, oldest first, at most ``max_entries``.
    :ivar warn: called with one line (without the program's name) when the
        file cannot be read or written; the file is not used after that.
    """

    def __init__(
        self,
        path: str | None,
        warn: Callable[[str], None],
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        """
        :param path: the history file, or ``None`` to keep history in memory
            only.
        :param warn: the initial :attr:`warn`.
        :param max_entries: how many commands to keep.
        """
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = path
        self.entries: list[str] = []
        self.max_entries = max_entries
        self.warn = warn

    def load(self) -> None:
        """
        Read the history file, if there is one, and cut it back to the
        newest entries if it has grown to twice as many.
        """
        if self.path is None:
            return
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as e:
            self._give_up(f"cannot read history file {self.path}: {_reason(e)}")
            return
        # Escaped: the editor draws entries as they are, and a file written
        # by an older client may hold a hostile server's control characters.
        lines = [
            escape_controls(line)
            for line in data.decode("utf-8", "replace").split("\n")
            if line
        ]
        self.entries = lines[-self.max_entries :]
        if len(lines) >= 2 * self.max_entries:
            self._rewrite()

    def _rewrite(self) -> None:
        assert self.path is not None
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            self._write(temporary, self.entries, os.O_TRUNC)
            os.replace(temporary, self.path)
        except OSError as e:
            self._give_up(f"cannot write history file {self.path}: {_reason(e)}")
            with contextlib.suppress(OSError):
                os.unlink(temporary)

    def add(self, line: str) -> None:
        """
        Record a command: keep it, and append it to the file.

        Blank lines, and a repeat of the newest entry, are not recorded.
        """
        line = escape_controls(line)
        if not line.strip() or (self.entries and self.entries[-1] == line):
            return
        self.entries.append(line)
        del self.entries[: -self.max_entries]
        if self.path is None:
            return
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            self._write(self.path, [line], os.O_APPEND)
        except OSError as e:
            self._give_up(f"cannot write history file {self.path}: {_reason(e)}")

    @staticmethod
    def _write(path: str, lines: list[str], mode: int) -> None:
        # Commands may hold secrets: the file is the user's alone.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o600)
        with open(fd, "wb") as f:
            f.write("".join(line + "\n" for line in lines).encode("utf-8"))

    def _give_up(self, message: str) -> None:
        self.path = None
        self.warn(message)

    def search(self, text: str, before: int) -> int | None:
        """
        Find the newest entry containing ``text``, older than ``before``.

        :param text: what to look for.
        :param before: an index into :attr:`entries`; only entries before it are
            searched.
        :returns: the entry's index, or ``None``.
        """
        for index in range(min(before, len(self.entries)) - 1, -1, -1):
            if text in self.entries[index]:
                return index
        return None
