"""
The client library on Twisted against the real server factory, in memory
(iosim), with time from a Clock.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test.iosim import (
    IOPump,
    makeFakeClient,
    makeFakeServer,
)
from twisted.test.iosim import (
    connect as pump_between,
)
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import commandproto
from commandproto.client import Client, Pool, connect, errors
from commandproto.client.connection import ClientProtocol, ReplyListener
from commandproto.client.core import Outcome
from commandproto.commands.table import CommandTable, with_builtins
from commandproto.server import CommandServerFactory


def slow_commands() -> CommandTable:
    table = CommandTable()

    @table.command("echo")
    def echo(text: commandproto.Rest) -> str:
        return str(text)

    @table.command("never")
    def never() -> Deferred[str]:
        return Deferred()

    return table


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects a client to a new server protocol of ``factory`` in memory.
    """

    def __init__(self, factory: CommandServerFactory, clock: Clock) -> None:
        self.factory = factory
        self.clock = clock
        self.pumps: list[IOPump] = []
        self.refuse: Exception | None = None

    def connect(self, client_factory: IProtocolFactory) -> Deferred[IProtocol]:
        if self.refuse is not None:
            from twisted.internet.defer import fail

            return fail(self.refuse)
        server = self.factory.buildProtocol(None)
        client = client_factory.buildProtocol(None)  # type: ignore[arg-type]
        assert client is not None
        pump = pump_between(
            server,
            makeFakeServer(server),
            client,
            makeFakeClient(client),
            clock=self.clock,
        )
        self.pumps.append(pump)
        return succeed(client)

    def flush(self) -> None:
        for _ in range(3):
            for pump in self.pumps:
                pump.flush()


class LibraryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = CommandServerFactory(
            with_builtins(slow_commands()), clock=self.clock, command_timeout=None
        )
        self.endpoint = MemoryEndpoint(self.factory, self.clock)

    def connected(self) -> Client:
        d = connect(self.clock, self.endpoint)
        self.endpoint.flush()
        return self.successResultOf(d)

    def result(self, d: Deferred[Any]) -> Any:
        self.endpoint.flush()
        return self.successResultOf(d)


