"""
A terminal emulator for tests: what a person would see, given the bytes a
program writes to its terminal (Twisted's own, from ``twisted.conch.insults``;
it shows ASCII only).
"""

from __future__ import annotations

from twisted.conch.insults import helper, insults
from twisted.internet.testing import StringTransport


class Screen:
    """
    An 80 by 24 screen fed with output bytes.
    """

    def __init__(self) -> None:
        self.buffer = helper.TerminalBuffer()
        self.buffer.connectionMade()
        self._parser = insults.ClientProtocol(lambda: self.buffer)
        self._parser.makeConnection(StringTransport())

    def feed(self, data: bytes) -> None:
        self._parser.dataReceived(data)

    def rows(self) -> list[str]:
        """
        Every row, trailing blanks removed.
        """
        return [row.rstrip() for row in bytes(self.buffer).decode("ascii").split("\n")]

    def text(self) -> str:
        """
        The rows down to the last one with anything on it.
        """
        return "\n".join(self.rows()).rstrip("\n")

    def cursor(self) -> tuple[int, int]:
        """
        The cursor's column and row, from 0.
        """
        column, row = self.buffer.reportCursorPosition()
        return column, row

    def cursor_row(self) -> str:
        """
        The row the cursor is on.
        """
        return self.rows()[self.cursor()[1]]
