"""The open connections of one port, its draining flag, and the sweeper that closes idle, slow
and stuck clients (the shape of uvicorn's ``ServerState``: the protocol objects register here,
the server owns it).

The sweeper compares counters once every few seconds (:class:`Liveness`, one per
connection), so the request path never reads a clock for the idle/header timeout. A connection
with no complete request for ``keepalive_s`` is closed; one whose answers do not drain for as
long, or that is still closing a sweep after it was closed, is aborted and the reason counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Protocol

SWEEP_S = 5.0  # at most; shorter for short keep-alive timeouts (tests)


class Swept(Protocol):
    """What the set needs of a connection."""

    def sweep(self, limit: int) -> str | None: ...

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class Liveness:
    """What the sweeper remembers of one connection from one sweep to the next."""

    __slots__ = (
        "closing_sweeps",
        "idle_sweeps",
        "last_buffered",
        "resumed",
        "served_at_last_sweep",
        "stalled_sweeps",
    )

    def __init__(self) -> None:
        self.served_at_last_sweep = 0  # answers written by the last sweep
        self.idle_sweeps = 0  # sweeps in a row with no answer written
        self.last_buffered = 0  # bytes in the write buffer at the last sweep
        self.stalled_sweeps = 0  # sweeps in a row with that buffer not shrinking
        self.resumed = False  # the buffer drained below its low mark since the last sweep
        self.closing_sweeps = 0  # sweeps since the connection was closed

    def check(self, limit: int, closing: bool, buffered: int, served: int) -> str | None:
        """One sweep; ``limit`` sweeps make the idle timeout. What to do with the connection:

        * ``"idle"``: no complete request for ``limit`` sweeps (idle keep-alive, or a head
          dribbled to hold the connection): close it;
        * ``"stalled"``: answers waiting in the write buffer that did not shrink for over
          ``limit`` sweeps (a client that sends and never reads): abort it;
        * ``"closing"``: closed at an earlier sweep but still not gone (``close`` waits for the
          write buffer to drain, which a non-reader never lets happen): abort it;
        * None: leave it.
        """
        if closing:
            self.closing_sweeps += 1
            return "closing" if self.closing_sweeps > 1 else None
        if buffered and buffered >= self.last_buffered and not self.resumed:
            self.stalled_sweeps += 1
        else:
            self.stalled_sweeps = 0
        self.last_buffered = buffered
        self.resumed = False
        if self.stalled_sweeps > limit:
            return "stalled"
        if served != self.served_at_last_sweep:
            self.served_at_last_sweep = served
            self.idle_sweeps = 0
            return None
        self.idle_sweeps += 1
        return "idle" if self.idle_sweeps >= limit else None


class Connections:
    """The open connections, whether the port is draining, and the idle/drain sweeper."""

    def __init__(self, *, keepalive_s: float, aborted: Callable[[str], None]) -> None:
        self.keepalive_s = keepalive_s
        self.draining = False
        self._open: set[Swept] = set()
        self._aborted = aborted  # counts an abort by its reason
        self._all_closed = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Swept]:
        return iter(list(self._open))

    def add(self, connection: Swept) -> None:
        self._open.add(connection)

    def discard(self, connection: Swept) -> None:
        self._open.discard(connection)
        if not self._open:
            self._all_closed.set()

    def start_sweeping(self, name: str) -> None:
        """Start the sweeper on the running loop (``name`` names its task)."""
        loop = asyncio.get_running_loop()
        self._sweeper = loop.create_task(self._sweep(), name=f"{name}:idle-sweep")

    async def close(self, *, timeout_s: float) -> None:
        """Drain: stop sweeping; close idle connections at once and busy ones after their
        answer; abort what is left after ``timeout_s`` (counted as ``"shutdown"``)."""
        self.draining = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for connection in self:
            connection.drain()
        if self._open:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for connection in self:
            connection.abort()
            self._aborted("shutdown")

    async def _sweep(self) -> None:
        """Every few seconds, one :meth:`Swept.sweep` per connection; ``limit`` sweeps make
        ``keepalive_s``."""
        period = min(SWEEP_S, self.keepalive_s / 3)
        limit = math.ceil(self.keepalive_s / period)
        while True:
            await asyncio.sleep(period)
            self.sweep_once(limit)

    def sweep_once(self, limit: int) -> None:
        """One pass over the open connections; an abort is counted by its reason."""
        for connection in self:
            reason = connection.sweep(limit)
            if reason is not None:
                self._aborted(reason)