class ClientTests(LibraryTestCase):
    def test_request_gets_its_reply(self) -> None:
        client = self.connected()
        self.assertEqual(self.result(client.request("Hello")), "Greetings!")

    def test_thousands_pipelined_in_order(self) -> None:
        client = self.connected()
        ds = [client.request(f"echo {n}") for n in range(3000)]
        self.assertEqual(client.pending, 3000)
        self.endpoint.flush()
        self.assertEqual(
            [self.successResultOf(d) for d in ds], [str(n) for n in range(3000)]
        )

    def test_error_reply_raises_reply_error(self) -> None:
        client = self.connected()
        d = client.request("help nope")
        self.endpoint.flush()
        failure = self.failureResultOf(d, commandproto.ReplyError)
        self.assertEqual(failure.value.reply, "Error: no such command: nope")

    def test_unknown_command_raises_unknown_command(self) -> None:
        client = self.connected()
        d = client.request("hello")
        self.endpoint.flush()
        self.failureResultOf(d, commandproto.UnknownCommand)

    def test_timeout_raises_builtin_timeout_error(self) -> None:
        client = self.connected()
        d = client.request("never", timeout=2)
        self.endpoint.flush()
        self.assertNoResult(d)
        self.clock.advance(2)
        self.failureResultOf(d, TimeoutError)

    def test_after_timeout_next_request_gets_its_own_reply(self) -> None:
        table = CommandTable()
        later: list[Deferred[str]] = []

        @table.command("slow")
        def slow() -> Deferred[str]:
            later.append(Deferred())
            return later[-1]

        self.factory = CommandServerFactory(
            with_builtins(table), clock=self.clock, command_timeout=None
        )
        self.endpoint = MemoryEndpoint(self.factory, self.clock)
        client = self.connected()
        first = client.request("slow", timeout=1)
        self.endpoint.flush()
        self.clock.advance(1)
        self.failureResultOf(first, TimeoutError)
        second = client.request("Hello")
        later[0].callback("late reply")
        self.assertEqual(self.result(second), "Greetings!")

    def test_cancelled_then_next_request_gets_its_own_reply(self) -> None:
        table = CommandTable()
        later: list[Deferred[str]] = []

        @table.command("slow")
        def slow() -> Deferred[str]:
            later.append(Deferred())
            return later[-1]

        self.factory = CommandServerFactory(
            with_builtins(table), clock=self.clock, command_timeout=None
        )
        self.endpoint = MemoryEndpoint(self.factory, self.clock)
        client = self.connected()
        first = client.request("slow")
        self.endpoint.flush()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        second = client.request("Hello")
        later[0].callback("late reply")
        self.assertEqual(self.result(second), "Greetings!")

    def test_quit_then_requests_fail_closed(self) -> None:
        client = self.connected()
        self.assertEqual(self.result(client.request("quit")), "Closing down")
        failure = self.failureResultOf(
            client.request("Hello"), commandproto.ConnectionClosed
        )
        self.assertEqual(failure.value.why, errors.QUIT)
        self.assertIsNone(self.successResultOf(client.when_closed()))

    def test_close_waits_for_outstanding_replies(self) -> None:
        client = self.connected()
        d = client.request("Hello")
        closed = client.close()
        self.assertEqual(self.result(d), "Greetings!")
        self.assertIsNone(self.result(closed))
        self.failureResultOf(client.request("Hello"), commandproto.ConnectionClosed)

    def test_idle_timeout_fails_later_requests_saying_idle(self) -> None:
        self.factory.idle_timeout = 5
        client = self.connected()
        self.clock.advance(5)
        self.endpoint.flush()
        failure = self.failureResultOf(
            client.request("Hello"), commandproto.ConnectionClosed
        )
        self.assertEqual(
            (failure.value.why, str(failure.value)),
            (errors.IDLE, "connection closed by the server: idle for 5 seconds"),
        )

    def test_refused_at_connect(self) -> None:
        self.factory.max_connections = 1
        self.connected()
        d = connect(self.clock, self.endpoint)
        self.endpoint.flush()
        failure = self.failureResultOf(d, commandproto.ServerRefused)
        self.assertEqual(str(failure.value), "Error: too many connections (limit is 1)")

    def test_mute_server_connect_times_out(self) -> None:
        @implementer(IStreamClientEndpoint)
        class Mute:
            def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
                return Deferred()

        d = connect(self.clock, Mute(), timeout=3)
        self.clock.advance(3)
        self.failureResultOf(d, TimeoutError)


