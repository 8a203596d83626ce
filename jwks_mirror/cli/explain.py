"""``jwks-mirror explain``: why Istio would accept or reject a JWT, in plain words.

The token is decoded without being trusted, matched to a mirrored issuer by ``iss`` and to a
key by ``kid``, and its signature checked against the keys the mirror publishes, i.e. the keys
istiod hands to Envoy. The checks follow Envoy's ``jwt_authn`` order: issuer, key, algorithm,
signature, time (with Envoy's default 60 s of clock skew). Which algorithm a key can verify is
the validation policy's table (:func:`jwks_mirror.core.keysets.verifies`), not a copy of it.
Audiences are not known to the mirror (they live in the RequestAuthentication), so they are
shown, not judged.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from jwks_mirror.cli.admin_client import human_duration
from jwks_mirror.core.errors import KeySetRejected, UsageError
from jwks_mirror.core.keysets import never_allowed, verifies
from jwks_mirror.core.strictjson import parse_json
from jwks_mirror.core.text import inert, one_line

CLOCK_SKEW_S = 60  # Envoy jwt_authn's default clock_skew_seconds


@dataclass
class Verdict:
    """``accepted`` and the human explanation, one finding per line."""

    accepted: bool
    reason: str
    lines: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The verdict and its findings, each line inert: claims and admin answers are input."""
        head = "ACCEPTED" if self.accepted else f"REJECTED ({self.reason})"
        return "\n".join([head, *(f"  {inert(line)}" for line in self.lines)])


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, without any verification. UsageError if not one.

    The JSON is read strictly (:func:`~jwks_mirror.core.strictjson.parse_json`: bounded nesting, no
    duplicate members, no NaN): the token is whatever was pasted, and the fuzz target
    ``fuzz/fuzz_explain_token.py`` feeds this function.
    """
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise UsageError("not a JWT: expected three dot-separated parts")
    try:
        header, claims = (parse_json(_b64decode(p)) for p in parts[:2])
    except (ValueError, binascii.Error, KeySetRejected) as exc:
        raise UsageError(f"not a JWT: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise UsageError("not a JWT: header and payload must be JSON objects")
    return header, claims


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "at an unknown time"
    try:
        stamp = dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, ValueError, OSError):  # a claim of 1e20: past any calendar
        return f"at {ts:.6g}, outside the calendar"
    span = human_duration(abs(now - ts))
    return f"{stamp} ({span} ago)" if now >= ts else f"{stamp} (in {span})"


def explain(
    token: str,
    *,
    issuers: list[Mapping[str, Any]],
    detail: Callable[[str], Mapping[str, Any]],
    now: float,
) -> Verdict:
    """Explain ``token`` against the mirror's ``/status`` list and per-issuer details."""
    header, claims = decode_unverified(token)
    iss, kid, alg = claims.get("iss"), header.get("kid"), header.get("alg")
    lines = [f"token: iss={iss!r} kid={kid!r} alg={alg!r} sub={claims.get('sub')!r}"]

    matches = [i for i in issuers if i.get("issuer") is not None and i.get("issuer") == iss]
    if not matches:
        return _wrong_issuer(iss, kid, issuers, lines)
    name = str(matches[0]["name"])
    info = detail(name)
    lines.append(f"mirrored issuer {name!r}, upstream {info.get('upstream')}")
    if not info.get("servable"):
        lines.append(
            f"the mirror serves no key set for {name!r} (503): last success "
            f"{_when(info.get('last_success'), now)}, last error: {info.get('last_error')}"
        )
        lines.append("Istio rejects every token of this issuer until the mirror has keys")
        return Verdict(False, "no key set", lines)
    if not isinstance(alg, str) or never_allowed(alg):
        lines.append(f"algorithm {alg!r} is never accepted: only RS*, PS*, ES*, EdDSA")
        return Verdict(False, "algorithm not allowed", lines)
    keys = (info.get("jwks") or {}).get("keys", [])
    candidates = [k for k in keys if kid is None or k.get("kid") == kid]
    if not candidates:
        return _unknown_kid(kid, name, keys, info, now, lines)
    return _verify(token, alg, candidates, claims=claims, info=info, now=now, lines=lines)


def _wrong_issuer(
    iss: object, kid: object, issuers: list[Mapping[str, Any]], lines: list[str]
) -> Verdict:
    configured = ", ".join(sorted(str(i.get("issuer")) for i in issuers if i.get("issuer")))
    lines.append(f"no mirrored issuer has iss {iss!r} (mirrored: {configured or 'none set'})")
    hint = [i["name"] for i in issuers if kid is not None and kid in (i.get("kids") or [])]
    if hint:
        lines.append(
            f"kid {kid!r} is published by {', '.join(hint)}: set 'issuer: {iss}' there "
            "if the token is theirs"
        )
    lines.append("Istio rejects it: 'Jwt issuer is not configured'")
    return Verdict(False, "wrong issuer", lines)


