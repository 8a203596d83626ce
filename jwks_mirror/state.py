"""Per-issuer state: the published set, retained keys, staleness, and its file on disk.

No I/O happens here except in :class:`StateStore`; time is always passed in (wall-clock
seconds), so retention and staleness are tested with plain numbers.

Published set = keys the upstream currently serves + keys it dropped less than
``retain_removed_keys`` ago. Retention exists because istiod refreshes every 20 minutes at best:
a token signed just before a rotation must keep verifying until every istiod has the new set.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jwks_mirror.errors import FetchError
from jwks_mirror.keysets import Key, KeyDropped, Validated, key_from_jwk, render, version_of
from jwks_mirror.settings import IssuerSettings

STATE_FORMAT = 1


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
    """Everything known about one issuer. Mutated only from the event loop."""

    settings: IssuerSettings
    current: tuple[Key, ...] = ()
    retained: dict[tuple[str | None, str], Retained] = field(default_factory=dict)
    published: Published | None = None
    last_success: float | None = None
    last_attempt: float | None = None
    last_change: float | None = None
    last_error: str | None = None
    last_error_reason: str | None = None
    consecutive_failures: int = 0
    next_refresh: float = 0.0
    upstream_etag: str | None = None
    upstream_last_modified: str | None = None
    upstream_digest: str | None = None
    # When each key (by kid and thumbprint) was first published: for ``explain``.
    first_seen: dict[tuple[str | None, str], float] = field(default_factory=dict)
    # Request counters by status code, read by the metrics collector at scrape time. Plain
    # ints: the event loop is single-threaded, so no lock is needed on the hot path.
    requests: dict[int, int] = field(default_factory=dict)
    # Where the published set came from: "upstream" (a fetch), "state" (state_dir, written
    # after a fetch) or "peer" (copied from another replica: see peering.py). Only sets
    # from an upstream or a restore of one are shared with peers.
    source: str | None = None
    filled_from: str | None = None  # the peer's admin URL while source == "peer"
    peer_fill: dict[str, Any] | None = None  # the last peer-fill attempt, for /status

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

    def is_stale(self, now: float) -> bool:
        """The upstream did not confirm the served set at the last attempt, or there is no
        servable set at all. A stale set is still served until ``max_stale``; this is what
        operators alert on before it expires."""
        return self.consecutive_failures > 0 or not self.servable(now)

    def next_retention_expiry(self) -> float | None:
        keep = self.settings.limits.retain_removed_keys_s
        if not self.retained:
            return None
        return min(r.removed_at for r in self.retained.values()) + keep

    def retained_kids(self) -> tuple[str, ...]:
        return tuple(sorted(_label(r.key) for r in self.retained.values()))

    # -- transitions ------------------------------------------------------------------------

    def apply(self, validated: Validated, *, now: float) -> Change:
        """A new valid upstream set arrived: update current, retained and published."""
        new_ids = {(k.kid, k.ident) for k in validated.keys}
        old = {(k.kid, k.ident): k for k in self.current}
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
        set fails closed at the moment it does on the peer. The upstream validators are
        cleared: they belong to the peer's fetch, and our next fetch must be unconditional.
        """
        self.current = validated.keys
        current = {(k.kid, k.ident) for k in validated.keys}
        self.retained = {
            (key.kid, key.ident): Retained(key, removed_at)
            for key, removed_at in retained
            if (key.kid, key.ident) not in current
        }
        for ident in current | set(self.retained):
            self.first_seen.setdefault(ident, now)
        self.last_success = min(last_success, now)
        self.upstream_etag = self.upstream_last_modified = self.upstream_digest = None
        self.source, self.filled_from = "peer", peer
        self._drop_expired(now)
        return self._republish(now)

    def mark_unchanged(self, *, now: float) -> Change:
        """The upstream confirmed the set (304, or identical bytes)."""
        self._mark_success(now)
        changed = self.expire_retained(now)
        return Change(changed=changed, retained=self.retained_kids())

    def mark_failure(self, error: FetchError, *, now: float) -> None:
        self.last_attempt = now
        self.last_error = str(error)
        self.last_error_reason = error.reason
        self.consecutive_failures += 1
        self.expire_retained(now)

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
        self.last_attempt = now
        self.last_success = now
        self.last_error = None
        self.last_error_reason = None
        self.consecutive_failures = 0
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

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready document for :class:`StateStore` (taken on the event loop)."""
        return {
            "format": STATE_FORMAT,
            "name": self.name,
            "upstream": self.settings.upstream,
            "last_success": self.last_success,
            "last_change": self.last_change,
            "upstream_etag": self.upstream_etag,
            "upstream_last_modified": self.upstream_last_modified,
            "upstream_digest": self.upstream_digest,
            "keys": [dict(k.jwk) for k in self.current],
            "retained": [
                {"jwk": dict(r.key.jwk), "removed_at": r.removed_at} for r in self.retained.values()
            ],
            "first_seen": [[kid, ident, ts] for (kid, ident), ts in self.first_seen.items()],
        }

    def restore(self, document: Mapping[str, Any], *, now: float) -> None:
        """Load a snapshot. Raises ValueError when it is unusable; then nothing changes.

        Every key is validated again: a file on disk is input like any other, and a policy
        change since it was written must apply to it.
        """
        if document.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown format {document.get('format')!r}")
        if document.get("upstream") != self.settings.upstream:
            raise ValueError("written for another upstream")
        last_success = document.get("last_success")
        if not isinstance(last_success, int | float) or isinstance(last_success, bool):
            raise ValueError("no last_success")
        # json.loads accepts NaN and Infinity: an infinite last_success would never go stale
        # (max_stale fails open) and a NaN removal time would retain a key for ever.
        if not math.isfinite(last_success):
            raise ValueError(f"last_success {last_success!r} is not a finite time")
        try:
            current = tuple(key_from_jwk(m) for m in document["keys"])
            retained = {}
            for item in document.get("retained", []):
                key = key_from_jwk(item["jwk"])
                removed_at = float(item["removed_at"])
                if not math.isfinite(removed_at):
                    raise ValueError(f"removed_at {removed_at!r} is not a finite time")
                retained[(key.kid, key.ident)] = Retained(key, removed_at)
        except (KeyDropped, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid key: {exc}") from exc
        if not current:
            raise ValueError("no keys")
        # The file must hold what validate() would have accepted: each key once, and no two
        # different keys of one type under one kid (verifiers could pick either).
        identities: set[tuple[str | None, str]] = set()
        kids: dict[tuple[str, str], str] = {}
        for key in current:
            if (key.kid, key.ident) in identities:
                raise ValueError(f"key {_label(key)} is listed twice")
            identities.add((key.kid, key.ident))
            mark = key.thumbprint  # the same key under another alg is no conflict
            if key.kid is not None and kids.setdefault((key.kid, key.kty), mark) != mark:
                raise ValueError(f"two different {key.kty} keys share kid {key.kid!r}")
        for ident in identities:
            retained.pop(ident, None)  # current again, as in apply()
        self.current = tuple(sorted(current, key=lambda k: k.sort_key))
        self.retained = retained
        self.first_seen = _first_seen(document.get("first_seen"))
        # A time in the future (a clock that went back, a tampered file) must not extend
        # how long this set is served: never later than now.
        self.last_success = min(float(last_success), now)
        for name in ("upstream_etag", "upstream_last_modified", "upstream_digest"):
            value = document.get(name)
            setattr(self, name, value if isinstance(value, str) else None)
        self.source, self.filled_from = "state", None
        self._drop_expired(now)
        self._republish(now)
        # Publishing above stamped "now"; the set last changed when the file says it did.
        last_change = document.get("last_change")
        if isinstance(last_change, int | float) and math.isfinite(last_change):
            self.last_change = min(float(last_change), now)


def _first_seen(value: object) -> dict[tuple[str | None, str], float]:
    """Best effort: a malformed entry only loses a timestamp shown by ``explain``."""
    out: dict[tuple[str | None, str], float] = {}
    if isinstance(value, list):
        for item in value:
            if (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str | None)
                and isinstance(item[1], str)
                and isinstance(item[2], int | float)
                and math.isfinite(item[2])
            ):
                out[(item[0], item[1])] = float(item[2])
    return out


class StateStore:
    """One JSON file per issuer in ``state_dir``, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def save(self, name: str, document: Mapping[str, Any]) -> None:
        """Write then rename, so a crash leaves the old file or the new one, never a mix."""
        data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def load(self, name: str) -> dict[str, Any] | None:
        """The stored document, None if there is none. Raises ValueError if it is corrupt."""
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"cannot read: {exc.strerror}") from exc
        try:
            document = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ValueError("not JSON") from exc
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return document
