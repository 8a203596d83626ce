"""One fetch's result applied to an issuer's state: result + state + now -> change.

No I/O and no clock: the refresher (refreshing.py) fetches, reads the clock, then calls
:func:`apply_result`, and turns what it returns into metrics and log lines. So every branch
here (a 304, identical bytes, a new set, a rejected one) is tested with plain values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from jwks_mirror.core.cachecontrol import freshness_lifetime_s
from jwks_mirror.core.keysets import validate
from jwks_mirror.serving.fetching import FetchResult, Validators
from jwks_mirror.serving.state import Change, IssuerState


@dataclass(frozen=True)
class Applied:
    """What one fetch result did: the change, how long the upstream says its answer stays
    fresh (None: it did not say), the upstream validators to send next, and the keys the
    policy dropped (by reason, with notes)."""

    change: Change
    fresh_for_s: float | None
    validators: Validators  # for the next request
    dropped: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """The result of one refresh, as ``POST /refresh`` and the CLI report it."""

    name: str
    outcome: str  # changed | unchanged | failed
    kids: tuple[str, ...] = ()
    error: str | None = None
    reason: str | None = None
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retained: tuple[str, ...] = ()
    purged: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "kids": list(self.kids),
            "error": self.error,
            "reason": self.reason,
            "added": list(self.added),
            "removed": list(self.removed),
            "retained": list(self.retained),
            "purged": list(self.purged),
        }


def fresh_for(result: FetchResult) -> float | None:
    """The upstream's freshness lifetime for this answer (cachecontrol.py), None if none."""
    return freshness_lifetime_s(result.cache_control, result.age)


def apply_result(
    result: FetchResult, state: IssuerState, *, validators: Validators, now: float
) -> Applied | None:
    """Apply a 200 or a 304 (to a request sent with ``validators``) to ``state``. None for a
    304 with nothing of this replica's own to fall back on (validators from another replica's
    state file, say; a peer's copy is not ours): the caller asks again, unconditionally.
    Raises :class:`~jwks_mirror.core.errors.KeySetRejected` for a body the policy refuses (then
    the state is unchanged: the last good set stays).

    Identical bytes to the last set of our own are not validated again. A 200 brings the
    validators for the next conditional request; a 304 keeps the ones it confirmed.
    """
    if result.body is None:
        if not state.has_own_set:
            return None
        return Applied(state.mark_unchanged(now=now), fresh_for(result), validators)
    digest = hashlib.sha256(result.body).hexdigest()
    answered = Validators(result.etag, result.last_modified, digest)
    if digest == validators.digest and state.has_own_set:
        return Applied(state.mark_unchanged(now=now), fresh_for(result), answered)
    limits = state.settings.limits
    validated = validate(
        result.body, max_bytes=limits.max_response_bytes, max_keys=limits.max_keys
    )
    change = state.apply(validated, now=now)
    return Applied(
        change,
        fresh_for(result),
        answered,
        dropped=dict(validated.dropped),
        notes=validated.notes[:20],
    )
