"""Long-running Redis tasks stop when cancelled, even when a Redis call swallowed the
cancellation (redis-py 8 writes through asyncio.wait_for, which on Python 3.11 can return
instead of raising: CPython gh-86296)."""

import asyncio
import uuid

import pytest

from realtime import engine, members, presence
from realtime.aio import raise_if_cancelled

pytestmark = pytest.mark.asyncio


async def swallowing_call() -> None:
    """A call that loses a cancellation the way Python 3.11's wait_for can."""
    try:
        await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        pass


async def test_a_loop_stops_although_a_call_swallowed_its_cancellation():
    async def loop() -> None:
        while True:
            raise_if_cancelled()
            await swallowing_call()

    task = asyncio.get_running_loop().create_task(loop())
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done and task.cancelled()


async def test_a_task_that_was_not_cancelled_keeps_running():
    turns = 0

    async def loop() -> None:
        nonlocal turns
        while turns < 5:
            raise_if_cancelled()
            async with asyncio.timeout(0.001):  # timeouts that expire are not cancellations
                await asyncio.sleep(1)
            turns += 1

    with pytest.raises(TimeoutError):
        await loop()
    assert turns == 0
    raise_if_cancelled()  # this test's own task was never cancelled


@pytest.mark.parametrize("turns", [0, 3, 6, 7, 8, 12, 16, 21, 30])
async def test_the_hub_and_its_companions_stop_wherever_the_cancel_lands(redis_url, turns):
    # The cancel lands at a different point of connecting, subscribing and the first
    # commands each time (points where it was swallowed before the fix: 6-8, 11-13, 16,
    # 18-25, 31-32); every task must end (a hung one hung the test run's teardown).
    hub = engine.Hub(
        redis_url, f"test-{uuid.uuid4().hex[:8]}", companions=(presence.report, members.run)
    )
    hub.start()
    for _ in range(turns):
        await asyncio.sleep(0)
    tasks = [hub.task, *hub.companion_tasks]
    await hub.stop(timeout=3)
    assert all(task.done() for task in tasks)
