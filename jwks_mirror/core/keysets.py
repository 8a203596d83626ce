"""The validation policy: untrusted bytes in, a canonical public key set out (or a rejection).

Pure: no I/O, no aiohttp, no clock. This module is the *only* validation policy: a fetched
body, a peer's copy, a restored state file and ``explain`` all go through it (one alg table,
one kid rule), and :func:`render` is the only producer of published bytes.

The policy, and why (README.md, "What is published, and what never is"):

* Any private member (``d p q dp dq qi oth``) or any symmetric (``oct``) key rejects the *whole*
  set. Such an upstream is broken or compromised; publishing "the rest" of its answer would
  launder it. The last good set keeps being served.
* Keys that are merely unusable (weak RSA, unknown curves, encryption keys, malformed members)
  are dropped and counted by reason, as RFC 7517 section 5 asks for keys one does not
  understand; Envoy would skip them anyway, so dropping changes nothing for verification.
* What is kept is what Envoy's ``jwt_authn`` can verify with: RSA >= 2048 bits, EC P-256/384/521
  on the curve, OKP Ed25519. A set left with no usable key is rejected: istiod would push it and
  Envoy would NACK the listener (worse than a stale set).
* Output members are an allow-list, so unknown upstream members never reach verifiers.
* Encoding is read leniently and written canonically: base64 in either alphabet, with or
  without padding; RSA numbers with leading zero bytes; EC coordinates shorter (or longer,
  by leading zeros) than the curve size. These are the same key material, and a key Envoy
  could verify with must never be dropped for its spelling alone: the mirror would then cause
  the outage it exists to prevent. Output is RFC 7518 form (unpadded base64url, minimal RSA
  numbers, fixed-size coordinates), so equal keys always render to equal bytes.
* The same key under one kid with different ``alg`` values is published once per ``alg``:
  Envoy skips a JWK whose ``alg`` differs from the token's, so collapsing them would break
  the tokens of every ``alg`` but one.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jwcrypto import jwk as jwcrypto_jwk

from jwks_mirror.core.errors import KeyDropped, KeySetRejected
from jwks_mirror.core.keymembers import MEMBERS_BY_KTY, add_certificate
from jwks_mirror.core.strictjson import parse_json
from jwks_mirror.core.text import one_line

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
EC_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


@dataclass(frozen=True)
class Key:
    """One validated public key entry, in canonical form.

    ``ident`` identifies the entry: the RFC 7638 thumbprint of the key material, followed by
    ``.<alg>`` when the entry names an ``alg`` (one key may be published once per ``alg``).
    Two entries are the same when both ``kid`` and ``ident`` match; :attr:`thumbprint` alone
    says whether two entries hold the same key material.
    """

    kid: str | None
    kty: str
    ident: str
    jwk: Mapping[str, Any] = field(compare=False, hash=False)

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.kid or "", self.kty, self.ident)

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint of the key material (whatever the ``alg``)."""
        return self.ident.partition(".")[0]


@dataclass(frozen=True)
class Validated:
    """A usable key set and what was dropped on the way (reason -> count)."""

    keys: tuple[Key, ...]
    dropped: Mapping[str, int]
    notes: tuple[str, ...] = ()


def validate(body: bytes, *, max_bytes: int, max_keys: int) -> Validated:
    """Parse and validate an upstream JWKS body. Raises :class:`KeySetRejected`."""
    if len(body) > max_bytes:
        raise KeySetRejected("too_large", f"body of {len(body)} bytes exceeds {max_bytes}")
    document = parse_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeySetRejected("not_a_key_set", 'expected a JSON object with a "keys" array')
    return validate_keys(document["keys"], max_keys=max_keys)


