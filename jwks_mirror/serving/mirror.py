"""The running mirror: the issuer states and their refreshers, started, reloaded and stopped.

This is the object both web apps hold (via an ``AppKey``). It owns the fetcher (client
sessions) and the refresher tasks; ``stop()`` is the one place they are torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from jwks_mirror.core.config.model import IssuerSettings, Settings
from jwks_mirror.core.errors import StateRefused, UnknownIssuer
from jwks_mirror.core.logs import event
from jwks_mirror.serving.counters import Metrics
from jwks_mirror.serving.fetching import NO_VALIDATORS, Fetcher, Validators
from jwks_mirror.serving.peerfinder import PeerFinder
from jwks_mirror.serving.peering import PeerFiller
from jwks_mirror.serving.persistence import StateStore, max_file_bytes
from jwks_mirror.serving.pipeline import Outcome
from jwks_mirror.serving.refreshing import BACKOFF_BASE_S, Health, IssuerRefresher
from jwks_mirror.serving.state import IssuerState


@dataclass(frozen=True)
class ReloadSummary:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    restart_needed: tuple[str, ...]


@dataclass
class Issuer:
    """One mirrored issuer, for readers (``/status``, the metrics, the public port): its key
    policy (:class:`IssuerState`) and its fetch health and schedule (:class:`Health`), both
    written by its refresher, which is the mirror's own."""

    state: IssuerState
    health: Health

    @property
    def name(self) -> str:
        return self.state.name

    def is_stale(self, now: float) -> bool:
        """The upstream did not confirm the served set at the last attempt, or there is no
        servable set at all. A stale set is still served until ``max_stale``; this is what
        operators alert on before it expires."""
        return self.health.consecutive_failures > 0 or not self.state.servable(now)


