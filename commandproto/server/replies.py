"""
The ordered queue of a connection's replies: each request line has its
place, and a reply goes out only when every reply before it has.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.defer import Deferred

from ..commands.table import Reply


class Pending:
    """
    A reply's place in the queue, for a command that answers later (or one
    that answers at once but closes the connection).

    :ivar reply: the encoded reply, once known.
    :ivar close: close the connection once this reply is sent.
    :ivar blocking: the lines after this one wait until it has answered.
    :ivar deferred: the handler's result, cancelled if the client goes away.
    :ivar name: the command's name, for its statistics.
    :ivar started: when it started (:func:`time.perf_counter`).
    """

    __slots__ = ("blocking", "close", "deferred", "name", "reply", "started")

    def __init__(self, blocking: bool, reply: bytes | None = None) -> None:
        self.blocking = blocking
        self.reply = reply
        self.close = False
        self.deferred: Deferred[Reply] | None = None
        self.name = ""
        self.started = 0.0


class ReplyQueue:
    """
    Replies behind one that is not ready yet, in request order.

    A connection makes one only when a reply has to wait, and drops it once
    it is empty, so that an idle connection keeps none.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[bytes | Pending] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: bytes | Pending) -> None:
        """
        Queue an encoded reply, or the place of one still to come.
        """
        self._items.append(item)

    def take_ready(self) -> tuple[list[bytes], bool]:
        """
        Take the replies at the head of the queue that are ready.

        :returns: them, in order, and whether the last one closes the
            connection (nothing after it is taken).
        """
        items = self._items
        out: list[bytes] = []
        while items:
            head = items[0]
            if type(head) is bytes:
                out.append(head)
            else:
                reply = head.reply  # type: ignore[union-attr]
                if reply is None:
                    break
                out.append(reply)
                if head.close:  # type: ignore[union-attr]
                    items.popleft()
                    return out, True
            items.popleft()
        return out, False

    def cancel_all(self) -> None:
        """
        Forget every reply, and cancel the commands still running: nobody
        will read their replies.
        """
        items, self._items = self._items, deque()
        for item in items:
            if type(item) is Pending and item.deferred is not None:
                item.deferred.cancel()
