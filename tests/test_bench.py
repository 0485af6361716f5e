"""
Tests for the load tester: its histogram, its reply checking, its
scheduling, its reports and options (no I/O); its connections against the
real server protocol in memory (iosim); and a few runs of the real
``python -m commandproto.bench`` against the real ``twistd -n commandserver``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable, Sequence

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, ProcessDone
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump, connect
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from commandproto.bench.runner import (
    CSV_HEADER,
    EXIT_BAD_REPLY,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    LoadRun,
    Options,
    RunResult,
    RunSettings,
    _WorkerPool,
    expected_replies,
    format_csv,
    format_json,
    format_text,
    merge_results,
    mix_spec,
    parse_arguments,
    worker_arguments,
)
from commandproto.bench.workload import (
    ClosedLoop,
    OpenLoop,
    ReplyChecker,
    ReplyError,
    Request,
    Workload,
    parse_mix,
)
from commandproto.benchcommands import ASYNC_PONG
from commandproto.benchcommands import commands as bench_commands
from commandproto.commands.table import (
    GREETING,
    PRESENT,
    UNKNOWN_COMMAND,
    Command,
    CommandTable,
    Reply,
    default_commands,
    with_builtins,
)
from commandproto.server import CommandServerFactory
from commandproto.server.histogram import LatencyHistogram, bucket_bounds, bucket_index
from commandproto.wire.codec import LineFramer, encode_line

from ._helpers import InMemoryServer
from ._processes import refusing_port, subprocess_environment
from .test_integration import ProcessTestCase

HELLO = (Request("Hello", GREETING),)


class HistogramTests(SynchronousTestCase):
    """
    The latency histogram: buckets, percentiles, exact merges.
    """

    def test_every_value_is_inside_its_bucket(self) -> None:
        for value in [*range(5000), 12345, 10**6, 10**9 + 7, 2**40 - 1]:
            low, high = bucket_bounds(bucket_index(value))
            self.assertTrue(low <= value <= high, (value, low, high))

    def test_buckets_are_narrow(self) -> None:
        for value in (3000, 50_000, 10**6, 10**9):
            low, high = bucket_bounds(bucket_index(value))
            self.assertLessEqual(high - low + 1, low / 1000)

    def test_bucket_indices_grow_with_values(self) -> None:
        indices = [bucket_index(v) for v in range(0, 100_000, 7)]
        self.assertEqual(indices, sorted(indices))

    def test_negative_latency_is_refused(self) -> None:
        self.assertRaises(ValueError, bucket_index, -1)

    def test_nearest_rank_percentiles(self) -> None:
        histogram = LatencyHistogram()
        for value in range(1, 101):
            histogram.record(value)
        self.assertEqual(
            [histogram.percentile(p) for p in (0, 1, 50, 95, 99, 99.9, 100)],
            [1, 1, 50, 95, 99, 100, 100],
        )

    def test_p999_of_a_thousand_is_the_999th(self) -> None:
        # 99.9 / 100 * 1000 is 999.0000000000001 in floating point.
        histogram = LatencyHistogram()
        histogram.record(1, 999)
        histogram.record(200)
        self.assertEqual(histogram.percentile(99.9), 1)

    def test_percentile_is_clipped_to_the_exact_maximum(self) -> None:
        histogram = LatencyHistogram()
        histogram.record(1_000_001)
        self.assertEqual(histogram.percentile(50), 1_000_001)

    def test_count_records_many_samples(self) -> None:
        histogram = LatencyHistogram()
        histogram.record(10, 3)
        histogram.record(20)
        self.assertEqual(
            (histogram.total, histogram.mean(), histogram.percentile(75)),
            (4, 12.5, 10),
        )

    def test_merge_equals_recording_everything_in_one(self) -> None:
        values = [5, 17, 300, 4096, 70_000, 3, 1_000_000, 250, 251]
        whole = LatencyHistogram()
        parts = [LatencyHistogram(), LatencyHistogram(), LatencyHistogram()]
        for index, value in enumerate(values):
            whole.record(value)
            parts[index % 3].record(value)
        merged = LatencyHistogram()
        for part in parts:
            merged.merge(part)
        self.assertEqual(merged.to_json(), whole.to_json())

    def test_merging_an_empty_histogram_changes_nothing(self) -> None:
        histogram = LatencyHistogram()
        histogram.record(42)
        histogram.merge(LatencyHistogram())
        self.assertEqual((histogram.min, histogram.max, histogram.total), (42, 42, 1))

    def test_json_round_trip(self) -> None:
        histogram = LatencyHistogram()
        for value in (1, 99, 12345, 10**8):
            histogram.record(value, 2)
        copy = LatencyHistogram.from_json(json.loads(json.dumps(histogram.to_json())))
        self.assertEqual(copy.to_json(), histogram.to_json())

    def test_bad_json_is_refused(self) -> None:
        data = LatencyHistogram().to_json()
        data["total"] = 5
        self.assertRaises(ValueError, LatencyHistogram.from_json, data)
        self.assertRaises(ValueError, LatencyHistogram.from_json, [1, 2])


class MixTests(SynchronousTestCase):
    """
    ``-t``: the requests and the replies they must get.
    """

    def test_replies_come_from_the_command_table(self) -> None:
        self.assertEqual(
            parse_mix("Hello,Are you there?,nope", default_commands()),
            (
                Request("Hello", GREETING),
                Request("Are you there?", PRESENT),
                Request("nope", UNKNOWN_COMMAND),
            ),
        )

    def test_a_request_can_name_its_reply(self) -> None:
        self.assertEqual(
            parse_mix("PING=+PONG", default_commands()), (Request("PING", "+PONG"),)
        )

    def test_closing_command_is_refused(self) -> None:
        self.assertRaises(ValueError, parse_mix, "Hello,quit", default_commands())

    def test_empty_entry_is_refused(self) -> None:
        self.assertRaises(ValueError, parse_mix, "Hello,,Hello", default_commands())

    def test_mix_preset_is_the_seed_an_unknown_line_and_echo(self) -> None:
        self.assertEqual(
            parse_mix("mix", expected_replies()),
            (
                Request("Hello", GREETING),
                Request("Are you there?", PRESENT),
                Request("nope", UNKNOWN_COMMAND),
                Request("echo hi", "hi"),
            ),
        )

    def test_a_preset_is_one_entry_among_others(self) -> None:
        self.assertEqual(
            [r.line for r in parse_mix("aping,mix", expected_replies())],
            ["aping", "Hello", "Are you there?", "nope", "echo hi"],
        )

    def test_a_preset_name_with_a_reply_is_a_line(self) -> None:
        self.assertEqual(
            parse_mix("mix=Unknown command.", expected_replies()),
            (Request("mix", UNKNOWN_COMMAND),),
        )

    def test_expected_replies_know_the_benchmark_commands(self) -> None:
        self.assertEqual(
            parse_mix("echo a  b,aping", expected_replies()),
            (Request("echo a  b", "a  b"), Request("aping", ASYNC_PONG)),
        )

    def test_batches_use_the_codec(self) -> None:
        workload = Workload(parse_mix("Hello,nope", default_commands()))
        batch = workload.batch(1, 3)
        self.assertEqual(
            (batch.data, batch.replies, batch.size),
            (
                encode_line("nope") + encode_line("Hello") + encode_line("nope"),
                encode_line(UNKNOWN_COMMAND)
                + encode_line(GREETING)
                + encode_line(UNKNOWN_COMMAND),
                3,
            ),
        )


def checker_with(*batches: tuple[int, float], mix: str = "Hello") -> ReplyChecker:
    """
    A checker that has sent batches of (size, time) of the mix.
    """
    workload = Workload(parse_mix(mix, default_commands()))
    checker = ReplyChecker(LatencyHistogram())
    position = 0
    for size, sent_at in batches:
        checker.sent(workload.batch(position, size), sent_at)
        position += size
    return checker


class ReplyCheckerTests(SynchronousTestCase):
    """
    Each reply checked against its request, in order; latency per request.
    """

    def test_right_replies_split_anywhere(self) -> None:
        checker = checker_with((3, 0.0), mix="Hello,Are you there?")
        stream = encode_line(GREETING) + encode_line(PRESENT) + encode_line(GREETING)
        completed = [checker.received(bytes([byte]), 1.0) for byte in stream]
        self.assertEqual(
            (sum(completed), checker.outstanding, checker.answered), (3, 0, 3)
        )

    def test_latency_runs_from_send_to_reply(self) -> None:
        checker = checker_with((1, 1.0), (1, 2.0))
        checker.received(encode_line(GREETING), 1.5)
        checker.received(encode_line(GREETING), 2.25)
        histogram = checker.histogram
        self.assertEqual(
            (histogram.total, histogram.min, histogram.max),
            (2, 250_000_000, 500_000_000),
        )

    def test_a_batch_completes_reply_by_reply(self) -> None:
        checker = checker_with((4, 0.0))
        reply = encode_line(GREETING)
        self.assertEqual(checker.received(reply * 2 + reply[:3], 1.0), 2)
        self.assertEqual(checker.received(reply[3:] + reply, 2.0), 2)
        self.assertEqual(checker.histogram.percentile(100), 2_000_000_000)

    def test_wrong_reply(self) -> None:
        checker = checker_with((2, 0.0))
        checker.received(encode_line(GREETING), 0.0)
        with self.assertRaises(ReplyError) as caught:
            checker.received(encode_line("Howdy"), 0.0)
        self.assertEqual(caught.exception.kind, "wrong")
        self.assertIn("'Howdy'", str(caught.exception))

    def test_bare_lf_is_a_wrong_reply(self) -> None:
        checker = checker_with((1, 0.0))
        with self.assertRaises(ReplyError) as caught:
            checker.received(GREETING.encode() + b"\n", 0.0)
        self.assertEqual(caught.exception.kind, "wrong")

    def test_wrong_start_of_a_reply_fails_at_once(self) -> None:
        checker = checker_with((1, 0.0))
        with self.assertRaises(ReplyError) as caught:
            checker.received(b"Gx", 0.0)
        self.assertEqual(caught.exception.kind, "wrong")

    def test_reply_out_of_order(self) -> None:
        checker = checker_with((2, 0.0), mix="Hello,Are you there?")
        with self.assertRaises(ReplyError) as caught:
            checker.received(encode_line(PRESENT) + encode_line(GREETING), 0.0)
        self.assertEqual(caught.exception.kind, "out of order")

    def test_extra_reply(self) -> None:
        checker = checker_with((1, 0.0))
        with self.assertRaises(ReplyError) as caught:
            checker.received(encode_line(GREETING) * 2, 0.0)
        self.assertEqual(caught.exception.kind, "extra")

    def test_reply_with_nothing_sent_is_extra(self) -> None:
        checker = checker_with()
        with self.assertRaises(ReplyError) as caught:
            checker.received(encode_line(GREETING), 0.0)
        self.assertEqual(caught.exception.kind, "extra")

    def test_missing_reply_at_close(self) -> None:
        checker = checker_with((3, 0.0))
        checker.received(encode_line(GREETING) + b"Gree", 0.0)
        with self.assertRaises(ReplyError) as caught:
            checker.closed()
        self.assertEqual(caught.exception.kind, "missing")
        self.assertIn("2 requests unanswered", str(caught.exception))

    def test_close_with_everything_answered_is_fine(self) -> None:
        checker = checker_with((2, 0.0))
        self.assertEqual(checker.received(encode_line(GREETING) * 2, 0.5), 2)
        self.assertEqual((checker.outstanding, checker.answered), (0, 2))
        # Raises ReplyError if it took the close for a missing reply.
        checker.closed()
        self.assertEqual(checker.histogram.total, 2)


class SchedulingTests(SynchronousTestCase):
    """
    Closed loop hands out batches; open loop sends on a fixed schedule.
    """

    def test_closed_loop_counts_requests(self) -> None:
        loop = ClosedLoop(4, requests=10)
        self.assertEqual([loop.take(0.0) for _ in range(5)], [4, 4, 2, 0, 0])

    def test_closed_loop_stops_at_the_deadline(self) -> None:
        loop = ClosedLoop(8, deadline=5.0)
        self.assertEqual([loop.take(4.9), loop.take(5.0)], [8, 0])

    def test_open_loop_sends_on_schedule_round_robin(self) -> None:
        loop = OpenLoop(4.0, 3, 100.0, requests=5)
        self.assertEqual(loop.due(100.3), [(0, 100.0), (1, 100.25)])
        self.assertEqual(loop.next_due(), 100.5)
        self.assertEqual(loop.due(200.0), [(2, 100.5), (0, 100.75), (1, 101.0)])
        self.assertIsNone(loop.next_due())

    def test_open_loop_stops_at_the_deadline(self) -> None:
        loop = OpenLoop(100.0, 1, 0.0, deadline=0.05)
        self.assertEqual(len(loop.due(10.0)), 5)

    def test_settings_split_among_workers_add_up(self) -> None:
        settings = RunSettings(HELLO, clients=7, requests=1000, rate=700.0)
        parts = settings.split(3)
        self.assertEqual(
            [(p.clients, p.requests, p.rate) for p in parts],
            [(3, 428, 300.0), (2, 286, 200.0), (2, 286, 200.0)],
        )

    def test_worker_arguments_give_back_the_settings(self) -> None:
        settings = RunSettings(
            parse_mix("Hello,nope", default_commands()),
            clients=3,
            requests=None,
            duration=2.5,
            pipeline=4,
            timeout=7.0,
        )
        options = parse_arguments(worker_arguments(settings))
        self.assertEqual(RunSettings.from_options(options), settings)

    def test_worker_arguments_give_back_a_preset(self) -> None:
        mix = parse_mix("mix,aping", expected_replies())
        options = parse_arguments(["-t", mix_spec(mix)])
        self.assertEqual(options["mix"], mix)

    def test_worker_arguments_keep_a_line_named_like_a_preset(self) -> None:
        mix = (Request("mix", UNKNOWN_COMMAND), Request("Hello", GREETING))
        self.assertEqual(mix_spec(mix), "mix=Unknown command.,Hello")
        options = parse_arguments(["-t", mix_spec(mix)])
        self.assertEqual(options["mix"], mix)


def result_of(*latencies_ns: int, elapsed: float = 2.0) -> RunResult:
    histogram = LatencyHistogram()
    for latency in latencies_ns:
        histogram.record(latency)
    return RunResult(histogram, elapsed)


class ReportTests(SynchronousTestCase):
    """
    The summary, CSV and JSON reports.
    """

    def test_csv_has_redis_benchmarks_header_and_one_row(self) -> None:
        text = format_csv("Hello", result_of(100_000, 200_000, 300_000, 400_000))
        rows = list(csv.reader(io.StringIO(text)))
        self.assertEqual(
            rows,
            [
                list(CSV_HEADER),
                ["Hello", "2.00", "0.250", "0.100", "0.200", "0.400", "0.400", "0.400"],
            ],
        )
        self.assertTrue(text.startswith('"test","rps","avg_latency_ms",'))

    def test_json_report(self) -> None:
        settings = RunSettings(HELLO, clients=4, requests=2, pipeline=2)
        result = result_of(1_000_000, 3_000_000)
        result.cpu = 0.5
        report = json.loads(format_json("Hello", result, settings, 2))
        self.assertEqual(
            report,
            {
                "test": "Hello",
                "requests": 2,
                "seconds": 2.0,
                "clients": 4,
                "pipeline": 2,
                "rate": None,
                "workers": 2,
                "rps": 1.0,
                "cpu_seconds": 0.5,
                "latency_ms": {
                    "avg": 2.0,
                    "min": 1.0,
                    "p50": 1.0,
                    "p95": 3.0,
                    "p99": 3.0,
                    "p99.9": 3.0,
                    "max": 3.0,
                },
            },
        )

    def test_text_report(self) -> None:
        settings = RunSettings(HELLO, clients=4, requests=2)
        text = format_text("Hello", result_of(1_000_000, 3_000_000), settings, 1, "x:1")
        self.assertIn("2 requests completed in 2.00 seconds", text)
        self.assertIn("throughput summary: 1.00 requests per second", text)
        self.assertIn("p99.9", text)

    def test_merged_results_add_histograms_and_keep_the_longest_time(self) -> None:
        first, second = result_of(10, 20, elapsed=1.0), result_of(30, elapsed=1.5)
        first.cpu, second.cpu = 0.25, 0.5
        merged = merge_results([first, second])
        self.assertEqual(
            (
                merged.answered,
                merged.elapsed,
                merged.histogram.max,
                merged.code,
                merged.cpu,
            ),
            (3, 1.5, 30, EXIT_OK, 0.75),
        )

    def test_merged_results_keep_a_failure(self) -> None:
        bad = RunResult(LatencyHistogram(), 1.0, EXIT_BAD_REPLY, "wrong reply")
        merged = merge_results([result_of(10), bad])
        self.assertEqual((merged.code, merged.message), (EXIT_BAD_REPLY, "wrong reply"))

    def test_result_json_round_trip(self) -> None:
        result = RunResult(result_of(5, 6).histogram, 1.25, EXIT_FAILURE, "gone", 0.5)
        copy = RunResult.from_json(json.loads(json.dumps(result.to_json())))
        self.assertEqual(
            (copy.histogram.to_json(), copy.elapsed, copy.code, copy.message, copy.cpu),
            (result.histogram.to_json(), 1.25, EXIT_FAILURE, "gone", 0.5),
        )


class OptionsTests(SynchronousTestCase):
    """
    Option validation: usage errors exit 2 with one line, no traceback.
    """

    def assert_usage_error(self, argv: Sequence[str], reason: str) -> None:
        stderr = io.StringIO()
        with self.assertRaises(SystemExit) as caught:
            parse_arguments(argv, stderr)
        self.assertEqual(caught.exception.code, EXIT_USAGE)
        self.assertIn(reason, stderr.getvalue())
        self.assertNotIn("Traceback", stderr.getvalue())

    def test_defaults(self) -> None:
        settings = RunSettings.from_options(parse_arguments([]))
        self.assertEqual(settings, RunSettings(HELLO))

    def test_requests_and_duration_exclude_each_other(self) -> None:
        self.assert_usage_error(["-n", "10", "--duration", "1"], "not both")

    def test_rate_with_pipeline(self) -> None:
        self.assert_usage_error(["--rate", "100", "-P", "4"], "-P does not apply")

    def test_more_workers_than_clients(self) -> None:
        self.assert_usage_error(["-c", "2", "--workers", "3"], "--workers")

    def test_csv_and_json(self) -> None:
        self.assert_usage_error(["--csv", "--json"], "not both")

    def test_zero_clients(self) -> None:
        self.assert_usage_error(["-c", "0"], "--clients")

    def test_infinite_duration(self) -> None:
        self.assert_usage_error(["--duration", "inf"], "--duration")

    def test_quit_in_the_mix(self) -> None:
        self.assert_usage_error(["-t", "quit"], "closes the connection")

    def test_not_a_number(self) -> None:
        self.assert_usage_error(["-n", "many"], "commandproto.bench:")

    def test_mix_preset(self) -> None:
        options = parse_arguments(["-t", "mix"])
        self.assertEqual(options["mix"], parse_mix("mix", expected_replies()))

    def test_help_names_the_mix_preset(self) -> None:
        self.assertIn("-t mix", str(Options()))

    def test_parsed_mix(self) -> None:
        options = parse_arguments(["-t", "PING=+PONG"])
        self.assertEqual(options["mix"], (Request("PING", "+PONG"),))
        self.assertIsInstance(options, Options)


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """
    Connects each client to a new server protocol in memory.
    """

    def __init__(
        self,
        server: Callable[[], IProtocol],
        disconnect_reason: Exception | None = None,
    ) -> None:
        self.server = server
        self.disconnect_reason = disconnect_reason
        self.pumps: list[IOPump] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        client = factory.buildProtocol(UNIXAddress(b"/memory"))
        assert client is not None
        server = self.server()
        transport = FakeTransport(
            client, isServer=False, peerAddress=UNIXAddress(b"/memory")
        )
        if self.disconnect_reason is not None:
            transport.disconnectReason = self.disconnect_reason  # type: ignore[assignment]
        self.pumps.append(
            connect(
                server,
                FakeTransport(server, isServer=True),
                client,
                transport,
                greet=False,
            )
        )
        return succeed(client)

    def flush(self) -> None:
        for _ in range(10_000):
            if not any([pump.pump() for pump in self.pumps]):
                return
        raise AssertionError("still pumping")


@implementer(IStreamClientEndpoint)
class RefusingEndpoint:
    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return fail(ConnectionRefusedError())


class LineServer(Protocol):
    """
    A server that answers whole lines with what ``respond`` returns for the
    lines so far, for misbehaving on purpose.
    """

    def __init__(self, respond: Callable[[list[bytes]], bytes | None]) -> None:
        self.respond = respond
        self.lines: list[bytes] = []
        self.framer = LineFramer()

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        for line in self.framer.feed(data):
            assert isinstance(line, bytes)
            self.lines.append(line)
            reply = self.respond(self.lines)
            if reply is None:
                self.transport.loseConnection()
                return
            self.transport.write(reply)


class LoadRunTests(SynchronousTestCase):
    """
    Runs against servers in memory, on a fake clock.
    """

    def run_against(
        self,
        server: Callable[[], IProtocol],
        endpoint: object = None,
        disconnect_reason: Exception | None = None,
        **settings: object,
    ) -> tuple[RunResult, Clock]:
        clock = Clock()
        memory = MemoryEndpoint(server, disconnect_reason)
        parameters: dict[str, object] = {"mix": HELLO, "clients": 3, "requests": 60}
        parameters.update(settings)
        load = LoadRun(
            clock,
            RunSettings(**parameters),  # type: ignore[arg-type]
            endpoint or memory,  # type: ignore[arg-type]
            "memory",
            now=clock.seconds,
        )
        results: list[RunResult] = []
        load.done.addCallback(results.append)
        load.connect()
        load.start()
        memory.flush()
        for _ in range(30):
            if results:
                break
            clock.advance(1)
            memory.flush()
        self.assertEqual(len(results), 1)
        return results[0], clock

    def test_every_request_is_answered(self) -> None:
        factory = CommandServerFactory()
        result, clock = self.run_against(
            lambda: factory.buildProtocol(None), requests=100, pipeline=4
        )
        self.assertEqual((result.code, result.answered), (EXIT_OK, 100))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_mix_against_the_real_table(self) -> None:
        factory = CommandServerFactory()
        result, _ = self.run_against(
            lambda: factory.buildProtocol(None),
            mix=parse_mix("Hello,Are you there?,x", default_commands()),
            pipeline=5,
        )
        self.assertEqual((result.code, result.answered), (EXIT_OK, 60))

    def test_open_loop_sends_on_schedule(self) -> None:
        factory = CommandServerFactory()
        result, _ = self.run_against(
            lambda: factory.buildProtocol(None), rate=20.0, requests=40
        )
        self.assertEqual((result.code, result.answered), (EXIT_OK, 40))
        # Sent on time, answered in memory: no request waited a whole tick.
        self.assertLess(result.histogram.max, 1_000_000_000)

    def test_timed_run(self) -> None:
        factory = CommandServerFactory()
        result, _ = self.run_against(
            lambda: factory.buildProtocol(None), rate=10.0, requests=None, duration=2.0
        )
        self.assertEqual((result.code, result.answered), (EXIT_OK, 20))

    def test_wrong_reply_fails_the_run(self) -> None:
        table = CommandTable((Command("Hello", lambda: Reply("Howdy")),))
        factory = CommandServerFactory(table)
        result, _ = self.run_against(lambda: factory.buildProtocol(None))
        self.assertEqual(result.code, EXIT_BAD_REPLY)
        self.assertIn("wrong reply", result.message)

    def test_missing_reply_at_close_fails_the_run(self) -> None:
        def answer_five(lines: list[bytes]) -> bytes | None:
            return encode_line(GREETING) if len(lines) <= 5 else None

        result, _ = self.run_against(lambda: LineServer(answer_five), pipeline=4)
        self.assertEqual(result.code, EXIT_BAD_REPLY)
        self.assertIn("missing replies", result.message)

    def test_extra_reply_fails_the_run(self) -> None:
        result, _ = self.run_against(
            lambda: LineServer(lambda lines: encode_line(GREETING) * 2)
        )
        self.assertEqual(result.code, EXIT_BAD_REPLY)
        self.assertIn("extra reply", result.message)

    def test_reply_out_of_order_fails_the_run(self) -> None:
        replies = {
            b"Hello": encode_line(GREETING),
            b"Are you there?": encode_line(PRESENT),
        }

        def swap_pairs(lines: list[bytes]) -> bytes:
            if len(lines) % 2:
                return b""
            return replies[lines[-1]] + replies[lines[-2]]

        result, _ = self.run_against(
            lambda: LineServer(swap_pairs),
            mix=parse_mix("Hello,Are you there?", default_commands()),
            pipeline=2,
        )
        self.assertEqual(result.code, EXIT_BAD_REPLY)
        self.assertIn("out of order", result.message)

    def test_silent_server_times_out(self) -> None:
        result, clock = self.run_against(lambda: LineServer(lambda lines: b""))
        self.assertEqual(result.code, EXIT_BAD_REPLY)
        self.assertIn("no reply for 10 s", result.message)
        self.assertEqual(clock.seconds(), 10)

    def test_connection_lost_with_an_error_is_a_connection_failure(self) -> None:
        def answer_five(lines: list[bytes]) -> bytes | None:
            return encode_line(GREETING) if len(lines) <= 5 else None

        result, _ = self.run_against(
            lambda: LineServer(answer_five), disconnect_reason=ConnectionLost()
        )
        self.assertEqual(result.code, EXIT_FAILURE)
        self.assertIn("connection 0 to memory: connection lost", result.message)

    def test_connection_refused(self) -> None:
        result, clock = self.run_against(
            lambda: LineServer(lambda lines: b""), endpoint=RefusingEndpoint()
        )
        self.assertEqual(result.code, EXIT_FAILURE)
        self.assertIn("connection refused", result.message)
        self.assertEqual(clock.getDelayedCalls(), [])


class FakeProcess:
    """
    A worker process's transport: records what the parent does to it.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.stdin_closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def closeStdin(self) -> None:
        self.stdin_closed = True


