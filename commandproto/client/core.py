"""
The client's protocol core, with no I/O: requests go in and come out as
bytes to send, bytes received come in and come out as replies matched to
their requests, in order.

Both adapters (:mod:`commandproto.client.connection` on Twisted,
:mod:`commandproto.asyncio`) and the command-line client are thin layers
over :class:`ClientCore`, as h11's ``Connection`` is under its users.

Matching is by position: the server answers every request line with exactly
one line, in order, so the n-th line received answers the n-th request
sent.  A request that its caller gave up on (a time limit, a cancellation)
keeps its place, and its reply, when it comes, is dropped by the adapter
(its waiter has already fired): no later request can receive it.

The server also sends a few lines on its own, each its last before it
closes the connection (:func:`~commandproto.commands.table.unsolicited_kind`:
a refusal, the idle time-out, the line time-out, ``Closing down`` when it
shuts down).  With no request outstanding such a line can only be that.
With requests outstanding it could also be a reply (a command may answer
anything), so the core holds it back until the next event decides: another
line means it was a reply; the end of the connection means it was the
server's last word, and the outstanding requests fail with the reason it
gives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Iterator
from itertools import repeat
from typing import Generic, TypeVar, cast

from ..commands.table import (
    CLOSING,
    ERROR_PREFIX,
    IDLE,
    LINE_TIMEOUT,
    QUIT,
    TOO_MANY_CONNECTIONS,
    UNKNOWN_COMMAND,
    unsolicited_kind,
)
from ..wire.codec import OVERLONG, LineFramer, Overlong, escape_controls, is_one_line
from . import errors
from .errors import (
    ConnectionClosed,
    ProtocolError,
    ReplyError,
    ServerRefused,
    UnknownCommand,
)

W = TypeVar("W")

_QUIT = QUIT.encode("utf-8")

MAX_REPLY_LENGTH = 1024 * 1024
"""
The longest reply accepted, in bytes: a longer one fails its request with
:class:`~commandproto.client.errors.ProtocolError`.
"""

Outcome = str | Exception
"""
What a request comes to: its reply, or the exception it raises.
"""


def reply_outcome(text: str) -> Outcome:
    """
    What a reply means to the caller: the text itself, or for an error reply
    the exception to raise.
    """
    if text.startswith(ERROR_PREFIX):
        return ReplyError(text)
    if text == UNKNOWN_COMMAND:
        return UnknownCommand(text)
    return text


def closed_by_server(line: str) -> ConnectionClosed:
    """
    The exception for a connection that the server closed after sending
    ``line`` on its own.
    """
    kind = unsolicited_kind(line)
    if kind == TOO_MANY_CONNECTIONS:
        return ServerRefused(line)
    if kind == IDLE:
        detail = line.removeprefix(ERROR_PREFIX).split(",")[0]
        return ConnectionClosed(
            f"connection closed by the server: {detail}", errors.IDLE, line
        )
    if kind == LINE_TIMEOUT:
        detail = line.removeprefix(ERROR_PREFIX)
        return ConnectionClosed(
            f"connection closed by the server: {detail}", errors.LINE_TIMEOUT, line
        )
    return ConnectionClosed(
        "connection closed: the server is shutting down", errors.SHUTDOWN, line
    )


class ClientCore(Generic[W]):
    """
    One connection's requests and replies, with no I/O.

    A waiter is whatever the adapter wants back with each reply (a
    ``Deferred``, a ``Future``); the core only stores it.

    :ivar ended: once set, no request may be sent: why (we are closing, our
        ``quit`` was sent, the server has said its last word, the connection
        is gone).
    :ivar broken: set when the server broke the protocol: the adapter should
        drop the connection.
    :ivar overlong: set once a reply longer than the limit came.
    """

    def __init__(self, max_reply_length: int = MAX_REPLY_LENGTH) -> None:
        self._framer = LineFramer(max_reply_length)
        self._max_reply_length = max_reply_length
        # The waiters of every request not yet answered are
        # _waiting[_answered - _dropped:]: a list and an index, so that a
        # read's replies take their waiters in one slice.
        self._waiting: list[W] = []
        self._dropped = 0
        # Sequence numbers of our quit requests, and how many replies came.
        self._quits: deque[int] = deque()
        self._sent = 0
        self._answered = 0
        self._quit_answered = False
        self._closing = False
        self._held: str | None = None
        self._last_word: str | None = None
        self.ended: ConnectionClosed | None = None
        self.broken: ConnectionClosed | None = None
        self.overlong = False

    @property
    def pending(self) -> int:
        """
        How many requests await their replies (those given up on included).
        """
        return self._sent - self._answered

    @property
    def closing(self) -> bool:
        """
        Whether we asked to close (:meth:`close`).
        """
        return self._closing

    def waiters(self) -> Iterator[W]:
        """
        The waiters of the requests outstanding, oldest first.
        """
        return iter(self._waiting[self._answered - self._dropped :])

    def request(self, line: str, waiter: W) -> bytes:
        """
        Send a request.

        :param line: the request line, without a terminator.
        :param waiter: what to hand back with its reply.
        :returns: the bytes to send.
        :raises ValueError: if ``line`` is not one line.
        :raises ConnectionClosed: if no request may be sent any more.
        """
        self.count(line, waiter)
        return line.encode("utf-8") + b"\r\n"

    def count(self, line: str, waiter: W) -> None:
        """
        As :meth:`request`, for a caller that encodes and sends the line
        itself (the Twisted adapter joins a turn's lines, then encodes them
        at once).
        """
        if (
            self.ended is None
            and "\n" not in line
            and not line.endswith("\r")
            and line != QUIT
        ):
            # The common case, in one test.
            self._sent += 1
            self._waiting.append(waiter)
            return
        if self.ended is not None:
            # Raised again and again: drop the last raise's traceback.
            raise self.ended.with_traceback(None)
        if not is_one_line(line):
            raise ValueError(f"a request is one line, not {line!r}")
        # quit: the server runs nothing sent after it.
        self._quits.append(self._sent)
        self.ended = ConnectionClosed("connection closing: quit was sent", errors.QUIT)
        self._sent += 1
        self._waiting.append(waiter)

    def close(self) -> None:
        """
        We are closing: no more requests; those outstanding may still be
        answered.
        """
        self._closing = True
        if self.ended is None:
            self.ended = ConnectionClosed(
                "connection closed by the client", errors.CLOSED
            )

    def expect(self, lines: Iterable[bytes], waiter: W) -> None:
        """
        Count requests that the caller encoded and sent itself (the
        command-line client sends each line as typed, in any encoding).

        :param lines: the request lines sent, without terminators, in order.
        :param waiter: what to hand back with each of their replies.
        """
        if not isinstance(lines, Collection) or _QUIT in lines:
            for line in lines:
                if line == _QUIT:
                    self._quits.append(self._sent)
                self._sent += 1
                self._waiting.append(waiter)
        else:
            self._sent += len(lines)
            self._waiting.extend(repeat(waiter, len(lines)))

    @property
    def sent(self) -> int:
        """
        How many requests were sent on this connection.
        """
        return self._sent

    @property
    def answered(self) -> int:
        """
        How many of them were answered (or failed) so far.
        """
        return self._answered

    @property
    def buffered(self) -> int:
        """
        How many bytes of an unfinished reply line are held back.
        """
        return self._framer.buffered

    @property
    def quit_answered(self) -> bool:
        """
        Whether the server answered our ``quit`` (``Closing down``).
        """
        return self._quit_answered

    @property
    def last_word(self) -> str | None:
        """
        The line the server sent on its own before closing, once known.
        """
        return self._last_word

    def receive_data(self, data: bytes) -> list[tuple[W, Outcome]]:
        """
        Bytes from the server, split anywhere.

        :returns: each request these bytes answer, in order, with its
            outcome: the reply text, or the exception for an error reply
            (:class:`ReplyError`, :class:`UnknownCommand`) or an overlong
            reply (:class:`ProtocolError`).
        """
        frames = self._framer.feed(data)
        if not frames:
            return []
        items: list[str | Overlong]
        if OVERLONG in frames:
            items = [
                frame if frame is OVERLONG else frame.decode("utf-8", "replace")
                for frame in frames
            ]
        else:
            # One decode for the whole read: no frame holds a LF, and an
            # invalid sequence cannot run across one.
            text = b"\n".join(cast(list[bytes], frames)).decode("utf-8", "replace")
            texts = text.split("\n")
            if self._plain(texts, text):
                return self._answer_all(texts)
            items = list(texts)
        return self._receive(items)

    def receive(self, data: bytes) -> tuple[list[W], list[Outcome]]:
        """
        As :meth:`receive_data`, with the waiters and the outcomes in two
        lists of the same length (no pair made per reply: the Twisted
        adapter's streaming interface hands both lists on as they are).
        """
        frames = self._framer.feed(data)
        if not frames:
            return [], []
        if OVERLONG not in frames:
            text = b"\n".join(cast(list[bytes], frames)).decode("utf-8", "replace")
            texts = text.split("\n")
            if self._plain(texts, text):
                return self._take(len(texts)), cast(list[Outcome], texts)
            return _unzip(self._receive(texts))
        return _unzip(
            self._receive(
                [
                    frame if frame is OVERLONG else frame.decode("utf-8", "replace")
                    for frame in frames
                ]
            )
        )

    def receive_read(self, text: str) -> tuple[list[W], list[Outcome]]:
        """
        One reply framed by the caller (the seed's wire format, where one
        read is one reply), as :meth:`receive`.
        """
        return _unzip(self._receive((text,)))

    def receive_lines(self, texts: Iterable[str]) -> list[tuple[W, Outcome]]:
        """
        Reply lines the caller framed itself (the seed's wire format, where
        one read is one reply), as :meth:`receive_data`.
        """
        if isinstance(texts, list) and self._plain(texts, "\n".join(texts)):
            return self._answer_all(texts)
        return self._receive(texts)

    def _plain(self, texts: list[str], joined: str) -> bool:
        # The common case, decided at C speed: every line answers the next
        # request, none answers a quit, none is an error or could be a line
        # the server sends on its own.
        n = len(texts)
        return (
            self._held is None
            and self._last_word is None
            and self.broken is None
            and n <= self._sent - self._answered
            and (not self._quits or self._quits[0] >= self._answered + n)
            and CLOSING not in texts
            and UNKNOWN_COMMAND not in texts
            and not joined.startswith(ERROR_PREFIX)
            and "\n" + ERROR_PREFIX not in joined
        )

    def _take(self, n: int) -> list[W]:
        # The waiters of the next n replies.
        start = self._answered - self._dropped
        waiters = self._waiting[start : start + n]
        self._answered += n
        start += n
        if start > 1024 and start * 2 > len(self._waiting):
            del self._waiting[:start]
            self._dropped += start
        return waiters

    def _answer_all(self, texts: list[str]) -> list[tuple[W, Outcome]]:
        return list(zip(self._take(len(texts)), texts, strict=True))

    def _receive(self, items: Iterable[str | Overlong]) -> list[tuple[W, Outcome]]:
        answered: list[tuple[W, Outcome]] = []
        if self._last_word is not None or self.broken is not None:
            return answered
        for text in items:
            if self._held is not None:
                # Another line came: the held one was a reply after all.
                held, self._held = self._held, None
                self._answer(held, answered)
            if text is OVERLONG:
                self.overlong = True
                self._answer_with(
                    ProtocolError(f"reply longer than {self._max_reply_length} bytes"),
                    answered,
                )
                continue
            assert isinstance(text, str)
            if text == CLOSING or text.startswith(ERROR_PREFIX):
                kind = unsolicited_kind(text)
                if kind is not None and not (
                    kind == CLOSING and self._quits and self._quits[0] == self._answered
                ):
                    if self._sent == self._answered:
                        self._server_said_last_word(text)
                        break
                    self._held = text
                    continue
            self._answer(text, answered)
            if self.broken is not None:
                break
        return answered

    def _answer(self, text: str, answered: list[tuple[W, Outcome]]) -> None:
        if self._quits and self._quits[0] == self._answered:
            self._quits.popleft()
            self._quit_answered = self._quit_answered or text == CLOSING
        self._answer_with(reply_outcome(text), answered)

    def _answer_with(self, outcome: Outcome, answered: list[tuple[W, Outcome]]) -> None:
        if self._sent == self._answered:
            self.broken = ConnectionClosed(
                "the server sent more replies than requests: protocol error "
                "(is it a commandproto server?)",
                errors.PROTOCOL,
            )
            self.ended = self.ended or self.broken
            return
        answered.append((self._take(1)[0], outcome))

    def _server_said_last_word(self, text: str) -> None:
        self._last_word = text
        self.ended = closed_by_server(text)

    def connection_lost(self, detail: str = "") -> tuple[ConnectionClosed, list[W]]:
        """
        The connection is gone.

        :param detail: what the adapter knows of why, in a few words, for a
            connection that ended with no word from the server.
        :returns: the exception for every request still outstanding, and
            their waiters.
        """
        if self._held is not None:
            self._server_said_last_word(self._held)
            self._held = None
        exception: ConnectionClosed
        if self._last_word is not None:
            exception = closed_by_server(self._last_word)
        elif self.broken is not None:
            exception = self.broken
        elif self._quit_answered:
            exception = ConnectionClosed(
                "connection closed: the server answered quit", errors.QUIT
            )
        elif self._closing:
            exception = ConnectionClosed(
                "connection closed by the client", errors.CLOSED
            )
        else:
            exception = ConnectionClosed(
                f"connection lost{': ' + escape_controls(detail) if detail else ''}",
                errors.LOST,
            )
        self.ended = exception
        waiters = self._take(self._sent - self._answered)
        return exception, waiters


def _unzip(answered: list[tuple[W, Outcome]]) -> tuple[list[W], list[Outcome]]:
    return [waiter for waiter, _ in answered], [outcome for _, outcome in answered]