class Mirror:
    """All mirrored issuers. Everything here runs on one event loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        backoff_base_s: float = BACKOFF_BASE_S,
        peer_finder: PeerFinder | None = None,
    ) -> None:
        self.settings = settings
        self.issuers: dict[str, Issuer] = {}  # by name: what every reader reads
        self.draining = False
        self._was_ready = False
        self.clock = clock
        self.metrics = Metrics(
            registry,
            issuers=lambda: list(self.issuers.values()),
            clock=clock,
            per_issuer=lambda: self.settings.metrics.per_issuer,
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter only
        self._backoff_base_s = backoff_base_s
        self._fetcher = Fetcher()
        self.peers = PeerFiller(
            lambda: self.settings.peers, metrics=self.metrics, clock=clock, finder=peer_finder
        )
        # The same issuers' refreshers and their background tasks: the mirror's, to run them.
        self._refreshers: dict[str, IssuerRefresher] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def store(self) -> StateStore | None:
        directory = self.settings.state_dir
        return StateStore(directory) if directory is not None else None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load persisted sets (served at once, within max_stale) and start every issuer."""
        for state, validators in await self._new_states(self.settings.issuers):
            self._start_issuer(state, validators)

    async def stop(self, *, grace_s: float = 10.0) -> None:
        """Shutdown order: cancel the schedules; give fetches that a caller still waits for
        (an admin refresh) up to ``grace_s`` and cancel the rest; finish state writes; close
        the sessions."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waited = [r.inflight for r in self._refreshers.values() if r.awaited and r.inflight]
        unwaited = [
            r.inflight for r in self._refreshers.values() if not r.awaited and r.inflight
        ]
        late = set(unwaited)
        if waited:
            _, overdue = await asyncio.wait(waited, timeout=grace_s)
            late |= overdue
        for fetch in late:
            fetch.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        await self.writes_done()
        self._tasks.clear()
        self._refreshers.clear()
        await self._fetcher.close()
        await self.peers.close()

    async def reload(self, new: Settings) -> ReloadSummary:
        """Apply a new, already validated configuration.

        Unchanged issuers keep running untouched. An issuer whose settings changed but whose
        upstream did not keeps its keys (and is fetched again at once); a changed upstream is
        a new issuer. Listener addresses cannot change without a restart; that is reported.
        """
        old = self.settings
        restart = tuple(
            name
            for name, before, after in (
                ("public", old.public, new.public),
                ("admin", (old.admin.host, old.admin.port), (new.admin.host, new.admin.port)),
            )
            if before != after
        )
        self.settings = new
        wanted = {i.name: i for i in new.issuers}
        removed = tuple(sorted(n for n in self.issuers if n not in wanted))
        for name in removed:
            await self._stop_issuer(name)
            del self.issuers[name]
            self.metrics.forget(name)
        added, changed, unchanged = [], [], []
        for issuer in new.issuers:
            known = self.issuers.get(issuer.name)
            state = known.state if known is not None else None
            if state is None:
                added.append(issuer.name)
                ((fresh, validators),) = await self._new_states([issuer])
                self._start_issuer(fresh, validators)
            elif state.settings == issuer and old.state_dir == new.state_dir:
                unchanged.append(issuer.name)
            else:
                changed.append(issuer.name)
                kept = self._refreshers.get(issuer.name)
                await self._stop_issuer(issuer.name)
                if state.settings.upstream == issuer.upstream:
                    state.settings = issuer
                    self._start_issuer(state, kept.validators if kept else NO_VALIDATORS)
                else:
                    ((state, validators),) = await self._new_states([issuer])
                    self._start_issuer(state, validators)
        return ReloadSummary(
            added=tuple(added),
            removed=removed,
            changed=tuple(changed),
            unchanged=tuple(unchanged),
            restart_needed=restart,
        )

    async def _new_states(
        self, issuers: Sequence[IssuerSettings]
    ) -> list[tuple[IssuerState, Validators]]:
        """A fresh state per issuer, restored from ``state_dir`` where its file is usable.

        A state file is untrusted input (persistence.py bounds it): it is read and decoded in
        a worker thread, one for the whole batch, so no file stalls the event loop; a file
        refused is logged and counted here, on the loop, and that issuer starts empty.
        """
        store = self.store
        if store is None:
            return [(IssuerState(issuer), NO_VALIDATORS) for issuer in issuers]
        loaded = await asyncio.to_thread(_restore_all, store, issuers, self.clock())
        now = self.clock()
        for state, _, refused in loaded:
            if refused is not None:
                self.metrics.state_ignored_total.labels(state.name, refused.reason).inc()
                event(
                    "state_ignored",
                    issuer=state.name,
                    path=str(store.path(state.name)),
                    reason=refused.reason,
                    error=str(refused),
                    level=logging.WARNING,
                )
            elif state.source == "state":
                event(
                    "state_loaded",
                    issuer=state.name,
                    kids=list(state.published.kids if state.published else ()),
                    servable=state.servable(now),
                )
        return [(state, validators) for state, validators, _ in loaded]

    def _start_issuer(self, state: IssuerState, validators: Validators) -> None:
        kept = self.issuers.get(state.name)  # a changed issuer keeps its health and schedule
        health = kept.health if kept is not None and kept.state is state else Health()
        refresher = IssuerRefresher(
            state,
            fetcher=self._fetcher,
            metrics=self.metrics,
            store=self.store,
            clock=self.clock,
            rng=self._rng,
            backoff_base_s=self._backoff_base_s,
            peer_fill=self.peers.fill,
            health=health,
            validators=validators,
        )
        self.issuers[state.name] = Issuer(state, health)
        self._refreshers[state.name] = refresher
        task = asyncio.get_running_loop().create_task(
            self._guarded(refresher), name=f"refresh:{state.name}"
        )
        self._tasks[state.name] = task

    async def _guarded(self, refresher: IssuerRefresher) -> None:
        """Run one issuer's loop; a bug in it is logged and the loop restarts after a pause."""
        while True:
            try:
                await refresher.run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                event(
                    "refresher_crashed",
                    issuer=refresher.state.name,
                    error=f"{type(exc).__name__}: {exc}",
                    level=logging.ERROR,
                )
                await asyncio.sleep(5)

    async def _stop_issuer(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        refresher = self._refreshers.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if refresher is not None:
            await refresher.drain()

    # -- operations -------------------------------------------------------------------------

    async def refresh(
        self, names: Iterable[str] | None = None, *, purge_retained: bool = False
    ) -> list[Outcome]:
        """Refresh the named issuers (all when None) concurrently; raises UnknownIssuer."""
        selected = list(names) if names else list(self._refreshers)
        unknown = [n for n in selected if n not in self._refreshers]
        if unknown:
            raise UnknownIssuer(", ".join(unknown))
        refreshers = [self._refreshers[n] for n in selected]
        return list(
            await asyncio.gather(*(r.refresh(purge_retained=purge_retained) for r in refreshers))
        )

    async def writes_done(self) -> None:
        """Wait for every state write queued so far (each runs in a thread after its fetch)."""
        await asyncio.gather(*(r.drain() for r in self._refreshers.values()))

    def not_servable(self) -> list[str]:
        """Issuers without a servable set: each fails closed on its own path (503)."""
        now = self.clock()
        return [name for name, i in self.issuers.items() if not i.state.servable(now)]

    def pending(self) -> list[str]:
        """Issuers whose first fetch attempt has not completed (nor a set been restored)."""
        return [name for name, r in self._refreshers.items() if not r.settled]

    @property
    def ready(self) -> bool:
        """Readiness is scoped to the process, never to one issuer: every replica shares the
        configuration, so "unready while an issuer is broken" would take every replica out of
        the Service at once and istiod would lose every issuer.

        False while draining, and until every issuer has settled (its first fetch attempt
        completed, or a set restored). Once ready, an issuer added by a reload does not make
        the replica unready again: a ConfigMap update reaches every replica together.
        """
        if self.draining:
            return False
        if not self._was_ready:
            self._was_ready = not self.pending()
        return self._was_ready


def _restore_all(
    store: StateStore, issuers: Sequence[IssuerSettings], now: float
) -> list[tuple[IssuerState, Validators, StateRefused | None]]:
    """Blocking: read and restore each issuer's file (states no other thread sees yet), with
    the upstream validators the file saved."""
    out: list[tuple[IssuerState, Validators, StateRefused | None]] = []
    for issuer in issuers:
        state = IssuerState(issuer)
        cap = max_file_bytes(max_response_bytes=issuer.limits.max_response_bytes)
        validators = NO_VALIDATORS
        try:
            document = store.load(issuer.name, max_bytes=cap)
            if document is not None:
                saved = state.restore(document, now=now)
                validators = Validators(
                    saved.upstream_etag, saved.upstream_last_modified, saved.upstream_digest
                )
        except StateRefused as exc:
            out.append((IssuerState(issuer), NO_VALIDATORS, exc))
            continue
        out.append((state, validators, None))
    return out
