"""Coverage-guided fuzzing of ``explain``'s token decoder and verdict with atheris (libFuzzer).

    python fuzz/fuzz_explain_token.py -max_total_time=60 [CORPUS_DIR ...]

The bytes are what an operator pastes as TOKEN. Whatever they are,
:func:`~jwks_mirror.cli.explain.decode_unverified` returns a header and claims that are JSON
objects or raises ``UsageError`` (exit 2), and :func:`~jwks_mirror.cli.explain.explain`
against a fixed mirror status (offline: a real published key) gives a verdict whose rendered
lines hold no control character (claims are printed inert). Any other exception is a crash.
With no corpus directory given, the seed corpus is real signed tokens (RS256, ES256, EdDSA,
expired, far-future ``exp``/``nbf``, unknown kid, wrong issuer) and hostile ones (deep JSON,
``alg: none``, duplicate members).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import atheris
import harness

with atheris.instrument_imports(include=["jwks_mirror"]):
    from jwks_mirror.cli.explain import decode_unverified, explain
    from jwks_mirror.core.errors import UsageError

ISSUER = "https://issuer.test"
NOW = 1_800_000_000.0
KEYS: dict[str, Any] = {}


def _keys() -> dict[str, Any]:
    """The signing keys, made once; the mirror's view of them is their public halves."""
    if not KEYS:
        from jwcrypto import jwk

        KEYS["k1"] = jwk.JWK.generate(kty="RSA", size=2048, kid="k1")
        KEYS["ec"] = jwk.JWK.generate(kty="EC", crv="P-256", kid="ec")
        KEYS["ed"] = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed")
    return KEYS


def _detail(name: str) -> dict[str, Any]:
    keys = [json.loads(k.export_public()) for k in _keys().values()]
    return {
        "name": name, "upstream": "http://keys.myns.svc/jwks.json", "issuer": ISSUER,
        "servable": True, "last_success": NOW - 60, "jwks": {"keys": keys},
        "key_history": [
            {"kid": k["kid"], "thumbprint": j.thumbprint(), "status": "current",
             "first_seen": NOW - 86400}
            for k, j in zip(keys, _keys().values(), strict=True)
        ],
    }


STATUS = [{"name": "idp", "issuer": ISSUER, "kids": ["k1", "ec", "ed"], "servable": True}]


def check(data: bytes) -> None:
    token = data.decode("utf-8", "surrogateescape")
    try:
        header, claims = decode_unverified(token)
    except UsageError:
        return
    assert isinstance(header, dict) and isinstance(claims, dict)
    try:
        verdict = explain(token, issuers=STATUS, detail=_detail, now=NOW)
    except UsageError:
        return
    for line in verdict.render().split("\n"):
        assert line.isprintable() or all(c.isprintable() or c == " " for c in line), line


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seed(directory: Path) -> None:
    from jwcrypto import jwt

    keys = _keys()
    signed = {
        "rs256": ("k1", "RS256", {"iss": ISSUER, "sub": "alice", "aud": "api", "exp": NOW + 600}),
        "es256": ("ec", "ES256", {"iss": ISSUER, "exp": NOW + 600, "nbf": NOW - 5}),
        "eddsa": ("ed", "EdDSA", {"iss": ISSUER, "exp": NOW + 600}),
        "expired": ("k1", "RS256", {"iss": ISSUER, "exp": NOW - 3600}),
        "far-exp": ("k1", "RS256", {"iss": ISSUER, "exp": 1e20}),
        "far-nbf": ("k1", "RS256", {"iss": ISSUER, "nbf": 1e20}),
        "wrong-iss": ("k1", "RS256", {"iss": "https://elsewhere\n::error::x", "exp": NOW}),
    }
    for name, (kid, alg, claims) in signed.items():
        token = jwt.JWT(header={"alg": alg, "kid": kid}, claims=claims)
        token.make_signed_token(keys[kid])
        (directory / name).write_text(token.serialize())
    unknown = jwt.JWT(header={"alg": "RS256", "kid": "nope"}, claims={"iss": ISSUER})
    unknown.make_signed_token(keys["k1"])
    (directory / "unknown-kid").write_text(unknown.serialize())
    hostile = {
        "alg-none": (b'{"alg":"none"}', b'{"iss":"https://issuer.test"}'),
        "deep": (b'{"alg":' + b"[" * 2000 + b"]" * 2000 + b"}", b"{}"),
        "duplicate": (b'{"alg":"RS256","alg":"none"}', b"{}"),
        "nan": (b'{"alg":"RS256"}', b'{"exp":NaN}'),
    }
    for name, (header, claims) in hostile.items():
        (directory / name).write_text(f"{_b64(header)}.{_b64(claims)}.c2ln")


def main() -> None:
    harness.run(check, seed, name="explain-token")


if __name__ == "__main__":
    main()
