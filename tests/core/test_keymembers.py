"""The per-key-type validators of the keysets policy (jwks_mirror/core/keymembers.py), called
directly: each returns a key's members canonically or drops the key with its reason. The
policy over whole sets (and the same rules end to end) is tests/core/test_keysets.py."""

from __future__ import annotations

import base64
import hashlib

import pytest

from jwks_mirror.core.errors import KeyDropped
from jwks_mirror.core.keymembers import MEMBERS_BY_KTY, add_certificate

from .. import keyfactory as kf


def test_the_table_holds_exactly_the_key_types_envoy_verifies_with() -> None:
    assert set(MEMBERS_BY_KTY) == {"RSA", "EC", "OKP"}


@pytest.mark.parametrize(
    ("kind", "kty", "members"),
    [("rsa2048", "RSA", {"n", "e"}), ("p256", "EC", {"crv", "x", "y"}),
     ("ed25519", "OKP", {"crv", "x"})],
)
def test_each_validator_returns_only_its_key_members(kind: str, kty: str, members: set[str]) -> None:
    raw = kf.jwk(kind, kid="k", alg="X", use="sig", extra="dropped")
    out = MEMBERS_BY_KTY[kty](raw)
    assert set(out) == members
    assert all(out[m] == raw[m] for m in members)  # already canonical: unchanged


def test_rsa_numbers_are_written_minimally() -> None:
    raw = kf.jwk("rsa2048")
    padded = dict(raw, n=kf.b64url(b"\0" + kf.b64url_decode(raw["n"])))
    assert MEMBERS_BY_KTY["RSA"](padded)["n"] == raw["n"]


@pytest.mark.parametrize(
    ("kty", "raw", "reason"),
    [
        ("RSA", kf.jwk("rsa1024"), "weak_key"),
        ("RSA", dict(kf.jwk("rsa2048"), e=kf.b64url(b"\x02")), "invalid_key"),
        ("EC", dict(kf.jwk("p256"), crv="P-192"), "unsupported_curve"),
        ("EC", dict(kf.jwk("p256"), crv=["P-256"]), "unsupported_curve"),
        ("OKP", dict(kf.jwk("ed25519"), crv="X25519"), "unsupported_curve"),
        ("OKP", dict(kf.jwk("ed25519"), x=kf.b64url(bytes(31))), "malformed"),
    ],
)
def test_each_validator_drops_with_its_reason(kty: str, raw: dict, reason: str) -> None:
    with pytest.raises(KeyDropped) as caught:
        MEMBERS_BY_KTY[kty](raw)
    assert caught.value.reason == reason


def _public_key(raw: dict) -> object:
    from jwcrypto import jwk as jwcrypto_jwk

    return jwcrypto_jwk.JWK(**{m: raw[m] for m in ("kty", "crv", "x", "y")}).get_op_key("verify")


def test_the_certificate_of_the_key_is_kept_with_a_matching_thumbprint() -> None:
    raw = kf.x5c_key(index=0)
    raw["x5t#S256"] = kf.b64url(hashlib.sha256(base64.b64decode(raw["x5c"][0])).digest())
    out: dict = {}
    assert add_certificate(raw, out, _public_key(raw)) == ()
    assert out == {"x5c": raw["x5c"], "x5t#S256": raw["x5t#S256"]}


def test_a_certificate_of_another_key_is_removed_with_its_thumbprints() -> None:
    raw = dict(kf.x5c_key(index=0), x5c=kf.x5c_chain(index=1))
    raw["x5t#S256"] = kf.b64url(hashlib.sha256(base64.b64decode(raw["x5c"][0])).digest())
    out: dict = {}
    assert add_certificate(raw, out, _public_key(raw)) == ("x5c_removed",)
    assert out == {}
