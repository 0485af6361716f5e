"""
The manual's option reference against the programs' own ``--help``: every
option that ``twistd commandserver --help`` and ``commandproto --help``
print has its entry, with its true default, and no entry describes an
option that does not exist.  (The entries are generated from the
``Options`` classes by ``docs/_ext/optionsref.py``; this renders the
manual's pages through it, as the Sphinx build does, without Sphinx.)
"""

from __future__ import annotations

import ast
import os
import re
import textwrap
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from commandproto import tap
from commandproto.bench import runner
from commandproto.client import cli

from ._docs import ROOT, docs_extension_path, read
from .test_log_formats import LEVELS, PACKAGE, _is_logger

docs_extension_path()
import logevents  # noqa: E402
import optionsref  # noqa: E402

DIRECTIVE = re.compile(
    r"^\.\. commandproto-options:: (\S+)\n   :program: (.+)\n((?:\n|   .*\n)*)",
    re.MULTILINE,
)
PAGES = (
    "docs/reference/server.rst",
    "docs/reference/client.rst",
    "docs/reference/bench.rst",
)
LOGS_PAGE = "docs/reference/logs-metrics.rst"
USAGE_OPTION = re.compile(r"^  (?:-\w, |    )--([a-z][\w-]*)", re.MULTILINE)


def documented(page: str) -> dict[str, tuple[str, list[str]]]:
    """
    What each ``commandproto-options`` directive of a manual page renders,
    by the dotted name of its Options class: its program and reST lines.
    """
    found = {}
    for dotted, program, body in DIRECTIVE.findall(read(page)):
        details = optionsref.parse_details(textwrap.dedent(body).splitlines())
        options = optionsref.gather(optionsref.load(dotted))
        found[dotted] = (program, optionsref.render(program, options, details))
    return found


def help_options(options_class: type[Any]) -> set[str]:
    """
    The long options that ``--help`` prints.
    """
    return set(USAGE_OPTION.findall(str(options_class())))


class OptionReferenceTests(SynchronousTestCase):
    """
    docs/reference/server.rst and client.rst list every option.
    """

    def check(self, page: str, options_class: type[Any], program: str) -> None:
        dotted = f"{options_class.__module__}.{options_class.__name__}"
        rendered = documented(page)
        self.assertIn(dotted, rendered)
        shown_program, lines = rendered[dotted]
        self.assertEqual(shown_program, program)
        entries = {
            match.group(1)
            for line in lines
            if (match := re.match(r"\.\. option:: --([\w-]+)", line))
        }
        expected = help_options(options_class)
        self.assertIn("help", expected)
        self.assertEqual(entries, expected)

    def test_server_options(self) -> None:
        self.check("docs/reference/server.rst", tap.Options, "twistd commandserver")

    def test_client_options(self) -> None:
        self.check("docs/reference/client.rst", cli.Options, "commandproto")

    def test_bench_options(self) -> None:
        self.check("docs/reference/bench.rst", runner.Options, "commandproto-bench")

    def test_prose_defaults_are_the_true_ones(self) -> None:
        for page in PAGES:
            for _, (_, lines) in documented(page).items():
                text = "\n".join(lines)
                for entry in text.split(".. option:: ")[1:]:
                    stated = re.findall(r"(?<!the )default\s+``([^`]+)``", entry)
                    true = re.findall(r"Default: ``([^`]+)``\.", entry)
                    for value in stated:
                        self.assertEqual(
                            [value], true, entry.splitlines()[0] + " in " + page
                        )


class RenderTests(SynchronousTestCase):
    """
    The generator refuses prose that has drifted from the options.
    """

    def test_unknown_option(self) -> None:
        details = optionsref.parse_details(["--no-such-thing N", "   Prose."])
        with self.assertRaises(optionsref.DetailsError):
            optionsref.render("p", optionsref.gather(cli.Options), details)

    def test_flag_given_a_value(self) -> None:
        details = optionsref.parse_details(["--raw MODE", "   Prose."])
        with self.assertRaises(optionsref.DetailsError):
            optionsref.render("p", optionsref.gather(cli.Options), details)

    def test_default_and_short_name(self) -> None:
        details = optionsref.parse_details(
            ["--repeat COUNT", "   Prose.", "--timeout SECONDS", "   More."]
        )
        text = "\n".join(
            optionsref.render("p", optionsref.gather(cli.Options), details)
        )
        entries = {
            entry.splitlines()[0]: entry for entry in text.split(".. option:: ")[1:]
        }
        self.assertNotIn("Default", entries["--repeat COUNT, -r COUNT"])
        self.assertIn("Prose.", entries["--repeat COUNT, -r COUNT"])
        self.assertIn("More.", entries["--timeout SECONDS"])
        self.assertIn("Default: ``5``.", entries["--timeout SECONDS"])


class LogEventsTests(SynchronousTestCase):
    """
    The reference's list of log lines (docs/reference/logs-metrics.rst) has
    every log call of the package, at its level.
    """

    def setUp(self) -> None:
        self.events = logevents.events(PACKAGE)

    def test_every_log_call(self) -> None:
        calls = 0
        for path in PACKAGE.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS - {"emit"}
                    and _is_logger(node.func.value)
                ):
                    calls += 1
        self.assertEqual(len(self.events), calls)

    def test_levels(self) -> None:
        by_format = {event.format: event for event in self.events}
        failed = by_format["[{conn}] command {command!r} failed for {peer}"]
        self.assertEqual((failed.level, failed.traceback), ("error", True))
        self.assertEqual(failed.module, "commandproto.commands.table")
        invalid = by_format["[{conn}] invalid UTF-8 from {peer}"]
        self.assertEqual((invalid.level, invalid.traceback), ("warn", False))

    def test_rendered(self) -> None:
        text = "\n".join(logevents.render(self.events))
        for event in self.events:
            self.assertIn(f"``{event.format}``", text)
        self.assertIn(".. commandproto-log-events::", read(LOGS_PAGE))


class DocstringDialectTests(SynchronousTestCase):
    """
    One docstring dialect: reST with Sphinx roles, no epytext.
    """

    EPYTEXT = re.compile(
        r"(?<![\w$])[LCIB]\{[^{}]*\}|^\s*@(param|return|ivar|type|raise)\b(?!\.)"
    )

    def test_no_epytext(self) -> None:
        found = []
        for top in ("commandproto", "tests", "benchmarks", "examples", "twisted"):
            for directory, _, names in os.walk(os.path.join(ROOT, top)):
                for name in names:
                    if not name.endswith(".py"):
                        continue
                    path = os.path.join(directory, name)
                    with open(path) as f:
                        for number, line in enumerate(f, 1):
                            if self.EPYTEXT.search(line):
                                found.append(f"{path}:{number}: {line.strip()}")
        self.assertEqual(found, [])
