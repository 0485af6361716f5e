"""
The client library on Twisted: :func:`connect` to a server, then
:meth:`Client.request` as many lines as you like, pipelined.

Everything about the protocol (ordering, matching replies to requests, the
lines the server sends on its own) is in :class:`~.core.ClientCore`; this
module only moves bytes and fires Deferreds.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from .connect import describe_failure, explain_endpoint_error, require_tls
from .core import MAX_REPLY_LENGTH, ClientCore
from .errors import ConnectionClosed

T = TypeVar("T")

PROBE = "Are you there?"
"""
What :func:`connect` asks to learn that the server took the connection (a
server over its connection limit answers nothing, and says so instead).
"""

DEFAULT_CONNECT_TIMEOUT = 30.0


class ClientProtocol(Protocol):
    """
    One connection: bytes in and out of a :class:`~.core.ClientCore`,
    replies into the Deferreds that wait for them.
    """

    def __init__(self, clock: IReactorTime, max_reply_length: int) -> None:
        self.clock = clock
        self.core: ClientCore[Deferred[str]] = ClientCore(max_reply_length)
        self.lost = False
        self._lost_waiters: list[Deferred[None]] = []
        self._out: list[bytes] = []

    def send(self, data: bytes) -> None:
        """
        Send bytes soon: what is sent in one turn of the reactor goes to the
        transport in one write.
        """
        out = self._out
        out.append(data)
        if len(out) == 1:
            self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if not self.lost:
            self.transport.write(b"".join(out))

    transport: Any

    def dataReceived(self, data: bytes) -> None:
        for waiter, outcome in self.core.receive_data(data):
            # A waiter that has fired timed out or was cancelled: its reply
            # is dropped here, and only its.
            if not waiter.called:
                if type(outcome) is str:
                    waiter.callback(outcome)
                else:
                    waiter.errback(cast(Exception, outcome))
        if self.core.broken is not None:
            self.transport.abortConnection()
        elif self.core.ended is not None:
            self.close_if_done()

    def close_if_done(self) -> None:
        """
        Once we are closing, close when no live request is outstanding.
        """
        if self.lost or not self.core.closing:
            return
        if all(waiter.called for waiter in self.core.waiters()):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        exception, waiters = self.core.connection_lost(describe_failure(reason))
        for waiter in waiters:
            if not waiter.called:
                waiter.errback(exception)
        lost, self._lost_waiters = self._lost_waiters, []
        for d in lost:
            d.callback(None)

    def when_lost(self) -> Deferred[None]:
        """
        A Deferred that fires once the connection is gone.
        """
        if self.lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._lost_waiters.append(d)
        return d


class Client:
    """
    A connection to a commandproto server: send requests, get replies.

    Requests are pipelined: each goes out at once, and replies are matched
    to them in order.  Make one with :func:`connect`.
    """

    def __init__(self, protocol: ClientProtocol) -> None:
        self._protocol = protocol
        self._core = protocol.core
        self._clock = protocol.clock
        self._transport = cast(ITransport, protocol.transport)

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
            data = self._core.request(line, d)
        except (ConnectionClosed, ValueError) as e:
            return fail(e)
        self._protocol.send(data)
        if timeout is not None:
            call = self._clock.callLater(timeout, self._expire, d, timeout)
            d.addBoth(_cancel_call, call)
        return d

    def _expire(self, d: Deferred[str], timeout: float) -> None:
        if not d.called:
            d.errback(TimeoutError(f"no reply within {timeout:g} seconds"))
            self._protocol.close_if_done()

    def _given_up(self, d: Deferred[str]) -> None:
        # Deferred fails itself with CancelledError after this.
        self._clock.callLater(0, self._protocol.close_if_done)

    def close(self) -> Deferred[None]:
        """
        Close the connection once every outstanding request is answered (or
        given up on); no request may be sent after this.

        :returns: a Deferred that fires once the connection is gone.
        """
        self._core.close()
        self._protocol.close_if_done()
        return self._protocol.when_lost()

    def abort(self) -> Deferred[None]:
        """
        Drop the connection now: outstanding requests fail with
        :class:`~commandproto.ConnectionClosed`.
        """
        self._core.close()
        if not self._protocol.lost:
            self._transport.abortConnection()  # type: ignore[attr-defined]
        return self._protocol.when_lost()

    def when_closed(self) -> Deferred[None]:
        """
        A Deferred that fires once the connection is gone, whoever closed
        it.
        """
        return self._protocol.when_lost()


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
    factory = Factory.forProtocol(lambda: ClientProtocol(clock, max_reply_length))
    state: dict[str, Any] = {}

    def connected(protocol: IProtocol) -> Deferred[Client]:
        client = Client(cast(ClientProtocol, protocol))
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