def validate_keys(raw_keys: Sequence[object], *, max_keys: int, strict: bool = False) -> Validated:
    """The policy over parsed key members. Raises :class:`KeySetRejected`.

    ``strict`` is for what jwks-mirror wrote itself (state files): those hold only kept keys,
    once each, so a key the policy would drop or alter, or one listed twice, refuses the whole
    set (tampering, or a stricter policy), under the reason an upstream key is dropped for.
    """
    if len(raw_keys) > max_keys:
        raise KeySetRejected("too_many_keys", f"{len(raw_keys)} keys exceed max_keys {max_keys}")
    # Whole-set rejections first: one private or symmetric key poisons the answer.
    for index, raw in enumerate(raw_keys):
        if isinstance(raw, dict):
            _reject_secret(raw, f"keys[{index}]")
    dropped: Counter[str] = Counter()
    notes: list[str] = []
    kept: dict[tuple[str | None, str], Key] = {}
    by_kid: dict[tuple[str, str], Key] = {}
    for index, raw in enumerate(raw_keys):
        try:
            key, removed = _validate_key(raw)
        except KeyDropped as exc:
            if strict:
                raise KeySetRejected(exc.reason, f"keys[{index}] ({exc.reason}): {exc}") from None
            dropped[exc.reason] += 1
            notes.append(f"keys[{index}] dropped ({exc.reason}): {exc}")
            continue
        for note in removed:
            if strict:
                raise KeySetRejected(note, f"keys[{index}]: {note}")
            dropped[note] += 1
            notes.append(f"keys[{index}]: {note}")
        same = kept.get((key.kid, key.ident))
        if same is not None:
            if strict:
                raise KeySetRejected("duplicate_key", f"keys[{index}] is listed twice")
            # The same key and alg listed twice: publish it once. The entries may differ in
            # metadata (use, key_ops, x5c), so pick by content, not by position: the upstream
            # reordering its keys must not change the published bytes (and so the ETag).
            if _canonical(key) < _canonical(same):
                kept[(key.kid, key.ident)] = key
            continue
        if key.kid is not None:
            other = by_kid.get((key.kid, key.kty))
            if other is not None and other.thumbprint != key.thumbprint:
                raise KeySetRejected(
                    "kid_conflict",
                    f"two different {key.kty} keys share kid {key.kid!r}; verifiers could pick "
                    "either",
                )
            by_kid[(key.kid, key.kty)] = key
        kept[(key.kid, key.ident)] = key
    if not kept:
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(dropped.items())) or "empty"
        raise KeySetRejected("no_usable_keys", f"no usable signing key ({reasons})")
    keys = tuple(sorted(kept.values(), key=lambda k: k.sort_key))
    return Validated(keys=keys, dropped=dict(dropped), notes=tuple(notes))


def key_from_jwk(members: object) -> Key:
    """Re-validate one stored canonical JWK (a retained key in a state file), strictly: see
    :func:`validate_keys`. Raises :class:`KeySetRejected`."""
    return validate_keys([members], max_keys=1, strict=True).keys[0]


def _reject_secret(raw: Mapping[str, Any], where: str) -> None:
    private = sorted(PRIVATE_MEMBERS.intersection(raw))
    if raw.get("kty") == "oct" or "k" in private:
        raise KeySetRejected(
            "symmetric_key", f"{where} is a symmetric (oct) key; nothing is published"
        )
    if private:
        raise KeySetRejected(
            "private_key",
            f"{where} holds private key material ({', '.join(private)}); nothing is published",
        )


def algs_for(members: Mapping[str, Any]) -> frozenset[str]:
    """The JWS algorithms a published key can verify (Envoy's table): the only alg table."""
    kty, crv = members.get("kty"), members.get("crv")
    if kty == "RSA":
        return RSA_ALGS
    if kty == "EC" and isinstance(crv, str) and crv in EC_ALG:
        return frozenset({EC_ALG[crv]})
    if kty == "OKP" and crv == "Ed25519":
        return frozenset({"EdDSA"})
    return frozenset()


def never_allowed(alg: str) -> bool:
    """``none`` or any ``HS*`` (a symmetric secret): never the alg of a published key."""
    return alg == "none" or alg.startswith("HS")


def verifies(members: Mapping[str, Any], alg: str) -> bool:
    """Whether the published key ``members`` can verify a token signed with ``alg``: it fits
    the key's type and curve, and the key's own ``alg``, if it names one, is that one."""
    return alg in algs_for(members) and members.get("alg") in (None, alg)


