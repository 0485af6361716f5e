"""
The README's examples of commands of your own, run as written: the module
its code blocks build and the complete test it shows.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from commandproto.testing import CommandTester

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.rst")


def code_blocks() -> list[str]:
    """
    Every literal block of the README (the indented text after ``::``).
    """
    with open(README) as f:
        text = f.read()
    blocks = []
    for match in re.finditer(r"::\n\n((?:    .*\n|\n)+)", text):
        lines = match.group(1).splitlines()
        blocks.append("\n".join(line[4:] for line in lines).strip() + "\n")
    return blocks


def readme_module() -> types.ModuleType:
    """
    ``myapp``: the README's first block, and every later block that adds a
    command to it.
    """
    blocks = code_blocks()
    source = [b for b in blocks if b.startswith("# myapp.py")]
    source += [
        b for b in blocks if "@commands.command(" in b and not b.startswith("# myapp")
    ]
    module = types.ModuleType("myapp")
    exec(compile("\n".join(source), "README.rst (myapp)", "exec"), module.__dict__)
    return module


class ReadmeExampleTests(SynchronousTestCase):
    """
    The README's command module and its test, as written.
    """

    def setUp(self) -> None:
        self.myapp = readme_module()
        sys.modules["myapp"] = self.myapp
        self.addCleanup(sys.modules.pop, "myapp", None)

    def test_transcript(self) -> None:
        client = CommandTester(self.myapp.commands).connect()
        self.assertEqual(client.request("echo hello  world"), "hello  world")
        self.assertEqual(client.request("add 2 40"), "42")
        self.assertEqual(client.request("add two 40"), "Error: usage: add A B")
        self.assertEqual(client.request("help add"), "add A B - Add two integers.")
        self.assertTrue(client.request("help").endswith(", echo, add, wait, select"))

    def test_readme_test_passes(self) -> None:
        (test_source,) = [b for b in code_blocks() if b.startswith("# test_myapp.py")]
        namespace: dict[str, Any] = {}
        exec(compile(test_source, "README.rst (test_myapp)", "exec"), namespace)
        tests = {
            name: test
            for name, test in namespace.items()
            if name.startswith("test_") and callable(test)
        }
        self.assertEqual(len(tests), 3)
        make: Callable[..., CommandTester] = CommandTester
        for test in tests.values():
            test(make)


class ReadmeSubclassTests(SynchronousTestCase):
    """
    The README's ``LineReceiver`` subclass, as written, sees every line and
    every reply, and the client is answered right.
    """

    def test_watching_protocol(self) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from ._helpers import LogCapture

        (source,) = [b for b in code_blocks() if b.startswith("# watching.py")]
        namespace: dict[str, Any] = {}
        exec(compile(source, "README.rst (watching)", "exec"), namespace)
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

        with open(README) as f:
            text = " ".join(f.read().split())
        # The variable that points the suite at the post, and that the tests
        # skip without it.
        self.assertIn("COMMANDPROTO_SEED=", text)
        self.assertIn("these tests are skipped", text)
        with open(test_seed.__file__) as f:
            source = f.read()
        self.assertIn('"COMMANDPROTO_SEED"', source)
        self.assertIn("skipTest", source)
