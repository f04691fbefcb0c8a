"""Asyncio helpers for the long-running tasks that talk to Redis."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was asked to stop but is still running.

    redis-py 8 writes every command through ``asyncio.wait_for(..., socket_timeout)``. On
    Python 3.11 ``wait_for`` returns the result instead of raising when a cancellation lands
    just as the write completes (CPython gh-86296, fixed in 3.12), so a ``task.cancel()`` can
    vanish inside any Redis call. A loop around Redis calls calls this once per turn: the
    task's cancellation count still says it was asked to stop, and it stops.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