def render(keys: Iterable[Key]) -> bytes:
    """The canonical published bytes: keys sorted by kid, members sorted, compact ASCII."""
    ordered = sorted(keys, key=lambda k: k.sort_key)
    document = {"keys": [dict(k.jwk) for k in ordered]}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _canonical(key: Key) -> str:
    return json.dumps(dict(key.jwk), sort_keys=True, separators=(",", ":"))


def version_of(body: bytes) -> str:
    """A short content version: the same bytes give the same version on every replica."""
    return hashlib.sha256(body).hexdigest()[:16]


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _validate_key(raw: object) -> tuple[Key, tuple[str, ...]]:
    """One key: dropped via :class:`KeyDropped`, or kept canonically, with the names of the
    members removed on the way (``x5c_removed``, ``x5t_removed``) for counting."""
    if not isinstance(raw, dict):
        raise KeyDropped("malformed", "not a JSON object")
    kty, kid = _check_names(raw)
    _check_usage(raw)
    members = MEMBERS_BY_KTY.get(kty)
    if members is None:
        raise KeyDropped("unsupported_key_type", f"key type {kty[:32]!r}")
    out: dict[str, Any] = {"kty": kty, **members(raw)}
    alg = raw.get("alg")
    if alg is not None:
        if alg not in algs_for(out):
            raise KeyDropped("bad_alg", f"alg {str(alg)[:32]!r} does not fit a {kty} key")
        out["alg"] = alg
    if kid is not None:
        out["kid"] = kid
    if "use" in raw:
        out["use"] = "sig"
    if "key_ops" in raw:
        out["key_ops"] = ["verify"]
    key_object, public_key = _load(out)
    removed = add_certificate(raw, out, public_key)
    # jwcrypto's RFC 7638 thumbprint (tested against the RFC's example): ~2.5 us a key more than
    # a hand-written one, below the noise of the 10,000-issuer bench's changed cycle.
    ident = key_object.thumbprint() + (f".{out['alg']}" if "alg" in out else "")
    return Key(kid=kid, kty=kty, ident=ident, jwk=out), removed


def _check_names(raw: Mapping[str, Any]) -> tuple[str, str | None]:
    """The key's ``kty`` and ``kid``, or KeyDropped when either is malformed."""
    kty = raw.get("kty")
    if not isinstance(kty, str):
        raise KeyDropped("malformed", '"kty" missing')
    kid = raw.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > 256):
        raise KeyDropped("malformed", '"kid" must be a non-empty string of at most 256 chars')
    if kid is not None and not _is_unicode(kid):
        # A lone surrogate ("\ud800") decodes from JSON but is not Unicode text: the published
        # "\ud800" escape is one that strict JSON parsers (verifiers) may refuse, set and all.
        raise KeyDropped("malformed", '"kid" holds a lone UTF-16 surrogate')
    return kty, kid


def _check_usage(raw: Mapping[str, Any]) -> None:
    use = raw.get("use")
    if "use" in raw and use != "sig":
        raise KeyDropped("not_signing", f"use {str(use)[:32]!r} is not a signature key")
    if "key_ops" in raw:
        ops = raw["key_ops"]
        if not isinstance(ops, list) or ops != ["verify"]:
            raise KeyDropped("not_signing", 'key_ops must be exactly ["verify"]')
    alg = raw.get("alg")
    if "alg" in raw and not isinstance(alg, str):
        raise KeyDropped("malformed", '"alg" must be a string')
    if isinstance(alg, str) and never_allowed(alg):
        raise KeyDropped("bad_alg", f"alg {alg[:32]!r} is never allowed for a published key")


def _load(members: Mapping[str, Any]) -> tuple[jwcrypto_jwk.JWK, Any]:
    """Parse with jwcrypto (which checks EC points lie on the curve): the JWK and its key."""
    material = {k: members[k] for k in ("kty", "n", "e", "crv", "x", "y") if k in members}
    try:
        key = jwcrypto_jwk.JWK(**material)
        return key, key.get_op_key("verify")
    except Exception as exc:  # jwcrypto raises a variety of types for bad material
        raise KeyDropped("invalid_key", f"unusable key material: {one_line(exc)}") from exc
