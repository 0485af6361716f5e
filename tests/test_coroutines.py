"""
``async def`` handlers: answered at once when they do not wait, driven by
Twisted when they await Deferreds, and by asyncio (Twisted's asyncio
reactor) when they await asyncio, with cancellation and ``contextvars``
kept.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from commandproto.commands.table import CommandTable, Reply, Session

from ._docs import literal_blocks, read
from ._processes import ServerProcess, run_client

VARIABLE: contextvars.ContextVar[str] = contextvars.ContextVar("v", default="-")


def session(clock: Clock | None = None) -> Session:
    return Session("tcp:192.0.2.1:1", None, clock or Clock())


class NoWaitTests(SynchronousTestCase):
    def test_answered_without_a_deferred(self) -> None:
        table = CommandTable()

        @table.command("now")
        async def now() -> str:
            return "at once"

        (command, arguments) = table.find("now") or (None, None)
        assert command is not None
        self.assertEqual(command.run_text(arguments, session()), "at once")

    def test_a_failure_is_contained(self) -> None:
        table = CommandTable()

        @table.command("bad")
        async def bad() -> str:
            raise ZeroDivisionError()

        self.assertEqual(table.dispatch("bad"), Reply("Error: bad failed"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_its_context_is_its_own(self) -> None:
        table = CommandTable()

        @table.command("set")
        async def set_variable() -> str:
            VARIABLE.set("handler's")
            return VARIABLE.get()

        self.assertEqual(table.dispatch("set"), Reply("handler's"))
        self.assertEqual(VARIABLE.get(), "-")


class RunnerTests(SynchronousTestCase):
    """
    :func:`coroutines.start` runs first steps in runners it keeps for
    reuse: each coroutine gets one to itself, while it runs and while it
    waits.
    """

    def test_a_first_step_that_starts_another(self) -> None:
        from commandproto.commands import coroutines

        async def inner() -> str:
            return "inner"

        async def outer() -> str:
            return f"outer, {coroutines.start(inner())}"

        self.assertEqual(coroutines.start(outer()), "outer, inner")

    def test_one_that_raised_leaves_the_next_alone(self) -> None:
        from twisted.python.failure import Failure

        from commandproto.commands import coroutines

        async def bad() -> str:
            raise ZeroDivisionError()

        async def good() -> str:
            return "good"

        failed = coroutines.start(bad())
        assert isinstance(failed, coroutines.Raised)
        self.assertIsInstance(failed.failure, Failure)
        self.assertIsInstance(failed.failure.value, ZeroDivisionError)
        for _ in range(3):
            self.assertEqual(coroutines.start(good()), "good")

    def test_one_that_waits_keeps_its_runner(self) -> None:
        from commandproto.commands import coroutines

        later: Deferred[str] = Deferred()

        async def waits() -> str:
            return f"{await later} after the wait"

        async def now(n: int) -> str:
            return f"now {n}"

        waiting = coroutines.start(waits())
        assert isinstance(waiting, Deferred)
        answers = [coroutines.start(now(n)) for n in range(3)]
        self.assertEqual(answers, ["now 0", "now 1", "now 2"])
        later.callback("fired")
        self.assertEqual(self.successResultOf(waiting), "fired after the wait")
        self.assertEqual(coroutines.start(now(4)), "now 4")


class EmptyTuple:
    """
    An awaitable whose one step yields an empty tuple: neither a Deferred
    nor an asyncio future, and not a runner's own answer either.
    """

    def __await__(self):  # type: ignore[no-untyped-def]
        yield ()
        return "never"


class StrangeYieldTests(SynchronousTestCase):
    """
    A coroutine that yields what no driver can wait for fails as such,
    whatever it yields.
    """

    def test_an_empty_tuple_fails_its_command(self) -> None:
        from twisted.python.failure import Failure

        from commandproto.commands import coroutines

        async def handler() -> str:
            return str(await EmptyTuple())

        started = coroutines.start(handler())
        assert isinstance(started, Deferred)
        failure = self.failureResultOf(started)
        assert isinstance(failure, Failure)
        self.assertIsInstance(failure.value, TypeError)

    def test_served(self) -> None:
        from commandproto.testing import CommandTester

        table = CommandTable()

        @table.command("t")
        async def t() -> str:
            return str(await EmptyTuple())

        @table.command("w")
        async def w(word: str) -> str:
            return str(await EmptyTuple())

        client = CommandTester(table).connect()
        self.assertEqual(client.request("t"), "Error: t failed")
        self.assertEqual(client.request("w x"), "Error: w failed")
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 2)


class TwistedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.table = CommandTable()
        self.waiting: list[Deferred[str]] = []

        @self.table.command("later")
        async def later() -> str:
            VARIABLE.set("before the wait")
            deferred: Deferred[str] = Deferred()
            self.waiting.append(deferred)
            value = await deferred
            return f"{value}, {VARIABLE.get()}"

    def start(
        self, timeout: float | None = None, clock: Clock | None = None
    ) -> Deferred[Reply]:
        found = self.table.find("later")
        assert found is not None
        result = found[0].run(found[1], session(clock), timeout)
        assert isinstance(result, Deferred)
        return result

    def test_awaits_a_deferred_in_its_own_context(self) -> None:
        reply = self.start()
        self.assertNoResult(reply)
        self.waiting[0].callback("fired")
        self.assertEqual(self.successResultOf(reply), Reply("fired, before the wait"))

    def test_a_failed_deferred_is_raised_where_it_awaits(self) -> None:
        reply = self.start()
        self.waiting[0].errback(ZeroDivisionError())
        self.assertEqual(self.successResultOf(reply), Reply("Error: later failed"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_the_command_timeout_cancels_what_it_awaits(self) -> None:
        clock = Clock()
        reply = self.start(timeout=5, clock=clock)
        clock.advance(5)
        self.assertEqual(self.successResultOf(reply), Reply("Error: later timed out"))
        # Cancelled: nothing else would ever fire it.
        self.assertTrue(self.waiting[0].called)

    def test_an_asyncio_await_without_asyncio_says_what_to_do(self) -> None:
        table = CommandTable()

        @table.command("aio")
        async def aio() -> str:
            await asyncio.sleep(0)
            return "never"

        self.assertEqual(table.dispatch("aio"), Reply("Error: aio failed"))
        (error,) = self.flushLoggedErrors(TypeError)
        self.assertIn("twistd -r asyncio", str(error.value))


class AsyncioTests(SynchronousTestCase):
    """
    Under a running asyncio loop, as Twisted's asyncio reactor runs one.
    """

    def setUp(self) -> None:
        self.table = CommandTable()

        @self.table.command("mixed")
        async def mixed() -> str:
            VARIABLE.set("mine")
            await asyncio.sleep(0.001)
            deferred: Deferred[str] = Deferred()
            asyncio.get_running_loop().call_soon(deferred.callback, "deferred")
            value = await deferred
            return f"{value}, {VARIABLE.get()}"

        @self.table.command("slow")
        async def slow() -> str:
            await asyncio.sleep(60)
            return "never"

    def answer(self, name: str, timeout: float | None, clock: Clock) -> Reply:
        async def main() -> Reply:
            found = self.table.find(name)
            assert found is not None
            result = found[0].run(found[1], session(clock), timeout)
            assert isinstance(result, Deferred)
            asyncio.get_running_loop().call_later(0.05, clock.advance, 10)
            return await result.asFuture(asyncio.get_running_loop())

        return asyncio.run(asyncio.wait_for(main(), 5))

    def test_awaits_asyncio_and_deferreds(self) -> None:
        self.assertEqual(self.answer("mixed", None, Clock()), Reply("deferred, mine"))

    def test_the_command_timeout_cancels_the_task(self) -> None:
        self.assertEqual(
            self.answer("slow", 5, Clock()), Reply("Error: slow timed out")
        )


def asyncio_commands() -> str:
    """
    The manual's example of a handler that awaits asyncio, as written.
    """
    (source,) = [
        block
        for block in literal_blocks(read("docs/reference/commands.rst"))
        if block.startswith("# napping.py")
    ]
    return source


class AsyncioReactorProcessTests(SynchronousTestCase):
    """
    The real ``twistd -n -r asyncio commandserver`` runs the manual's
    handler that awaits asyncio.
    """

    def test_asyncio_handler(self) -> None:
        directory = tempfile.mkdtemp(prefix="commandproto-")
        with open(os.path.join(directory, "napping.py"), "w") as f:
            f.write(asyncio_commands())
        server = ServerProcess(
            directory,
            "--commands",
            "napping:commands",
            twistd_options=("-r", "asyncio"),
        )
        self.addCleanup(server.stop)
        result = run_client(["--port", str(server.port), "--raw", "nap", "Hello"], b"")
        self.assertEqual(
            (result.returncode, result.stdout.decode().splitlines()),
            (0, ["rested", "Greetings!"]),
            result.stderr.decode(errors="replace") + sys.executable,
        )


class ServedTests(SynchronousTestCase):
    """
    The same, through a server: an ``async def`` of plain words takes the
    dispatcher's quick way (``Command.quick``), and answers as any other.
    """

    def setUp(self) -> None:
        from commandproto import CommandError
        from commandproto.testing import CommandTester

        table = CommandTable()
        self.later: Deferred[str] = Deferred()

        @table.command("now")
        async def now(key: str) -> str:
            VARIABLE.set(key)
            return f"at once {key}"

        @table.command("bad")
        async def bad(key: str) -> str:
            raise ZeroDivisionError(key)

        @table.command("refuse")
        async def refuse(key: str) -> str:
            raise CommandError(f"no {key}")

        @table.command("wait")
        async def wait(key: str) -> str:
            return f"{await self.later} {key}"

        self.tester = CommandTester(table)
        self.client = self.tester.connect()

    def test_answered_at_once(self) -> None:
        self.assertEqual(self.client.request("now k"), "at once k")
        self.assertEqual(VARIABLE.get(), "-")

    def test_a_failure_is_contained(self) -> None:
        self.assertEqual(self.client.request("bad k"), "Error: bad failed")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.client.request("now k"), "at once k")

    def test_a_command_error_is_the_clients(self) -> None:
        self.assertEqual(self.client.request("refuse k"), "Error: no k")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_a_wait_holds_the_lines_behind_it(self) -> None:
        self.client.send("wait k", "now j")
        self.assertEqual(self.client.replies(), [])
        self.later.callback("later")
        self.tester.advance(0)
        self.assertEqual(self.client.replies(), ["later k", "at once j"])