class FakeProcessReactor:
    """
    Spawns nothing: hands each worker's protocol a :class:`FakeProcess`.
    """

    def __init__(self) -> None:
        self.protocols: list[ProcessProtocol] = []
        self.processes: list[FakeProcess] = []

    def spawnProcess(
        self, protocol: ProcessProtocol, executable: str, *args: object, **kw: object
    ) -> FakeProcess:
        process = FakeProcess()
        protocol.makeConnection(process)
        self.protocols.append(protocol)
        self.processes.append(process)
        return process


def report_line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


class WorkerPoolTests(SynchronousTestCase):
    """
    The parent's side of ``--workers``: a common start, merged results, and
    no worker left waiting.
    """

    def setUp(self) -> None:
        self.reactor = FakeProcessReactor()
        settings = RunSettings(HELLO, clients=4, requests=100)
        self.pool = _WorkerPool(
            self.reactor,  # type: ignore[arg-type]
            ["--port", "1"],
            settings.split(2),
        )
        self.results: list[RunResult] = []
        self.pool.done.addCallback(self.results.append)

    def end(self, number: int, result: RunResult | None) -> None:
        protocol = self.reactor.protocols[number]
        if result is not None:
            protocol.outReceived(report_line(result=result.to_json()))
        protocol.processEnded(Failure(ProcessDone(0)))

    def test_workers_start_together(self) -> None:
        self.reactor.protocols[0].outReceived(report_line(ready=True))
        self.assertEqual(self.reactor.processes[0].written, [])
        self.reactor.protocols[1].outReceived(report_line(ready=True))
        self.assertEqual(
            [p.written for p in self.reactor.processes], [[b"go\n"], [b"go\n"]]
        )

    def test_results_are_merged(self) -> None:
        for protocol in self.reactor.protocols:
            protocol.outReceived(report_line(ready=True))
        self.end(0, result_of(10, 20, elapsed=1.0))
        self.assertEqual(self.results, [])
        self.end(1, result_of(30, elapsed=2.0))
        [result] = self.results
        self.assertEqual((result.code, result.answered, result.elapsed), (0, 3, 2.0))

    def test_a_worker_failing_before_the_start_calls_the_run_off(self) -> None:
        self.reactor.protocols[0].outReceived(report_line(ready=True))
        refused = RunResult(LatencyHistogram(), 0.0, EXIT_FAILURE, "connection refused")
        self.end(1, refused)
        self.assertTrue(self.reactor.processes[0].stdin_closed)
        self.assertEqual(self.results, [])
        called_off = RunResult(LatencyHistogram(), 0.0, EXIT_FAILURE, "called off")
        self.end(0, called_off)
        [result] = self.results
        self.assertEqual(
            (result.code, result.message), (EXIT_FAILURE, "connection refused")
        )

    def test_a_worker_ending_without_a_result_fails_the_run(self) -> None:
        for protocol in self.reactor.protocols:
            protocol.outReceived(report_line(ready=True))
        self.end(0, result_of(10))
        self.end(1, None)
        [result] = self.results
        self.assertEqual(
            (result.code, result.message),
            (EXIT_FAILURE, "worker 1 ended without a result"),
        )


