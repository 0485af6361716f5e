"""
Running an ``async def`` handler: at once, and handed to an event loop only
when it really waits.

Most handlers written as ``async def`` return without awaiting anything that
is not ready (a cache hit, a value at hand).  Wrapping every call in
``Deferred.fromCoroutine`` costs microseconds; so the coroutine's first step
runs here, directly, and only a coroutine that is still waiting after it is
driven on:

- by Twisted (:class:`_TwistedDriver`), awaiting Deferreds, when no asyncio
  event loop runs (Twisted's default reactors);
- by an asyncio task, when the reactor is Twisted's asyncio reactor
  (``twistd -r asyncio``): then the handler may await asyncio futures and
  tasks (most Python libraries: database drivers, HTTP clients) and Deferreds
  alike.

Every step runs in one :class:`contextvars.Context`, a copy of the caller's,
as ``Deferred.fromCoroutine`` does; cancelling the returned Deferred cancels
what the coroutine awaits.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


@types.coroutine
def _runner() -> Generator[Any, Any, None]:
    """
    Runs coroutines sent to it, one after another, through ``yield from``:
    a coroutine that returns hands its value back as what the runner yields
    next, without a ``StopIteration`` being made and caught (which costs
    about as much as making the coroutine); one that waits leaves this
    runner inside it, resumed through :class:`_Resumed`.  Whether a
    coroutine has returned is told by its frame, which is gone once it has.
    Sent to first with ``None``.
    """
    coroutine = yield None
    while True:
        coroutine = yield (yield from coroutine)


def new_runner() -> Callable[[object], object]:
    runner = _runner()
    runner.send(None)
    return runner.send


#: Runners at rest, each ready for the next coroutine (kept as their bound
#: ``send``, which is what a first step calls): taken for a first step and
#: given back once it has returned, so a handler that starts another
#: command's coroutine in its first step gets a runner of its own.  A few
#: are made at once: a list that never empties is never reallocated as it
#: shrinks and grows by one.
_idle: list[Callable[[object], object]] = [new_runner() for _ in range(4)]
take_runner = _idle.pop
give_back_runner = _idle.append


class Raised:
    """
    What :func:`start` answers for a coroutine that raised in its first
    step.

    :ivar failure: what it raised.
    """

    __slots__ = ("failure",)

    def __init__(self, failure: Failure) -> None:
        self.failure = failure


def start(coroutine: Coroutine[Any, Any, Any]) -> object:
    """
    Run a coroutine's first step now.

    :returns: its value if it returned without waiting (the common case
        answers with no wrapping to make or undo); a :class:`Raised` if it
        raised; else a ``Deferred`` that fires with what it returns once it
        has finished waiting.  (A coroutine that returns a ``Deferred`` is
        answered with it: either way its value is what the Deferred fires
        with.)
    """
    # The dispatcher's quick path (commandproto.server.dispatch) does the
    # same as this function, inline: a Python call costs about a sixth of
    # an ``async def`` command's first step.
    context = contextvars.copy_context()
    try:
        send = take_runner()
    except IndexError:
        send = new_runner()
    try:
        yielded = context.run(send, coroutine)
    except BaseException:
        # The coroutine raised, and its runner ended with it.
        return Raised(Failure())
    if coroutine.cr_frame is None:  # type: ignore[attr-defined]
        give_back_runner(send)
        return yielded
    return go_on(send, coroutine, context, yielded)


def go_on(
    send: Callable[[object], object],
    coroutine: Coroutine[Any, Any, Any],
    context: contextvars.Context,
    yielded: object,
) -> Deferred[Any]:
    """
    Drive on a coroutine whose first step, run by :func:`start` in
    ``context`` with the runner whose ``send`` is ``send``, yielded
    ``yielded`` (it waits).

    :returns: a Deferred that fires with what it returns.
    """
    waiting = _Resumed(send.__self__, coroutine)  # type: ignore[attr-defined]
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _TwistedDriver(waiting, context).run(yielded)
    task = context.run(loop.create_task, _on_asyncio(waiting, yielded, loop))
    return Deferred.fromFuture(task)


class _Resumed:
    """
    A coroutine its first step left waiting inside a runner, with the
    methods of a coroutine that the drivers below use: resuming it resumes
    the runner, and its return is a ``StopIteration`` again.
    """

    __slots__ = ("_coroutine", "_runner")

    def __init__(
        self, runner: Generator[Any, Any, None], coroutine: Coroutine[Any, Any, Any]
    ) -> None:
        self._runner = runner
        self._coroutine = coroutine

    def send(self, value: object) -> object:
        return self._returned(self._runner.send(value))

    def throw(self, *error: Any) -> object:
        return self._returned(self._runner.throw(*error))

    def close(self) -> None:
        self._runner.close()

    def _returned(self, yielded: object) -> object:
        """
        What the coroutine yielded; or, if it returned, its value raised as
        ``StopIteration``, as a coroutine's own ``send`` does.
        """
        if self._coroutine.cr_frame is None:  # type: ignore[attr-defined]
            raise StopIteration(yielded)
        return yielded


class _TwistedDriver:
    """
    Drives a started coroutine that awaits Deferreds.
    """

    def __init__(self, coroutine: _Resumed, context: contextvars.Context) -> None:
        self._coroutine = coroutine
        self._context = context
        self._waiting: Deferred[Any] | None = None
        self.result: Deferred[Any] = Deferred(self._cancel)

    def _cancel(self, result: Deferred[Any]) -> None:
        # What the coroutine waits for fails with CancelledError, which it
        # sees where it awaits (and may catch).
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()

    def run(self, yielded: object) -> Deferred[Any]:
        """
        Go on from the coroutine's last step, which yielded ``yielded``.
        """
        while True:
            error: BaseException | None = None
            if isinstance(yielded, Deferred):
                if not yielded.called or yielded.paused:
                    self._waiting = yielded
                    yielded.addBoth(self._fired)
                    return self.result
                # Already fired: its await takes the result at once.
            else:
                error = TypeError(
                    f"await of {type(yielded).__name__} needs Twisted's asyncio "
                    "reactor (twistd -r asyncio)"
                )
            done, yielded = self._step(error)
            if done:
                return self.result

    def _step(self, error: BaseException | Failure | None) -> tuple[bool, object]:
        """
        Resume the coroutine (throwing ``error`` into it, if any).

        :returns: whether it has finished, and what it yielded if not.
        """
        context, coroutine = self._context, self._coroutine
        try:
            if error is None:
                return False, context.run(coroutine.send, None)
            if isinstance(error, Failure):
                return False, context.run(error.throwExceptionIntoGenerator, coroutine)
            return False, context.run(coroutine.throw, error)
        except StopIteration as stop:
            if not self.result.called:
                self.result.callback(stop.value)
        except BaseException:
            if not self.result.called:
                self.result.errback(Failure())
        return True, None

    def _fired(self, result: object) -> None:
        # The awaited Deferred has its result.  A value is still its current
        # result, which the coroutine's await takes; a failure is thrown into
        # the coroutine (and so handled: nothing is left to log).
        self._waiting = None
        done, yielded = self._step(result if isinstance(result, Failure) else None)
        if not done:
            self.run(yielded)


@types.coroutine
def _on_asyncio(
    coroutine: _Resumed,
    yielded: object,
    loop: asyncio.AbstractEventLoop,
) -> Generator[Any, Any, Any]:
    """
    Go on running a started coroutine as an asyncio task: what it awaits of
    asyncio's is passed to the task as it is; a Deferred it awaits is waited
    for through a future of our own (which leaves the Deferred's result to
    the coroutine's await).
    """
    while True:
        waiting: Deferred[Any] | None = None
        try:
            if isinstance(yielded, Deferred):
                waiting = yielded
                yield from _future_for(yielded, loop).__await__()
            else:
                yield yielded
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as error:
            if waiting is not None and isinstance(error, asyncio.CancelledError):
                # Cancel what it awaits: the Deferred fails with Twisted's
                # CancelledError, which the coroutine sees as it resumes.
                waiting.cancel()
                step_error: BaseException | None = None
            else:
                step_error = error
        else:
            step_error = None
        try:
            if step_error is None:
                yielded = coroutine.send(None)
            else:
                yielded = coroutine.throw(step_error)
        except StopIteration as stop:
            return stop.value


def _future_for(
    deferred: Deferred[Any], loop: asyncio.AbstractEventLoop
) -> asyncio.Future[None]:
    """
    A future that is done when ``deferred`` fires, leaving its result alone.
    """
    future: asyncio.Future[None] = loop.create_future()

    def fired(result: object) -> object:
        if not future.done():
            future.set_result(None)
        return result

    deferred.addBoth(fired)
    return future
