"""
The client library on Twisted: :func:`connect` to a server, then
:meth:`Client.request` as many lines as you like, pipelined.

Everything about the protocol (ordering, matching replies to requests, the
lines the server sends on its own) is in ``ClientCore``
(``commandproto.client.core``).  :class:`ClientProtocol` moves its bytes,
keeps the time limits and hands replies to a :class:`ReplyListener`, a read
at a time and with no Deferred per request; :class:`Client` is the listener
that fires a Deferred per request, and the command-line client
(``commandproto.client.cli``) is another.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ..wire.codec import CRLF, LF, is_one_line
from .connect import describe_failure, explain_endpoint_error, require_tls
from .core import MAX_REPLY_LENGTH, ClientCore, Outcome
from .errors import ConnectionClosed

T = TypeVar("T")
W = TypeVar("W")

PROBE = "Are you there?"
"""
What :func:`connect` asks to learn that the server took the connection (a
server over its connection limit answers nothing, and says so instead).
"""

DEFAULT_CONNECT_TIMEOUT = 30.0


class ReplyListener(Generic[W]):
    """
    What a :class:`ClientProtocol` tells the layer above it, with no
    Deferred per request: the streaming interface that :class:`Client` and
    the command-line client are both built on.

    Every method does nothing here; a listener overrides those it needs.
    """

    def connection_made(self, protocol: ClientProtocol[W]) -> None:
        """
        The connection is up: requests may be sent on ``protocol``.
        """

    def replies_received(self, waiters: list[W], outcomes: list[Outcome]) -> None:
        """
        Replies, in order: ``outcomes[i]`` answers the request sent with
        ``waiters[i]`` (the text, or the exception for an error reply or an
        overlong one).  Also called with no replies when the server's last
        word came or it broke the protocol (see the protocol's ``core``).
        """

    def request_expired(self, waiter: W, timeout: float) -> None:
        """
        A request sent with a time limit (the protocol's ``request``) was
        not answered within ``timeout`` seconds; its reply, if it ever
        comes, still comes to :meth:`replies_received` with this waiter.
        """

    def reply_overdue(self, timeout: float) -> None:
        """
        No reply came within the connection's reply time limit
        (the protocol's ``reply_timeout``).
        """

    def sending_paused(self, paused: bool) -> None:
        """
        The connection's send buffer is full (``True``) or drained again.
        """

    def connection_ended(
        self, exception: ConnectionClosed, waiters: list[W], reason: Failure
    ) -> None:
        """
        The connection is gone; ``exception`` says why, for the requests
        still outstanding (``waiters``), and ``reason`` is Twisted's.
        """


@implementer(IPushProducer)
class _SendFlow:
    # The protocol's producer for its transport: a full send buffer pauses
    # the listener's sending, which is the listener's to do.
    def __init__(self, protocol: ClientProtocol[Any]) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        self._protocol.listener.sending_paused(True)

    def resumeProducing(self) -> None:
        self._protocol.listener.sending_paused(False)

    def stopProducing(self) -> None:
        # The connection is going away; connectionLost says how.
        pass


class ClientProtocol(Protocol, Generic[W]):
    """
    One connection, the Twisted adapter of ``commandproto.client.core.ClientCore``: it
    frames replies, matches them to requests in order, recognises the lines
    the server sends on its own, keeps the time limits, and hands the
    outcomes to its :class:`ReplyListener`, a batch per read.

    Requests go out two ways: :meth:`request` (a ``str``, buffered until the
    end of the reactor's turn, with an optional time limit of its own) and
    :meth:`send_lines` (lines as bytes, written at once, for a caller that
    sends many).

    :ivar reply_timeout: the connection's reply time limit, or ``None``:
        while requests sent with ``timed=True`` await replies and reading is
        not paused, each reply is due within this many seconds of the
        request going out or of the reply before it, whichever came later;
        past it the listener's :meth:`~ReplyListener.reply_overdue` is
        called.
    :ivar legacy: speak the seed's wire format: each request is sent with
        no line end, the next only once the last is answered, and what one
        read returns is one reply.
    """

    transport: Any

    def __init__(
        self,
        clock: IReactorTime | None,
        max_reply_length: int = MAX_REPLY_LENGTH,
        listener: ReplyListener[W] | None = None,
        *,
        reply_timeout: float | None = None,
        legacy: bool = False,
    ) -> None:
        self.clock = clock
        self.core: ClientCore[W] = ClientCore(max_reply_length)
        self.listener: ReplyListener[W] = listener or ReplyListener()
        self.reply_timeout = reply_timeout
        self.legacy = legacy
        self.lost = False
        self._closed = False
        self._out: list[str] = []
        self._reading_paused = False
        self._reply_timer: IDelayedCall | None = None
        # Sequence numbers of requests sent with timed=False, which the
        # reply time limit does not wait for.
        self._untimed: deque[int] = deque()
        # In the seed's format: lines not sent yet, and their waiters.
        self._legacy_queue: deque[tuple[bytes, W, bool]] = deque()

    def connectionMade(self) -> None:
        self.transport.registerProducer(_SendFlow(self), True)
        self.listener.connection_made(self)

    # Sending.

    def request(
        self, line: str, waiter: W, timeout: float | None = None
    ) -> IDelayedCall | None:
        """
        Send one request line soon: what is sent in one turn of the reactor
        goes to the transport in one write.

        :param timeout: seconds the reply may take, or ``None``; past it the
            listener's :meth:`~ReplyListener.request_expired` is called.
        :returns: the time limit's delayed call, for the caller to cancel
            once it no longer waits, or ``None``.
        :raises ValueError: if ``line`` is not one line.
        :raises ConnectionClosed: if no request may be sent any more.
        """
        if self.legacy:
            if self.core.ended is not None:
                raise self.core.ended.with_traceback(None)
            if not is_one_line(line):
                raise ValueError(f"a request is one line, not {line!r}")
            self._queue_legacy(line.encode("utf-8"), waiter, True)
        else:
            self.core.count(line, waiter)
            out = self._out
            out.append(line)
            if len(out) == 1:
                assert self.clock is not None, "request() needs a clock"
                self.clock.callLater(0, self._flush)
            if self.reply_timeout is not None and self._reply_timer is None:
                self._restart_reply_timer()
        if timeout is None:
            return None
        assert self.clock is not None, "a time limit needs a clock"
        return self.clock.callLater(
            timeout, self.listener.request_expired, waiter, timeout
        )

    def send_lines(
        self, lines: Sequence[bytes], waiter: W, *, timed: bool = True
    ) -> None:
        """
        Send request lines, each exactly as given (in any encoding), at once
        and in one write.

        :param waiter: handed back with each of their replies.
        :param timed: whether the reply time limit waits for their replies.
        """
        if not lines or self._closed:
            return
        if self.legacy:
            for line in lines:
                self._queue_legacy(line, waiter, timed)
            return
        if not timed:
            self._untimed.extend(range(self.core.sent, self.core.sent + len(lines)))
        self.core.expect(lines, waiter)
        if self._out:
            # Requests of this turn go first.
            self._flush()
        self.transport.write(CRLF.join(lines) + CRLF)
        if timed:
            self._start_reply_timer()

    def _queue_legacy(self, line: bytes, waiter: W, timed: bool) -> None:
        self._legacy_queue.append((line, waiter, timed))
        self._send_legacy()

    def _send_legacy(self) -> None:
        # The seed's server reads whatever has arrived as one command: one
        # at a time.
        if self.core.pending or not self._legacy_queue or self.lost or self._closed:
            return
        line, waiter, timed = self._legacy_queue.popleft()
        if not timed:
            self._untimed.append(self.core.sent)
        self.core.expect((line,), waiter)
        self.transport.write(line)
        if timed:
            self._start_reply_timer()

    def _flush(self) -> None:
        # A turn's request lines, encoded at once.
        out, self._out = self._out, []
        if out and not self.lost:
            out.append("")
            self.transport.write("\r\n".join(out).encode("utf-8"))

    # Receiving.

    @property
    def partial_reply(self) -> bool:
        """
        Whether text without a line end has come (and waits for one).
        """
        return not self.legacy and self.core.buffered > 0

    def dataReceived(self, data: bytes) -> None:
        core = self.core
        if self.legacy:
            if data.endswith(LF):
                data = data[:-2] if data.endswith(CRLF) else data[:-1]
            waiters, outcomes = core.receive_read(data.decode("utf-8", "replace"))
        else:
            waiters, outcomes = core.receive(data)
        if outcomes or core.ended is not None:
            if self._untimed:
                answered = core.answered
                untimed = self._untimed
                while untimed and untimed[0] < answered:
                    untimed.popleft()
            self._restart_reply_timer()
            self.listener.replies_received(waiters, outcomes)
        if core.broken is not None:
            self.close(abort=True)
        elif self.legacy:
            self._send_legacy()

    def pause_reading(self) -> None:
        """
        Stop reading replies (whoever takes them cannot keep up); the reply
        time limit stops too: a slow reader of replies is not a server that
        does not answer.
        """
        self._reading_paused = True
        self._cancel_reply_timer()
        if not self.lost:
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """
        Read replies again, after :meth:`pause_reading`.
        """
        self._reading_paused = False
        if not self.lost:
            self.transport.resumeProducing()
        self._restart_reply_timer()

    # The reply time limit.

    def _awaited(self) -> int:
        return self.core.pending - len(self._untimed)

    def _start_reply_timer(self) -> None:
        if self._reply_timer is None:
            self._restart_reply_timer()

    def _restart_reply_timer(self) -> None:
        self._cancel_reply_timer()
        if (
            self.reply_timeout is None
            or self._reading_paused
            or self.lost
            or self._closed
            or self._awaited() <= 0
        ):
            return
        assert self.clock is not None, "a reply time limit needs a clock"
        self._reply_timer = self.clock.callLater(self.reply_timeout, self._overdue)

    def _cancel_reply_timer(self) -> None:
        timer, self._reply_timer = self._reply_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _overdue(self) -> None:
        self._reply_timer = None
        assert self.reply_timeout is not None
        self.listener.reply_overdue(self.reply_timeout)

    # Ending.

    def close(self, *, abort: bool = False) -> None:
        """
        Close the connection (at once with ``abort``, dropping what is not
        sent yet), once; nothing more is sent.
        """
        if self._closed or self.lost:
            return
        self._closed = True
        self.core.close()
        self._cancel_reply_timer()
        self._flush()
        # A producer still registered on the connection holds a TLS close
        # open for ever: unregister first.
        self.transport.unregisterProducer()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self._cancel_reply_timer()
        self._legacy_queue.clear()
        exception, waiters = self.core.connection_lost(describe_failure(reason))
        self.listener.connection_ended(exception, waiters, reason)


class Client(ReplyListener["Deferred[str]"]):
    """
    A connection to a commandproto server: send requests, get replies.

    Requests are pipelined: each goes out at once, and replies are matched
    to them in order.  Make one with :func:`connect`.  It is a thin layer of
    Deferreds over a :class:`ClientProtocol`, whose listener it is.
    """

    def __init__(self, protocol: ClientProtocol[Deferred[str]]) -> None:
        self._protocol = protocol
        self._core = protocol.core
        self._lost_waiters: list[Deferred[None]] = []
        protocol.listener = self

    @property
    def pending(self) -> int:
        """
        How many requests await their replies (those given up on included,
        until their replies come).
        """
        return self._core.pending

    @property
    def usable(self) -> bool:
        """
        Whether a request may be sent: ``False`` once closing, closed, after
        ``quit``, or after the server's last word.
        """
        return self._core.ended is None and not self._protocol.lost

    def request(self, line: str, timeout: float | None = None) -> Deferred[str]:
        """
        Send one request line.

        :param line: the request, without a line terminator.
        :param timeout: seconds to wait for the reply, or ``None`` for no
            limit.  Past it the result fails with :class:`TimeoutError` and
            the reply, if it ever comes, is dropped; cancelling the result
            does the same with ``CancelledError``.  Either way the
            connection stays in step: no later request receives that reply.
        :returns: a Deferred that fires with the reply; an error reply fails
            it with :class:`~commandproto.ReplyError` (or
            :class:`~commandproto.UnknownCommand`), a connection that ends
            first with :class:`~commandproto.ConnectionClosed` (or
            :class:`~commandproto.ServerRefused`).  The request is never sent
            again by the library: it may have run.
        """
        d: Deferred[str] = Deferred(self._given_up)
        try:
            call = self._protocol.request(line, d, timeout)
        except (ConnectionClosed, ValueError) as e:
            return fail(e)
        if call is not None:
            d.addBoth(_cancel_call, call)
        return d

    # The protocol's listener.

    def replies_received(
        self, waiters: list[Deferred[str]], outcomes: list[Outcome]
    ) -> None:
        # A waiter that has fired timed out or was cancelled: its reply is
        # dropped here, and only its.
        if not set(map(type, outcomes)) - {str}:
            # The common case, decided at C speed: every outcome is a reply.
            for waiter, text in zip(waiters, cast(list[str], outcomes), strict=True):
                if not waiter.called:
                    waiter.callback(text)
        else:
            for waiter, outcome in zip(waiters, outcomes, strict=True):
                if not waiter.called:
                    if type(outcome) is str:
                        waiter.callback(outcome)
                    else:
                        waiter.errback(cast(Exception, outcome))
        if self._core.ended is not None and self._core.broken is None:
            self._close_if_done()

    def request_expired(self, waiter: Deferred[str], timeout: float) -> None:
        if not waiter.called:
            waiter.errback(TimeoutError(f"no reply within {timeout:g} seconds"))
            self._close_if_done()

    def connection_ended(
        self, exception: ConnectionClosed, waiters: list[Deferred[str]], reason: Failure
    ) -> None:
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(exception)
        lost, self._lost_waiters = self._lost_waiters, []
        for d in lost:
            d.callback(None)

    def _given_up(self, d: Deferred[str]) -> None:
        # Deferred fails itself with CancelledError after this.
        clock = self._protocol.clock
        assert clock is not None
        clock.callLater(0, self._close_if_done)

    def _close_if_done(self) -> None:
        # Once we are closing, close when no live request is outstanding.
        if self._protocol.lost or not self._core.closing:
            return
        if all(waiter.called for waiter in self._core.waiters()):
            self._protocol.close()

    def close(self) -> Deferred[None]:
        """
        Close the connection once every outstanding request is answered (or
        given up on); no request may be sent after this.

        :returns: a Deferred that fires once the connection is gone.
        """
        self._core.close()
        self._close_if_done()
        return self.when_closed()

    def abort(self) -> Deferred[None]:
        """
        Drop the connection now: outstanding requests fail with
        :class:`~commandproto.ConnectionClosed`.
        """
        self._core.close()
        self._protocol.close(abort=True)
        return self.when_closed()

    def when_closed(self) -> Deferred[None]:
        """
        A Deferred that fires once the connection is gone, whoever closed
        it.
        """
        if self._protocol.lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._lost_waiters.append(d)
        return d


def _cancel_call(result: T, call: IDelayedCall) -> T:
    if call.active():
        call.cancel()
    return result


def endpoint_from(
    reactor: Any, endpoint: IStreamClientEndpoint | str
) -> IStreamClientEndpoint:
    """
    The endpoint itself, or the one an endpoint string describes
    (``tcp:127.0.0.1:12345``, ``unix:/run/commandproto.sock``,
    ``tls:example.org:12345``).

    :raises ValueError: for a string that describes no endpoint, saying why.
    """
    if not isinstance(endpoint, str):
        return endpoint
    from twisted.internet.endpoints import clientFromString

    kind = endpoint.partition(":")[0]
    if kind in ("tls", "ssl"):
        require_tls()
    try:
        return cast(IStreamClientEndpoint, clientFromString(reactor, endpoint))
    except Exception as e:
        raise ValueError(
            f"bad endpoint {endpoint!r}: {explain_endpoint_error(kind, e)}"
        ) from None


def connect(
    reactor: Any,
    endpoint: IStreamClientEndpoint | str,
    *,
    timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    max_reply_length: int = MAX_REPLY_LENGTH,
) -> Deferred[Client]:
    """
    Connect to a commandproto server.

    The result fires once the server has taken the connection: the client
    asks ``Are you there?`` and waits for the answer, because a server over
    its connection limit says so and closes instead of answering.

    :param reactor: the reactor (its clock times requests).
    :param endpoint: a client endpoint, or an endpoint string.
    :param timeout: seconds to connect within, or ``None`` for no limit.
    :param max_reply_length: the longest reply accepted, in bytes.
    :returns: a Deferred that fires with a :class:`Client`, or fails with
        :class:`~commandproto.ServerRefused`, :class:`TimeoutError`, or
        whatever the endpoint failed with (``ConnectionRefusedError``...).
    """
    try:
        resolved = endpoint_from(reactor, endpoint)
    except ValueError as e:
        return fail(e)
    clock = cast(IReactorTime, reactor)
    factory = Factory.forProtocol(
        lambda: Client(ClientProtocol(clock, max_reply_length))._protocol
    )
    state: dict[str, Any] = {}

    def connected(protocol: IProtocol) -> Deferred[Client]:
        client = cast(Client, cast(ClientProtocol[Deferred[str]], protocol).listener)
        state["client"] = client
        probe = client.request(PROBE)

        def taken(_: object) -> Client:
            return client

        def not_taken(failure: Failure) -> Client | Failure:
            if failure.check(ConnectionClosed):
                return failure
            # Any answer means the server took the connection.
            return client

        return probe.addCallbacks(taken, not_taken)

    attempt = resolved.connect(factory)
    result: Deferred[Client] = attempt.addCallback(connected)
    if timeout is None:
        return result

    def expire() -> None:
        client = state.get("client")
        if client is not None:
            client.abort()
        result.cancel()

    call = clock.callLater(timeout, expire)

    def finished(outcome: Client | Failure) -> Client | Failure:
        expired = not call.active()
        if not expired:
            call.cancel()
        if isinstance(outcome, Failure) and expired:
            return Failure(
                TimeoutError(f"could not connect within {timeout:g} seconds")
            )
        return outcome

    return result.addBoth(finished)
