"""What a peer offers: the ``GET /peer/{name}`` answer (:func:`share`) and its decoding on
the asking side (:func:`parse_offer`), under the state file's rules for the retained list
(:func:`jwks_mirror.serving.persistence.decode_retained`). No network here: peering.py asks the
peers, and its module docstring gives the protocol and why each rule holds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jwks_mirror.core.config.model import IssuerSettings
from jwks_mirror.core.errors import KeySetRejected, PeerError
from jwks_mirror.core.keysets import Key, Validated, render, validate
from jwks_mirror.core.strictjson import parse_json
from jwks_mirror.serving.persistence import decode_retained, encode_retained
from jwks_mirror.serving.state import IssuerState

SHAREABLE_SOURCES = frozenset({"upstream", "state"})


# -- the peer side ----------------------------------------------------------------------------


def share(state: IssuerState, now: float) -> tuple[int, dict[str, Any]]:
    """The ``GET /peer/{name}`` answer: (HTTP status, JSON document)."""
    if state.published is None or state.last_success is None:
        return 503, {"error": "no key set yet", "reason": "no_set"}
    if state.is_expired(now):
        return 503, {"error": "the key set is older than max_stale", "reason": "expired"}
    if state.source not in SHAREABLE_SOURCES:
        return 503, {
            "error": "this set was copied from a peer; only upstream sets are shared",
            "reason": "filled_from_peer",
        }
    return 200, {
        "name": state.name,
        "upstream": state.settings.upstream,
        "source": state.source,
        "last_success": state.last_success,
        "jwks": render(state.current).decode(),
        "retained": encode_retained((r.key, r.removed_at) for r in state.retained.values()),
    }


# -- the asking side: what an answer must be ---------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A peer's answer that passed every check, ready for :meth:`IssuerState.adopt_from_peer`."""

    peer: str
    validated: Validated
    retained: tuple[tuple[Key, float], ...]
    last_success: float
    source: str


def parse_offer(body: bytes, *, issuer: IssuerSettings, peer: str, now: float) -> Offer:
    """Check a peer's ``/peer/{name}`` answer. Raises :class:`PeerError` (``reason`` says why)."""
    limits = issuer.limits
    try:
        document = parse_json(body)
    except KeySetRejected as exc:
        raise PeerError(exc.reason, f"answer: {exc}") from exc
    if not isinstance(document, dict):
        raise PeerError("malformed", "answer is not a JSON object")
    if document.get("name") != issuer.name:
        raise PeerError("malformed", f"answer names issuer {_short(document.get('name'))}")
    if document.get("upstream") != issuer.upstream:
        raise PeerError(
            "upstream_mismatch",
            f"peer fetches {_short(document.get('upstream'))}, this replica {issuer.upstream!r}",
        )
    source = document.get("source")
    if not isinstance(source, str) or source not in SHAREABLE_SOURCES:
        raise PeerError("malformed", f"set of source {_short(source)} is not shareable")
    last_success = _time(document.get("last_success"), "last_success")
    # A peer clock ahead of ours (or a lie) must not extend how long the copy is served.
    last_success = min(last_success, now)
    if last_success + limits.max_stale_s <= now:
        raise PeerError(
            "older_than_max_stale",
            f"the peer's last upstream success was {now - last_success:.0f}s ago, "
            f"over max_stale ({limits.max_stale_s:g}s)",
        )
    jwks = document.get("jwks")
    if not isinstance(jwks, str):
        raise PeerError("malformed", 'answer has no "jwks" string')
    try:
        validated = validate(
            jwks.encode(), max_bytes=limits.max_response_bytes, max_keys=limits.max_keys
        )
    except KeySetRejected as exc:
        raise PeerError(exc.reason, f"key set rejected: {exc}") from exc
    retained = _retained(document.get("retained", []), issuer=issuer, now=now)
    return Offer(
        peer=peer,
        validated=validated,
        retained=retained,
        last_success=last_success,
        source=source,
    )


def _retained(
    value: object, *, issuer: IssuerSettings, now: float
) -> tuple[tuple[Key, float], ...]:
    """The state file's rule (:func:`jwks_mirror.serving.persistence.decode_retained`): a key the
    policy refuses refuses the whole answer, with the policy's reason."""
    try:
        return decode_retained(value, max_keys=issuer.limits.max_keys, now=now)
    except KeySetRejected as exc:
        raise PeerError(exc.reason, str(exc)) from exc


def _time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PeerError("malformed", f"{what} is not a finite time")
    return float(value)


def _short(value: object) -> str:
    return repr(value)[:80]


@dataclass(frozen=True)
class PeerFillReport:
    """One peer-fill attempt: when, its outcome, the peer whose copy was adopted, and what
    each peer answered. :meth:`PeerFiller.fill` returns it, the refresher keeps the last one
    in its ``Health``, ``/status`` shows it."""

    at: float
    outcome: str  # filled | no_peers | rejected | no_set | unreachable
    peer: str | None
    duration_s: float
    peers: tuple[Mapping[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "outcome": self.outcome,
            "peer": self.peer,
            "duration_s": self.duration_s,
            "peers": [dict(p) for p in self.peers],
        }