class PoolTests(LibraryTestCase):
    def slow_server(self) -> list[Deferred[str]]:
        table = CommandTable()
        later: list[Deferred[str]] = []

        @table.command("slow")
        def slow() -> Deferred[str]:
            later.append(Deferred())
            return later[-1]

        self.factory = CommandServerFactory(
            with_builtins(table), clock=self.clock, command_timeout=None
        )
        self.endpoint = MemoryEndpoint(self.factory, self.clock)
        return later

    def test_at_most_size_connections_and_the_rest_wait(self) -> None:
        later = self.slow_server()
        pool = Pool(self.clock, self.endpoint, size=2)
        slow = [pool.request("slow") for _ in range(2)]
        hello = pool.request("Hello")
        self.endpoint.flush()
        self.assertEqual((pool.connections, pool.waiting), (2, 1))
        self.assertNoResult(hello)
        later[0].callback("done")
        self.assertEqual(self.result(slow[0]), "done")
        self.assertEqual(self.result(hello), "Greetings!")
        self.assertEqual(len(self.endpoint.pumps), 2)

    def test_waiting_request_times_out(self) -> None:
        self.slow_server()
        pool = Pool(self.clock, self.endpoint, size=1)
        pool.request("slow")
        hello = pool.request("Hello", timeout=1)
        self.endpoint.flush()
        self.clock.advance(1)
        self.failureResultOf(hello, TimeoutError)
        self.assertEqual(pool.waiting, 0)

    def test_timed_out_request_takes_its_connection_with_it(self) -> None:
        later = self.slow_server()
        pool = Pool(self.clock, self.endpoint, size=1)
        slow = pool.request("slow", timeout=1)
        self.endpoint.flush()
        self.clock.advance(1)
        self.failureResultOf(slow, TimeoutError)
        hello = pool.request("Hello")
        self.endpoint.flush()
        later[0].callback("late")
        self.assertEqual(self.result(hello), "Greetings!")
        self.assertEqual(len(self.endpoint.pumps), 2)

    def test_dead_connection_is_replaced(self) -> None:
        pool = Pool(self.clock, self.endpoint, size=1)
        self.assertEqual(self.result(pool.request("Hello")), "Greetings!")
        # The server drops the connection.
        self.endpoint.pumps[0].server.transport.loseConnection()
        self.endpoint.flush()
        self.assertEqual(pool.connections, 0)
        self.assertEqual(self.result(pool.request("Hello")), "Greetings!")
        self.assertEqual(len(self.endpoint.pumps), 2)

    def test_request_on_a_connection_that_dies_is_not_sent_again(self) -> None:
        self.slow_server()
        pool = Pool(self.clock, self.endpoint, size=1)
        slow = pool.request("slow")
        self.endpoint.flush()
        self.endpoint.pumps[0].server.transport.abortConnection()
        self.endpoint.flush()
        failure = self.failureResultOf(slow, commandproto.ConnectionClosed)
        self.assertEqual(failure.value.why, errors.LOST)
        self.assertEqual(len(self.endpoint.pumps), 1)

    def test_connect_failure_fails_the_request_and_frees_its_place(self) -> None:
        pool = Pool(self.clock, self.endpoint, size=1)
        self.endpoint.refuse = ConnectionRefusedError()
        self.failureResultOf(pool.request("Hello"), ConnectionRefusedError)
        self.assertEqual(pool.connections, 0)
        self.endpoint.refuse = None
        self.assertEqual(self.result(pool.request("Hello")), "Greetings!")

    def test_close_fails_waiting_requests(self) -> None:
        self.slow_server()
        pool = Pool(self.clock, self.endpoint, size=1)
        pool.request("slow")
        waiting = pool.request("Hello")
        self.endpoint.flush()
        pool.close()
        self.failureResultOf(waiting, commandproto.ConnectionClosed)
        self.failureResultOf(pool.request("Hello"), commandproto.ConnectionClosed)


