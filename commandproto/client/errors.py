"""
What the client library raises: an error reply, a refusal, a connection the
server (or we) closed, a server that breaks the protocol.

No Twisted and no asyncio here, so that both adapters (and code that catches
these) can import it cheaply.
"""

from __future__ import annotations

REFUSED = "refused"
IDLE = "idle"
SHUTDOWN = "shutdown"
LINE_TIMEOUT = "line timeout"
QUIT = "quit"
CLOSED = "closed"
LOST = "lost"
PROTOCOL = "protocol error"


class ReplyError(Exception):
    """
    The server answered a request with an error reply (``Unknown command.``
    or ``Error: ...``).

    :ivar reply: the reply line, as the server sent it.
    """

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class UnknownCommand(ReplyError):  # noqa: N818 (the issue's name)
    """
    The server answered ``Unknown command.``: no command of that name (or
    one that takes no arguments, given some).
    """


class ConnectionClosed(ConnectionError):  # noqa: N818 (reads as a fact)
    """
    The connection ended before a request was answered, or a request was
    made on a connection that has ended.

    :ivar why: one of ``IDLE``, ``SHUTDOWN``, ``LINE_TIMEOUT``,
        ``REFUSED`` (the server said so before closing),
        ``QUIT`` (our ``quit`` was answered), ``CLOSED`` (we closed
        it), ``LOST`` (it ended with no word from the server) or
        ``PROTOCOL`` (the server broke the protocol, so we dropped it).
    :ivar line: the line the server sent before closing, if it sent one.
    """

    def __init__(self, message: str, why: str, line: str | None = None) -> None:
        super().__init__(message)
        self.why = why
        self.line = line


class ServerRefused(ConnectionClosed):
    """
    The server refused the connection (too many connections, or too many
    from our address); the message is the server's line.
    """

    def __init__(self, line: str) -> None:
        super().__init__(line, REFUSED, line)


class ProtocolError(Exception):
    """
    The server sent something no commandproto server sends: more replies
    than requests, or a reply longer than the client accepts.
    """
