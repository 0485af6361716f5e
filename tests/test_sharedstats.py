"""
Tests for :mod:`commandproto.ops.sharedstats`: one server's numbers across
its workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from prometheus_client.exposition import generate_latest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from commandproto.ops.metrics import registry_for
from commandproto.ops.sharedstats import (
    DIRECTORY_ENVIRONMENT,
    INTERVAL,
    SnapshotDirectory,
    SnapshotService,
    SupervisorStats,
    WorkerStats,
    merge,
    snapshot,
)
from commandproto.server.stats import ServerStats, parse_pairs


def busy(commands: int, *, errors: int = 0, open: int = 1) -> ServerStats:
    stats = ServerStats(server_version="1.0", wall=lambda: 100.0)
    stats.open = open
    stats.accepted = open + 1
    stats.bytes_in = 10 * commands
    stats.bytes_out = 20 * commands
    for _ in range(commands):
        stats.command_done("Hello", "ok", 0.001)
    for _ in range(errors):
        stats.command_done("(unknown)", "error", None)
    stats.cached[b"Hello"] = commands
    stats.refuse("too many connections")
    stats.event("line timeout")
    return stats


class SnapshotDirectoryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        path = tempfile.mkdtemp(prefix="commandproto-stats-test-")
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        self.directory = SnapshotDirectory(path)


class MergeTests(SynchronousTestCase):
    """
    Snapshots add up.
    """

    def test_counters_and_histograms_add_up(self) -> None:
        whole = merge(
            [snapshot(busy(3, errors=1)), snapshot(busy(2, open=4))],
            ServerStats(server_version="1.0", wall=lambda: 100.0),
        )
        self.assertEqual(
            (whole.open, whole.accepted, whole.bytes_in, whole.bytes_out),
            (5, 7, 50, 100),
        )
        # Cached and other commands alike, by name and outcome.
        self.assertEqual(
            whole.commands_by_outcome(),
            {("Hello", "ok"): 10, ("(unknown)", "error"): 1},
        )
        self.assertEqual(sum(whole.latency["Hello"].counts), 5)
        self.assertEqual(whole.refused, {"too many connections": 2})
        self.assertEqual(whole.events, {"line timeout": 2})


class WorkerStatsTests(SnapshotDirectoryTestCase):
    """
    ``stats`` in a worker answers for the whole server and says which
    worker answered.
    """

    def test_stats_line_is_the_whole_server(self) -> None:
        self.directory.write(2, busy(5, errors=2, open=3))
        mine = WorkerStats(self.directory, 1, server_version="1.0", wall=lambda: 100.0)
        mine.open = 1
        mine.accepted = 1
        mine.command_done("Hello", "ok", None)
        pairs = parse_pairs(mine.line())
        self.assertEqual(
            {key: pairs[key] for key in ("connections", "commands", "errors")},
            {"connections": "4", "commands": "13", "errors": "2"},
        )
        self.assertEqual(pairs["worker"], "1")

    def test_own_file_is_not_counted_twice(self) -> None:
        mine = WorkerStats(self.directory, 1, server_version="1.0")
        mine.command_done("Hello", "ok", None)
        self.directory.write(1, mine)
        mine.command_done("Hello", "ok", None)
        self.assertEqual(parse_pairs(mine.line())["commands"], "2")

    def test_unreadable_snapshot_is_passed_over(self) -> None:
        with open(os.path.join(self.directory.path, "worker-3.json"), "w") as f:
            f.write("{not json")
        mine = WorkerStats(self.directory, 1, server_version="1.0")
        self.assertEqual(parse_pairs(mine.line())["commands"], "0")


class SnapshotServiceTests(SnapshotDirectoryTestCase):
    """
    A worker writes its snapshot at start, every INTERVAL, and at stop.
    """

    def commands_on_file(self) -> int:
        (record,) = list(self.directory.read())
        return sum(count for _, _, count in record["commands"])

    def test_written_at_start_periodically_and_at_stop(self) -> None:
        clock = Clock()
        stats = WorkerStats(self.directory, 1, server_version="1.0")
        service = SnapshotService(clock, self.directory, stats)
        service.startService()
        self.assertEqual(self.commands_on_file(), 0)
        stats.command_done("Hello", "ok", None)
        clock.advance(INTERVAL)
        self.assertEqual(self.commands_on_file(), 1)
        stats.command_done("Hello", "ok", None)
        service.stopService()
        self.assertEqual(self.commands_on_file(), 2)
        self.assertEqual(clock.getDelayedCalls(), [])


class SupervisorStatsTests(SnapshotDirectoryTestCase):
    """
    The supervisor's /metrics is every worker's numbers, summed at each
    scrape.
    """

    def test_scrape_sums_the_workers(self) -> None:
        whole = SupervisorStats(self.directory, server_version="1.0", timing=True)
        registry = registry_for(whole, whole.refresh)
        self.directory.write(1, busy(3))
        self.directory.write(2, busy(4))
        text = generate_latest(registry).decode()
        self.assertIn(
            'commandproto_commands_total{command="Hello",outcome="ok"} 14.0', text
        )
        self.assertIn("commandproto_connections 2.0", text)
        # The next scrape reads the snapshots afresh.
        self.directory.write(2, busy(10))
        text = generate_latest(registry).decode()
        self.assertIn(
            'commandproto_commands_total{command="Hello",outcome="ok"} 26.0', text
        )

    def test_directory_named_for_the_workers_and_removed(self) -> None:
        saved = os.environ.get(DIRECTORY_ENVIRONMENT)
        self.addCleanup(self.restore_environment, saved)
        created = SnapshotDirectory.create()
        found = SnapshotDirectory.from_environment()
        assert found is not None
        self.assertEqual(found.path, created.path)
        created.write(1, busy(1))
        created.remove()
        self.assertFalse(os.path.exists(created.path))

    def restore_environment(self, saved: str | None) -> None:
        if saved is None:
            os.environ.pop(DIRECTORY_ENVIRONMENT, None)
        else:
            os.environ[DIRECTORY_ENVIRONMENT] = saved