class Recorder(ReplyListener[str]):
    """
    A listener of the streaming interface that records every call.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def replies_received(self, waiters: list[str], outcomes: list[Outcome]) -> None:
        self.calls.append(("replies", waiters, outcomes))

    def request_expired(self, waiter: str, timeout: float) -> None:
        self.calls.append(("expired", waiter, timeout))

    def reply_overdue(self, timeout: float) -> None:
        self.calls.append(("overdue", timeout))

    def sending_paused(self, paused: bool) -> None:
        self.calls.append(("paused", paused))

    def connection_ended(
        self, exception: errors.ConnectionClosed, waiters: list[str], reason: Failure
    ) -> None:
        self.calls.append(("ended", str(exception), waiters))


class StreamingInterfaceTests(SynchronousTestCase):
    """
    The Twisted adapter's interface without Deferreds, which the
    command-line client and :class:`Client` are both built on.
    """

    def connected(self, **options: Any) -> tuple[ClientProtocol[str], Recorder, Clock]:
        clock = Clock()
        recorder = Recorder()
        protocol = ClientProtocol(clock, listener=recorder, **options)
        protocol.makeConnection(StringTransport())
        return protocol, recorder, clock

    def test_one_call_per_read_with_waiters_and_outcomes(self) -> None:
        protocol, recorder, _ = self.connected()
        protocol.send_lines([b"a", b"b"], "first")
        protocol.send_lines([b"nope"], "second")
        protocol.dataReceived(b"A\r\nB\r\nUnknown com")
        protocol.dataReceived(b"mand.\r\n")
        self.assertEqual(recorder.calls[0], ("replies", ["first", "first"], ["A", "B"]))
        _, waiters, outcomes = recorder.calls[1]
        self.assertEqual(waiters, ["second"])
        self.assertIsInstance(cast(list[Outcome], outcomes)[0], errors.UnknownCommand)
        self.assertEqual(len(recorder.calls), 2)

    def test_sent_lines_go_out_at_once_in_one_write(self) -> None:
        protocol, _, _ = self.connected()
        protocol.send_lines([b"a", b"b"], "w")
        self.assertEqual(protocol.transport.value(), b"a\r\nb\r\n")

    def test_reply_time_limit_is_per_reply(self) -> None:
        protocol, recorder, clock = self.connected(reply_timeout=5)
        protocol.send_lines([b"a", b"b"], "w")
        clock.advance(4)
        protocol.dataReceived(b"A\r\n")
        clock.advance(4)
        self.assertNotIn(("overdue", 5), recorder.calls)
        clock.advance(1)
        self.assertEqual(recorder.calls[-1], ("overdue", 5))

    def test_reply_time_limit_does_not_wait_for_untimed_requests(self) -> None:
        protocol, recorder, clock = self.connected(reply_timeout=5)
        protocol.send_lines([b"help"], "quiet", timed=False)
        clock.advance(60)
        self.assertEqual(recorder.calls, [])
        protocol.send_lines([b"Hello"], "loud")
        clock.advance(5)
        self.assertEqual(recorder.calls, [("overdue", 5)])

    def test_reply_time_limit_stops_when_only_untimed_requests_remain(self) -> None:
        protocol, recorder, clock = self.connected(reply_timeout=5)
        protocol.send_lines([b"Hello"], "loud")
        protocol.send_lines([b"help"], "quiet", timed=False)
        protocol.dataReceived(b"Greetings!\r\n")
        clock.advance(60)
        self.assertEqual(recorder.calls, [("replies", ["loud"], ["Greetings!"])])

    def test_paused_reading_stops_the_reply_time_limit(self) -> None:
        protocol, recorder, clock = self.connected(reply_timeout=5)
        protocol.send_lines([b"a"], "w")
        protocol.pause_reading()
        clock.advance(60)
        self.assertEqual(recorder.calls, [])
        protocol.resume_reading()
        clock.advance(5)
        self.assertEqual(recorder.calls, [("overdue", 5)])

    def test_request_time_limit(self) -> None:
        protocol, recorder, clock = self.connected()
        protocol.request("Hello", "w", timeout=2)
        clock.advance(1)
        self.assertEqual(protocol.transport.value(), b"Hello\r\n")
        clock.advance(1)
        self.assertEqual(recorder.calls, [("expired", "w", 2)])

    def test_seed_format_one_request_at_a_time(self) -> None:
        protocol, recorder, _ = self.connected(legacy=True)
        protocol.send_lines([b"Hello", b"nope"], "w")
        self.assertEqual(protocol.transport.value(), b"Hello")
        protocol.dataReceived(b"Greetings!")
        self.assertEqual(protocol.transport.value(), b"Hellonope")
        self.assertEqual(recorder.calls[0], ("replies", ["w"], ["Greetings!"]))

    def test_full_send_buffer_tells_the_listener(self) -> None:
        protocol, recorder, _ = self.connected()
        producer = protocol.transport.producer
        producer.pauseProducing()
        producer.resumeProducing()
        self.assertEqual(recorder.calls, [("paused", True), ("paused", False)])

    def test_closing_says_we_closed(self) -> None:
        protocol, recorder, _ = self.connected()
        protocol.send_lines([b"never"], "w")
        protocol.close()
        self.assertTrue(protocol.transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            recorder.calls, [("ended", "connection closed by the client", ["w"])]
        )
