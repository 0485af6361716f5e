"""
The server's counters, the ``stats`` command, connection ids in log lines
and the slow log, on ``StringTransport`` with a ``Clock``.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from commandproto import CommandError, Rest, Session
from commandproto.commands.table import (
    CLOSING,
    GREETING,
    UNKNOWN_COMMAND,
    CommandTable,
    Reply,
    default_commands,
    with_builtins,
)
from commandproto.server.stats import (
    LATENCY_BUCKETS,
    Latency,
    ServerStats,
    outcome_of,
    parse_pairs,
)

from ._helpers import InMemoryServer, LogCapture, replies


def table() -> CommandTable:
    commands = CommandTable()

    @commands.command("add")
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    @commands.command("say")
    def say(word: str) -> str:
        """Say a word."""
        return word

    @commands.command("refuse")
    def refuse() -> str:
        """Refuse."""
        raise CommandError("no")

    @commands.command("boom")
    def boom() -> str:
        """Fail."""
        raise RuntimeError("boom")

    @commands.command("later")
    def later(session: Session) -> Deferred[str]:
        """Answer after 2 seconds."""
        from twisted.internet.task import deferLater

        return deferLater(session.clock, 2, lambda: "done")

    return commands


def stats_server(
    *, timing: bool = False, server_version: str = "0", **settings: object
) -> InMemoryServer:
    """
    A server of :func:`table` beside the built-ins, its Clock at 1000 and
    its statistics kept with ``timing`` for ``server_version``.
    """
    clock = Clock()
    clock.advance(1000)
    stats = ServerStats(
        wall=clock.seconds, timing=timing, server_version=server_version
    )
    return InMemoryServer(with_builtins(table()), clock=clock, stats=stats, **settings)  # type: ignore[arg-type]


class OutcomeTests(SynchronousTestCase):
    """
    A reply tells how its command ended.
    """

    def test_ok(self) -> None:
        self.assertEqual(outcome_of("get", "value"), "ok")

    def test_unknown(self) -> None:
        self.assertEqual(outcome_of("Hello", UNKNOWN_COMMAND), "unknown")

    def test_failed(self) -> None:
        self.assertEqual(outcome_of("get", "Error: get failed"), "failed")

    def test_timed_out(self) -> None:
        self.assertEqual(outcome_of("get", "Error: get timed out"), "timed_out")

    def test_error(self) -> None:
        self.assertEqual(outcome_of("get", "Error: no such key"), "error")

    def test_another_commands_failure_is_an_error(self) -> None:
        self.assertEqual(outcome_of("get", "Error: set failed"), "error")


class LatencyTests(SynchronousTestCase):
    """
    Latency histograms, cumulative as Prometheus writes them.
    """

    def test_buckets_are_cumulative_and_end_with_inf(self) -> None:
        latency = Latency()
        latency.observe(0.00005)
        latency.observe(0.003, 2)
        latency.observe(100)
        buckets = dict(latency.cumulative())
        self.assertEqual(buckets["0.0001"], 1)
        self.assertEqual(buckets["0.005"], 3)
        self.assertEqual(buckets["30.0"], 3)
        self.assertEqual(buckets["+Inf"], 4)
        self.assertEqual(len(buckets), len(LATENCY_BUCKETS) + 1)
        self.assertAlmostEqual(latency.total, 100.00605)


def bucket_of(seconds: float) -> int:
    """
    The histogram bucket a time belongs in, worked out the slow way: the
    first whose bound it does not exceed, or the last (``+Inf``).
    """
    for index, bound in enumerate(LATENCY_BUCKETS):
        if seconds <= bound:
            return index
    return len(LATENCY_BUCKETS)


times = st.one_of(
    st.sampled_from(LATENCY_BUCKETS),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.floats(min_value=0, max_value=0.0002, allow_nan=False),
)


class BucketTests(SynchronousTestCase):
    """
    Every way a time reaches a histogram (``observe``, and the one-command
    and many-command ways of ``count_answered`` and ``cached_read``) puts
    it in the same bucket, each bound included in its own.
    """

    @given(times)
    def test_observe(self, seconds: float) -> None:
        latency = Latency()
        latency.observe(seconds, 3)
        expected = [0] * (len(LATENCY_BUCKETS) + 1)
        expected[bucket_of(seconds)] = 3
        self.assertEqual(latency.counts, expected)

    @given(times, st.integers(min_value=1, max_value=3))
    def test_count_answered(self, seconds: float, many: int) -> None:
        stats = ServerStats(timing=True)
        stats.answered.extend(["a"] * many + ["b"] * (many - 1))
        stats.count_answered(0, seconds)
        for name, count in (("a", many), ("b", many - 1)):
            if count:
                expected = [0] * (len(LATENCY_BUCKETS) + 1)
                expected[bucket_of(seconds)] = count
                self.assertEqual(stats.latency[name].counts, expected)

    @given(times, st.integers(min_value=1, max_value=3))
    def test_cached_read(self, seconds: float, many: int) -> None:
        stats = ServerStats(timing=True)
        stats.cached_read([b"Hello"] * many, seconds)
        expected = [0] * (len(LATENCY_BUCKETS) + 1)
        expected[bucket_of(seconds)] = many
        self.assertEqual(stats.cached_latency[b"Hello"].counts, expected)


class CountingTests(SynchronousTestCase):
    """
    Connections, commands, bytes and misbehaviour are counted.
    """

    def test_connections_open_and_total(self) -> None:
        server = stats_server()
        first, _ = server.connect()
        server.connect()
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((server.stats.open, server.stats.accepted), (1, 2))

    def test_refused_by_reason(self) -> None:
        LogCapture(self)
        server = stats_server(max_connections=1)
        server.connect()
        server.connect()
        self.assertEqual(server.stats.refused, {"max_connections": 1})

    def test_cached_commands_counted_by_name(self) -> None:
        protocol, _ = stats_server().connect()
        protocol.dataReceived(b"Hello\n")
        protocol.dataReceived(b"Hello\r\nAre you there?\nHello\n")
        stats = protocol.factory.stats
        self.assertEqual(
            stats.commands_by_outcome(),
            {("Hello", "ok"): 3, ("Are you there?", "ok"): 1},
        )

    def test_cached_commands_in_a_mixed_read_counted(self) -> None:
        protocol, _ = stats_server().connect()
        protocol.dataReceived(b"Hello\nadd 1 2\nHello\n")
        self.assertEqual(
            protocol.factory.stats.commands_by_outcome(),
            {("Hello", "ok"): 2, ("add", "ok"): 1},
        )

    def test_outcomes_by_name(self) -> None:
        LogCapture(self)
        protocol, _ = stats_server().connect()
        protocol.dataReceived(b"add 1\nrefuse\nboom\nnope\nsecret text\nHello x\n")
        self.assertEqual(
            protocol.factory.stats.commands_by_outcome(),
            {
                ("add", "error"): 1,
                ("refuse", "error"): 1,
                ("boom", "failed"): 1,
                ("(unknown)", "unknown"): 2,
                ("Hello", "unknown"): 1,
            },
        )
        self.flushLoggedErrors(RuntimeError)

    def test_text_a_handler_returns_counted_by_what_it_says(self) -> None:
        """
        A handler's own text is counted by the same rule as every reply
        (:func:`outcome_of`), on the server's quick way too: text that
        starts ``Error: `` is an error, ``Unknown command.`` unknown, any
        other text ok (also one that starts with ``E``, and one with a CR
        inside it, which is sent as it is); one that ends with a CR is not
        one line, and fails.
        """
        LogCapture(self)
        commands = CommandTable()

        @commands.command("answer")
        def answer(text: Rest) -> str:
            """Answer with the text, ``^M`` made a CR."""
            return text.replace("^M", "\r")

        server = InMemoryServer(commands)
        protocol, transport = server.connect()
        protocol.dataReceived(
            b"answer Error: no such key\n"
            b"answer Unknown command.\n"
            b"answer Emu\n"
            b"answer Error:none\n"
            b"answer a^Mb\n"
            b"answer ends^M\n"
        )
        self.assertEqual(
            transport.value(),
            replies(
                "Error: no such key",
                UNKNOWN_COMMAND,
                "Emu",
                "Error:none",
                "a\rb",
                "Error: answer failed",
            ),
        )
        self.assertEqual(
            server.stats.commands_by_outcome(),
            {
                ("answer", "error"): 1,
                ("answer", "unknown"): 1,
                ("answer", "ok"): 3,
                ("answer", "failed"): 1,
            },
        )
        self.flushLoggedErrors(ValueError)

    def test_asynchronous_reply_counted_when_it_comes(self) -> None:
        server = stats_server(timing=True)
        protocol, _ = server.connect()
        protocol.dataReceived(b"later\n")
        self.assertEqual(server.stats.commands_by_outcome(), {})
        server.clock.advance(2)
        self.assertEqual(server.stats.commands_by_outcome(), {("later", "ok"): 1})

    def test_timed_out(self) -> None:
        LogCapture(self)
        server = stats_server(command_timeout=1)
        protocol, _ = server.connect()
        protocol.dataReceived(b"later\n")
        server.clock.advance(1)
        self.assertEqual(
            server.stats.commands_by_outcome(), {("later", "timed_out"): 1}
        )

    def test_client_gone_is_cancelled(self) -> None:
        server = stats_server()
        protocol, _ = server.connect()
        protocol.dataReceived(b"later\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            server.stats.commands_by_outcome(), {("later", "cancelled"): 1}
        )

    def test_bytes_in_and_out(self) -> None:
        protocol, transport = stats_server().connect()
        protocol.dataReceived(b"Hello\nadd 1 2\n")
        protocol.dataReceived(b"Hello\n")
        stats = protocol.factory.stats
        self.assertEqual(stats.bytes_in, len(b"Hello\nadd 1 2\nHello\n"))
        self.assertEqual(stats.bytes_out, len(transport.value()))

    def test_misbehaviour_counted_every_time(self) -> None:
        LogCapture(self)
        server = stats_server(max_line_length=4, idle_timeout=30)
        protocol, _ = server.connect()
        protocol.dataReceived(b"\xff\n\xff\ntoolong\n")
        server.clock.advance(30)
        self.assertEqual(
            server.stats.events,
            {"invalid_utf8": 2, "over_long_line": 1, "idle_timeout": 1},
        )

    def test_backpressure_counted(self) -> None:
        protocol, _ = stats_server().connect()
        protocol.pauseProducing()
        self.assertEqual(protocol.factory.stats.events, {"backpressure": 1})

    def test_latency_not_kept_without_timing(self) -> None:
        protocol, _ = stats_server().connect()
        protocol.dataReceived(b"Hello\nadd 1 2\n")
        self.assertEqual(protocol.factory.stats.latency_by_name(), {})

    def test_latency_by_name_with_timing(self) -> None:
        server = stats_server(timing=True)
        protocol, _ = server.connect()
        protocol.dataReceived(b"Hello\n")
        protocol.dataReceived(b"Hello\nHello\n")
        protocol.dataReceived(b"add 1 2\n")
        counts = {
            name: latency.cumulative()[-1][1]
            for name, latency in server.stats.latency_by_name().items()
        }
        self.assertEqual(counts, {"Hello": 3, "add": 1})


class BatchedCountingTests(SynchronousTestCase):
    """
    Commands answered ``ok`` at once are counted, and timed, per batch of
    lines (``ServerStats.count_answered``), not per line: no count is lost
    or doubled, and the counts are there before the batch ends.
    """

    def test_every_pipelined_command_counted(self) -> None:
        server = stats_server()
        protocol, _ = server.connect()
        protocol.dataReceived(
            b"say hi\n" * 5 + b"Hello\nnope\nadd 1 2\n" + b"say ho\n" * 3
        )
        protocol.dataReceived(b"say it\n")
        self.assertEqual(
            server.stats.commands_by_outcome(),
            {
                ("say", "ok"): 9,
                ("add", "ok"): 1,
                ("Hello", "ok"): 1,
                ("(unknown)", "unknown"): 1,
            },
        )
        self.assertEqual(server.stats.answered, [])

    def test_every_pipelined_command_timed(self) -> None:
        server = stats_server(timing=True)
        protocol, _ = server.connect()
        protocol.dataReceived(b"say hi\n" * 5 + b"Hello\n" + b"say ho\n" * 3)
        protocol.dataReceived(b"say it\n")
        counts = {
            name: latency.cumulative()[-1][1]
            for name, latency in server.stats.latency_by_name().items()
        }
        self.assertEqual(counts, {"say": 9, "Hello": 1})

    def test_stats_counts_the_commands_before_it_in_its_batch(self) -> None:
        server = stats_server()
        protocol, transport = server.connect()
        protocol.dataReceived(b"say hi\nsay hi\nHello\nstats\n")
        counters = parse_pairs(transport.value().decode().splitlines()[-1])
        self.assertEqual(counters["commands"], "3")

    def test_line_answered_outside_a_batch_counted(self) -> None:
        server = stats_server(timing=True)
        protocol, transport = server.connect()
        protocol.lineReceived(b"say hi")
        self.assertEqual(transport.value(), replies("hi"))
        self.assertEqual(server.stats.commands, {("say", "ok"): 1})
        self.assertEqual(sum(server.stats.latency["say"].counts), 1)

    def test_batch_within_a_batch(self) -> None:
        """
        A command whose reply lets another connection's waiting lines run
        (a batch within this one) leaves both batches' counts exact.
        """
        commands = CommandTable()
        waiting: Deferred[str] = Deferred()

        @commands.command("wait")
        def wait() -> Deferred[str]:
            """Wait for release."""
            return waiting

        @commands.command("release")
        def release() -> str:
            """Release the waiting command."""
            waiting.callback("released")
            return "ok"

        @commands.command("one")
        def one() -> str:
            """One."""
            return "1"

        class Recording(ServerStats):
            def count_answered(self, mark: int, seconds: float | None) -> None:
                batches.append(self.answered[mark:])
                super().count_answered(mark, seconds)

        batches: list[list[str]] = []
        server = InMemoryServer(commands, stats=Recording(timing=True))
        waiter, waiter_transport = server.connect()
        waiter.dataReceived(b"wait\none\none\none\n")
        self.assertEqual(waiter_transport.value(), b"")
        releaser, releaser_transport = server.connect()
        releaser.dataReceived(b"one\nrelease\none\n")
        self.assertEqual(waiter_transport.value(), replies("released", "1", "1", "1"))
        self.assertEqual(releaser_transport.value(), replies("1", "ok", "1"))
        self.assertEqual(
            server.stats.commands,
            {("wait", "ok"): 1, ("one", "ok"): 5, ("release", "ok"): 1},
        )
        self.assertEqual(sum(server.stats.latency["one"].counts), 5)
        # Each batch counted (and timed) its own commands.
        self.assertEqual(
            [batch for batch in batches if batch],
            [["one", "one", "one"], ["one", "release", "one"]],
        )

    def test_count_answered_from_the_mark(self) -> None:
        stats = ServerStats(timing=True)
        stats.answered.extend(["a", "b", "a"])
        stats.answered.extend(["c", "c"])
        stats.count_answered(3, 0.5)
        self.assertEqual(stats.answered, ["a", "b", "a"])
        self.assertEqual(stats.commands, {("c", "ok"): 2})
        stats.count_answered(0, 0.00005)
        self.assertEqual(stats.answered, [])
        self.assertEqual(
            stats.commands, {("a", "ok"): 2, ("b", "ok"): 1, ("c", "ok"): 2}
        )
        self.assertEqual(
            {
                name: dict(latency.cumulative())["0.0001"]
                for name, latency in stats.latency.items()
            },
            {"a": 2, "b": 1, "c": 0},
        )
        self.assertEqual(dict(stats.latency["c"].cumulative())["0.5"], 2)


class StatsCommandTests(SynchronousTestCase):
    """
    ``stats`` answers the counters as one line of key=value pairs.
    """

    def test_listed_by_help(self) -> None:
        self.assertIn("stats", default_commands().names())

    def test_reply(self) -> None:
        server = stats_server(server_version="9.9")
        other, _ = server.connect()
        other.dataReceived(b"nope\n")
        protocol, transport = server.connect()
        server.clock.advance(5)
        protocol.dataReceived(b"Hello\nstats\n")
        lines = transport.value().decode().splitlines()
        self.assertEqual(lines[0], GREETING)
        self.assertEqual(
            lines[1],
            "uptime=5 connections=2 connections_total=2 commands=2 errors=1 "
            # The greeting counts, though it goes out in one write with
            # this reply, after it.
            "refused=0 bytes_in=17 "
            f"bytes_out={len(replies(UNKNOWN_COMMAND, GREETING))} "
            "version=9.9",
        )

    def test_reply_reads_back(self) -> None:
        stats = ServerStats(wall=lambda: 0.0, server_version="1")
        self.assertEqual(parse_pairs(stats.line())["version"], "1")

    def test_without_a_server(self) -> None:
        session = Session("p", None, Clock())
        self.assertEqual(
            default_commands().execute("stats", session),
            Reply("Error: no statistics here"),
        )


class ConnectionIdTests(SynchronousTestCase):
    """
    Each connection has a short id, in every log line about it.
    """

    def setUp(self) -> None:
        self.logged = LogCapture(self)

    def test_ids_differ(self) -> None:
        server = stats_server()
        first, _ = server.connect()
        second, _ = server.connect()
        self.assertEqual((first.conn, second.conn), ("1", "2"))

    def test_id_is_a_field_of_each_event(self) -> None:
        server = stats_server()
        protocol, _ = server.connect()
        protocol.dataReceived(b"boom\n\xff\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.logged.events), 4)
        for event in self.logged.events:
            self.assertEqual(event["conn"], "1")
            self.assertEqual(event["peer"], protocol.peer)
        self.flushLoggedErrors(RuntimeError)

    def test_failed_command_line_names_the_command_and_id(self) -> None:
        protocol, _ = stats_server().connect()
        protocol.dataReceived(b"boom\n")
        [failure] = [e for e in self.logged.events if "log_failure" in e]
        self.assertEqual(failure["command"], "boom")
        self.assertTrue(self.logged.messages()[-1].startswith("[1] command 'boom'"))
        self.flushLoggedErrors(RuntimeError)

    def test_quit_leaves_no_lines_about_others(self) -> None:
        server = stats_server()
        protocol, transport = server.connect()
        protocol.dataReceived(b"quit\n")
        self.assertEqual(transport.value(), replies(CLOSING))


class SlowLogTests(SynchronousTestCase):
    """
    A reply slower than the threshold is one warning with the command's
    name, its time and the connection's id.  A line is timed from its
    batch's start or the previous line's answer, whichever is later
    (``Dispatcher.mark``): never from an earlier batch.
    """

    def setUp(self) -> None:
        self.logged = LogCapture(self)
        # The server's clock, wherever it is read.
        import commandproto.server.answering
        import commandproto.server.dispatch
        import commandproto.server.protocol

        self.now = 10.0
        for module in (
            commandproto.server.answering,
            commandproto.server.dispatch,
            commandproto.server.protocol,
        ):
            self.patch(module, "perf_counter", lambda: self.now)

    def slow_lines(self) -> list[str]:
        return [m for m in self.logged.messages() if "slow command" in m]

    def slow_server(self, **settings: object) -> InMemoryServer:
        """
        A server of :func:`table` with ``tick``, which takes 2 seconds.
        """
        commands = table()

        @commands.command("tick")
        def tick() -> str:
            """Take 2 seconds."""
            self.now += 2
            return "tock"

        @commands.command("late")
        def late() -> str:
            """Take 2 seconds to refuse."""
            self.now += 2
            raise CommandError("late")

        return InMemoryServer(
            with_builtins(commands),
            stats=ServerStats(timing=bool(settings.pop("timing", False))),
            **settings,  # type: ignore[arg-type]
        )

    def test_threshold_compares_real_time(self) -> None:
        server = stats_server(slow_threshold=1.5)
        protocol, _ = server.connect()
        protocol.dataReceived(b"later\n")
        self.now = 12.0
        server.clock.advance(2)
        [event] = [e for e in self.logged.events if "slow command" in e["log_format"]]
        self.assertEqual(event["log_level"].name, "warn")
        self.assertEqual(
            (event["command"], event["conn"], event["ms"]), ("later", "1", 2000.0)
        )
        self.assertEqual(
            self.slow_lines(),
            [f"[1] slow command 'later' from {protocol.peer}: 2000.0 ms"],
        )

    def test_off(self) -> None:
        server = stats_server(slow_threshold=None)
        protocol, _ = server.connect()
        protocol.dataReceived(b"later\n")
        self.now = 100.0
        server.clock.advance(2)
        self.assertEqual(self.slow_lines(), [])

    def test_each_line_of_a_batch_timed_from_the_one_before(self) -> None:
        for timing in (False, True):
            self.logged.events.clear()
            server = self.slow_server(slow_threshold=1.5, timing=timing)
            protocol, transport = server.connect()
            protocol.dataReceived(
                b"say a\ntick\nsay b\ntick\nrefuse\nsay c\nlate\nsay d\n"
            )
            self.assertEqual(
                transport.value(),
                replies("a", "tock", "b", "tock", "Error: no", "c", "Error: late", "d"),
            )
            self.assertEqual(
                [(e["command"], e["ms"]) for e in self.logged.events if "ms" in e],
                [("tick", 2000.0), ("tick", 2000.0), ("late", 2000.0)],
            )

    def test_a_batch_after_a_wait_timed_from_its_start(self) -> None:
        for timing in (False, True):
            self.logged.events.clear()
            server = self.slow_server(slow_threshold=1.5, timing=timing)
            protocol, transport = server.connect()
            protocol.dataReceived(b"say a\n")
            self.now += 60
            protocol.dataReceived(b"say b\nrefuse\n")
            self.now += 60
            # A line answered outside a batch (a subclass's lineReceived).
            protocol.lineReceived(b"say c")
            self.assertEqual(transport.value(), replies("a", "b", "Error: no", "c"))
            self.assertEqual(self.slow_lines(), [])
