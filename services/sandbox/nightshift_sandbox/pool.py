"""A bounded pool of check workers: each worker owns a slot (its sandbox uid); a full queue refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolFullError(RuntimeError):
    """Every worker is busy and the waiting queue is full."""


class CheckPool:
    def __init__(self, workers: int, queue_size: int):
        self.workers = workers
        self.capacity = workers + queue_size
        self._slots: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(workers):
            self._slots.put_nowait(slot)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="check")
        self.pending = 0

    async def run(self, fn: Callable[[int], T]) -> T:
        """Run fn(slot) on a worker thread; raises PoolFullError at once when the queue is full."""
        if self.pending >= self.capacity:
            raise PoolFullError(f"{self.pending} checks in progress or queued (capacity {self.capacity})")
        self.pending += 1
        try:
            slot = await self._slots.get()
            try:
                return await asyncio.get_running_loop().run_in_executor(self._executor, fn, slot)
            finally:
                self._slots.put_nowait(slot)
        finally:
            self.pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
