"""Host unit tests: prompt futures wake their callers in the turn that settles them."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import run
from workerbridge.core.futures import PromptFuture, delivering


def test_a_caller_wakes_before_the_delivery_returns():
    async def main() -> list[str]:
        events: list[str] = []
        future = PromptFuture()

        async def caller() -> None:
            events.append(f"woke with {await future}")

        task = asyncio.ensure_future(caller())
        await asyncio.sleep(0)  # the caller now waits on the future

        def deliver() -> None:  # a message callback: no task is running
            with delivering():
                future.set_result("answer")
                events.append("settled")
            events.append("delivered")

        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_soon(lambda: (deliver(), done.set_result(None)))
        await done
        await task
        return events

    assert run(main()) == ["settled", "woke with answer", "delivered"]


def test_outside_a_delivery_the_loop_wakes_the_caller():
    async def main() -> tuple[Any, ...]:
        future = PromptFuture()
        asyncio.get_running_loop().call_later(0.01, future.set_result, 7)
        got = await asyncio.wait_for(future, 1)
        failed = PromptFuture()
        failed.set_exception(KeyError("k"))
        cancelled = PromptFuture()
        cancelled.cancel()
        results = await asyncio.gather(failed, cancelled, return_exceptions=True)
        return got, future.get_loop() is asyncio.get_running_loop(), results

    got, same_loop, (failed, cancelled) = run(main())
    assert got == 7 and same_loop
    assert isinstance(failed, KeyError) and isinstance(cancelled, asyncio.CancelledError)


def test_a_delivery_inside_a_running_task_does_not_reenter_it():
    async def main() -> list[str]:
        events: list[str] = []
        future = PromptFuture()

        async def waiter() -> None:
            await future
            events.append("waiter woke")

        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)
        with delivering():  # e.g. a transport that answers on the caller's own thread
            future.set_result(None)
        events.append("delivery returned inside the running task")
        await task
        return events

    assert run(main()) == ["delivery returned inside the running task", "waiter woke"]
