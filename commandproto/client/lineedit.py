"""
The interactive client's line editor: emacs-style editing keys, history,
reverse search and completion, on a terminal.

Built on ``twisted.conch.insults``:
:class:`~twisted.conch.insults.insults.ServerProtocol` turns the bytes a
terminal sends into keystrokes (arrows, Home, Delete and so on) and
:class:`LineEditor` is the
:class:`~twisted.conch.insults.insults.TerminalProtocol` that edits with
them.  It does not use ``twisted.conch.recvline.HistoricRecvLine``, which assumes it
owns the whole screen: it resets the terminal on start (clearing the
screen), relies on the terminal's insert mode (state that would outlive us),
takes ASCII only, and turns Tab into spaces.  Instead every edit redraws
the one line being edited (prompt, text, cursor), scrolling it sideways when
it is wider than the terminal, and the terminal is left as it was found.

The editor knows nothing of the server: it calls ``submit`` with each line
entered, and is an :class:`~twisted.internet.interfaces.IPushProducer` that
its user pauses while a command awaits its reply.  Keys typed meanwhile
are kept and replayed at the next prompt, except Ctrl-C, which interrupts at once.
"""

from __future__ import annotations

import codecs
import termios
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from twisted.conch.insults import insults
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from ..client.history import History
from ..wire.codec import DEFAULT_MAX_LINE_LENGTH, escape_controls

Keys: Any = insults.ServerProtocol
"""
Where ``twisted.conch.insults`` keeps its key identifiers (``UP_ARROW`` ...).
"""

MAX_TYPEAHEAD = 65536
"""
How many keystrokes are kept while a command awaits its reply.
"""

BELL = "\x07"
ERASE_TO_END = "\x1b[K"
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def char_width(char: str) -> int:
    """
    How many terminal columns a printable character takes.
    """
    if char.isascii():
        return 1
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


def text_width(text: str) -> int:
    """
    How many terminal columns printable text takes.
    """
    if text.isascii():
        return len(text)
    return sum(map(char_width, text))


def complete(prefix: str, names: Sequence[str]) -> tuple[str, list[str]]:
    """
    Complete the start of a command name.

    Names that start with ``prefix`` exactly are preferred; failing those,
    names that start with it in another case (``hello`` completes to
    ``Hello``, since the server's matching is case-sensitive).

    :param prefix: what has been typed.
    :param names: the command names.
    :returns: the completed text (the longest start shared by every
        candidate, or ``prefix`` itself) and the candidates.
    """
    candidates = [name for name in names if name.startswith(prefix)]
    if not candidates:
        folded = prefix.casefold()
        candidates = [
            name for name in names if name[: len(prefix)].casefold() == folded
        ]
    if not candidates:
        return prefix, []
    shared = candidates[0]
    for name in candidates[1:]:
        while not name.startswith(shared):
            shared = shared[:-1]
    if len(shared) < len(prefix):
        return prefix, candidates
    return shared, candidates


@dataclass
class EditLine:
    """
    The line being edited, and the cursor in it, with no knowledge of the
    screen.

    :ivar text: the line.
    :ivar cursor: where the cursor is, as an index into ``text``.
    """

    text: str = ""
    cursor: int = 0

    def set(self, text: str, cursor: int | None = None) -> None:
        self.text = text
        self.cursor = len(text) if cursor is None else cursor

    def insert(self, chars: str) -> None:
        self.text = self.text[: self.cursor] + chars + self.text[self.cursor :]
        self.cursor += len(chars)

    def left(self) -> None:
        self.cursor = max(self.cursor - 1, 0)

    def right(self) -> None:
        self.cursor = min(self.cursor + 1, len(self.text))

    def home(self) -> None:
        self.cursor = 0

    def end(self) -> None:
        self.cursor = len(self.text)

    def backspace(self) -> None:
        if self.cursor:
            self.text = self.text[: self.cursor - 1] + self.text[self.cursor :]
            self.cursor -= 1

    def delete(self) -> None:
        self.text = self.text[: self.cursor] + self.text[self.cursor + 1 :]

    def kill_to_start(self) -> None:
        self.set(self.text[self.cursor :], 0)

    def kill_to_end(self) -> None:
        self.text = self.text[: self.cursor]

    def kill_word_before(self) -> None:
        """
        Delete the word before the cursor and the spaces after it, as
        readline's Ctrl-W does.
        """
        start = self.cursor
        while start and self.text[start - 1].isspace():
            start -= 1
        while start and not self.text[start - 1].isspace():
            start -= 1
        self.set(self.text[:start] + self.text[self.cursor :], start)


