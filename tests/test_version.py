"""
One version, written in one place, printed by every tool; the installed
console scripts.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from importlib.metadata import version

from twisted.trial.unittest import SynchronousTestCase

import commandproto
from commandproto import tap
from commandproto.bench import runner as bench
from commandproto.client import cli as client

from ._processes import subprocess_environment


class VersionTests(SynchronousTestCase):
    def test_package_version_is_the_installed_one(self) -> None:
        self.assertEqual(commandproto.__version__, version("commandproto"))

    def _version_exits_0(self, options: object) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as raised:
            options.parseOptions(["--version"])  # type: ignore[attr-defined]
        self.assertEqual(raised.exception.code, 0)
        self.assertEqual(out.getvalue(), f"commandproto {commandproto.__version__}\n")

    def test_client_version(self) -> None:
        self._version_exits_0(client.Options())

    def test_bench_version(self) -> None:
        self._version_exits_0(bench.Options())

    def test_twistd_commandserver_version(self) -> None:
        self._version_exits_0(tap.Options())


class ConsoleScriptTests(SynchronousTestCase):
    """
    ``pip install`` puts ``commandproto`` and ``commandproto-bench`` beside
    the interpreter.
    """

    def _script(self, name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        script = os.path.join(os.path.dirname(sys.executable), name)
        if not os.path.exists(script):
            self.skipTest(f"{name} is not installed beside {sys.executable}")
        return subprocess.run(
            [script, *arguments],
            capture_output=True,
            text=True,
            env=subprocess_environment(),
            timeout=30,
        )

    def test_commandproto_script(self) -> None:
        result = self._script("commandproto", "--version")
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f"commandproto {commandproto.__version__}\n", ""),
        )

    def test_bench_script(self) -> None:
        result = self._script("commandproto-bench", "--version")
        self.assertEqual(
            (result.returncode, result.stdout),
            (0, f"commandproto {commandproto.__version__}\n"),
        )

    def test_usage_hint_names_the_command(self) -> None:
        result = self._script("commandproto", "--nope")
        self.assertEqual(result.returncode, 2)
        self.assertTrue(
            result.stderr.endswith("Try 'commandproto --help' for usage.\n"),
            result.stderr,
        )
