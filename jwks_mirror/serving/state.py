"""Per-issuer state: the published set, retained keys, staleness: the policy transitions.

No I/O happens here (the state file's format and writes are in persistence.py); time is always
passed in (wall-clock seconds), so retention and staleness are tested with plain numbers.

Published set = keys the upstream currently serves + keys it dropped less than
``retain_removed_keys`` ago. Retention exists because istiod refreshes every 20 minutes at best:
a token signed just before a rotation must keep verifying until every istiod has the new set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jwks_mirror.core.config.model import IssuerSettings
from jwks_mirror.core.errors import StateRefused
from jwks_mirror.core.keysets import Key, Validated, render, version_of
from jwks_mirror.serving.persistence import Snapshot, apart_from_current, decode, encode

if TYPE_CHECKING:  # the type only: the key policy imports no network code
    from jwks_mirror.serving.fetching import Validators


@dataclass(frozen=True)
class Published:
    """Bytes served for one issuer, with everything the request path needs precomputed."""

    body: bytes
    version: str
    etag: str
    kids: tuple[str, ...]

    @classmethod
    def of(cls, keys: Iterable[Key]) -> Published:
        keys = list(keys)
        body = render(keys)
        version = version_of(body)
        kids = tuple(sorted({k.kid for k in keys if k.kid is not None}))
        return cls(body=body, version=version, etag=f'"{version}"', kids=kids)


@dataclass(frozen=True)
class Change:
    """What one successful fetch did to the published set."""

    changed: bool
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retained: tuple[str, ...] = ()


@dataclass
class Retained:
    key: Key
    removed_at: float


def _label(key: Key) -> str:
    return key.kid if key.kid is not None else f"<no kid {key.ident[:8]}>"


@dataclass
class IssuerState:
    """One issuer's key policy: the current, retained and published keys and when the
    upstream last confirmed them. Fetch health and the schedule are the refresher's
    (:class:`jwks_mirror.serving.refreshing.Health`). Mutated only from the event loop."""

    settings: IssuerSettings
    current: tuple[Key, ...] = ()
    retained: dict[tuple[str | None, str], Retained] = field(default_factory=dict)
    published: Published | None = None
    last_success: float | None = None  # the policy's clock: max_stale counts from it
    last_change: float | None = None
    # When a key not published before was last added to a set already published: a rotation
    # began, and istiods that have not fetched since lack the key. None: none since start
    # (a replica's first set, fetched or restored, is not a rotation).
    key_added_at: float | None = None
    # When each key (by kid and thumbprint) was first published: for ``explain``.
    first_seen: dict[tuple[str | None, str], float] = field(default_factory=dict)
    # Where the published set came from: "upstream" (a fetch), "state" (state_dir, written
    # after a fetch) or "peer" (copied from another replica: see peering.py). Only sets
    # from an upstream or a restore of one are shared with peers.
    source: str | None = None
    filled_from: str | None = None  # the peer's admin URL while source == "peer"

    @property
    def name(self) -> str:
        return self.settings.name

    # -- reading ----------------------------------------------------------------------------

    def stale_deadline(self) -> float:
        """Wall time after which the set must not be served any more (fail closed)."""
        if self.last_success is None:
            return float("-inf")
        return self.last_success + self.settings.limits.max_stale_s

    def is_expired(self, now: float) -> bool:
        """No successful fetch for ``max_stale``: the set must not be served (fail closed)."""
        return now > self.stale_deadline()

    def servable(self, now: float) -> bool:
        return self.published is not None and not self.is_expired(now)

    @property
    def has_own_set(self) -> bool:
        """A set from this replica's own upstream fetch (or a restore of one) is published:
        the only kind a conditional request or an identical body can confirm."""
        return self.published is not None and self.source != "peer"

    def next_retention_expiry(self) -> float | None:
        keep = self.settings.limits.retain_removed_keys_s
        if not self.retained:
            return None
        return min(r.removed_at for r in self.retained.values()) + keep

    def retained_kids(self) -> tuple[str, ...]:
        return tuple(sorted(_label(r.key) for r in self.retained.values()))

    # -- transitions ------------------------------------------------------------------------

    def apply(self, validated: Validated, *, now: float) -> Change:
        """A new valid upstream set arrived: update current, retained and published.

        A set copied from a peer is replaced whole: its keys are not "removed" keys of this
        issuer's upstream, so none of them is retained (see :meth:`adopt_from_peer`).
        """
        if self.source == "peer":
            self._drop_peer_copy()
        new_ids = {(k.kid, k.ident) for k in validated.keys}
        old = {(k.kid, k.ident): k for k in self.current}
        if self.published is not None and new_ids - old.keys() - self.retained.keys():
            self.key_added_at = now
        added = tuple(sorted(_label(k) for k in validated.keys if (k.kid, k.ident) not in old))
        removed_keys = [k for ident, k in old.items() if ident not in new_ids]
        for key in removed_keys:
            self.retained.setdefault((key.kid, key.ident), Retained(key, removed_at=now))
        for ident in new_ids:
            self.retained.pop(ident, None)  # a key that came back is current again
            self.first_seen.setdefault(ident, now)
        self.current = validated.keys
        self._mark_success(now)
        self._drop_expired(now)
        changed = self._republish(now)
        return Change(
            changed=changed,
            added=added,
            removed=tuple(sorted(_label(k) for k in removed_keys)),
            retained=self.retained_kids(),
        )

    def adopt_from_peer(
        self,
        validated: Validated,
        *,
        retained: Iterable[tuple[Key, float]],
        last_success: float,
        peer: str,
        now: float,
    ) -> bool:
        """Publish a set copied from a peer; True if the published bytes changed.

        ``last_success`` is the *peer's* last upstream success, never the copy time, so the
        set fails closed at the moment it does on the peer. The refresher clears its upstream
        validators then: our next fetch must be unconditional.

        A copy never outlives the outage: the first upstream success (:meth:`apply`) drops
        it whole, so a key known only from the copy is never retained, and while
        ``source == "peer"`` the set is neither written to ``state_dir`` nor shared.
        """
        self._load(validated.keys, tuple(retained))
        for ident in {(k.kid, k.ident) for k in validated.keys} | set(self.retained):
            self.first_seen.setdefault(ident, now)
        self.last_success = min(last_success, now)
        self.source, self.filled_from = "peer", peer
        self._drop_expired(now)
        return self._republish(now)

    def _load(self, current: tuple[Key, ...], retained: tuple[tuple[Key, float], ...]) -> None:
        """Take a decoded snapshot's keys (a restore or a peer's copy). A retained key that is
        current again is not retained, as in :meth:`apply`."""
        self.current = current
        self.retained = {
            ident: Retained(key, removed_at)
            for ident, (key, removed_at) in apart_from_current(current, retained).items()
        }

    def mark_unchanged(self, *, now: float) -> Change:
        """The upstream confirmed the set (304, or identical bytes). Never for a peer's copy:
        the upstream confirms only what this replica fetched itself (:attr:`has_own_set`)."""
        if self.source == "peer":
            raise RuntimeError("a peer's copy cannot be confirmed by the upstream")
        self._mark_success(now)
        changed = self.expire_retained(now)
        return Change(changed=changed, retained=self.retained_kids())

    def _drop_peer_copy(self) -> None:
        self.current = ()
        self.retained.clear()
        self.source, self.filled_from = None, None

    def expire_retained(self, now: float) -> bool:
        """Drop retained keys older than ``retain_removed_keys``. True if the set changed."""
        return self._drop_expired(now) and self._republish(now)

    def _drop_expired(self, now: float) -> bool:
        keep = self.settings.limits.retain_removed_keys_s
        expired = [i for i, r in self.retained.items() if r.removed_at + keep <= now]
        for ident in expired:
            del self.retained[ident]
        return bool(expired)

    def purge_retained(self, *, now: float) -> tuple[str, ...]:
        """Emergency revocation: publish only what the upstream serves now."""
        purged = self.retained_kids()
        self.retained.clear()
        if purged:
            self._republish(now)
        return purged

    def _mark_success(self, now: float) -> None:
        self.last_success = now
        self.source, self.filled_from = "upstream", None

    def _republish(self, now: float) -> bool:
        keys = list(self.current)
        current_kids = {(k.kid, k.kty) for k in self.current if k.kid is not None}
        newest: dict[tuple[str, str], Retained] = {}
        for retained in self.retained.values():
            if retained.key.kid is None:
                keys.append(retained.key)
                continue
            # A kid the upstream reuses for a new key wins over the retained old key:
            # publishing both under one kid would let verifiers pick either. For the same
            # reason only one retained key per kid is published: the one removed last (it
            # was served under that kid most recently).
            slot = (retained.key.kid, retained.key.kty)
            if slot in current_kids:
                continue
            other = newest.get(slot)
            if other is None or (retained.removed_at, retained.key.thumbprint) > (
                other.removed_at,
                other.key.thumbprint,
            ):
                newest[slot] = retained
        keys.extend(r.key for r in newest.values())
        # That key under its other algs too (one key may be published once per alg).
        for retained in self.retained.values():
            if retained.key.kid is None:
                continue
            chosen = newest.get((retained.key.kid, retained.key.kty))
            if chosen is not None and chosen is not retained and (
                chosen.key.thumbprint == retained.key.thumbprint
            ):
                keys.append(retained.key)
        if not keys:
            return False
        live = {(k.kid, k.ident) for k in self.current} | set(self.retained)
        for ident in [i for i in self.first_seen if i not in live]:
            del self.first_seen[ident]
        published = Published.of(keys)
        if self.published is not None and published.body == self.published.body:
            return False
        self.published = published
        self.last_change = now
        return True

    # -- persistence (the file format is persistence.py's) ------------------------------------

    def snapshot(self, validators: Validators) -> dict[str, Any]:
        """The state file's document, with the refresher's upstream ``validators``, taken on
        the event loop (written by a :class:`~jwks_mirror.serving.persistence.StateWriter`)."""
        saved = Snapshot(
            current=self.current,
            retained=tuple((r.key, r.removed_at) for r in self.retained.values()),
            first_seen=dict(self.first_seen),
            last_success=self.last_success,
            last_change=self.last_change,
            upstream_etag=validators.etag,
            upstream_last_modified=validators.last_modified,
            upstream_digest=validators.digest,
        )
        return encode(saved, name=self.name, upstream=self.settings.upstream)

    def restore(self, document: Mapping[str, Any], *, now: float) -> Snapshot:
        """Load a state file's document; the decoded snapshot, whose upstream validators are
        the refresher's to keep. Raises :class:`~jwks_mirror.core.errors.StateRefused`
        when it is unusable; then nothing changes. Its keys meet the policy
        again, its times are clamped to ``now`` and its retained keys to ``max_keys``
        (:func:`jwks_mirror.serving.persistence.decode`)."""
        saved = decode(
            document,
            upstream=self.settings.upstream,
            max_keys=self.settings.limits.max_keys,
            now=now,
        )
        self._load(saved.current, saved.retained)
        self.first_seen = dict(saved.first_seen)
        if saved.last_success is None:  # decode() refuses such a document; for the type checker
            raise StateRefused("invalid", "no last_success")
        self.last_success = saved.last_success  # never later than now (decode clamps it)
        self.source, self.filled_from = "state", None
        self._drop_expired(now)
        self._republish(now)
        # Publishing above stamped "now"; the set last changed when the file says it did.
        if saved.last_change is not None:
            self.last_change = saved.last_change
        return saved
