"""
The benchmark scripts' own logic (``benchmarks/``): the set/get command set
answers what the set/get load expects, the load's checker refuses wrong
replies, ratios are medians of per-round ratios, each script's docs section
is written without touching the others, and the server harness starts,
finds and stops its process.  No timing is asserted: the scripts measure,
the tests check what they compute with.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# The scripts run as ``python benchmarks/NAME.py``, with their directory on
# the path; so do they here.
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import _harness  # noqa: E402
import kvbench  # noqa: E402
import kvload  # noqa: E402
import side_by_side  # noqa: E402

from commandproto.testing import CommandTester  # noqa: E402


def scratch(test: SynchronousTestCase) -> Path:
    """
    A temporary directory, removed after the test.
    """
    directory = Path(tempfile.mkdtemp(prefix="test-benchmarks-"))
    test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


class KVBenchTests(SynchronousTestCase):
    """
    ``benchmarks/kvbench.py`` in memory, against ``benchmarks/kvload.py``'s
    expectations.
    """

    def answers(self, mix: str) -> tuple[list[str], list[str]]:
        tester = CommandTester(kvbench.make_commands())
        client = tester.connect()
        requests = kvload.MIXES[mix]
        client.send(*(request.line for request in requests))
        tester.advance(0)
        return client.replies(), [request.reply for request in requests]

    def test_set_get_mix_gets_its_replies(self) -> None:
        got, expected = self.answers("set-get")
        self.assertEqual(got, expected)

    def test_get_mix_finds_every_key_from_the_start(self) -> None:
        got, expected = self.answers("get")
        self.assertEqual(got, expected)

    def test_async_get_mix_gets_its_replies(self) -> None:
        got, expected = self.answers("aget")
        self.assertEqual(got, expected)

    def test_deferred_get_mix_gets_its_replies(self) -> None:
        got, expected = self.answers("dget")
        self.assertEqual(got, expected)

    def test_set_stores_the_rest_of_the_line(self) -> None:
        client = CommandTester(kvbench.make_commands({})).connect()
        self.assertEqual(client.request("set k two  spaces "), "OK")
        self.assertEqual(client.request("get k"), "two  spaces ")
        self.assertEqual(client.request("aget k"), "two  spaces ")

    def test_unknown_key_is_an_error_for_every_get(self) -> None:
        tester = CommandTester(kvbench.make_commands({}))
        client = tester.connect()
        client.send("get nothing", "aget nothing", "dget nothing")
        tester.advance(0)
        self.assertEqual(client.replies(), ["Error: no such key"] * 3)


class PerRoundRatioTests(SynchronousTestCase):
    """
    :func:`side_by_side.per_round_ratio`: the median of each round's ratio,
    not a ratio of medians.
    """

    @staticmethod
    def runs(*us: float | None) -> list[dict[str, Any]]:
        return [
            {"error": "failed"} if u is None else {"server_us_per_request": u}
            for u in us
        ]

    def test_median_of_per_round_ratios(self) -> None:
        # Per round 2, 1, 3: median 2.  The ratio of medians would be 3.
        results = {
            ("set/get", "ours"): self.runs(2.0, 10.0, 3.0),
            ("set/get", "redis"): self.runs(1.0, 10.0, 1.0),
        }
        ratio = side_by_side.per_round_ratio(
            results, "set/get", "ours", "set/get", "redis"
        )
        self.assertEqual(ratio, 2.0)

    def test_failed_round_is_left_out(self) -> None:
        results = {
            ("a", "x"): self.runs(4.0, None, 9.0, 5.0),
            ("b", "x"): self.runs(2.0, 1.0, 3.0, None),
        }
        self.assertEqual(side_by_side.per_round_ratio(results, "a", "x", "b", "x"), 2.5)

    def test_nothing_measured_is_none(self) -> None:
        results = {("a", "x"): self.runs(None), ("b", "x"): self.runs(1.0)}
        self.assertIsNone(side_by_side.per_round_ratio(results, "a", "x", "b", "x"))


class WriteDocsTests(SynchronousTestCase):
    """
    :func:`_harness.write_docs` replaces its own section and keeps the rest.
    """

    def test_sections_are_replaced_each_in_place(self) -> None:
        path = scratch(self) / "benchmarks.rst"
        path.write_text("Intro\n\n.. a begin\nold a\n.. a end\n\nOutro\n")
        _harness.write_docs(
            path, ".. b begin\nb1\n.. b end\n", ".. b begin", ".. b end"
        )
        _harness.write_docs(
            path, ".. a begin\nnew a\n.. a end\n", ".. a begin", ".. a end"
        )
        _harness.write_docs(
            path, ".. b begin\nb2\n.. b end\n", ".. b begin", ".. b end"
        )
        self.assertEqual(
            path.read_text(),
            "Intro\n\n.. a begin\nnew a\n.. a end\n\nOutro\n\n"
            ".. b begin\nb2\n.. b end\n",
        )


class ServerProcessTests(SynchronousTestCase):
    """
    :class:`_harness.ServerProcess` with stand-in servers: a Python process
    that says where it listens, or exits.
    """

    def test_port_from_the_log_and_stopped(self) -> None:
        directory = scratch(self)
        server = _harness.ServerProcess(
            [
                sys.executable,
                "-c",
                "import time; print('listening on tcp:127.0.0.1:4321', "
                "flush=True); time.sleep(60)",
            ],
            directory / "log",
            environment={},
            cwd=directory,
        )
        self.addCleanup(server.stop)
        self.assertEqual(server.ports, [4321])
        server.stop(timeout=10)
        self.assertIsNotNone(server.process.poll())

    def test_exit_at_start_up_is_an_error_with_the_log(self) -> None:
        directory = scratch(self)
        with self.assertRaises(RuntimeError) as caught:
            _harness.ServerProcess(
                [sys.executable, "-c", "print('no such option')"],
                directory / "log",
                environment={},
                cwd=directory,
                name="the stand-in",
            )
        self.assertIn("the stand-in did not start", str(caught.exception))
        self.assertIn("no such option", str(caught.exception))


def run_kvload(port: int, mix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "kvload.py"),
            "--port",
            str(port),
            "-t",
            mix,
            "-c",
            "2",
            "-P",
            "64",
            "-n",
            "256",
            "--timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


class KVLoadProcessTests(SynchronousTestCase):
    """
    ``benchmarks/kvload.py`` against real servers on loopback: the
    commandproto server with the third-party set from its start-up
    directory, and redis-server where it is installed.
    """

    def test_commandproto_serves_the_set_from_its_directory(self) -> None:
        directory = scratch(self)
        shutil.copy(BENCHMARKS / "kvbench.py", directory)
        server = _harness.ServerProcess(
            _harness.twistd_command(
                ["tcp:0:interface=127.0.0.1"], ["--commands", "kvbench:commands"]
            ),
            directory / "server.log",
            environment=_harness.environment_for(_harness.ROOT),
            cwd=directory,
            pattern=_harness.TWISTD_LISTENING,
        )
        self.addCleanup(server.stop)
        done = run_kvload(server.port, "set-get")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(json.loads(done.stdout)["requests"], 256)
        wrong = run_kvload(server.port, "redis-set-get")
        self.assertEqual(wrong.returncode, 3, wrong.stderr)
        self.assertIn("wrong reply", wrong.stderr)

    def test_redis_server_answers_the_redis_mix(self) -> None:
        redis = shutil.which("redis-server")
        if redis is None:
            raise SkipTest("redis-server is not installed (apt install redis-server)")
        directory = scratch(self)
        port = _harness.free_port()
        server = _harness.ServerProcess(
            [
                redis,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            directory / "redis.log",
            environment={},
            cwd=directory,
            port=port,
            serving=_harness.probe(b"PING\r\n", b"+PONG\r\n"),
        )
        self.addCleanup(server.stop)
        done = run_kvload(port, "redis-set-get")
        self.assertEqual((done.returncode, done.stderr), (0, ""))
        self.assertEqual(json.loads(done.stdout)["requests"], 256)
        wrong = run_kvload(port, "set-get")
        self.assertEqual(wrong.returncode, 3, wrong.stderr)


class RotatedTests(SynchronousTestCase):
    """
    :func:`side_by_side.rotated`: each round starts one server further on.
    """

    def test_each_round_starts_further_on(self) -> None:
        self.assertEqual(side_by_side.rotated("abc", 0), ["a", "b", "c"])
        self.assertEqual(side_by_side.rotated("abc", 1), ["b", "c", "a"])
        self.assertEqual(side_by_side.rotated("abc", 4), ["b", "c", "a"])
        self.assertEqual(side_by_side.rotated([], 3), [])
