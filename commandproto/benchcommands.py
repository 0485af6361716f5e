"""
Commands for benchmarks: each exercises one path of the server beyond the
constant commands' cache, and answers something the load tester can check.

Serve them beside the built-ins::

    twistd -n commandserver --commands commandproto.benchcommands

  - ``echo TEXT`` answers TEXT: a command with an argument (the general
    path: find the command, bind the rest of the line, call the handler,
    encode the reply);
  - ``aping`` answers ``PONG`` from an ``async def`` that awaits nothing:
    an asynchronous handler that has its reply at once.
"""

from __future__ import annotations

from .commands.table import CommandTable, Rest

__all__ = ["ASYNC_PONG", "commands"]

ASYNC_PONG = "PONG"

commands = CommandTable()


@commands.command("echo")
def echo(text: Rest) -> str:
    """
    Answer with the text, spaces included.
    """
    return text


@commands.command("aping")
async def aping() -> str:
    """
    Answer PONG from a coroutine that awaits nothing.
    """
    return ASYNC_PONG
