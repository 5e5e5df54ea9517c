"""One inference at a time, behind a bounded queue.

A request takes a place (:meth:`InferenceQueue.admit`) before its body is read, so that the memory of
waiting requests is bounded by the queue's size; when every place is taken it is refused at once with
the seconds after which a place is likely free. The model runs on one worker thread, in arrival order.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """Every place is taken; ``retry_after`` is the client's wait in whole seconds."""

    def __init__(self, retry_after: int, waiting: int) -> None:
        super().__init__(f"the server is busy ({waiting} requests waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class Ticket:
    """A place in the queue; give it back with :meth:`InferenceQueue.release` (or use it as a context)."""

    def __init__(self, queue: "InferenceQueue") -> None:
        self._queue = queue
        self._released = False

    def __enter__(self) -> "Ticket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._release()


class InferenceQueue:
    """Up to ``max_waiting`` admitted requests beyond the one running; one worker thread runs them."""

    def __init__(self, max_waiting: int, on_change: Optional[Callable[[int, int], None]] = None) -> None:
        self.max_waiting = max_waiting
        self._admitted = 0
        self._running = 0
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lama-fast-inference")
        self._on_change = on_change
        # Mean seconds of one inference (exponentially weighted), for Retry-After.
        self.mean_seconds = 1.0

    @property
    def waiting(self) -> int:
        """Requests admitted and not running (reading their body, decoding, or waiting for the model)."""
        return self._admitted - self._running

    @property
    def running(self) -> int:
        return self._running

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the requests ahead, at the mean inference time."""
        return max(1, math.ceil((self.waiting + 1) * self.mean_seconds))

    def admit(self) -> Ticket:
        """A place in the queue, or QueueFull."""
        with self._lock:
            if self._admitted >= self.max_waiting + 1:  # the one running and those waiting
                raise QueueFull(self.retry_after(), self.waiting)
            self._admitted += 1
        self._changed()
        return Ticket(self)

    def _release(self) -> None:
        with self._lock:
            self._admitted -= 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.waiting, self._running)

    async def run(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the worker thread after those submitted before it; its result."""
        return await asyncio.wrap_future(self._worker.submit(self._timed, function))

    def _timed(self, function: Callable[[], T]) -> T:
        with self._lock:
            self._running += 1
        self._changed()
        start = time.perf_counter()
        try:
            return function()
        finally:
            elapsed = time.perf_counter() - start
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * elapsed
            with self._lock:
                self._running -= 1
            self._changed()

    def shutdown(self) -> None:
        """Finish what was submitted, then stop the worker."""
        self._worker.shutdown(wait=True)
