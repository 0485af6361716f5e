"""
A pool of client connections on Twisted: at most ``size`` connections,
requests that wait for one when all are busy, dead connections replaced.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from twisted.internet.defer import (
    Deferred,
    DeferredList,
    fail,
)
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure

from . import errors
from .connection import (
    DEFAULT_CONNECT_TIMEOUT,
    Client,
    _cancel_call,
    connect,
    endpoint_from,
)
from .core import MAX_REPLY_LENGTH
from .errors import ConnectionClosed


class Pool:
    """
    Up to ``size`` connections to one server, shared by requests.

    A request takes a connection that has fewer than ``max_in_flight``
    requests outstanding, or opens a new one while there are fewer than
    ``size``, or else waits (within its time limit) for one to come free:
    it never fails because the pool is busy.  A connection that ends is
    forgotten and the next request opens a new one, so after a server
    restarts the next requests succeed.  A request whose connection ends
    before its reply fails with :class:`~commandproto.ConnectionClosed` and
    is not sent again: it may have run.  A request that times out or is
    cancelled takes its connection with it (the connection is dropped), so
    no later request waits behind, or receives, its reply.

    :param reactor: the reactor.
    :param endpoint: a client endpoint, or an endpoint string.
    :param size: the most connections open at once.
    :param max_in_flight: the most requests outstanding on one connection
        (``1``, the default, as in redis-py's pool: a slow command delays
        no other; more pipelines).
    :param connect_timeout: seconds to connect within (see
        :func:`~commandproto.client.connect`).
    """

    def __init__(
        self,
        reactor: Any,
        endpoint: IStreamClientEndpoint | str,
        size: int = 10,
        *,
        max_in_flight: int = 1,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        max_reply_length: int = MAX_REPLY_LENGTH,
    ) -> None:
        if size < 1 or max_in_flight < 1:
            raise ValueError("size and max_in_flight must be at least 1")
        self._reactor = reactor
        self._clock = cast(IReactorTime, reactor)
        self._endpoint = endpoint_from(reactor, endpoint)
        self._size = size
        self._max_in_flight = max_in_flight
        self._connect_timeout = connect_timeout
        self._max_reply_length = max_reply_length
        self._busy: dict[Client, int] = {}
        self._attempts: dict[Deferred[Client], Deferred[Client]] = {}
        self._waiting: deque[Deferred[Client]] = deque()
        self._closed = False

    @property
    def connections(self) -> int:
        """
        How many connections are open or opening.
        """
        return len(self._busy) + len(self._attempts)

    @property
    def waiting(self) -> int:
        """
        How many requests wait for a connection.
        """
        return len(self._waiting)

    def request(self, line: str, timeout: float | None = None) -> Deferred[str]:
        """
        Send one request on a connection of the pool.

        :param timeout: seconds for all of it (waiting for a connection,
            connecting, the reply), or ``None`` for no limit; past it the
            result fails with :class:`TimeoutError`.
        :returns: as :meth:`Client.request`; also fails with whatever
            connecting failed with, when a new connection was needed and
            could not be made.
        """
        if self._closed:
            return fail(ConnectionClosed("the pool is closed", errors.CLOSED))
        stage: list[Deferred[Any]] = []
        gave_up: list[bool] = []

        def give_up() -> None:
            gave_up.append(True)
            stage[-1].cancel()

        result: Deferred[str] = Deferred(lambda _: give_up())

        def got(client: Client) -> None:
            requested = client.request(line)
            stage.append(requested)
            requested.addBoth(answered, client)

        def answered(outcome: str | Failure, client: Client) -> None:
            if gave_up:
                # Its reply may still come: drop the connection with it.
                client.abort()
            self._release(client)
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

        def not_got(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        acquiring = self._acquire()
        stage.append(acquiring)
        acquiring.addCallbacks(got, not_got)
        if timeout is not None and not result.called:

            def expire() -> None:
                if not result.called:
                    result.errback(TimeoutError(f"no reply within {timeout:g} seconds"))
                    give_up()

            call = self._clock.callLater(timeout, expire)
            result.addBoth(_cancel_call, call)
        return result

    def _acquire(self) -> Deferred[Client]:
        waiter: Deferred[Client] = Deferred(self._forget)
        self._waiting.append(waiter)
        self._dispatch()
        return waiter

    def _forget(self, waiter: Deferred[Client]) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)
        elif waiter in self._attempts:
            self._attempts[waiter].cancel()

    def _available(self) -> Client | None:
        for client, busy in self._busy.items():
            if busy < self._max_in_flight and client.usable:
                return client
        return None

    def _dispatch(self) -> None:
        while self._waiting:
            client = self._available()
            if client is not None:
                self._busy[client] += 1
                self._waiting.popleft().callback(client)
            elif self.connections < self._size:
                waiter = self._waiting.popleft()
                attempt = connect(
                    self._reactor,
                    self._endpoint,
                    timeout=self._connect_timeout,
                    max_reply_length=self._max_reply_length,
                )
                self._attempts[waiter] = attempt
                attempt.addBoth(self._attempted, waiter)
            else:
                return

    def _attempted(self, outcome: Client | Failure, waiter: Deferred[Client]) -> None:
        del self._attempts[waiter]
        if isinstance(outcome, Failure):
            if not waiter.called:
                waiter.errback(outcome)
            self._dispatch()
            return
        client = outcome
        if self._closed:
            client.close()
            return
        self._busy[client] = 0
        client.when_closed().addBoth(lambda _: self._lost(client))
        if waiter.called:
            self._dispatch()
        else:
            self._busy[client] = 1
            waiter.callback(client)

    def _release(self, client: Client) -> None:
        if client in self._busy:
            self._busy[client] -= 1
            self._dispatch()

    def _lost(self, client: Client) -> None:
        self._busy.pop(client, None)
        if not self._closed:
            self._dispatch()

    def close(self) -> Deferred[None]:
        """
        Close the pool: requests waiting for a connection fail with
        :class:`~commandproto.ConnectionClosed`, and each connection closes
        once its outstanding requests are answered.

        :returns: a Deferred that fires once every connection is gone.
        """
        self._closed = True
        closed = ConnectionClosed("the pool is closed", errors.CLOSED)
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            waiter.errback(closed)
        for attempt in list(self._attempts.values()):
            attempt.cancel()
        closing = [client.close() for client in list(self._busy)]
        done: Deferred[None] = DeferredList(closing).addCallback(lambda _: None)
        return done
