"""
The commandproto client: ``python -m commandproto.client``.

Reads commands from standard input (through ``twisted.internet.stdio``),
sends them to the server pipelined, and prints each reply as
``Server response: <reply>`` in order.  On a terminal it shows the seed's
prompt, ``Execute command: ``.

Exit codes: 0 on success; 1 when the connection fails or the server goes
away mid-session; 2 on a usage error; 130 on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import TextIO, cast

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IReactorCore,
    IStreamClientEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from ._codec import CRLF, OVERLONG, LineFramer
from ._commands import CLOSING

PROMPT = "Execute command: "
RESPONSE_PREFIX = "Server response: "
PROGRAM = "commandproto.client"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# Replies are short; this bounds what a misbehaving server can make us hold.
MAX_REPLY_LENGTH = 1024 * 1024


class Options(usage.Options):
    """
    Command-line options of ``python -m commandproto.client``.
    """

    synopsis = "[--host HOST] [--port PORT] [--connect ENDPOINT]"
    longdesc = (
        "Send commands read from standard input to a commandproto server and "
        "print each reply as 'Server response: <reply>'."
    )
    optParameters = [
        ["host", None, "127.0.0.1", "The server's host name or address."],
        ["port", None, 12345, "The server's TCP port.", int],
        [
            "connect",
            None,
            None,
            "A Twisted client endpoint instead of --host/--port, e.g. "
            "tcp:host=example.org:port=12345, unix:path=/run/commandproto.sock, "
            "tls:example.org:12345.",
        ],
    ]

    def postOptions(self) -> None:
        if not 0 < self["port"] < 65536:
            raise usage.UsageError(f"--port must be 1-65535, not {self['port']}")


def describe_failure(reason: Failure) -> str:
    """
    Say in a few words why a connection failed or ended.

    :param reason: the failure Twisted reported.
    :returns: a short lower-case phrase.
    """
    if reason.check(error.ConnectionRefusedError):
        return "connection refused"
    if reason.check(error.DNSLookupError):
        return "unknown host"
    if reason.check(error.TimeoutError):
        return "timed out"
    if reason.check(error.ConnectionDone):
        return "closed by the server"
    if reason.check(error.ConnectionLost):
        return "connection lost"
    return reason.getErrorMessage()


class ClientSession:
    """
    The client's state, apart from any I/O: which requests await replies,
    whether input has ended, and how the session ends.

    :ivar done: fires with the exit code once the session is over and all
        output is written.
    """

    def __init__(
        self,
        address: str,
        warn: Callable[[str], None],
        *,
        interactive: bool,
    ) -> None:
        self.address = address
        self._output: ITransport | None = None
        self._warn = warn
        self.interactive = interactive
        self.done: Deferred[int] = Deferred()
        self._server: ITransport | None = None
        self._outstanding = 0
        self._input_ended = False
        self._server_closing = False
        self._we_closed = False
        self._exit_code: int | None = None

    def attach_output(self, output: ITransport) -> None:
        """
        Write to C{output} (standard output), and close it when done.
        """
        self._output = output

    def connected(self, transport: ITransport) -> None:
        """
        The connection to the server is up.
        """
        self._server = transport
        if self._exit_code is not None:
            self._we_closed = True
            transport.loseConnection()
            return
        self._prompt()

    def _write(self, text: str) -> None:
        if self._output is not None:
            self._output.write(text.encode("utf-8"))

    def send(self, line: bytes) -> None:
        """
        Send one command line, exactly as typed, to the server.
        """
        if self._server is None or self._server_closing or self._we_closed:
            return
        self._outstanding += 1
        self._server.write(line + CRLF)

    def input_ended(self) -> None:
        """
        Standard input reached its end (or Ctrl-D on a terminal).
        """
        self._input_ended = True
        if self.interactive:
            self._write("\n")
        self._close_if_finished()

    def reply_received(self, text: str) -> None:
        """
        The server answered the oldest outstanding request.
        """
        self._outstanding -= 1
        self._write(RESPONSE_PREFIX + text + "\n")
        if text == CLOSING:
            self._server_closing = True
        self._close_if_finished()
        if self._outstanding == 0:
            self._prompt()

    def connection_lost(self, reason: Failure) -> None:
        """
        The connection to the server is gone.
        """
        self._server = None
        if self._server_closing or self._we_closed:
            self.finish(EXIT_OK)
        else:
            self.fail(f"connection to {self.address} {describe_failure(reason)}")

    def interrupt(self) -> None:
        """
        The user pressed Ctrl-C.
        """
        if self.interactive:
            self._write("\n")
        self.finish(EXIT_INTERRUPTED)

    def fail(self, message: str) -> None:
        """
        End the session with one line on standard error and exit code 1.
        """
        self._warn(f"{PROGRAM}: {message}")
        self.finish(EXIT_FAILURE)

    def finish(self, code: int) -> None:
        """
        End the session with this exit code, once output is flushed.
        """
        if self._exit_code is not None:
            return
        self._exit_code = code
        if self._server is not None:
            self._we_closed = True
            self._server.loseConnection()
        if self._output is not None:
            self._output.loseConnection()
        else:
            self.output_closed()

    def output_closed(self) -> None:
        """
        Standard output is flushed and closed: the session is over.
        """
        if self._exit_code is not None and not self.done.called:
            self.done.callback(self._exit_code)

    def _close_if_finished(self) -> None:
        if self._input_ended and self._outstanding <= 0 and self._server is not None:
            self._we_closed = True
            self._server.loseConnection()

    def _prompt(self) -> None:
        if (
            self.interactive
            and self._outstanding == 0
            and not self._input_ended
            and not self._server_closing
        ):
            self._write(PROMPT)


class ReplyReceiver(LineReceiver):
    """
    The connection to the server: frames reply lines with the shared codec
    and hands them to the session.
    """

    delimiter = CRLF

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self._framer = LineFramer(MAX_REPLY_LENGTH)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self._transport = cast(ITCPTransport, self.transport)
        self.session.connected(self._transport)

    def dataReceived(self, data: bytes) -> None:
        for frame in self._framer.feed(data):
            if frame is OVERLONG:
                self.session.fail(f"reply from {self.session.address} too long")
                self._transport.abortConnection()
                return
            self.lineReceived(frame)

    def lineReceived(self, line: bytes) -> None:
        self.session.reply_received(line.decode("utf-8", "replace"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.connection_lost(reason)


@implementer(IHalfCloseableProtocol)
class InputReceiver(LineReceiver):
    """
    Standard input: each line is one command.
    """

    delimiter = CRLF

    def __init__(self, session: ClientSession) -> None:
        self.session = session
        self._framer = LineFramer(MAX_REPLY_LENGTH)

    def dataReceived(self, data: bytes) -> None:
        for frame in self._framer.feed(data):
            if frame is OVERLONG:
                self.session.fail("input line too long")
                return
            self.lineReceived(frame)

    def lineReceived(self, line: bytes) -> None:
        self.session.send(line)

    def readConnectionLost(self) -> None:
        last = self._framer.finish()
        if last is not None:
            self.lineReceived(last)
        self.session.input_ended()

    def writeConnectionLost(self) -> None:
        # Nobody reads our output any more (a closed pipe): stop.
        self.session.finish(EXIT_FAILURE)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.session.output_closed()


def make_endpoint(
    reactor: IReactorCore, options: Options
) -> tuple[IStreamClientEndpoint, str]:
    """
    Build the client endpoint the options name.

    :returns: the endpoint and how to name it in messages.
    """
    if options["connect"] is not None:
        description: str = options["connect"]
        return clientFromString(reactor, description), description
    host, port = options["host"], options["port"]
    return HostnameEndpoint(reactor, host, port), f"{host}:{port}"


async def run(reactor: IReactorCore, options: Options) -> int:
    """
    Connect, talk to the server until input ends or the server says
    ``Closing down``, and return the exit code.
    """

    def warn(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        endpoint, address = make_endpoint(reactor, options)
    except (ValueError, KeyError) as e:
        warn(f"{PROGRAM}: bad endpoint {options['connect']!r}: {e}")
        return EXIT_USAGE
    session = ClientSession(address, warn, interactive=os.isatty(0))
    stdio = StandardIO(InputReceiver(session), reactor=reactor)
    # Nothing is read from standard input until the server is there to take it.
    stdio.pauseProducing()
    session.attach_output(stdio)
    reactor.callWhenRunning(
        signal.signal, signal.SIGINT, lambda *_: session.interrupt()
    )

    def failed(reason: Failure) -> None:
        session.fail(f"cannot connect to {address}: {describe_failure(reason)}")

    connecting = endpoint.connect(Factory.forProtocol(lambda: ReplyReceiver(session)))
    connecting.addCallbacks(lambda _: stdio.resumeProducing(), failed)
    return await session.done


def main(argv: list[str] | None = None, stderr: TextIO = sys.stderr) -> None:
    """
    The console entry point: parse arguments, run, exit.
    """
    options = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(  # type: ignore[no-untyped-call]
            sys.argv[1:] if argv is None else argv
        )
    except usage.UsageError as e:
        print(f"{PROGRAM}: {e}", file=stderr)
        print(f"Try '{PROGRAM} --help' for usage.", file=stderr)
        raise SystemExit(EXIT_USAGE) from None

    saved_flags = _save_fd_flags((0, 1))

    async def go(reactor: IReactorCore) -> None:
        code = await run(reactor, options)
        if code:
            raise SystemExit(code)

    try:
        react(go)
    finally:
        _restore_fd_flags(saved_flags)


def _save_fd_flags(fds: tuple[int, ...]) -> dict[int, int]:
    import fcntl

    saved = {}
    for fd in fds:
        with contextlib.suppress(OSError):
            saved[fd] = fcntl.fcntl(fd, fcntl.F_GETFL)
    return saved


def _restore_fd_flags(saved: dict[int, int]) -> None:
    # twisted.internet.stdio makes standard I/O non-blocking, and a terminal's
    # flags are shared with the shell that started us: put them back.
    import fcntl

    for fd, flags in saved.items():
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)


if __name__ == "__main__":
    main()