@dataclass
class Search:
    """
    A reverse incremental search (Ctrl-R) in progress.

    :ivar query: what has been typed so far.
    :ivar index: the history index of the entry found, or ``None``.
    :ivar failed: whether the last search step found nothing.
    :ivar before: the line as it was when the search began.
    """

    before: EditLine
    query: str = ""
    index: int | None = None
    failed: bool = False


Key = bytes | str


@implementer(IPushProducer)
class LineEditor(insults.TerminalProtocol):
    """
    Edit one command line at a time on a terminal.

    Keys: Left/Right and Ctrl-B/Ctrl-F move, Home/End and Ctrl-A/Ctrl-E
    jump, Backspace and Delete (Ctrl-D on a non-empty line) delete, Ctrl-U
    and Ctrl-K delete to the start and end of the line, Ctrl-W deletes a
    word; Up/Down and Ctrl-P/Ctrl-N walk the history, Ctrl-R searches it
    (Ctrl-R again for older matches, Ctrl-G to give up); Tab completes a
    command name; Ctrl-L clears the screen; Ctrl-C clears the line; Ctrl-D
    on an empty line ends the input; Enter sends the line.
    """

    def __init__(
        self,
        *,
        prompt: str,
        history: History,
        submit: Callable[[str], None],
        end: Callable[[], None],
        interrupt: Callable[[], None],
        lost: Callable[[], None],
        command_names: Callable[[], Sequence[str]],
        columns: Callable[[], int],
    ) -> None:
        """
        :param prompt: shown before the line; whoever resumes the editor has
            just written it.
        :param history: where entered lines go, and are recalled from.
        :param submit: called with each line entered.
        :param end: called on Ctrl-D on an empty line.
        :param interrupt: called on Ctrl-C while paused (a command is
            running).
        :param lost: called when the terminal is gone.
        :param command_names: the names Tab completes.
        :param columns: the terminal's width now.
        """
        self.prompt = prompt
        self.history = history
        self.line = EditLine()
        self.search: Search | None = None
        self._submit = submit
        self._end = end
        self._interrupt = interrupt
        self._lost = lost
        self._command_names = command_names
        self._columns = columns
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._paused = True
        self._typeahead: list[tuple[bytes, object]] = []
        self._history_index = 0
        self._draft = ""
        self._keys: dict[Key, Callable[[], None]] = {
            Keys.LEFT_ARROW: self.line.left,
            "\x02": self.line.left,
            Keys.RIGHT_ARROW: self.line.right,
            "\x06": self.line.right,
            Keys.HOME: self.line.home,
            "\x01": self.line.home,
            Keys.END: self.line.end,
            "\x05": self.line.end,
            "\x7f": self.line.backspace,
            "\x08": self.line.backspace,
            Keys.DELETE: self.line.delete,
            "\x15": self.line.kill_to_start,
            "\x0b": self.line.kill_to_end,
            "\x17": self.line.kill_word_before,
            Keys.UP_ARROW: self.history_back,
            "\x10": self.history_back,
            Keys.DOWN_ARROW: self.history_forward,
            "\x0e": self.history_forward,
            "\x12": self.start_search,
            "\t": self.complete,
            "\r": self.enter,
            "\n": self.enter,
            "\x03": self.clear,
            "\x04": self.delete_or_end,
            "\x0c": self.clear_screen,
        }

    # IPushProducer: paused while a command awaits its reply.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        """
        The prompt has just been written: edit a new line, starting with any
        keys typed meanwhile.
        """
        self._paused = False
        self.line.set("")
        self._history_index = len(self.history.entries)
        self._draft = ""
        typeahead, self._typeahead = self._typeahead, []
        for number, (key, modifier) in enumerate(typeahead):
            if self._paused:
                self._typeahead = typeahead[number:]
                return
            self.keystrokeReceived(key, modifier)

    def stopProducing(self) -> None:
        self._paused = True

    # TerminalProtocol

    def keystrokeReceived(self, keyID: bytes, modifier: object) -> None:  # noqa: N803
        if self._paused:
            if keyID == b"\x03":
                self._interrupt()
            elif len(self._typeahead) < MAX_TYPEAHEAD:
                self._typeahead.append((keyID, modifier))
            return
        if len(keyID) != 1:
            # A key that sends a sequence: insults names it, b"[UP_ARROW]".
            self._key(keyID, modifier)
            return
        for char in self._decoder.decode(keyID):
            if self._paused:
                # Enter or Ctrl-D ended the line: keep the rest for later.
                self._typeahead.append((char.encode("utf-8"), modifier))
            else:
                self._key(char, modifier)

    def unhandledControlSequence(self, seq: bytes) -> None:
        # Keys we have no use for (F-keys with modifiers, say): ignore them.
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._lost()

    def _key(self, key: Key, modifier: object) -> None:
        if self.search is None or not self._search_key(key, modifier):
            handler = self._keys.get(key)
            if modifier == Keys.ALT:
                # Alt-something, or Escape then a key: not ours.
                self._write(BELL)
            elif handler is not None:
                handler()
            elif isinstance(key, str) and key.isprintable():
                if len(self.line.text) < DEFAULT_MAX_LINE_LENGTH:
                    self.line.insert(key)
                else:
                    self._write(BELL)
        if not self._paused:
            self.refresh()

    # Actions

    def enter(self) -> None:
        """
        Send the line, leaving it on the screen.
        """
        text = self.line.text
        self.refresh(full=True)
        self._write("\n")
        self.line.set("")
        self.history.add(text)
        self._history_index = len(self.history.entries)
        self._paused = True
        self._submit(text)

    def clear(self) -> None:
        """
        Ctrl-C: forget the line.
        """
        self.line.set("")
        self._history_index = len(self.history.entries)

    def delete_or_end(self) -> None:
        """
        Ctrl-D: delete, or on an empty line end the input.
        """
        if self.line.text:
            self.line.delete()
            return
        self._paused = True
        self._end()

    def clear_screen(self) -> None:
        self._write(CLEAR_SCREEN)

    def history_back(self) -> None:
        """
        Up: the previous history entry, keeping the line being written.
        """
        if self._history_index == 0:
            self._write(BELL)
            return
        if self._history_index == len(self.history.entries):
            self._draft = self.line.text
        self._history_index -= 1
        self.line.set(self.history.entries[self._history_index])

    def history_forward(self) -> None:
        """
        Down: the next history entry, then the line being written.
        """
        entries = self.history.entries
        if self._history_index >= len(entries):
            self._write(BELL)
            return
        self._history_index += 1
        if self._history_index == len(entries):
            self.line.set(self._draft)
        else:
            self.line.set(entries[self._history_index])

    def complete(self) -> None:
        """
        Tab: complete the command name before the cursor; if it cannot be
        taken further and several names fit, list them.
        """
        prefix = self.line.text[: self.line.cursor]
        # The names come from the server: one holding ESC or BEL would
        # drive the terminal when drawn (a title, a clipboard write) and be
        # saved in the history. Completed escaped, the line stays printable.
        names = [escape_controls(name) for name in self._command_names()]
        completed, candidates = complete(prefix, names)
        if completed != prefix:
            self.line.set(
                completed + self.line.text[self.line.cursor :], len(completed)
            )
        elif len(candidates) > 1:
            self._write("\n" + "  ".join(candidates) + "\n")
        elif not candidates:
            self._write(BELL)

    # Reverse search

    def start_search(self) -> None:
        self.search = Search(EditLine(self.line.text, self.line.cursor))

    def _search_key(self, key: Key, modifier: object) -> bool:
        """
        Handle a key during a search.

        :returns: whether the key was used up; if not, the search has ended
            with its match on the line, and the key acts as usual.
        """
        search = self.search
        assert search is not None
        if modifier == Keys.ALT:
            self._accept_search()
            return False
        if key == "\x12":
            if search.query:
                self._find(search.index)
        elif key in ("\x7f", "\x08"):
            search.query = search.query[:-1]
            search.index = None
            search.failed = False
            if search.query:
                self._find(None)
        elif key == "\x07":
            self.search = None
            self.line.set(search.before.text, search.before.cursor)
        elif key == "\x03":
            # Give up the search, and let Ctrl-C clear the line.
            self.search = None
            return False
        elif isinstance(key, str) and key.isprintable():
            search.query += key
            self._find(None if search.index is None else search.index + 1)
        else:
            self._accept_search()
            return False
        return True

    def _find(self, before: int | None) -> None:
        search = self.search
        assert search is not None
        entries = self.history.entries
        found = self.history.search(
            search.query, len(entries) if before is None else before
        )
        if found is None:
            search.failed = True
            self._write(BELL)
        else:
            search.index = found
            search.failed = False

    def _accept_search(self) -> None:
        search = self.search
        assert search is not None
        self.search = None
        if search.index is None:
            self.line.set(search.before.text, search.before.cursor)
        else:
            self.line.set(self.history.entries[search.index])
            self._history_index = search.index

    def _search_view(self) -> tuple[str, str, int]:
        search = self.search
        assert search is not None
        if search.index is None:
            found = search.before.text
        else:
            found = self.history.entries[search.index]
        label = "failed reverse-i-search" if search.failed else "reverse-i-search"
        return f"({label})`{search.query}': ", found, len(found)

    # Drawing

    def refresh(self, *, full: bool = False) -> None:
        """
        Redraw the line: prompt, text, and the cursor in its place.

        :param full: draw the whole text even if it is wider than the
            terminal (it wraps), as the line is left on screen for good.
        """
        if self.search is not None:
            prefix, text, cursor = self._search_view()
        else:
            prefix, text, cursor = self.prompt, self.line.text, self.line.cursor
        if full:
            self._write("\r" + prefix + text + ERASE_TO_END)
            return
        start, end = visible_span(text, cursor, self._columns() - text_width(prefix))
        back = text_width(text[cursor:end])
        self._write(
            "\r"
            + prefix
            + text[start:end]
            + ERASE_TO_END
            + (f"\x1b[{back}D" if back else "")
        )

    def _write(self, text: str) -> None:
        assert self.terminal is not None
        self.terminal.write(text.encode("utf-8"))


def visible_span(text: str, cursor: int, room: int) -> tuple[int, int]:
    """
    Which part of a line to show so that the cursor stays on screen.

    :param text: the line.
    :param cursor: the cursor's index in ``text``.
    :param room: the columns left after the prompt.
    :returns: the start and end indices of the part to draw: all of it if
        it fits, else as much as fits with the cursor at the right edge or
        further left.
    """
    room = max(room - 1, 1)  # the last column is for the cursor
    if text_width(text) <= room:
        return 0, len(text)
    start = cursor
    used = 0
    while start > 0 and used + char_width(text[start - 1]) <= room:
        start -= 1
        used += char_width(text[start])
    end = cursor
    while end < len(text) and used + char_width(text[end]) <= room:
        used += char_width(text[end])
        end += 1
    return start, end


@contextmanager
def terminal_mode(fd: int) -> Iterator[None]:
    """
    Give the terminal on ``fd`` to the line editor for the duration, and put
    it back exactly as it was afterwards, however the block ends.

    Keys arrive one at a time, unechoed, with Ctrl-C, Ctrl-Z, Ctrl-S and the
    like as plain keys.  Output processing stays on, so a newline written
    still starts a new line.
    """
    saved = termios.tcgetattr(fd)
    mode = [*saved[:6], list(saved[6])]
    iflag, lflag, cc = 0, 3, 6
    mode[iflag] &= ~(
        termios.BRKINT
        | termios.ICRNL
        | termios.IGNCR
        | termios.INLCR
        | termios.INPCK
        | termios.ISTRIP
        | termios.IXON
    )
    mode[lflag] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    mode[cc][termios.VMIN] = 1
    mode[cc][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
