"""
The optional mypyc accelerator (``COMMANDPROTO_MYPYC=1``, see
``docs/howto/accelerator.rst``): the tests run against whichever build is
imported, and this one says which, so that a run meant for the compiled
modules cannot pass on the pure-Python ones unnoticed (``.ci/run`` sets
``COMMANDPROTO_EXPECT_COMPILED=1`` for it), nor the default run on compiled
ones.
"""

from __future__ import annotations

import os
from importlib import import_module

from twisted.trial.unittest import SynchronousTestCase

COMPILED = (
    "commandproto.server.dispatch",
    "commandproto.server.answering",
    "commandproto.server.replies",
    "commandproto.wire.codec",
)


def compiled(name: str) -> bool:
    """
    Whether a module was imported from an extension module.
    """
    return not str(import_module(name).__file__).endswith(".py")


class AcceleratorTests(SynchronousTestCase):
    def test_compiled_only_where_expected(self) -> None:
        expected = os.environ.get("COMMANDPROTO_EXPECT_COMPILED") == "1"
        self.assertEqual(
            {name: compiled(name) for name in COMPILED},
            dict.fromkeys(COMPILED, expected),
            "COMMANDPROTO_EXPECT_COMPILED=1 is for a build with "
            "COMMANDPROTO_MYPYC=1; the default build is pure Python",
        )

    def test_the_list_matches_setup_py(self) -> None:
        from pathlib import Path

        setup = (Path(__file__).parent.parent / "setup.py").read_text()
        for name in COMPILED:
            self.assertIn(f'"{name.replace(".", "/")}.py"', setup)
