"""
The public API is what ``commandproto.__all__`` names.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import commandproto


class ExportsTests(SynchronousTestCase):
    def test_every_name_in_all_exists(self) -> None:
        missing = [
            name for name in commandproto.__all__ if not hasattr(commandproto, name)
        ]
        self.assertEqual(missing, [])

    def test_all_is_unique(self) -> None:
        self.assertEqual(len(commandproto.__all__), len(set(commandproto.__all__)))

    def test_exports_come_from_the_role_subpackages(self) -> None:
        roles = ("wire", "commands", "server", "client")
        for name in commandproto.__all__:
            value = getattr(commandproto, name)
            module = getattr(value, "__module__", None)
            if module is not None and module.startswith("commandproto"):
                self.assertIn(module.split(".")[1], roles, (name, module))

    def test_library_example_from_readme(self) -> None:
        table = commandproto.CommandTable()
        table.command("ping")(lambda: "pong")
        factory = commandproto.CommandServerFactory(commandproto.with_builtins(table))
        self.assertEqual(factory.commands.dispatch("ping"), commandproto.Reply("pong"))
        self.assertIn("Hello", factory.commands)
