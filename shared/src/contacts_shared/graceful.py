"""Units of work that a shutdown lets finish instead of cutting in half.

A loop that is cancelled while it awaits `InFlight.run(unit)` stops at once, but the unit
itself (sending an email and recording it, publishing an outbox batch and deleting it) runs
to its end; `wait` gives the running units a bounded time to do so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class InFlight:
    def __init__(self) -> None:
        self._units: set[asyncio.Task[object]] = set()

    async def run(self, unit: Callable[[], Awaitable[T]]) -> T:
        task: asyncio.Task[T] = asyncio.ensure_future(unit())
        self._units.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._forget)  # type: ignore[arg-type]
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Task[object]) -> None:
        self._units.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting loop (if still there) logs it

    async def wait(self, timeout: float) -> int:
        """Wait for the running units (at most `timeout` s); returns how many were still running."""
        if not self._units:
            return 0
        _, pending = await asyncio.wait(set(self._units), timeout=timeout)
        for task in pending:
            task.cancel()
        return len(pending)