def _unknown_kid(
    kid: object,
    name: str,
    keys: list[Any],
    info: Mapping[str, Any],
    now: float,
    lines: list[str],
) -> Verdict:
    upstream_kids = info.get("upstream_kids") or []
    lines.append(f"unknown kid {kid!r}: the mirror publishes {sorted(k.get('kid') for k in keys)}")
    lines.append(
        f"the upstream did not serve it either at the last successful fetch "
        f"({_when(info.get('last_success'), now)}; upstream kids {upstream_kids})"
    )
    lines.append(
        f"if the issuer has just started signing with a new key: jwks-mirror refresh {name}, "
        "then jwks-mirror pin so istiod fetches at once"
    )
    lines.append("Istio rejects it: 'Jwks doesn't have key to match kid or alg from Jwt'")
    return Verdict(False, "unknown kid", lines)


def _verify(
    token: str,
    alg: str,
    candidates: list[Mapping[str, Any]],
    *,
    claims: Mapping[str, Any],
    info: Mapping[str, Any],
    now: float,
    lines: list[str],
) -> Verdict:
    """Try the token's signature with each published candidate key; the first that verifies
    decides (then the token's times), else why none did."""
    history = {(k["kid"], k["thumbprint"]): k for k in info.get("key_history") or []}
    signed = jws.JWS()
    try:
        signed.deserialize(token.strip())
    except (jws.InvalidJWSObject, ValueError) as exc:
        raise UsageError(f"not a JWT: {one_line(exc, 160)}") from exc
    failures: list[str] = []
    for candidate in candidates:
        try:
            key = jwk.JWK(**candidate)
        except Exception:  # jwcrypto raises many types for a bad key
            failures.append(f"the mirror published key {candidate.get('kid')!r} unreadably")
            continue
        entry = history.get((candidate.get("kid"), key.thumbprint()))
        if not verifies(candidate, alg):  # the policy's alg table, the one validate() uses
            failures.append(
                f"key {candidate.get('kid')!r} ({candidate['kty']}) cannot verify {alg}"
            )
            continue
        try:
            signed.verify(key, alg=alg)
        except jws.InvalidJWSSignature:
            failures.append(f"signature does not verify with key {candidate.get('kid')!r}")
            continue
        except JWException as exc:  # the token asks for something jwcrypto will not do
            failures.append(f"the signature check with key {candidate.get('kid')!r} failed: {exc}")
            continue
        lines.append(_describe_key(candidate, entry, now))
        return _check_times(claims, now, lines)
    lines.extend(failures)
    if all("cannot verify" in f for f in failures):
        lines.append("Istio rejects it: 'Jwks doesn't have key to match kid or alg from Jwt'")
        return Verdict(False, "algorithm mismatch", lines)
    lines.append("Istio rejects it: 'Jwt verification fails' (signed by another key, or altered)")
    return Verdict(False, "signature mismatch", lines)


def _describe_key(candidate: Mapping[str, Any], entry: Mapping[str, Any] | None, now: float) -> str:
    kid = candidate.get("kid")
    if entry is None:
        return f"signature verifies with key {kid!r}"
    if entry.get("status") == "retained":
        return (
            f"signature verifies with key {kid!r}, which the upstream removed "
            f"{_when(entry.get('removed_at'), now)}; it stays published until "
            f"{_when(entry.get('retained_until'), now)} (or refresh --purge-retained)"
        )
    since = _when(entry.get("first_seen"), now)
    return f"signature verifies with key {kid!r}, current upstream key since {since}"


def _check_times(claims: Mapping[str, Any], now: float, lines: list[str]) -> Verdict:
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, int | float) and now > exp + CLOCK_SKEW_S:
        lines.append(f"expired {_when(exp, now)} (Envoy allows {CLOCK_SKEW_S}s of clock skew)")
        lines.append("Istio rejects it: 'Jwt is expired'")
        return Verdict(False, "expired", lines)
    if isinstance(nbf, int | float) and now < nbf - CLOCK_SKEW_S:
        lines.append(f"not valid before {_when(nbf, now)}")
        lines.append("Istio rejects it: 'Jwt not yet valid'")
        return Verdict(False, "not yet valid", lines)
    if isinstance(exp, int | float):
        lines.append(f"expires {_when(exp, now)}")
    if "aud" in claims:
        lines.append(
            f"aud {claims['aud']!r}: must match the RequestAuthentication's audiences, if set"
        )
    lines.append("Istio accepts it (given a matching RequestAuthentication issuer and audiences)")
    return Verdict(True, "verifies", lines)
