"""Admission of fetches: at most ``STARTING`` fetches are in their first ``SLOT_S`` seconds at
any time.

Without it, 10,000 issuers starting (or refreshed) together put 10,000 requests on one event
loop at once; each then takes longer than its own timeout, fails, and retries a second later
with the others: the mirror never settles. A slot is held until the fetch finishes or for
``SLOT_S`` at most, so an upstream that hangs delays the others by ``SLOT_S / STARTING``
(2.5 ms), never by its timeout; and a fetch's timeout starts once it is admitted, so waiting
for a slot never fails it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

STARTING = 100
SLOT_S = 0.25


class Admission:
    """At most ``limit`` fetches in their first ``slot_s`` seconds; first come, first served.

    A plain FIFO of futures rather than ``asyncio.Semaphore``, whose waiters remove
    themselves from a deque and re-scan it: with 10,000 fetches queued that was 4 % of the
    CPU of a refresh cycle (py-spy)."""

    def __init__(self, limit: int = STARTING, slot_s: float = SLOT_S) -> None:
        self._free = limit
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._slot_s = slot_s

    async def enter(self) -> Callable[[], None]:
        """Wait for a slot; the returned function gives it back (at most once, early or not:
        the slot also comes back by itself after ``slot_s``)."""
        loop = asyncio.get_running_loop()
        if self._free > 0 and not self._queue:
            self._free -= 1
        else:
            waiter = loop.create_future()
            self._queue.append(waiter)
            try:
                await waiter  # resolved by _hand_over: the slot is ours
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._hand_over()  # handed a slot just as we were cancelled: pass it on
                raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                handle.cancel()
                self._hand_over()

        handle = loop.call_later(self._slot_s, release)
        return release

    def _hand_over(self) -> None:
        """A slot came back: give it to the oldest waiter still waiting, or keep it."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():  # a waiter cancelled while queued is skipped
                waiter.set_result(None)
                return
        self._free += 1
