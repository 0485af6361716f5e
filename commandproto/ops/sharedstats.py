"""
One server's numbers across its workers: with ``--workers N`` each worker
counts its own connections, and ``stats`` and ``/metrics`` report the sum.

Each worker writes a snapshot of its counters (a small JSON file, replaced
atomically) into a directory the supervisor makes and names in the
environment, every :data:`INTERVAL` seconds and when it stops.  A reader
(the supervisor's ``/metrics``, a worker's ``stats``) sums the snapshots, its
own live numbers taking the place of its file.  So the whole server's numbers
are at most :data:`INTERVAL` seconds old; a worker's own are current.  A
worker that restarts starts its counters from zero, as a restarted server
would (Prometheus reads the drop as a counter reset).

Files rather than a request to each worker: a scrape never waits on a busy
worker, and a worker's reactor does one small write a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..server.stats import Latency, ServerStats, format_pairs

log = Logger()

DIRECTORY_ENVIRONMENT = "COMMANDPROTO_STATS_DIR"
"""The snapshot directory, in the supervisor's and the workers' environment."""

INTERVAL = 1.0
"""Seconds between a worker's snapshots."""

_SUFFIX = ".json"


def snapshot(stats: ServerStats) -> dict[str, Any]:
    """
    A worker's counters as plain data for JSON.
    """
    return {
        "version": stats.version,
        "started": stats.started,
        "open": stats.open,
        "accepted": stats.accepted,
        "bytes_in": stats.bytes_in,
        "bytes_out": stats.bytes_out,
        "commands": [
            [name, outcome, count]
            for (name, outcome), count in stats.commands_by_outcome().items()
        ],
        "latency": {
            name: [list(histogram.counts), histogram.total]
            for name, histogram in stats.latency_by_name().items()
        },
        "refused": dict(stats.refused),
        "events": dict(stats.events),
    }


def merge(records: Iterable[dict[str, Any]], into: ServerStats) -> ServerStats:
    """
    Add snapshots to ``into`` (a fresh :class:`ServerStats`): the sum of
    every worker's counters, the earliest start, the first version.

    :returns: ``into``.
    """
    for record in records:
        into.started = min(into.started, float(record["started"]))
        into.open += int(record["open"])
        into.accepted += int(record["accepted"])
        into.bytes_in += int(record["bytes_in"])
        into.bytes_out += int(record["bytes_out"])
        for name, outcome, count in record["commands"]:
            key = (str(name), str(outcome))
            into.commands[key] = into.commands.get(key, 0) + int(count)
        for name, (counts, total) in record["latency"].items():
            histogram = into.latency.get(name)
            if histogram is None:
                histogram = into.latency[name] = Latency()
            if len(counts) == len(histogram.counts):
                histogram.counts = [
                    a + int(b) for a, b in zip(histogram.counts, counts, strict=True)
                ]
                histogram.total += float(total)
        for kind, table in (("refused", into.refused), ("events", into.events)):
            for key, count in record[kind].items():
                table[key] = table.get(key, 0) + int(count)
    return into


class SnapshotDirectory:
    """
    Where the workers' snapshots are.

    :ivar path: the directory.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls) -> SnapshotDirectory:
        """
        A new private directory (the supervisor's), named in this process's
        environment so that the workers it spawns inherit it.
        """
        path = tempfile.mkdtemp(prefix="commandproto-stats-")
        os.environ[DIRECTORY_ENVIRONMENT] = path
        return cls(path)

    @classmethod
    def from_environment(cls) -> SnapshotDirectory | None:
        path = os.environ.get(DIRECTORY_ENVIRONMENT)
        return None if not path else cls(path)

    def write(self, index: int, stats: ServerStats) -> None:
        """
        Replace worker ``index``'s snapshot, atomically.
        """
        target = os.path.join(self.path, f"worker-{index}{_SUFFIX}")
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(snapshot(stats), f)
        os.replace(temporary, target)

    def read(self, *, skip: int | None = None) -> Iterator[dict[str, Any]]:
        """
        Every worker's latest snapshot, but worker ``skip``'s.  A file that
        cannot be read or parsed (a worker mid-way through its first write
        cannot leave one: the write is atomic) is passed over.
        """
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            return
        for name in names:
            if not (name.startswith("worker-") and name.endswith(_SUFFIX)):
                continue
            if skip is not None and name == f"worker-{skip}{_SUFFIX}":
                continue
            try:
                with open(os.path.join(self.path, name), encoding="utf-8") as f:
                    record = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                yield record

    def remove(self) -> None:
        """
        Delete the directory and its snapshots (the supervisor, at exit).
        """
        with contextlib.suppress(OSError):
            for name in os.listdir(self.path):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, name))
            os.rmdir(self.path)


class WorkerStats(ServerStats):
    """
    A worker's counters, whose ``stats`` reply is the whole server's: this
    worker's live numbers plus the other workers' latest snapshots, and
    which worker answered.
    """

    def __init__(
        self, directory: SnapshotDirectory, index: int, **options: Any
    ) -> None:
        super().__init__(**options)
        self.directory = directory
        self.index = index

    def whole(self) -> ServerStats:
        """
        The whole server's numbers now.
        """
        whole = ServerStats(server_version=self.version, wall=self._wall)
        whole.started = self.started
        return merge([snapshot(self), *self.directory.read(skip=self.index)], whole)

    def summary(self) -> dict[str, int | str]:
        return {**self.whole().summary(), "worker": self.index}

    def line(self) -> str:
        return format_pairs(self.summary())


class SnapshotService(Service):
    """
    Writes a worker's snapshot every :data:`INTERVAL` seconds, and once more
    when it stops.
    """

    def __init__(
        self, clock: IReactorTime, directory: SnapshotDirectory, stats: WorkerStats
    ) -> None:
        self._directory = directory
        self._stats = stats
        self._loop = LoopingCall(self.write)
        self._loop.clock = clock

    def write(self) -> None:
        try:
            self._directory.write(self._stats.index, self._stats)
        except OSError as e:
            log.warn(
                "cannot write the statistics snapshot to {path}: {why}",
                path=self._directory.path,
                why=e.strerror or str(e),
            )

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._loop.start(INTERVAL, now=True)

    def stopService(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self.write()
        super().stopService()  # type: ignore[no-untyped-call]


class SupervisorStats(ServerStats):
    """
    What the supervisor's ``/metrics`` reads: refreshed from the workers'
    snapshots at each scrape (:meth:`refresh`).
    """

    def __init__(self, directory: SnapshotDirectory, **options: Any) -> None:
        super().__init__(**options)
        self.directory = directory

    def refresh(self) -> None:
        """
        Replace the numbers with the sum of the workers' snapshots.
        """
        fresh = merge(
            self.directory.read(),
            ServerStats(server_version=self.version, wall=self._wall),
        )
        fresh.started = min(fresh.started, self.started)
        self.__dict__.update(
            {key: value for key, value in vars(fresh).items() if key != "_wall"}
        )
