"""
The examples that README.rst and the manual's tutorial tell a reader to run,
run as written: the modules their code blocks build, the tests they show,
and the transcripts of what the server answers.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from commandproto import CommandTable
from commandproto.testing import CommandTester

from ._docs import literal_blocks, read, transcript
from ._processes import ServerProcess, run_client, subprocess_environment

TUTORIAL = "docs/tutorial/index.rst"


def module_from(name: str, blocks: list[str], path: str) -> types.ModuleType:
    """
    ``name``: the block that starts ``# name.py``, and every later block that
    adds a command to it.
    """
    source = [b for b in blocks if b.startswith(f"# {name}.py")]
    source += [
        b for b in blocks if "@commands.command(" in b and not b.startswith("# ")
    ]
    module = types.ModuleType(name)
    exec(compile("\n".join(source), f"{path} ({name})", "exec"), module.__dict__)
    return module


def check_transcript(
    case: SynchronousTestCase, pairs: list[tuple[str, str]], *tables: CommandTable
) -> None:
    """
    Each request of a transcript gets the reply it shows (``stats``, whose
    numbers vary, only its shape).
    """
    case.assertTrue(pairs)
    client = CommandTester(*tables).connect()
    for request, reply in pairs:
        if request == "stats":
            case.assertEqual(client.request(request).split("=")[0], reply.split("=")[0])
        else:
            case.assertEqual((request, client.request(request)), (request, reply))


class TutorialTests(SynchronousTestCase):
    """
    The tutorial's command module, its transcript, its test and its use from
    code, as written.
    """

    def setUp(self) -> None:
        self.blocks = literal_blocks(read(TUTORIAL))
        self.myapp = module_from("myapp", self.blocks, TUTORIAL)
        sys.modules["myapp"] = self.myapp
        self.addCleanup(sys.modules.pop, "myapp", None)

    def test_transcript(self) -> None:
        [shown] = [b for b in self.blocks if b.startswith("-> echo")]
        pairs = transcript(shown)
        # Its help line was written before wait and select join the module.
        *pairs, (request, reply) = pairs
        check_transcript(self, pairs, self.myapp.commands)
        client = CommandTester(self.myapp.commands).connect()
        self.assertEqual(client.request(request), reply + ", wait, select")

    def test_tutorial_test_passes(self) -> None:
        (test_source,) = [b for b in self.blocks if b.startswith("# test_myapp.py")]
        namespace: dict[str, Any] = {}
        exec(compile(test_source, f"{TUTORIAL} (test_myapp)", "exec"), namespace)
        tests = {
            name: test
            for name, test in namespace.items()
            if name.startswith("test_") and callable(test)
        }
        self.assertEqual(len(tests), 3)
        make: Callable[..., CommandTester] = CommandTester
        for test in tests.values():
            test(make)

    def test_use_from_code(self) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(read(TUTORIAL), {}, TUTORIAL, TUTORIAL, 0)
        self.assertTrue(test.examples)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        result = runner.run(test, out=lambda text: None)
        self.assertEqual((result.failed, result.attempted), (0, len(test.examples)))


class TutorialProcessTests(SynchronousTestCase):
    """
    The tutorial's shell commands, run: the real ``twistd -n commandserver``
    started as it says, in a directory holding its ``myapp.py``, and the real
    client run as its ``$`` lines show, printing what they show.
    """

    def setUp(self) -> None:
        text = read(TUTORIAL)
        self.blocks = literal_blocks(text)
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        source = [b for b in self.blocks if b.startswith("# myapp.py")]
        source += [
            b
            for b in self.blocks
            if "@commands.command(" in b and not b.startswith("# ")
        ]
        with open(os.path.join(self.directory, "myapp.py"), "w") as f:
            f.write("\n".join(source))

    def test_serve_and_call(self) -> None:
        [serve] = [b for b in self.blocks if "commandserver --commands" in b]
        words = shlex.split(serve)
        self.assertEqual(
            words[:4], [".venv/bin/twistd", "-n", "--pidfile=", "commandserver"]
        )
        server = ServerProcess(self.directory, *words[4:])
        self.addCleanup(server.stop)
        sessions = [b for b in self.blocks if b.startswith("$ .venv/bin/commandproto")]
        self.assertEqual(len(sessions), 2)
        for session in sessions:
            command, *shown = session.strip().split("\n")
            arguments = shlex.split(command[2:])[1:]
            result = run_client(["--port", str(server.port), *arguments], b"")
            self.assertEqual(
                (command, result.returncode, result.stdout.decode().splitlines()),
                (command, 0, shown),
            )


LEGACY_LISTENING = re.compile(
    r"listening on tcp:127\.0\.0\.1:(\d+) \(the seed's wire format\)"
)
# A stand-in for the installed client, on PATH: the real one, pointed at
# the test's servers (the seed's wire format for --legacy).
CLIENT_SCRIPT = """\
#!/bin/sh
port={port}
for argument in "$@"; do
    [ "$argument" = --legacy ] && port={legacy_port}
