"""
The server's pieces without a transport: the connection core driven through
an in-memory :class:`ConnectionIO`, its named timers, the reply queue,
admission and the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import (
    CLOSING,
    GREETING,
    INVALID_UTF8,
    UNKNOWN_COMMAND,
    CommandTable,
    Reply,
    Session,
    line_took_too_long,
    too_many_from_address,
    with_builtins,
)
from commandproto.server.admission import Admission
from commandproto.server.closing import MISBEHAVIOUR_LINGER
from commandproto.server.connection import Connection
from commandproto.server.dispatch import Dispatcher
from commandproto.server.intake import BATCH, HOLD_LIMIT, Intake
from commandproto.server.phase import Phase
from commandproto.server.replies import Pending, ReplyQueue
from commandproto.server.settings import Settings
from commandproto.server.stats import ServerStats
from commandproto.server.timers import IDLE, LINE, Timers
from commandproto.wire.codec import OVERLONG, Frame

from ._helpers import replies


class MemoryIO:
    """
    Records the core's decisions.
    """

    def __init__(self, clock: Clock, half_closeable: bool = True) -> None:
        self.clock = clock
        self.half_closeable = half_closeable
        self.written = b""
        self.calls: list[str] = []
        self.core: Connection | None = None

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        self.calls.append("resume_reading")

    def serve(self) -> None:
        self.calls.append("serve")

    def half_close(self) -> bool:
        if self.half_closeable:
            self.calls.append("half_close")
        return self.half_closeable

    def close(self) -> None:
        self.calls.append("close")

    def abort(self) -> None:
        self.calls.append("abort")

    def schedule(self, delay: float, function: Callable[[], None], /) -> IDelayedCall:
        return self.clock.callLater(delay, function)

    def line_received(self, frame: Frame) -> None:
        assert self.core is not None
        self.core.replies.answer(frame)


class Member:
    def __init__(self) -> None:
        self.events: list[str] = []

    def shut_down(self) -> None:
        self.events.append("shut_down")

    def drop_handshake(self, why: str, event: str) -> None:
        self.events.append(f"drop: {why}")

    def abort(self) -> None:
        self.events.append("abort")

    def make_room(self) -> None:
        self.events.append("make_room")


PEER = IPv4Address("TCP", "192.0.2.1", 4000)


def commands(later: list[Deferred[str]] | None = None) -> CommandTable:
    """
    The built-ins and ``later``, whose replies the test gives (into
    ``later``).
    """
    table = CommandTable()
    waiting = [] if later is None else later

    @table.command("later")
    def wait() -> Deferred[str]:
        waiting.append(Deferred())
        return waiting[-1]

    return with_builtins(table)


def core(
    *,
    tls: bool = False,
    idle_timeout: float | None = None,
    line_timeout: float | None = 30.0,
    handshake_timeout: float | None = 5.0,
    max_connections: int = 10,
    table: CommandTable | None = None,
) -> tuple[Connection, MemoryIO, Clock, Admission]:
    clock = Clock()
    stats = ServerStats()
    io = MemoryIO(clock)
    admission = Admission(
        stats,
        clock,
        max_connections=max_connections,
        max_connections_per_address=None,
        max_handshakes=10,
    )
    connection = Connection(
        io,
        Member(),
        settings=Settings(
            idle_timeout=idle_timeout,
            line_timeout=line_timeout,
            handshake_timeout=handshake_timeout,
            max_unanswered=1024,
        ),
        dispatcher=Dispatcher(
            table or commands(),
            stats,
            max_line_length=100,
            command_timeout=None,
            slow_threshold=None,
        ),
        admission=admission,
        reply_cache={},
        max_line_length=100,
        conn="1",
        peer="tcp:192.0.2.1:4000",
        peer_address=PEER,
    )
    io.core = connection
    connection.connected(tls=tls)
    return connection, io, clock, admission


class ConnectionTests(SynchronousTestCase):
    def test_a_line_in_a_reply_out(self) -> None:
        connection, io, _, _ = core()
        self.assertEqual(connection.phase, Phase.OPEN)
        self.assertEqual(io.calls, ["serve"])
        connection.data_received(b"Hello\nnope\n")
        self.assertEqual(io.written, replies(GREETING, UNKNOWN_COMMAND))

    def test_tls_waits_for_its_handshake(self) -> None:
        connection, io, _, admission = core(tls=True)
        self.assertEqual(connection.phase, Phase.HANDSHAKING)
        self.assertEqual(io.calls, [])
        self.assertEqual(len(admission.handshakes), 1)
        connection.handshake_done()
        self.assertEqual(connection.phase, Phase.OPEN)
        self.assertEqual(io.calls, ["serve"])
        self.assertEqual(admission.handshakes, {})
        self.assertEqual(len(admission.connections), 1)

    def test_no_handshake_timeout_still_admits(self) -> None:
        connection, _, clock, admission = core(tls=True, handshake_timeout=None)
        self.assertEqual(clock.getDelayedCalls(), [])
        connection.handshake_done()
        self.assertEqual(len(admission.connections), 1)

    def test_end_of_input_answers_then_closes_for_good(self) -> None:
        connection, io, _, _ = core()
        connection.data_received(b"Hello\nHel")
        connection.end_of_input()
        self.assertTrue(connection.input_ended)
        self.assertEqual(io.written, replies(GREETING, UNKNOWN_COMMAND))
        self.assertEqual(io.calls[-1], "close")
        self.assertEqual(connection.phase, Phase.CLOSING)

    def test_a_pending_reply_keeps_its_place(self) -> None:
        later: list[Deferred[str]] = []
        connection, io, _, _ = core(table=commands(later))
        connection.data_received(b"later\nHello\n")
        self.assertEqual(io.written, b"")
        later[0].callback("done")
        self.assertEqual(io.written, replies("done", GREETING))

    def test_output_paused_stops_reading_once_input_is_held(self) -> None:
        connection, io, _, _ = core()
        connection.pause_output()
        self.assertTrue(connection.output_paused)
        connection.data_received(b"Hello\n")
        self.assertEqual(io.written, b"")
        self.assertEqual(io.calls[-1], "pause_reading")
        connection.resume_output()
        self.assertEqual(io.written, replies(GREETING))
        self.assertEqual(io.calls[-1], "resume_reading")

    def test_the_line_timer_winds_down(self) -> None:
        connection, io, clock, _ = core(line_timeout=3)
        connection.data_received(b"Hello\nHel")
        self.assertTrue(connection.timers.running(LINE))
        clock.advance(3)
        self.assertEqual(io.written, replies(GREETING, line_took_too_long(3)))
        self.assertEqual(connection.phase, Phase.CLOSING)
        self.assertEqual(io.calls[-1], "half_close")

    def test_the_idle_timer_restarts_on_whole_lines(self) -> None:
        connection, _, clock, _ = core(idle_timeout=10)
        clock.advance(9)
        connection.data_received(b"Hello\n")
        clock.advance(9)
        self.assertEqual(connection.phase, Phase.OPEN)
        self.assertTrue(connection.timers.running(IDLE))
        clock.advance(1)
        self.assertEqual(connection.phase, Phase.CLOSING)

    def test_shut_down_sends_closing_down(self) -> None:
        connection, io, _, _ = core()
        connection.shut_down()
        self.assertEqual(io.written, replies(CLOSING))
        self.assertEqual(connection.phase, Phase.CLOSING)

    def test_lost_frees_its_slot_and_timers(self) -> None:
        connection, _, clock, admission = core(idle_timeout=10)
        connection.data_received(b"Hel")
        connection.lost("gone")
        self.assertEqual(connection.phase, Phase.CLOSED)
        self.assertEqual(admission.connections, set())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_linger_that_never_ends_is_aborted(self) -> None:
        connection, io, clock, _ = core()
        connection.shut_down()
        clock.advance(10)
        self.assertEqual(io.calls[-1], "abort")


class FinishingTests(SynchronousTestCase):
    def test_no_line_timeout_once_quit_is_queued(self) -> None:
        # quit waits behind a command still running, and a partial line
        # follows it: that line is never read, so never timed.
        later: list[Deferred[str]] = []
        table = CommandTable()

        @table.command("par", overlap=True)
        def par() -> Deferred[str]:
            later.append(Deferred())
            return later[-1]

        connection, io, clock, _ = core(table=with_builtins(table), line_timeout=3)
        connection.data_received(b"par\nquit\nHel")
        self.assertEqual(connection.phase, Phase.FINISHING)
        clock.advance(3)
        self.assertNotIn("line_timeout", connection.stats.events)
        later[0].callback("done")
        self.assertEqual(io.written, replies("done", CLOSING))


class AdmittedAfterTheHandshakeTests(SynchronousTestCase):
    def test_input_ended_during_the_handshake_closes_once_admitted(self) -> None:
        connection, io, _, _ = core(tls=True, idle_timeout=None)
        connection.end_of_input()
        connection.handshake_done()
        self.assertEqual(connection.phase, Phase.CLOSING)
        self.assertIn("close", io.calls)

    def test_reading_resumes_once_admitted(self) -> None:
        connection, io, _, _ = core(tls=True)
        connection.pause_output()
        connection.resume_output()
        connection.handshake_done()
        self.assertTrue(connection.intake.reading)
        self.assertEqual(io.calls[-1], "resume_reading")


class Reader:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


class IntakeTests(SynchronousTestCase):
    def test_a_flood_is_framed_a_batch_at_a_time(self) -> None:
        intake = Intake(100)
        intake.hold(b"a\n" * (BATCH + 5))
        self.assertEqual(len(intake.take_batch()), BATCH)
        self.assertEqual(intake.held, b"a\n" * 5)
        self.assertEqual(len(intake.take_batch()), 5)
        self.assertFalse(intake.pending)

    def test_lines_kept_back_come_first(self) -> None:
        intake = Intake(100)
        intake.hold(b"c\n")
        intake.keep([b"a", b"b"])
        self.assertEqual(intake.take_batch(), [b"a", b"b"])
        self.assertEqual(intake.take_batch(), [b"c"])

    def test_end_terminates_a_last_partial_line(self) -> None:
        held = Intake(100)
        held.hold(b"a\nb")
        held.end()
        self.assertEqual(held.take_batch(), [b"a", b"b"])
        framed = Intake(100)
        framed.framer.feed(b"par")
        framed.end()
        self.assertEqual(framed.take_batch(), [b"par"])
        whole = Intake(100)
        whole.hold(b"a\n")
        whole.end()
        self.assertEqual(whole.held, b"a\n")

    def test_room_is_bounded_in_bytes_and_lines(self) -> None:
        intake = Intake(100)
        intake.hold(b"x" * HOLD_LIMIT)
        self.assertTrue(intake.has_room(0, 10))
        intake.hold(b"x")
        self.assertFalse(intake.has_room(0, 10))
        lines = Intake(100)
        lines.hold(b"a\n" * 5)
        self.assertTrue(lines.has_room(4, 10))
        self.assertFalse(lines.has_room(5, 10))

    def test_only_a_change_reaches_the_reader(self) -> None:
        intake, reader = Intake(100), Reader()
        intake.read(True, reader)
        intake.read(False, reader)
        intake.read(False, reader)
        intake.read(True, reader)
        self.assertEqual(reader.calls, ["pause", "resume"])


class CloserTests(SynchronousTestCase):
    def test_complaints_are_counted_and_logged_once(self) -> None:
        connection, _, _, _ = core()
        self.assertTrue(connection.complain("over_long"))
        self.assertFalse(connection.complain("over_long"))
        self.assertEqual(connection.closer.complaints, {"over_long": 2})
        self.assertEqual(connection.stats.events["over_long"], 2)

    def test_refused_clients_are_told_why(self) -> None:
        second, _, clock, _ = core(max_connections=1)
        self.assertEqual(second.phase, Phase.OPEN)
        third_io = MemoryIO(clock)
        third = Connection(
            third_io,
            Member(),
            settings=second.settings,
            dispatcher=second.dispatcher,
            admission=second.admission,
            reply_cache={},
            max_line_length=100,
            conn="3",
            peer="tcp:192.0.2.1:4001",
            peer_address=PEER,
        )
        third.connected(tls=False)
        self.assertTrue(third_io.written.startswith(b"Error: "))
        self.assertEqual(third.phase, Phase.CLOSING)
        self.assertIn("half_close", third_io.calls)

    def test_idle_clients_get_a_second_to_go(self) -> None:
        connection, io, clock, _ = core(idle_timeout=10)
        clock.advance(10)
        self.assertIn(b"idle", io.written)
        self.assertEqual(connection.phase, Phase.CLOSING)
        clock.advance(MISBEHAVIOUR_LINGER)
        self.assertEqual(io.calls[-1], "abort")


class TimersTests(SynchronousTestCase):
    def test_one_call_per_name(self) -> None:
        clock = Clock()
        timers = Timers(MemoryIO(clock))
        fired: list[str] = []
        timers.start(IDLE, 5, lambda: fired.append("first"))
        timers.start(IDLE, 5, lambda: fired.append("second"))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(5)
        self.assertEqual(fired, ["second"])
        self.assertFalse(timers.running(IDLE))

    def test_cancel_all(self) -> None:
        clock = Clock()
        timers = Timers(MemoryIO(clock))
        timers.start(IDLE, 5, lambda: None)
        timers.start(LINE, 5, lambda: None)
        timers.cancel_all()
        self.assertEqual(clock.getDelayedCalls(), [])


class ReplyQueueTests(SynchronousTestCase):
    def test_ready_replies_stop_at_a_pending_one(self) -> None:
        queue = ReplyQueue()
        pending = Pending(True)
        queue.append(b"a\r\n")
        queue.append(pending)
        queue.append(b"b\r\n")
        self.assertEqual(queue.take_ready(), ([b"a\r\n"], False))
        pending.reply = b"p\r\n"
        self.assertEqual(queue.take_ready(), ([b"p\r\n", b"b\r\n"], False))
        self.assertEqual(len(queue), 0)

    def test_a_closing_reply_ends_the_take(self) -> None:
        queue = ReplyQueue()
        closing = Pending(False, b"bye\r\n")
        closing.close = True
        queue.append(closing)
        queue.append(b"never\r\n")
        self.assertEqual(queue.take_ready(), ([b"bye\r\n"], True))

    def test_cancel_all_cancels_running_commands(self) -> None:
        queue = ReplyQueue()
        pending = Pending(True)
        pending.deferred = Deferred()
        queue.append(pending)
        queue.cancel_all()
        self.failureResultOf(pending.deferred)
        self.assertEqual(len(queue), 0)


class AdmissionTests(SynchronousTestCase):
    def admission(self, **limits: int | None) -> Admission:
        settings: dict[str, int | None] = {
            "max_connections": 10,
            "max_connections_per_address": None,
            "max_handshakes": 2,
            **limits,
        }
        return Admission(ServerStats(), Clock(), **settings)  # type: ignore[arg-type]

    def test_per_address(self) -> None:
        admission = self.admission(max_connections_per_address=1)
        self.assertIsNone(admission.admit(Member(), PEER))
        self.assertEqual(admission.admit(Member(), PEER), too_many_from_address(1))

    def test_the_oldest_handshake_makes_room(self) -> None:
        admission = self.admission()
        oldest, second, third = Member(), Member(), Member()
        for member in (oldest, second, third):
            admission.begin_handshake(member)
        self.assertEqual(oldest.events, ["drop: too many handshakes in progress"])

    def test_drain_fires_when_the_last_is_gone(self) -> None:
        admission = self.admission()
        member = Member()
        admission.admit(member, PEER)
        drained = admission.drain(5)
        self.assertEqual(member.events, ["shut_down"])
        self.assertNoResult(drained)
        admission.forget(member)
        self.assertIsNone(self.successResultOf(drained))
        self.assertEqual(admission.admit(Member(), PEER), CLOSING)


class Caller:
    conn = "1"
    peer = "tcp:192.0.2.1:4000"

    def __init__(self) -> None:
        self.complaints: list[str] = []

    def session(self) -> Session:
        return Session(self.peer, PEER, Clock(), connection_id=self.conn)

    def complain(self, event: str) -> bool:
        self.complaints.append(event)
        return len(self.complaints) == 1


class DispatcherTests(SynchronousTestCase):
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(
            commands(),
            ServerStats(),
            max_line_length=100,
            command_timeout=None,
            slow_threshold=None,
        )

    def test_lines_to_replies(self) -> None:
        dispatcher = self.dispatcher()
        caller = Caller()
        self.assertEqual(dispatcher.start(b"Hello", caller), replies(GREETING))
        self.assertEqual(dispatcher.start(b"nope", caller), replies(UNKNOWN_COMMAND))
        self.assertEqual(dispatcher.start(b"\xff", caller), replies(INVALID_UTF8))
        self.assertEqual(caller.complaints, ["invalid_utf8"])
        dispatcher.start(OVERLONG, caller)
        self.assertEqual(caller.complaints, ["invalid_utf8", "over_long_line"])

    def test_a_later_reply_is_pending(self) -> None:
        dispatcher = self.dispatcher()
        caller = Caller()
        pending = dispatcher.start(b"later", caller)
        assert isinstance(pending, Pending)
        self.assertIsNotNone(pending.deferred)
        dispatcher.finish(pending, Reply("done"), caller)
        self.assertEqual(pending.reply, replies("done"))
        self.assertEqual(dispatcher.stats.commands_by_outcome()[("later", "ok")], 1)
