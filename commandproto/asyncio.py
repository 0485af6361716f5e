"""
The client library on asyncio::

    from commandproto.asyncio import connect

    async with await connect("127.0.0.1", 12345) as client:
        print(await client.request("Hello"))

Requests are pipelined: each goes out at once, and replies are matched to
them in order.  Everything about the protocol is in
:class:`commandproto.client.core.ClientCore`; this module only moves bytes
and resolves futures.  (The module is called ``asyncio`` inside the
package; it imports the standard library's with absolute imports.)
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections import deque
from types import TracebackType
from typing import Any, TypeVar, cast

from .client import errors
from .client.core import MAX_REPLY_LENGTH, ClientCore
from .client.errors import ConnectionClosed, ReplyError

_Self = TypeVar("_Self", bound="_Closing")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345
DEFAULT_CONNECT_TIMEOUT = 30.0
PROBE = "Are you there?"

SSL = _ssl.SSLContext | bool | None


class _Protocol(asyncio.Protocol):
    """
    One connection: bytes in and out of a :class:`ClientCore`, replies into
    the futures that wait for them.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_reply_length: int) -> None:
        self.loop = loop
        self.core: ClientCore[asyncio.Future[str]] = ClientCore(max_reply_length)
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []

    def send(self, data: bytes) -> None:
        """
        Send bytes soon: what is sent in one turn of the loop goes out in
        one write (one system call, not one per request).
        """
        out = self._out
        out.append(data)
        if len(out) == 1:
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for waiter, outcome in self.core.receive_data(data):
            # A done future timed out or was cancelled: its reply is dropped
            # here, and only its.
            if not waiter.done():
                if type(outcome) is str:
                    waiter.set_result(outcome)
                else:
                    waiter.set_exception(cast(Exception, outcome))
        if self.core.broken is not None:
            cast(asyncio.Transport, self.transport).abort()
        elif self.core.ended is not None:
            self.close_if_done()

    def close_if_done(self) -> None:
        if self.lost.done() or not self.core.closing or self.transport is None:
            return
        if all(waiter.done() for waiter in self.core.waiters()):
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        detail = (
            "closed by the server" if exc is None else (str(exc) or type(exc).__name__)
        )
        exception, waiters = self.core.connection_lost(detail)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exception)
        if not self.lost.done():
            self.lost.set_result(None)


class _Closing:
    """
    ``async with``: the object, closed on the way out.
    """

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class Client(_Closing):
    """
    A connection to a commandproto server; make one with :func:`connect`.
    """

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol
        self._core = protocol.core
        self._loop = protocol.loop
        self._transport = cast(asyncio.Transport, protocol.transport)

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
        return self._core.ended is None and not self._protocol.lost.done()

    def request(self, line: str, timeout: float | None = None) -> asyncio.Future[str]:
        """
        Send one request line; await the result for its reply.

        It is sent at once (not when awaited), so that many requests made
        together are pipelined.

        :param line: the request, without a line terminator.
        :param timeout: seconds to wait for the reply, or ``None`` for no
            limit.  Past it awaiting raises :class:`TimeoutError`, and the
            reply, if it ever comes, is dropped; cancelling the future (or
            the task awaiting it) does the same.  Either way no later
            request receives that reply.
        :returns: a future of the reply.  An error reply raises
            :class:`~commandproto.ReplyError` (or
            :class:`~commandproto.UnknownCommand`), a connection that ends
            first :class:`~commandproto.ConnectionClosed` (or
            :class:`~commandproto.ServerRefused`).  The request is never
            sent again by the library: it may have run.
        """
        future: asyncio.Future[str] = self._loop.create_future()
        try:
            data = self._core.request(line, future)
        except (ConnectionClosed, ValueError) as e:
            future.set_exception(e)
            return future
        self._protocol.send(data)
        if timeout is not None:
            timer = self._loop.call_later(timeout, _expire, future, timeout)
            future.add_done_callback(lambda _: timer.cancel())
        return future

    async def close(self) -> None:
        """
        Close the connection once every outstanding request is answered (or
        given up on); no request may be sent after this.
        """
        self._core.close()
        self._protocol.close_if_done()
        await asyncio.shield(self._protocol.lost)

    def abort(self) -> None:
        """
        Drop the connection now: outstanding requests raise
        :class:`~commandproto.ConnectionClosed`.
        """
        self._core.close()
        self._transport.abort()

    async def wait_closed(self) -> None:
        """
        Wait until the connection is gone, whoever closed it.
        """
        await asyncio.shield(self._protocol.lost)


def _expire(future: asyncio.Future[str], timeout: float) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no reply within {timeout:g} seconds"))


