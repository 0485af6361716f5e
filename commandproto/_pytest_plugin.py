"""
The pytest plugin that commandproto installs (a ``pytest11`` entry point):
the ``command_server`` fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .commands.table import CommandTable
    from .testing import CommandTester


@pytest.fixture
def command_server() -> Callable[..., CommandTester]:
    """
    Make in-memory servers for command tables::

        def test_echo(command_server):
            client = command_server(commands).connect()
            assert client.request("echo hi") == "hi"

    Takes the tables to serve beside the built-ins, and the keyword
    arguments of :class:`commandproto.testing.CommandTester`.
    """
    from .testing import CommandTester

    def make(*tables: CommandTable, **settings: Any) -> CommandTester:
        return CommandTester(*tables, **settings)

    return make
