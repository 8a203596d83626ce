"""Scheduling for one issuer: jittered intervals, backoff, single-flight, triggered refresh.

Each issuer runs its own task; nothing one issuer does (hang, fail, raise) can delay another,
because the only shared things are the client sessions and the event loop, and every fetch
has a hard total timeout.

Schedule (:func:`after_success` and :func:`after_failure` are pure; ``/status`` shows the
reason each issuer's next refresh is when it is):

  * ``start``: at start, the first fetch of each issuer comes within
    ``min(1 s, 5 % of refresh_interval)``;
  * ``interval``: after a success, the next fetch is ``refresh_interval`` x uniform(0.9, 1.1)
    later, so many issuers drift apart instead of fetching in lockstep;
  * ``cache-control``: unless the upstream's answer (200 or 304) says it is fresh for less
    (``max-age`` less ``Age``, cachecontrol.py): then the next fetch comes ``CACHE_MARGIN_S``
    after that, plus uniform(0, ``min(CACHE_SPREAD_S, 10 % of refresh_interval)``). Never
    before: a fetch before the upstream's own deadline would get the old keys again. The
    margin covers whole-second rounding (Dex truncates ``max-age``) and an upstream clock a
    little behind ours; the spread keeps issuers whose upstreams name the same instant (many
    names behind one Dex) from fetching in the same moment;
  * ``min``: but never sooner than ``min_refresh_interval`` (plus the same spread), so an
    upstream answering ``max-age=1`` is not fetched every second;
  * ``backoff``: after the n-th consecutive failure, ``min(refresh_interval, 1s x 2^(n-1))`` x
    uniform(0.5, 1.0) later (exponential backoff with jitter, capped at the normal interval);
  * retained keys are dropped exactly when ``retain_removed_keys`` ends, fetch or no fetch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from jwks_mirror.core.config.model import Limits
from jwks_mirror.core.errors import FetchError, KeySetRejected
from jwks_mirror.core.logs import event
from jwks_mirror.serving.counters import Metrics
from jwks_mirror.serving.fetching import NO_VALIDATORS, Fetcher, Validators
from jwks_mirror.serving.offers import PeerFillReport
from jwks_mirror.serving.persistence import StateStore, StateWriter
from jwks_mirror.serving.pipeline import Outcome, apply_result
from jwks_mirror.serving.state import Change, IssuerState

BACKOFF_BASE_S = 1.0
START_SPREAD_S = 1.0
PERSIST_UNCHANGED_FRACTION = 0.1
CACHE_MARGIN_S = 1.0
CACHE_SPREAD_S = 4.0


@dataclass(frozen=True)
class NextRefresh:
    """When the next fetch is due, in seconds from now, and why (``/status`` shows it)."""

    delay_s: float
    reason: str  # start | interval | cache-control | min | backoff


def after_success(
    limits: Limits, *, fresh_for_s: float | None, rng: random.Random
) -> NextRefresh:
    """The next fetch after a success: the earlier of ``refresh_interval`` (jittered) and the
    upstream's freshness lifetime (``fresh_for_s``, None when it gave none) plus the margin,
    never sooner than ``min_refresh_interval``. See the module docstring."""
    interval = limits.refresh_interval_s * rng.uniform(0.9, 1.1)
    if fresh_for_s is None:
        return NextRefresh(interval, "interval")
    earliest, reason = cache_bound(fresh_for_s, floor_s=limits.refresh_floor_s)
    bounded = earliest + rng.uniform(0.0, min(CACHE_SPREAD_S, 0.1 * limits.refresh_interval_s))
    if interval <= bounded:
        return NextRefresh(interval, "interval")
    return NextRefresh(bounded, reason)


def cache_bound(fresh_for_s: float, *, floor_s: float) -> tuple[float, str]:
    """The earliest next fetch the upstream's freshness lifetime allows, before the spread:
    ``CACHE_MARGIN_S`` after it ends ("cache-control"), never sooner than ``floor_s``
    (``min_refresh_interval``: "min")."""
    earliest = fresh_for_s + CACHE_MARGIN_S
    if earliest < floor_s:
        return floor_s, "min"
    return earliest, "cache-control"


def backoff_bound_s(failures: int, *, base_s: float, cap_s: float) -> float:
    """The longest wait after the ``failures``-th consecutive failure (the jitter takes it down
    to half): ``base_s`` doubled per failure after the first, capped at ``cap_s``."""
    return min(cap_s, base_s * 2.0 ** min(failures - 1, 30))


def after_failure(
    limits: Limits, *, failures: int, base_s: float, rng: random.Random
) -> NextRefresh:
    """The next fetch after the ``failures``-th consecutive failure: exponential backoff with
    jitter, capped at ``refresh_interval``."""
    bound = backoff_bound_s(failures, base_s=base_s, cap_s=limits.refresh_interval_s)
    delay = bound * rng.uniform(0.5, 1.0)
    return NextRefresh(delay, "backoff")


@dataclass
class Health:
    """One issuer's fetch health and schedule. Written by its :class:`IssuerRefresher` only;
    ``/status`` and the metrics read it (through ``mirror.Issuer``)."""

    last_attempt: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    consecutive_failures: int = 0
    next_refresh: float = 0.0  # wall time the next fetch is due
    next_refresh_reason: str = "start"  # start | interval | cache-control | min | backoff
    peer_fill: PeerFillReport | None = None  # the last peer-fill attempt (peering.py)

    def succeeded(self, now: float) -> None:
        self.last_attempt, self.consecutive_failures = now, 0
        self.last_error = self.last_error_reason = None

    def failed(self, error: FetchError, now: float) -> None:
        self.last_attempt, self.last_error, self.last_error_reason = now, str(error), error.reason
        self.consecutive_failures += 1

    def schedule(self, now: float, due: NextRefresh) -> None:
        self.next_refresh = now + due.delay_s
        self.next_refresh_reason = due.reason


def _wake_up(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


class IssuerRefresher:
    """Keeps one :class:`IssuerState` fresh. ``run()`` is its background task."""

    def __init__(
        self,
        state: IssuerState,
        *,
        fetcher: Fetcher,
        metrics: Metrics,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
        peer_fill: Callable[[IssuerState], Awaitable[PeerFillReport | None]] | None = None,
        health: Health | None = None,
        validators: Validators = NO_VALIDATORS,
    ) -> None:
        self.state = state
        self.health = health if health is not None else Health()
        self.validators = validators  # what the next fetch sends (fetching.py); ours only
        self._peer_fill = peer_fill
        self._fetcher = fetcher
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._backoff_base_s = backoff_base_s
        self._inflight: asyncio.Task[Outcome] | None = None
        self._waiters = 0  # callers awaiting the in-flight fetch (the schedule included)
        self._wake: asyncio.Future[None] | None = None  # set while run() sleeps
        self._writer = (
            None if store is None else StateWriter(store, state.name, on_error=self._persist_failed)
        )
        self._persisted_success: float | None = None  # last_success in the newest write
        # A set restored from state_dir (or kept across a reload) counts as settled at once.
        self._settled = state.servable(clock())

    @property
    def settled(self) -> bool:
        """True once this issuer no longer holds readiness back: its first fetch attempt has
        completed (success or failure), or it started with a servable set (restored from
        ``state_dir``). The one place that decides it; ``Mirror.ready`` reads it."""
        return self._settled

    # -- the background loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Fetch at once (spread over up to a second, so a thousand issuers starting together
        do not open a thousand connections in the same instant), then on schedule, forever
        (until cancelled). A triggered refresh does not wait for the spread."""
        interval = self.state.settings.limits.refresh_interval_s
        spread = min(START_SPREAD_S, interval * 0.05)
        self.health.schedule(self._clock(), NextRefresh(self._rng.uniform(0.0, spread), "start"))
        while True:
            now = self._clock()
            due = self.health.next_refresh
            expiry = self.state.next_retention_expiry()
            wake_at = due if expiry is None else min(due, expiry)
            if wake_at > now:
                await self._sleep(wake_at - now)
                continue
            if due <= now:
                await self.refresh()
            elif self.state.expire_retained(now):
                event(
                    "retention_expired",
                    issuer=self.state.name,
                    retained=list(self.state.retained_kids()),
                )
                self._persist()

    @property
    def inflight(self) -> asyncio.Task[Outcome] | None:
        """The fetch running now, if any."""
        return self._inflight

    @property
    def awaited(self) -> bool:
        """True while someone (an admin request, say) waits for the in-flight fetch."""
        return self._inflight is not None and self._waiters > 0

    def reschedule(self) -> None:
        """Re-read the schedule (after a triggered refresh or a purge)."""
        if self._wake is not None:
            _wake_up(self._wake)

    async def _sleep(self, delay_s: float) -> None:
        """Until ``delay_s`` passes or :meth:`reschedule` is called. One future and one timer:
        ``wait_for`` on an ``Event`` added a task and the event to every sleeping issuer,
        2.9 kB of the 9.6 kB an idle issuer took (bench/memory.py)."""
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = loop.call_later(delay_s, _wake_up, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    # -- single-flight refresh --------------------------------------------------------------

    async def refresh(self, *, purge_retained: bool = False) -> Outcome:
        """Fetch now, or join the fetch already in flight; never two at once per issuer.

        Shielded: a caller that gives up (an HTTP client hanging up) does not cancel the fetch
        the others are waiting for.
        """
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh_once())
            self._inflight = task
            task.add_done_callback(self._clear_inflight)
        self._waiters += 1
        try:
            outcome = await asyncio.shield(task)
        finally:
            self._waiters -= 1
        if purge_retained:
            purged = self.state.purge_retained(now=self._clock())
            if purged:
                event("retained_purged", issuer=self.state.name, kids=list(purged))
                self._persist()
            kids = self.state.published.kids if self.state.published else ()
            outcome = dataclasses.replace(outcome, purged=purged, retained=(), kids=kids)
        return outcome

    def _clear_inflight(self, task: asyncio.Task[Outcome]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh_once(self) -> Outcome:
        try:
            return await self._attempt()
        finally:
            # Settled only now, after the peer fill: it is part of the attempt, so a fresh
            # replica is ready once it has tried its peers too. Also after a bug raised:
            # readiness must never wait on one issuer for ever.
            self._settled = True

    async def _attempt(self) -> Outcome:
        state = self.state
        started = time.perf_counter()
        try:
            change, fresh_for_s = await self._fetch_and_apply()
        except FetchError as exc:
            outcome = self._failed(exc)
        else:
            outcome = self._succeeded(change, fresh_for_s=fresh_for_s)
        duration = time.perf_counter() - started
        self._metrics.fetch_duration_seconds.observe(duration)
        self._metrics.fetch_total.labels(state.name, outcome.outcome).inc()
        event(
            "fetch",
            issuer=state.name,
            outcome=outcome.outcome,
            duration_s=round(duration, 4),
            kids_added=list(outcome.added),
            kids_removed=list(outcome.removed),
            reason=outcome.reason,
            error=outcome.error,
            consecutive_failures=self.health.consecutive_failures,
            next_refresh_in_s=round(self.health.next_refresh - self._clock(), 3),
            next_refresh_reason=self.health.next_refresh_reason,
        )
        if (
            outcome.outcome == "failed"
            and self._peer_fill is not None
            and not state.servable(self._clock())
        ):
            # Part of this attempt (readiness waits for it), bounded by the fetch timeout.
            self.health.peer_fill = await self._peer_fill(state)
            if state.source == "peer":
                # The validators belong to the peer's fetch: ours must be unconditional.
                self.validators = NO_VALIDATORS
        self.reschedule()
        return outcome

    async def _fetch_and_apply(self) -> tuple[Change, float | None]:
        """Fetch and apply (pipeline.py); the change, and how long the upstream says its
        answer stays fresh (None: it did not say)."""
        state = self.state
        result = await self._fetcher.fetch(state.settings, validators=self.validators)
        try:
            applied = apply_result(
                result, state, validators=self.validators, now=self._clock()
            )
        except KeySetRejected as exc:
            self._metrics.keys_rejected_total.labels(state.name, exc.reason).inc()
            raise
        if applied is None:  # a 304 that cannot confirm anything of ours
            self.validators = NO_VALIDATORS
            return await self._fetch_and_apply()
        self.validators = applied.validators
        for reason, count in applied.dropped.items():
            self._metrics.keys_rejected_total.labels(state.name, reason).inc(count)
        if applied.notes:
            event("keys_dropped", issuer=state.name, notes=list(applied.notes))
        return applied.change, applied.fresh_for_s

    def _succeeded(self, change: Change, *, fresh_for_s: float | None) -> Outcome:
        state = self.state
        now = self._clock()
        self.health.succeeded(now)
        due = after_success(state.settings.limits, fresh_for_s=fresh_for_s, rng=self._rng)
        self.health.schedule(now, due)
        if change.changed or self._persist_due():
            self._persist()
        return Outcome(
            name=state.name,
            outcome="changed" if change.changed else "unchanged",
            kids=state.published.kids if state.published else (),
            added=change.added,
            removed=change.removed,
            retained=change.retained,
        )

    def _failed(self, exc: FetchError) -> Outcome:
        state = self.state
        now = self._clock()
        self.health.failed(exc, now)
        state.expire_retained(now)
        self._metrics.fetch_errors_total.labels(state.name, exc.reason).inc()
        due = after_failure(
            state.settings.limits,
            failures=self.health.consecutive_failures,
            base_s=self._backoff_base_s,
            rng=self._rng,
        )
        self.health.schedule(now, due)
        kind = "rejected" if isinstance(exc, KeySetRejected) else "upstream"
        return Outcome(
            name=state.name,
            outcome="failed",
            kids=state.published.kids if state.published else (),
            error=f"{kind}: {exc}",
            reason=exc.reason,
            retained=state.retained_kids(),
        )

    # -- persistence ------------------------------------------------------------------------

    def _persist_due(self) -> bool:
        """An unchanged set needs writing only to move ``last_success`` forward on disk, and
        that matters only for ``max_stale`` after a restart: once per tenth of it is enough
        (a restarted mirror may then fail closed up to 10 % early, never late)."""
        if self._persisted_success is None or self.state.last_success is None:
            return True
        age = self.state.last_success - self._persisted_success
        return age >= self.state.settings.limits.max_stale_s * PERSIST_UNCHANGED_FRACTION

    def _persist(self) -> None:
        """Write the state file (:class:`StateWriter`); a failure is logged and counted."""
        if self._writer is None or self.state.published is None or self.state.source == "peer":
            return  # a peer's copy is not ours to persist: a restart asks the peers again
        self._persisted_success = self.state.last_success
        self._writer.write(self.state.snapshot(self.validators))

    def _persist_failed(self, exc: OSError) -> None:
        name = self.state.name
        self._metrics.persist_errors_total.labels(name).inc()
        event("persist_failed", issuer=name, error=f"{exc.strerror or exc}", level=40)

    async def drain(self) -> None:
        """Wait for the pending state write (on shutdown)."""
        if self._writer is not None:
            await self._writer.drain()
