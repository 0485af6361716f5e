"""
The client library's examples, in the README and in
``docs/client-library.rst``, run as written against a real server (only
the address differs: ``main`` takes it as an argument).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ._processes import IO_TIMEOUT, SOURCE_ROOT, ServerProcess, subprocess_environment


def example(document: str, name: str) -> str:
    """
    The literal block of ``document`` that starts ``# name``.
    """
    text = Path(SOURCE_ROOT, document).read_text()
    for match in re.finditer(r"::\n\n((?:    .*\n|\n)+)", text):
        block = "\n".join(line[4:] for line in match.group(1).splitlines())
        if block.startswith(f"# {name}\n"):
            return block.strip() + "\n"
    raise AssertionError(f"no example {name} in {document}")


def printed_after(document: str, marker: str) -> str:
    """
    The literal block after the paragraph ``marker``: what the examples
    print.
    """
    text = Path(SOURCE_ROOT, document).read_text()
    start = text.index(marker)
    match = re.compile(r"::\n\n((?:    .*\n|\n)+)").search(text, start)
    assert match is not None
    return "\n".join(line[4:] for line in match.group(1).splitlines()).strip() + "\n"


class ExampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="commandproto-")
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.server = ServerProcess(self.directory)
        self.addCleanup(self.server.stop)

    def run_asyncio(self, source: str) -> str:
        namespace: dict[str, object] = {"__name__": "example"}
        exec(compile(source, "example", "exec"), namespace)
        output = io.StringIO()
        main = namespace["main"]
        with contextlib.redirect_stdout(output):
            asyncio.run(main("127.0.0.1", self.server.port))  # type: ignore[operator]
        return output.getvalue()

    def run_twisted(self, name: str, source: str) -> str:
        Path(self.directory, f"{name}.py").write_text(source)
        endpoint = f"tcp:127.0.0.1:{self.server.port}"
        runner = (
            "import sys; sys.path.insert(0, '.')\n"
            "from twisted.internet.defer import ensureDeferred\n"
            "from twisted.internet.task import react\n"
            f"from {name} import main\n"
            f"react(lambda r: ensureDeferred(main(r, {endpoint!r})))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", runner],
            capture_output=True,
            text=True,
            cwd=self.directory,
            env=subprocess_environment(),
            timeout=IO_TIMEOUT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_readme_examples(self) -> None:
        output = self.run_asyncio(example("README.rst", "example_asyncio.py"))
        output += self.run_twisted(
            "example_twisted", example("README.rst", "example_twisted.py")
        )
        self.assertEqual(
            output,
            printed_after(
                "README.rst", "Each prints (the asyncio one, then the Twisted one)"
            ),
        )

    def test_pool_examples(self) -> None:
        document = "docs/client-library.rst"
        expected = printed_after(document, "Each prints")
        self.assertEqual(
            self.run_asyncio(example(document, "pool_asyncio.py")), expected
        )
        self.assertEqual(
            self.run_twisted("pool_twisted", example(document, "pool_twisted.py")),
            expected,
        )