async def connect(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    path: str | None = None,
    ssl: SSL = None,
    server_hostname: str | None = None,
    timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    max_reply_length: int = MAX_REPLY_LENGTH,
) -> Client:
    """
    Connect to a commandproto server.

    Returns once the server has taken the connection: the client asks
    ``Are you there?`` and waits for the answer, because a server over its
    connection limit says so and closes instead of answering.

    :param host: the server's host name or address.
    :param port: its TCP port.
    :param path: a unix socket's path, instead of ``host`` and ``port``.
    :param ssl: ``True`` or an :class:`ssl.SSLContext` for TLS (for mutual
        TLS, a context with the client's certificate loaded:
        ``context.load_cert_chain(...)``).
    :param server_hostname: the name to check the server's certificate
        against, if not ``host``.
    :param timeout: seconds to connect within, or ``None`` for no limit.
    :param max_reply_length: the longest reply accepted, in bytes.
    :raises ServerRefused: if the server refused the connection.
    :raises TimeoutError: if it took longer than ``timeout``.
    :raises OSError: if the connection failed (``ConnectionRefusedError``...).
    """
    loop = asyncio.get_running_loop()

    def make() -> _Protocol:
        return _Protocol(loop, max_reply_length)

    async def attempt() -> Client:
        protocol: _Protocol
        if path is not None:
            _, protocol = await loop.create_unix_connection(
                make, path, ssl=ssl, server_hostname=server_hostname
            )
        else:
            _, protocol = await loop.create_connection(
                make, host, port, ssl=ssl, server_hostname=server_hostname
            )
        client = Client(protocol)
        try:
            await client.request(PROBE)
        except ReplyError:
            pass  # any answer means the server took the connection
        except BaseException:
            client.abort()
            raise
        return client

    if timeout is None:
        return await attempt()
    try:
        return await asyncio.wait_for(attempt(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"could not connect within {timeout:g} seconds") from None


class Pool(_Closing):
    """
    Up to ``size`` connections to one server, shared by requests.

    A request takes a connection that has fewer than ``max_in_flight``
    requests outstanding, or opens a new one while there are fewer than
    ``size``, or else waits (within its time limit) for one to come free:
    it never fails because the pool is busy.  A connection that ends is
    forgotten and the next request opens a new one, so after a server
    restarts the next requests succeed.  A request whose connection ends
    before its reply raises :class:`~commandproto.ConnectionClosed` and is
    not sent again: it may have run.  A request that times out or is
    cancelled takes its connection with it (the connection is dropped), so
    no later request waits behind, or receives, its reply.

    The other parameters are :func:`connect`'s.

    :param size: the most connections open at once.
    :param max_in_flight: the most requests outstanding on one connection
        (``1``, the default, as in redis-py's pool: a slow command delays
        no other; more pipelines).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        size: int = 10,
        *,
        max_in_flight: int = 1,
        path: str | None = None,
        ssl: SSL = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        max_reply_length: int = MAX_REPLY_LENGTH,
    ) -> None:
        if size < 1 or max_in_flight < 1:
            raise ValueError("size and max_in_flight must be at least 1")
        self._size = size
        self._max_in_flight = max_in_flight
        self._connect: dict[str, Any] = {
            "host": host,
            "port": port,
            "path": path,
            "ssl": ssl,
            "server_hostname": server_hostname,
            "timeout": connect_timeout,
            "max_reply_length": max_reply_length,
        }
        self._busy: dict[Client, int] = {}
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def connections(self) -> int:
        """
        How many connections are open or opening.
        """
        return len(self._busy) + self._connecting

    @property
    def waiting(self) -> int:
        """
        How many requests wait for a connection.
        """
        return len(self._waiters)

    async def request(self, line: str, timeout: float | None = None) -> str:
        """
        Send one request on a connection of the pool.

        :param timeout: seconds for all of it (waiting for a connection,
            connecting, the reply), or ``None`` for no limit; past it
            :class:`TimeoutError` is raised.
        :returns: as :meth:`Client.request`; also raises whatever connecting
            raised, when a new connection was needed and could not be made.
        """
        if timeout is None:
            return await self._request(line)
        try:
            return await asyncio.wait_for(self._request(line), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no reply within {timeout:g} seconds") from None

    async def _request(self, line: str) -> str:
        client = await self._acquire()
        try:
            return await client.request(line)
        except asyncio.CancelledError:
            # Its reply may still come: drop the connection with it.
            client.abort()
            raise
        finally:
            self._release(client)

    def _available(self) -> Client | None:
        for client, busy in self._busy.items():
            if busy < self._max_in_flight and client.usable:
                return client
        return None

    async def _acquire(self) -> Client:
        while True:
            if self._closed:
                raise ConnectionClosed("the pool is closed", errors.CLOSED)
            client = self._available()
            if client is not None:
                self._busy[client] += 1
                return client
            if self.connections < self._size:
                self._connecting += 1
                try:
                    client = await connect(**self._connect)
                except BaseException:
                    self._wake()
                    raise
                finally:
                    self._connecting -= 1
                if self._closed:
                    client.abort()
                    continue
                self._busy[client] = 1
                client._protocol.lost.add_done_callback(
                    lambda _, client=client: self._lost(client)  # type: ignore[misc]
                )
                return client
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # pass on the wake-up this one got
                raise

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _release(self, client: Client) -> None:
        if client in self._busy:
            self._busy[client] -= 1
            self._wake()

    def _lost(self, client: Client) -> None:
        self._busy.pop(client, None)
        self._wake()

    async def close(self) -> None:
        """
        Close the pool: requests waiting for a connection raise
        :class:`~commandproto.ConnectionClosed`, and each connection closes
        once its outstanding requests are answered.
        """
        self._closed = True
        while self._waiters:
            self._wake()
        await asyncio.gather(*(client.close() for client in list(self._busy)))