def run_bench(
    arguments: Sequence[str], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commandproto.bench", *arguments],
        capture_output=True,
        text=True,
        env=subprocess_environment(),
        timeout=timeout,
    )


class BenchProcessTests(ProcessTestCase):
    """
    The real ``python -m commandproto.bench`` against the real server.
    """

    def test_json_run_against_the_server(self) -> None:
        server = self.start_server()
        result = run_bench(
            ["--port", str(server.port), "-n", "3000", "-c", "5", "-P", "8", "--json"]
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        report = json.loads(result.stdout)
        self.assertEqual((report["requests"], report["clients"]), (3000, 5))
        self.assertGreater(report["rps"], 0)

    def test_workers_share_the_requests(self) -> None:
        server = self.start_server()
        result = run_bench(
            [
                "--port",
                str(server.port),
                "-n",
                "1001",
                "-c",
                "3",
                "--workers",
                "2",
                "-t",
                "Hello,Are you there?",
                "--csv",
            ]
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        rows = list(csv.reader(io.StringIO(result.stdout)))
        self.assertEqual(rows[0], list(CSV_HEADER))
        self.assertEqual(rows[1][0], "Hello,Are you there?")

    def test_wrong_expected_reply_exits_3(self) -> None:
        server = self.start_server()
        result = run_bench(["--port", str(server.port), "-n", "10", "-t", "Hello=Hi"])
        self.assertEqual(result.returncode, EXIT_BAD_REPLY)
        self.assertEqual(
            result.stderr,
            "commandproto.bench: connection 0: wrong reply: expected 'Hi', "
            "got 'Greetings!'\n",
        )
        self.assertEqual(result.stdout, "")

    def test_mix_against_the_server_with_the_benchmark_commands(self) -> None:
        server = self.start_server("--commands", "commandproto.benchcommands")
        result = run_bench(
            [
                "--port",
                str(server.port),
                "-n",
                "640",
                "-c",
                "2",
                "-P",
                "64",
                "-t",
                "mix,aping",
                "--json",
            ]
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        report = json.loads(result.stdout)
        self.assertEqual(report["requests"], 640)

    def test_connection_refused_exits_1(self) -> None:
        port = refusing_port(self)
        result = run_bench(["--port", str(port), "-n", "10"])
        self.assertEqual(result.returncode, EXIT_FAILURE)
        self.assertEqual(
            result.stderr,
            f"commandproto.bench: cannot connect to 127.0.0.1:{port}: "
            "connection refused\n",
        )

    def test_usage_error_exits_2_without_traceback(self) -> None:
        result = run_bench(["-c", "nope"])
        self.assertEqual(result.returncode, EXIT_USAGE)
        self.assertNotIn("Traceback", result.stderr)


class BenchCommandsTests(SynchronousTestCase):
    """
    ``commandproto.benchcommands``: what the load tester expects is what the
    server answers.
    """

    def replies_to(self, data: bytes) -> bytes:
        protocol, transport = InMemoryServer(with_builtins(bench_commands)).connect()
        protocol.dataReceived(data)
        value: bytes = transport.value()
        return value

    def test_echo_answers_the_rest_of_the_line(self) -> None:
        self.assertEqual(self.replies_to(b"echo  a b \r\n"), b" a b \r\n")

    def test_echo_without_text_is_a_usage_error(self) -> None:
        self.assertEqual(self.replies_to(b"echo\r\n"), b"Error: usage: echo TEXT\r\n")

    def test_aping_answers_pong_from_a_coroutine(self) -> None:
        self.assertEqual(self.replies_to(b"aping\r\n" * 3), b"PONG\r\n" * 3)

    def test_server_answers_the_mix_as_expected(self) -> None:
        mix = parse_mix("mix,aping", expected_replies())
        batch = Workload(mix).batch(0, 2 * len(mix))
        self.assertEqual(self.replies_to(batch.data), batch.replies)