done
exec {python} -m commandproto.client --port "$port" "$@"
"""


class ManualShellTests(SynchronousTestCase):
    """
    The manual's shell sessions with the client (``$ commandproto ...`` and
    ``$ printf ... | commandproto ...``), run by a shell against real servers,
    print what they show.  The interactive one (no arguments, a terminal) is
    tested in test_terminal.py.
    """

    PAGES = ("docs/reference/client.rst", "docs/howto/seed.rst")

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        server = ServerProcess(self.directory)
        self.addCleanup(server.stop)
        legacy = ServerProcess(
            self.directory,
            "--listen",
            f"unix:{self.directory}/server.sock",
            "--legacy-listen",
            "tcp:0:interface=127.0.0.1",
            wait=False,
        )
        self.addCleanup(legacy.stop)
        match = LEGACY_LISTENING.search(legacy.wait_for_log(LEGACY_LISTENING))
        assert match is not None
        bin_directory = os.path.join(self.directory, "bin")
        os.mkdir(bin_directory)
        script = os.path.join(bin_directory, "commandproto")
        with open(script, "w") as f:
            f.write(
                CLIENT_SCRIPT.format(
                    port=server.port,
                    legacy_port=match.group(1),
                    python=shlex.quote(sys.executable),
                )
            )
        os.chmod(script, 0o755)
        self.path = bin_directory + os.pathsep + os.environ.get("PATH", "")

    def sessions(self) -> list[tuple[str, list[str]]]:
        found = []
        for page in self.PAGES:
            for block in literal_blocks(read(page)):
                command, *shown = block.strip().split("\n")
                if (
                    command.startswith("$ ")
                    and "commandproto " in command + " "
                    and command != "$ commandproto"
                ):
                    found.append((command[2:], shown))
        return found

    def test_sessions(self) -> None:
        sessions = self.sessions()
        self.assertEqual(len(sessions), 5)
        for command, shown in sessions:
            result = subprocess.run(
                ["sh", "-c", command],
                capture_output=True,
                env={**subprocess_environment(), "PATH": self.path},
                timeout=60,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
            )
            self.assertEqual(
                (command, result.returncode, result.stdout.decode().splitlines()),
                (command, 0, shown),
            )


class ReadmeTests(SynchronousTestCase):
    """
    The README's protocol transcript and its command of your own.
    """

    def setUp(self) -> None:
        self.blocks = literal_blocks(read("README.rst"))

    def test_protocol_transcript(self) -> None:
        [shown] = [b for b in self.blocks if b.startswith("-> Hello")]
        check_transcript(self, transcript(shown), CommandTable())

    def test_command_of_your_own(self) -> None:
        greet = module_from("greet", self.blocks, "README.rst")
        [shown] = [b for b in self.blocks if b.startswith("-> greet")]
        check_transcript(self, transcript(shown), greet.commands)

    def test_short(self) -> None:
        self.assertLess(len(read("README.rst").splitlines()), 250)

    def test_valid_rest(self) -> None:
        """
        It renders without a warning (it is the package's long description).
        """
        try:
            from docutils.core import publish_doctree
            from docutils.utils import SystemMessage
        except ImportError:
            raise SkipTest(
                "docutils is not installed (pip install '.[docs]')"
            ) from None
        try:
            publish_doctree(
                read("README.rst"),
                settings_overrides={"halt_level": 2, "report_level": 5},
            )
        except SystemMessage as e:
            self.fail(f"README.rst: {e}")


class ProtocolReferenceTests(SynchronousTestCase):
    """
    The reference's transcript of the built-in commands.
    """

    def test_transcript(self) -> None:
        blocks = literal_blocks(read("docs/reference/protocol.rst"))
        [shown] = [b for b in blocks if b.startswith("-> Hello")]
        check_transcript(self, transcript(shown), CommandTable())


class SubclassExampleTests(SynchronousTestCase):
    """
    The API reference's ``LineReceiver`` subclass, as written, sees every
    line and every reply, and the client is answered right.
    """

    def test_watching_protocol(self) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from ._helpers import LogCapture

        blocks = literal_blocks(read("docs/reference/api.rst"))
        (source,) = [b for b in blocks if b.startswith("# watching.py")]
        namespace: dict[str, Any] = {}
        exec(compile(source, "api.rst (watching)", "exec"), namespace)
        factory = namespace["factory"]
        factory.clock = Clock()
        logged = LogCapture(self)
        protocol = factory.buildProtocol(None)
        self.assertIsInstance(protocol, namespace["Watching"])
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"Hello\nnope\n")
        self.assertEqual(transport.value(), b"Greetings!\r\nUnknown command.\r\n")
        self.assertEqual(
            [m for m in logged.messages() if "<-" in m or "->" in m],
            # One read's lines, then their replies, sent together.
            [
                "[1] <- b'Hello'",
                "[1] <- b'nope'",
                "[1] -> b'Greetings!'",
                "[1] -> b'Unknown command.'",
            ],
        )


class ReadmePromiseTests(SynchronousTestCase):
    """
    What the README says about the test suite is how it runs.
    """

    def test_says_when_the_seed_scripts_run(self) -> None:
        from . import test_seed

        text = " ".join(read("README.rst").split())
        # The variable that points the suite at the post, and that the tests
        # skip without it.
        self.assertIn("COMMANDPROTO_SEED=", text)
        self.assertIn("these tests are skipped", text)
        with open(test_seed.__file__) as f:
            source = f.read()
        self.assertIn('"COMMANDPROTO_SEED"', source)
        self.assertIn("skipTest", source)
