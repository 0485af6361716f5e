"""
``--commands``: loading command sets by entry-point name or
``module:attribute``, the start-up errors, ``--list-commands``, and a real
``twistd -n commandserver`` serving a user's module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from commandproto import tap
from commandproto.commands.loading import LoadError, installed_sets, load_table
from commandproto.commands.table import CommandTable

from ._processes import TWISTD, ServerProcess, read_exactly, subprocess_environment

USER_MODULE = '''
from twisted.internet.task import deferLater

from commandproto import CommandTable, Rest, Session

commands = CommandTable()
other = CommandTable()
not_a_table = 42


@commands.command("echo", usage="echo TEXT")
def echo(text: Rest) -> str:
    """Answer with the text."""
    return text


@commands.command("later")
async def later(seconds: float, session: Session) -> str:
    """Answer after a while."""
    await deferLater(session.clock, seconds)
    return "later"


@other.command("echo")
def echo_again(text: Rest) -> str:
    return text
'''

ENTRY_POINTS = """\
[commandproto.commands]
userset = usermod:commands
brokenset = usermod_missing:commands
"""


class TemporaryModules:
    """
    A directory holding a user's module and an installed distribution that
    offers command sets, put on ``sys.path`` for one test.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        test.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.write("usermod.py", USER_MODULE)
        self.write("broken.py", "raise RuntimeError('bad import')\n")
        info = os.path.join(self.directory, "userdist-1.0.dist-info")
        os.mkdir(info)
        self.write(
            os.path.join(info, "METADATA"),
            "Metadata-Version: 2.1\nName: userdist\nVersion: 1.0\n",
        )
        self.write(os.path.join(info, "entry_points.txt"), ENTRY_POINTS)
        sys.path.insert(0, self.directory)
        test.addCleanup(sys.path.remove, self.directory)
        for name in ("usermod", "broken"):
            test.addCleanup(sys.modules.pop, name, None)

    def write(self, name: str, text: str) -> None:
        with open(os.path.join(self.directory, name), "w") as f:
            f.write(text)


class LoadTableTests(SynchronousTestCase):
    """
    What ``--commands SPEC`` loads, and the one-line errors.
    """

    def setUp(self) -> None:
        self.modules = TemporaryModules(self)

    def test_module_and_attribute(self) -> None:
        self.assertEqual(load_table("usermod:other").names(), ["echo"])

    def test_attribute_defaults_to_commands(self) -> None:
        self.assertEqual(load_table("usermod").names(), ["echo", "later"])

    def test_installed_set_by_name(self) -> None:
        self.assertIsInstance(load_table("userset"), CommandTable)

    def test_installed_sets_are_listed(self) -> None:
        names = {entry.name: entry.target for entry in installed_sets()}
        self.assertEqual(names.get("userset"), "usermod:commands")

    def assert_load_error(self, spec: str, expected: str) -> None:
        with self.assertRaises(LoadError) as caught:
            load_table(spec)
        message = str(caught.exception)
        self.assertIn(expected, message)
        self.assertNotIn("\n", message)

    def test_no_such_module(self) -> None:
        self.assert_load_error(
            "nosuchmodule", "no installed command set and no module named"
        )

    def test_module_that_fails_to_import(self) -> None:
        self.assert_load_error("broken", "RuntimeError: bad import")

    def test_missing_attribute(self) -> None:
        self.assert_load_error("usermod:nope", "has no 'nope'")

    def test_not_a_table(self) -> None:
        self.assert_load_error("usermod:not_a_table", "is a int, not a commandproto")

    def test_installed_set_that_cannot_load(self) -> None:
        self.assert_load_error("brokenset", "cannot load command set 'brokenset'")


class OptionsTests(SynchronousTestCase):
    """
    The options turn into one served table, or stop with one line.
    """

    def setUp(self) -> None:
        TemporaryModules(self)

    def test_served_beside_builtins(self) -> None:
        options = tap.Options()
        options.parseOptions(["--commands", "usermod"])
        self.assertEqual(
            options["table"].names(),
            ["Hello", "Are you there?", "quit", "help", "stats", "echo", "later"],
        )

    def test_two_sets_with_one_name_stop_startup(self) -> None:
        options = tap.Options()
        with self.assertRaises(SystemExit) as caught:
            options.parseOptions(
                ["--commands", "usermod", "--commands", "usermod:other"]
            )
        self.assertIn("'echo'", str(caught.exception.code))

    def test_bad_module_stops_startup(self) -> None:
        with self.assertRaises(SystemExit) as caught:
            tap.Options().parseOptions(["--commands", "nosuchmodule"])
        self.assertTrue(str(caught.exception.code).startswith("twistd commandserver: "))

    def test_timeouts(self) -> None:
        options = tap.Options()
        options.parseOptions(["--command-timeout", "0", "--max-unanswered", "7"])
        self.assertEqual(
            (options["command-timeout"], options["max-unanswered"]), (0, 7)
        )


class RealServerTests(SynchronousTestCase):
    """
    The real ``twistd -n commandserver --commands`` serves a user's module
    from the directory it is started in, and fails at start-up in one line.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        with open(os.path.join(self.directory, "myapp.py"), "w") as f:
            f.write(USER_MODULE)

    def test_serves_user_commands(self) -> None:
        server = ServerProcess(self.directory, "--commands", "myapp:commands")
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"later 0.2\necho hello  world\nhelp echo\nHello\n")
            expected = (
                b"later\r\nhello  world\r\n"
                b"echo TEXT - Answer with the text.\r\nGreetings!\r\n"
            )
            self.assertEqual(read_exactly(sock, len(expected)), expected)

    def run_twistd(self, *options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-c",
                TWISTD,
                "-n",
                "--pidfile=",
                "commandserver",
                *options,
            ],
            cwd=self.directory,
            capture_output=True,
            text=True,
            env=subprocess_environment(),
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def test_unknown_module_is_one_line(self) -> None:
        result = self.run_twistd("--commands", "nosuchmodule")
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "")
        self.assertEqual(
            result.stderr,
            "twistd commandserver: --commands 'nosuchmodule': no installed command "
            "set and no module named 'nosuchmodule' (see --list-commands)\n",
        )

    def test_clash_is_one_line(self) -> None:
        result = self.run_twistd("--commands", "myapp", "--commands", "myapp:other")
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_list_commands(self) -> None:
        result = self.run_twistd("--list-commands")
        self.assertEqual(result.returncode, 0)
        self.assertTrue(result.stdout.strip())
        self.assertNotIn("Traceback", result.stderr)


class ExamplePackageTests(SynchronousTestCase):
    """
    The example package, installed, is served by name through its entry
    point by the real server.
    """

    def setUp(self) -> None:
        if "kvstore" not in {entry.name for entry in installed_sets()}:
            self.skipTest(
                "the example is not installed: pip install ./examples/kvstore "
                "(the README's test command does)"
            )
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)

    def test_served_by_name(self) -> None:
        server = ServerProcess(self.directory, "--commands", "kvstore")
        self.addCleanup(server.stop)
        with server.connect() as sock:
            sock.sendall(b"set k hello  world\nwait 0.1\nget k\nincr n\nHello\n")
            expected = b"OK\r\nwaited 0.1\r\nhello  world\r\n1\r\nGreetings!\r\n"
            self.assertEqual(read_exactly(sock, len(expected)), expected)
