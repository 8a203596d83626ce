"""The validation policy of ``jwks_mirror.core.keysets``: what rejects a set, what drops a key, what
is published and in which exact bytes. Keys are generated at test time (``keyfactory``)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jwks_mirror.core.errors import KeySetRejected
from jwks_mirror.core.keysets import (
    PRIVATE_MEMBERS,
    Validated,
    algs_for,
    key_from_jwk,
    render,
    validate,
    validate_keys,
    verifies,
    version_of,
)
from jwks_mirror.core.strictjson import parse_json

from .. import keyfactory as kf

MAX_BYTES = 1 << 20
MAX_KEYS = 100


def check(body: bytes, *, max_bytes: int = MAX_BYTES, max_keys: int = MAX_KEYS) -> Validated:
    return validate(body, max_bytes=max_bytes, max_keys=max_keys)


def rejection(body: bytes, **limits: int) -> KeySetRejected:
    with pytest.raises(KeySetRejected) as info:
        check(body, **limits)
    return info.value


def good(kid: str = "good") -> dict[str, Any]:
    return kf.jwk("p256", kid=kid)


def published(result: Validated) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads(render(result.keys))["keys"]
    return keys


# -- whole-set rejections ------------------------------------------------------------------


RSA_PRIVATE = ["d", "p", "q", "dp", "dq", "qi"]


@pytest.mark.parametrize("member", RSA_PRIVATE)
def test_rsa_private_member_rejects_set(member: str) -> None:
    private = kf.jwk("rsa2048", private=True)
    key = kf.jwk("rsa2048", kid="rsa", **{member: private[member]})
    exc = rejection(kf.body(good(), key))
    assert exc.reason == "private_key"
    assert str(exc) == f"keys[1] holds private key material ({member}); nothing is published"


def test_rsa_oth_member_rejects_set() -> None:
    private = kf.jwk("rsa2048", private=True)
    oth = [{"r": private["p"], "d": private["dp"], "t": private["qi"]}]
    exc = rejection(kf.body(kf.jwk("rsa2048", kid="rsa", oth=oth)))
    assert exc.reason == "private_key"
    assert "(oth)" in str(exc)


def test_full_rsa_private_key_lists_every_private_member() -> None:
    exc = rejection(kf.body(kf.jwk("rsa2048", kid="rsa", private=True)))
    assert exc.reason == "private_key"
    assert "(d, dp, dq, p, q, qi)" in str(exc)


@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "ed25519"])
def test_ec_and_okp_private_key_rejects_set(kind: str) -> None:
    exc = rejection(kf.body(good(), kf.jwk(kind, kid="leak", private=True)))
    assert exc.reason == "private_key"
    assert str(exc).startswith("keys[1] holds private key material (d)")


@pytest.mark.parametrize(
    "leaky",
    [
        pytest.param(lambda: kf.jwk("rsa1024", private=True), id="weak-rsa"),
        pytest.param(lambda: kf.jwk("x25519", private=True), id="x25519"),
        pytest.param(lambda: kf.jwk("ed448", private=True), id="ed448"),
        pytest.param(lambda: kf.jwk("p256", private=True, use="enc"), id="encryption-key"),
        pytest.param(lambda: {"kty": "whatever", "d": "AAAA"}, id="unknown-kty"),
        pytest.param(lambda: {"d": "AAAA"}, id="no-kty"),
    ],
)
def test_private_member_rejects_set_even_in_a_key_that_would_be_dropped(leaky: Any) -> None:
    fine = [kf.jwk("rsa2048", kid="r"), good("e"), kf.jwk("ed25519", kid="o")]
    exc = rejection(kf.body(*fine, leaky()))
    assert exc.reason == "private_key"
    assert str(exc).startswith("keys[3] holds private key material")


def test_private_key_rejects_set_before_other_keys_are_examined() -> None:
    # An earlier malformed key must not hide a later private key.
    exc = rejection(kf.body("garbage", {"kty": "RSA", "n": "!"}, kf.jwk("p256", private=True)))
    assert exc.reason == "private_key"


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: kf.jwk("oct", kid="hmac"), id="kty-oct"),
        pytest.param(lambda: {"kty": "oct", "kid": "no-k"}, id="kty-oct-without-k"),
        pytest.param(lambda: kf.jwk("rsa2048", kid="r", k="c2VjcmV0"), id="k-member-on-rsa"),
    ],
)
def test_symmetric_key_rejects_set(key: Any) -> None:
    exc = rejection(kf.body(good(), key()))
    assert exc.reason == "symmetric_key"
    assert str(exc) == "keys[1] is a symmetric (oct) key; nothing is published"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"keys": ["\xff"]}', id="invalid-start-byte"),
        pytest.param(b'{"keys": ["\xc3\x28"]}', id="bad-continuation"),
        pytest.param(b'{"keys": ["\xed\xa0\x80"]}', id="encoded-surrogate"),
        pytest.param('{"keys": []}'.encode("utf-16"), id="utf-16"),
    ],
)
def test_invalid_utf8(body: bytes) -> None:
    exc = rejection(body)
    assert exc.reason == "invalid_utf8"
    assert str(exc).startswith("body is not UTF-8 (byte ")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"keys": [NaN]}', "invalid JSON: NaN is not valid JSON", id="NaN"),
        pytest.param(
            b'{"keys": [Infinity]}', "invalid JSON: Infinity is not valid JSON", id="Infinity"
        ),
        pytest.param(
            b'{"keys": [-Infinity]}', "invalid JSON: -Infinity is not valid JSON", id="-Infinity"
        ),
        pytest.param(b'{"keys": []} x', "invalid JSON: Extra data", id="trailing-garbage"),
        pytest.param(b'{"keys": []}{"keys": []}', "invalid JSON: Extra data", id="two-docs"),
        pytest.param('\ufeff{"keys": []}'.encode(), "body starts with a byte-order mark", id="bom"),
        pytest.param(b"[" * 100_000, "JSON nested too deeply", id="deep-nesting"),
        pytest.param(
            b'{"keys": [' + b"1" * 5000 + b"]}", "invalid JSON: Exceeds the limit", id="long-int"
        ),
        pytest.param(b"", "invalid JSON: Expecting value", id="empty"),
        pytest.param(b"{'keys': []}", "invalid JSON: Expecting property name", id="single-quote"),
    ],
)
def test_invalid_json(body: bytes, message: str) -> None:
    exc = rejection(body)
    assert exc.reason == "invalid_json"
    assert str(exc).startswith(message)


@pytest.mark.parametrize(
    ("body", "member"),
    [
        pytest.param(b'{"keys": [], "keys": []}', "'keys'", id="top-level"),
        pytest.param(
            b'{"keys": [{"kty": "EC", "crv": "P-256", "crv": "P-384"}]}', "'crv'", id="in-key"
        ),
        pytest.param(b'{"keys": [], "x": {"a": 1, "a": 1}}', "'a'", id="nested-extra"),
    ],
)
def test_duplicate_member(body: bytes, member: str) -> None:
    exc = rejection(body)
    assert exc.reason == "duplicate_member"
    assert str(exc) == f"duplicate JSON member {member}"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(json.dumps([good()]).encode(), id="array-of-keys"),
        pytest.param(b'"keys"', id="string"),
        pytest.param(b"{}", id="no-keys"),
        pytest.param(b'{"keys": {}}', id="keys-object"),
        pytest.param(b'{"keys": null}', id="keys-null"),
        pytest.param(b'{"keys": "[]"}', id="keys-string"),
        pytest.param(b"null", id="null"),
    ],
)
def test_not_a_key_set(body: bytes) -> None:
    exc = rejection(body)
    assert exc.reason == "not_a_key_set"
    assert str(exc) == 'expected a JSON object with a "keys" array'


def test_too_many_keys_counts_every_listed_entry() -> None:
    keys = [good("a"), good("b"), good("c")]
    assert len(check(kf.body(*keys), max_keys=3).keys) == 3
    exc = rejection(kf.body(*keys), max_keys=2)
    assert exc.reason == "too_many_keys"
    assert str(exc) == "3 keys exceed max_keys 2"


def test_too_large_is_checked_on_the_exact_byte_count() -> None:
    body = kf.body(good())
    assert check(body, max_bytes=len(body)).keys
    exc = rejection(body, max_bytes=len(body) - 1)
    assert exc.reason == "too_large"
    assert str(exc) == f"body of {len(body)} bytes exceeds {len(body) - 1}"


def test_too_large_is_checked_before_parsing() -> None:
    assert rejection(b"\xff" * 100, max_bytes=99).reason == "too_large"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param([], "no usable signing key (empty)", id="empty"),
        pytest.param(
            [kf.jwk("rsa2048", kid="e1", use="enc"), kf.jwk("p256", kid="e2", use="enc")],
            "no usable signing key (not_signing=2)",
            id="only-encryption-keys",
        ),
        pytest.param(
            [{"kty": "DSA", "kid": "a"}, {"kty": "foo"}],
            "no usable signing key (unsupported_key_type=2)",
            id="only-unknown-kty",
        ),
        pytest.param(
            [kf.jwk("rsa1024"), kf.jwk("x25519"), {"kty": "RSA"}],
            "no usable signing key (malformed=1, unsupported_curve=1, weak_key=1)",
            id="mixed",
        ),
    ],
)
def test_no_usable_keys(keys: list[Any], message: str) -> None:
    exc = rejection(kf.body(*keys))
    assert exc.reason == "no_usable_keys"
    assert str(exc) == message


def test_kid_conflict_two_different_rsa_keys() -> None:
    first, second = kf.jwk("rsa2048", kid="k"), kf.jwk("rsa2048", kid="k", index=1)
    exc = rejection(kf.body(first, second))
    assert exc.reason == "kid_conflict"
    assert str(exc) == "two different RSA keys share kid 'k'; verifiers could pick either"


def test_kid_conflict_even_when_alg_differs() -> None:
    first = kf.jwk("rsa2048", kid="k", alg="RS256")
    second = kf.jwk("rsa2048", kid="k", index=1, alg="PS256")
    assert rejection(kf.body(first, second)).reason == "kid_conflict"


def test_same_kid_on_keys_of_different_types_is_allowed() -> None:
    result = check(kf.body(kf.jwk("rsa2048", kid="k"), kf.jwk("p256", kid="k")))
    assert [k.kty for k in result.keys] == ["EC", "RSA"]


def test_keys_without_kid_never_conflict() -> None:
    result = check(kf.body(kf.jwk("rsa2048"), kf.jwk("rsa2048", index=1)))
    assert len(result.keys) == 2
    assert all(k.kid is None for k in result.keys)


# -- dropped keys ----------------------------------------------------------------------------


def _off_curve() -> dict[str, Any]:
    key = kf.jwk("p256", kid="off")
    y = bytearray(kf.b64url_decode(key["y"]))
    y[-1] ^= 1
    key["y"] = kf.b64url(bytes(y))
    return key


def _oversized_x() -> dict[str, Any]:
    key = kf.jwk("p256", kid="big")
    key["x"] = kf.b64url(b"\x01" + kf.b64url_decode(key["x"]))
    return key


def _rsa_n(transform: Any) -> Any:
    return lambda: kf.jwk("rsa2048", kid="n", n=transform(kf.jwk("rsa2048")["n"]))


DROPPED = [
    pytest.param(lambda: kf.jwk("rsa1024", kid="w"), "weak_key", id="rsa-1024"),
    pytest.param(_off_curve, "invalid_key", id="ec-point-off-curve"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="e", e="AQ"), "invalid_key", id="rsa-e-1"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="e", e="Ag"), "invalid_key", id="rsa-e-2"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="e", e="AQAA"), "invalid_key", id="rsa-e-even"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="e", e="AA"), "invalid_key", id="rsa-e-0"),
    # Either base64 alphabet is read, but not both in one value: that is no encoding at all.
    pytest.param(_rsa_n(lambda n: "-+" + n[2:]), "malformed", id="rsa-n-mixed-alphabets"),
    pytest.param(_rsa_n(lambda n: "_/" + n[2:]), "malformed", id="rsa-n-mixed-alphabets-2"),
    pytest.param(_rsa_n(lambda n: n + "="), "malformed", id="rsa-n-wrong-padding"),
    pytest.param(_rsa_n(lambda n: n + "==="), "malformed", id="rsa-n-three-pads"),
    pytest.param(_rsa_n(lambda n: n[:100] + "=" + n[100:]), "malformed", id="rsa-n-inner-pad"),
    pytest.param(_rsa_n(lambda n: n + "AAA"), "malformed", id="rsa-n-impossible-length"),
    pytest.param(lambda: kf.jwk("p256", kid="x", x="!" * 43), "malformed", id="bad-b64-chars"),
    pytest.param(
        lambda: kf.jwk("ed25519", kid="nl", x=kf.jwk("ed25519")["x"] + "\n"),
        "malformed",
        id="trailing-newline",
    ),
    pytest.param(_oversized_x, "malformed", id="coordinate-larger-than-the-curve"),
    pytest.param(
        # Read as a (short) P-384 number, it is simply not a point of that curve.
        lambda: kf.jwk("p384", kid="y", y=kf.jwk("p256")["y"]),
        "invalid_key",
        id="p256-coordinate-on-p384",
    ),
    pytest.param(
        lambda: kf.jwk("ed25519", kid="s", x=kf.b64url(kf.b64url_decode(kf.jwk("ed25519")["x"])[1:])),
        "malformed",
        id="ed25519-31-bytes",
    ),
    pytest.param(lambda: kf.jwk("rsa2048", kid="n", n=None), "malformed", id="missing-n"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="n", e=None), "malformed", id="missing-e"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="n", n=""), "malformed", id="empty-n"),
    pytest.param(lambda: kf.jwk("p256", kid="y", y=None), "malformed", id="missing-y"),
    pytest.param(lambda: kf.jwk("rsa2048", kid=None, n=12345), "malformed", id="numeric-n"),
    pytest.param(lambda: dict(kf.jwk("p256"), kid=7), "malformed", id="numeric-kid"),
    pytest.param(lambda: dict(kf.jwk("p256"), kid=""), "malformed", id="empty-kid"),
    pytest.param(lambda: dict(kf.jwk("p256"), kid="k" * 257), "malformed", id="long-kid"),
    pytest.param(lambda: dict(kf.jwk("p256"), kid="a\ud800"), "malformed", id="surrogate-kid"),
    pytest.param(lambda: kf.jwk("p256", kid="a", kty=None), "malformed", id="missing-kty"),
    pytest.param(lambda: kf.jwk("p256", kid="a", alg=256), "malformed", id="numeric-alg"),
    pytest.param(lambda: "a key", "malformed", id="string-key"),
    pytest.param(lambda: ["kty", "RSA"], "malformed", id="array-key"),
    pytest.param(lambda: None, "malformed", id="null-key"),
    pytest.param(lambda: kf.jwk("secp256k1", kid="k1"), "unsupported_curve", id="secp256k1"),
    pytest.param(lambda: kf.jwk("p256", crv=["P-256"]), "unsupported_curve", id="crv-list"),
    pytest.param(lambda: kf.jwk("p256", crv={"P-256": 1}), "unsupported_curve", id="crv-object"),
    pytest.param(
        lambda: kf.jwk("ed25519", crv=["Ed25519"]), "unsupported_curve", id="okp-crv-list"
    ),
    pytest.param(
        lambda: {"kty": "EC", "crv": "P-192", "x": "A" * 32, "y": "A" * 32},
        "unsupported_curve",
        id="p192",
    ),
    pytest.param(lambda: kf.jwk("x25519", kid="x"), "unsupported_curve", id="x25519"),
    pytest.param(lambda: kf.jwk("ed448", kid="x"), "unsupported_curve", id="ed448"),
    pytest.param(lambda: {"kty": "DSA", "kid": "d"}, "unsupported_key_type", id="dsa"),
    pytest.param(lambda: {"kty": "ec"}, "unsupported_key_type", id="lower-case-kty"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="u", use="enc"), "not_signing", id="use-enc"),
    # ``use: null`` is neither absent nor "sig": not a declared signing key.
    pytest.param(lambda: kf.jwk("p256", kid="u") | {"use": None}, "not_signing", id="use-null"),
    pytest.param(lambda: kf.jwk("p256", kid="o", key_ops=["sign"]), "not_signing", id="ops-sign"),
    pytest.param(
        lambda: kf.jwk("p256", kid="o", key_ops=["encrypt"]), "not_signing", id="ops-encrypt"
    ),
    pytest.param(
        lambda: kf.jwk("p256", kid="o", key_ops=["verify", "encrypt"]),
        "not_signing",
        id="ops-verify-encrypt",
    ),
    pytest.param(lambda: kf.jwk("p256", kid="o", key_ops="verify"), "not_signing", id="ops-str"),
    pytest.param(lambda: kf.jwk("p256", kid="o", key_ops=[]), "not_signing", id="ops-empty"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="a", alg="none"), "bad_alg", id="alg-none"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="a", alg="HS256"), "bad_alg", id="alg-HS256"),
    pytest.param(lambda: kf.jwk("p256", kid="a", alg="RS256"), "bad_alg", id="RS256-on-EC"),
    pytest.param(lambda: kf.jwk("p384", kid="a", alg="ES256"), "bad_alg", id="ES256-on-P-384"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="a", alg="ES256"), "bad_alg", id="ES256-on-RSA"),
    pytest.param(lambda: kf.jwk("ed25519", kid="a", alg="ES256"), "bad_alg", id="ES256-on-OKP"),
    pytest.param(lambda: kf.jwk("rsa2048", kid="a", alg="RSA-OAEP"), "bad_alg", id="RSA-OAEP"),
]


@pytest.mark.parametrize(("make", "reason"), DROPPED)
def test_key_is_dropped_with_reason(make: Any, reason: str) -> None:
    result = check(kf.body(good(), make()))
    assert result.dropped == {reason: 1}
    assert [k.kid for k in result.keys] == ["good"]
    assert len(result.notes) == 1
    assert result.notes[0].startswith(f"keys[1] dropped ({reason}): ")


def test_dropped_keys_are_counted_by_reason() -> None:
    keys = [
        kf.jwk("rsa1024", kid="w1"),
        kf.jwk("rsa1024", kid="w2", index=1),
        kf.jwk("p256", kid="enc1", use="enc"),
        kf.jwk("rsa2048", kid="enc2", use="enc"),
        kf.jwk("rsa2048", kid="enc3", key_ops=["encrypt"]),
        kf.jwk("x25519", kid="x"),
        {"kty": "foo"},
        good("keep"),
        _off_curve(),
        kf.jwk("p256", kid="none", alg="none"),
    ]
    result = check(kf.body(*keys))
    assert result.dropped == {
        "weak_key": 2,
        "not_signing": 3,
        "unsupported_curve": 1,
        "unsupported_key_type": 1,
        "invalid_key": 1,
        "bad_alg": 1,
    }
    assert [k.kid for k in result.keys] == ["keep"]
    assert [note.split(" ")[0] for note in result.notes] == [
        "keys[0]",
        "keys[1]",
        "keys[2]",
        "keys[3]",
        "keys[4]",
        "keys[5]",
        "keys[6]",
        "keys[8]",
        "keys[9]",
    ]


# -- kept keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "alg"),
    [
        ("rsa2048", "RS256"),
        ("rsa2048", "RS512"),
        ("rsa2048", "PS256"),
        ("p256", "ES256"),
        ("p384", "ES384"),
        ("p521", "ES512"),
        ("ed25519", "EdDSA"),
    ],
)
def test_usable_key_is_kept_exactly(kind: str, alg: str) -> None:
    source = kf.jwk(kind, kid="k1", alg=alg, use="sig", key_ops=["verify"])
    result = check(kf.body(source))
    assert result.dropped == {}
    assert result.notes == ()
    assert published(result) == [source]
    key = result.keys[0]
    assert (key.kid, key.kty) == ("k1", source["kty"])


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384", "p521", "ed25519"])
def test_minimal_key_without_kid_alg_or_use_is_kept(kind: str) -> None:
    source = kf.jwk(kind)
    result = check(kf.body(source))
    assert published(result) == [source]
    assert result.keys[0].kid is None


def test_x5u_and_unknown_members_are_removed() -> None:
    source = kf.jwk("rsa2048", kid="k")
    extra = {
        "x5u": "https://evil.example/cert.pem",
        "jku": "https://evil.example/jwks",
        "foo": {"bar": 1},
        "ext": True,
        "iat": 1,
    }
    result = check(kf.body(source | extra))
    assert published(result) == [source]
    assert result.dropped == {}


def test_matching_x5c_is_kept() -> None:
    source = kf.x5c_key(kid="cert")
    result = check(kf.body(source))
    assert result.dropped == {}
    assert published(result) == [source]
    assert published(result)[0]["x5c"] == kf.x5c_chain()


def _cert_thumbprints(index: int = 0) -> dict[str, str]:
    der = base64.b64decode(kf.x5c_chain(index)[0])
    return {
        "x5t": kf.b64url(hashlib.sha1(der).digest()),
        "x5t#S256": kf.b64url(hashlib.sha256(der).digest()),
    }


def test_x5t_is_kept_with_a_matching_x5c() -> None:
    source = kf.x5c_key(kid="cert") | _cert_thumbprints()
    result = check(kf.body(source))
    assert published(result) == [source]
    assert result.dropped == {}


def test_x5t_in_another_base64_form_is_published_canonically() -> None:
    canonical = kf.x5c_key(kid="cert") | _cert_thumbprints()
    loose = canonical | {
        m: base64.b64encode(kf.b64url_decode(canonical[m])).decode() for m in ("x5t", "x5t#S256")
    }
    assert loose != canonical
    assert published(check(kf.body(loose))) == [canonical]


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param({"x5t": _cert_thumbprints(1)["x5t"]}, id="x5t-of-another-certificate"),
        pytest.param({"x5t#S256": _cert_thumbprints(1)["x5t#S256"]}, id="x5t#S256-of-another"),
        pytest.param(
            {"x5t": _cert_thumbprints()["x5t#S256"], "x5t#S256": _cert_thumbprints()["x5t"]},
            id="swapped",
        ),
    ],
)
def test_x5t_not_matching_the_x5c_certificate_is_removed_and_counted(wrong: Any) -> None:
    right = _cert_thumbprints()
    source = kf.x5c_key(kid="cert") | right | wrong
    result = check(kf.body(source))
    expected = kf.x5c_key(kid="cert") | {m: v for m, v in right.items() if m not in wrong}
    assert published(result) == [expected]
    assert result.dropped == {"x5t_removed": 1}
    assert result.notes == ("keys[0]: x5t_removed",)


def test_x5t_without_x5c_is_kept_when_it_is_a_digest() -> None:
    thumbprints = _cert_thumbprints()
    source = good() | thumbprints
    assert published(check(kf.body(source))) == [source]
    # A digest of the wrong size is not one: SHA-1 is 20 bytes, SHA-256 is 32.
    swapped = good() | {"x5t": thumbprints["x5t#S256"], "x5t#S256": thumbprints["x5t"]}
    result = check(kf.body(swapped))
    assert published(result) == [good()]
    assert result.dropped == {"x5t_removed": 1}


def _unknown_key_algorithm_chain() -> list[str]:
    """The x5c chain with the leaf's id-ecPublicKey OID changed to an unassigned sibling."""
    der = base64.b64decode(kf.x5c_chain()[0])
    ec_public_key = bytes.fromhex("06072a8648ce3d0201")
    assert der.count(ec_public_key) == 1
    forged = der.replace(ec_public_key, bytes.fromhex("06072a8648ce3d0209"))
    return [base64.b64encode(forged).decode("ascii")]


def _unknown_version_chain() -> list[str]:
    """The x5c chain with the leaf's version field (v3, encoded 2) changed to 66, which the
    fuzzer found raising x509.InvalidVersion, an exception outside ValueError."""
    der = base64.b64decode(kf.x5c_chain()[0])
    version_v3 = bytes.fromhex("a003020102")
    assert der.count(version_v3) == 1
    forged = der.replace(version_v3, bytes.fromhex("a003020142"))
    return [base64.b64encode(forged).decode("ascii")]


@pytest.mark.parametrize(
    "x5c",
    [
        pytest.param(kf.x5c_chain(1), id="another-keys-certificate"),
        pytest.param(_unknown_key_algorithm_chain(), id="unknown-key-algorithm"),
        pytest.param(_unknown_version_chain(), id="unknown-x509-version"),
        pytest.param(["not base64!"], id="garbage-base64"),
        pytest.param(["AAAA"], id="not-a-certificate"),
        pytest.param([], id="empty"),
        pytest.param("MIIB", id="string"),
        pytest.param([1], id="number"),
        pytest.param([*kf.x5c_chain()[:1], "%%%"], id="bad-second-certificate"),
        pytest.param(kf.x5c_chain()[::-1], id="root-first"),
    ],
)
def test_x5c_not_holding_the_key_is_removed_and_counted(x5c: Any) -> None:
    source = kf.x5c_key(kid="cert") | _cert_thumbprints()
    result = check(kf.body(source | {"x5c": x5c}))
    expected = {k: v for k, v in source.items() if k not in ("x5c", "x5t", "x5t#S256")}
    assert published(result) == [expected]
    assert result.dropped == {"x5c_removed": 1}
    assert result.notes == ("keys[0]: x5c_removed",)


def test_x5c_of_another_key_on_an_rsa_key_is_removed() -> None:
    result = check(kf.body(kf.jwk("rsa2048", kid="r", x5c=kf.x5c_chain())))
    assert "x5c" not in published(result)[0]
    assert result.dropped == {"x5c_removed": 1}


@pytest.mark.parametrize("value", ["abc\n", "a+b", "x" * 65, 5])
def test_malformed_x5t_is_not_published(value: Any) -> None:
    result = check(kf.body(good() | {"x5t": value, "x5t#S256": value}))
    assert published(result) == [good()]
    assert result.dropped == {"x5t_removed": 1}


# -- canonical output ------------------------------------------------------------------------


def _several() -> list[dict[str, Any]]:
    return [
        kf.jwk("rsa2048", kid="b-rsa", alg="RS256", use="sig"),
        kf.jwk("p384", kid="a-ec", alg="ES384"),
        kf.jwk("ed25519", kid="c-ed"),
        kf.x5c_key(kid="d-cert"),
        kf.jwk("rsa2048", kid="a-ec", index=1),  # same kid, other kty: allowed
    ]


def _padded(value: str) -> str:
    return value + "=" * (-len(value) % 4)


def test_same_keys_in_another_form_render_identical_bytes() -> None:
    keys = _several()
    reference = render(check(kf.body(*keys)).keys)
    reordered = [dict(reversed(list(k.items()))) for k in reversed(keys)]
    padded = [
        {m: _padded(v) if m in ("n", "e", "x", "y") else v for m, v in k.items()} for k in keys
    ]
    pretty = json.dumps({"keys": keys}, indent=4).encode()
    spaced = b" \n\t" + json.dumps({"keys": keys}, separators=(" , ", " : ")).encode() + b"\r\n"
    leading_zero = [dict(k) for k in keys]
    leading_zero[0]["n"] = kf.b64url(b"\0" + kf.b64url_decode(keys[0]["n"]))
    leading_zero[0]["e"] = kf.b64url(b"\0\0" + kf.b64url_decode(keys[0]["e"]))
    for variant in (
        kf.body(*reordered),
        kf.body(*padded),
        pretty,
        spaced,
        kf.body(*leading_zero),
        kf.body(*keys, extra="ignored"),
    ):
        out = render(check(variant).keys)
        assert out == reference
        assert version_of(out) == version_of(reference)


def test_render_is_sorted_by_kid_compact_and_sorted_members() -> None:
    out = render(check(kf.body(*_several())).keys)
    document = json.loads(out)
    assert [k["kid"] for k in document["keys"]] == ["a-ec", "a-ec", "b-rsa", "c-ed", "d-cert"]
    assert [k["kty"] for k in document["keys"][:2]] == ["EC", "RSA"]
    assert out == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert out.isascii()


def test_keys_without_kid_sort_first() -> None:
    out = json.loads(render(check(kf.body(good("a"), kf.jwk("ed25519"))).keys))
    assert [k.get("kid") for k in out["keys"]] == [None, "a"]


def test_identical_duplicate_key_is_published_once() -> None:
    key = kf.jwk("rsa2048", kid="dup")
    result = check(kf.body(key, dict(reversed(list(key.items()))), key))
    assert published(result) == [key]
    assert result.dropped == {}


def test_duplicates_differing_only_in_metadata_render_the_same_in_any_order() -> None:
    plain = kf.x5c_key(kid="d")
    variants = [
        plain,
        {k: v for k, v in plain.items() if k != "x5c"},
        plain | {"key_ops": ["verify"]},
        plain | {"use": "sig"},
    ]
    outputs = {render(check(kf.body(*variants[i:], *variants[:i])).keys) for i in range(4)}
    outputs |= {render(check(kf.body(*reversed(variants))).keys)}
    assert len(outputs) == 1
    assert len(json.loads(outputs.pop())["keys"]) == 1


# -- lenient decoding, canonical output ------------------------------------------------------


def _standard_padded(value: str) -> str:
    """The same bytes in standard base64 with padding (as Battle.net publishes them)."""
    return base64.b64encode(kf.b64url_decode(value)).decode("ascii")


def _with_both_alphabets(kind: str) -> dict[str, Any]:
    """A key whose standard-base64 form has "+" or "/" in it (so the test is not vacuous)."""
    for index in range(64):
        key = kf.jwk(kind, index=index, kid=f"{kind}-{index}")
        if any(set("-_") & set(key[m]) for m in ("n", "x", "y") if m in key):
            return key
    raise AssertionError(f"no {kind} key with '-' or '_' in 64 tries")


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384", "p521", "ed25519"])
def test_standard_base64_with_padding_is_read_and_published_as_base64url(kind: str) -> None:
    canonical = _with_both_alphabets(kind)
    loose = {m: _standard_padded(v) if m in ("n", "e", "x", "y") else v for m, v in canonical.items()}
    assert any("+" in v or "/" in v for v in loose.values())
    result = check(kf.body(loose))
    assert result.dropped == {}
    assert published(result) == [canonical]
    assert render(result.keys) == render(check(kf.body(canonical)).keys)


def _p521_with_leading_zero(coordinate: str) -> dict[str, Any]:
    """A P-521 key whose ``coordinate`` starts with a zero byte (about half of them do)."""
    for index in range(64):
        key = kf.jwk("p521", index=index, kid="p521-short")
        if kf.b64url_decode(key[coordinate])[0] == 0:
            return key
    raise AssertionError("no P-521 key with a leading zero byte in 64 tries")


@pytest.mark.parametrize("coordinate", ["x", "y"])
def test_short_p521_coordinate_is_left_padded(coordinate: str) -> None:
    canonical = _p521_with_leading_zero(coordinate)
    full = kf.b64url_decode(canonical[coordinate])
    assert len(full) == 66
    short = canonical | {coordinate: kf.b64url(full.lstrip(b"\0"))}
    result = check(kf.body(short))
    assert result.dropped == {}
    assert published(result) == [canonical]
    assert len(kf.b64url_decode(published(result)[0][coordinate])) == 66


@pytest.mark.parametrize("kind", ["p256", "p384", "p521"])
def test_ec_coordinates_with_extra_leading_zeros_are_the_same_key(kind: str) -> None:
    canonical = kf.jwk(kind, kid="z")
    padded = canonical | {m: kf.b64url(b"\0\0" + kf.b64url_decode(canonical[m])) for m in "xy"}
    result = check(kf.body(padded))
    assert published(result) == [canonical]
    assert result.keys[0].ident == check(kf.body(canonical)).keys[0].ident


def test_rsa_modulus_with_a_leading_zero_byte_is_published_minimal() -> None:
    canonical = kf.jwk("rsa2048", kid="paypal-style")
    padded = canonical | {"n": kf.b64url(b"\0" + kf.b64url_decode(canonical["n"]))}
    assert published(check(kf.body(padded))) == [canonical]


def test_weak_rsa_key_stays_weak_however_it_is_padded() -> None:
    weak = kf.jwk("rsa1024", kid="w")
    padded = weak | {"n": _standard_padded(kf.b64url(bytes(200) + kf.b64url_decode(weak["n"])))}
    result = check(kf.body(good(), padded))
    assert result.dropped == {"weak_key": 1}


def test_encryption_key_in_loose_encoding_is_still_dropped() -> None:
    enc = kf.jwk("rsa2048", kid="enc", use="enc", alg="RSA-OAEP")
    loose = enc | {"n": _standard_padded(enc["n"]), "e": _standard_padded(enc["e"])}
    assert check(kf.body(good(), loose)).dropped == {"not_signing": 1}


# -- one key, several algs ------------------------------------------------------------------


def test_same_key_under_one_kid_with_different_algs_is_published_once_per_alg() -> None:
    rs, ps = (kf.jwk("rsa2048", kid="k", alg=alg, use="sig") for alg in ("RS256", "PS256"))
    result = check(kf.body(rs, ps, rs))
    assert result.dropped == {}
    assert sorted(k["alg"] for k in published(result)) == ["PS256", "RS256"]
    assert {k.thumbprint for k in result.keys} == {kf_thumbprint(rs)}
    assert len({k.ident for k in result.keys}) == 2
    assert render(result.keys) == render(check(kf.body(ps, rs)).keys)


def test_same_key_with_and_without_alg_is_published_both_ways() -> None:
    plain = kf.jwk("p256", kid="k")
    named = plain | {"alg": "ES256"}
    assert sorted(published(check(kf.body(named, plain))), key=len) == [plain, named]


def test_same_key_under_two_kids_is_published_under_both() -> None:
    first, second = kf.jwk("rsa2048", kid="one"), kf.jwk("rsa2048", kid="two")
    assert [k.get("kid") for k in published(check(kf.body(second, first)))] == ["one", "two"]


def test_a_different_key_under_the_same_kid_still_conflicts_whatever_the_alg() -> None:
    rs, ps = kf.jwk("rsa2048", kid="k", alg="RS256"), kf.jwk("rsa2048", kid="k", alg="PS256")
    other = kf.jwk("rsa2048", kid="k", index=1, alg="RS384")
    assert rejection(kf.body(rs, ps, other)).reason == "kid_conflict"


def test_key_from_jwk_round_trips_each_alg_entry() -> None:
    keys = check(kf.body(*(kf.jwk("rsa2048", kid="k", alg=a) for a in ("RS256", "PS512")))).keys
    assert [key_from_jwk(k.jwk) for k in keys] == list(keys)


def kf_thumbprint(members: dict[str, Any]) -> str:
    required = {m: members[m] for m in ("e", "kty", "n")}
    digest = hashlib.sha256(json.dumps(required, sort_keys=True, separators=(",", ":")).encode())
    return kf.b64url(digest.digest())


def test_version_of_is_a_short_stable_digest() -> None:
    assert version_of(b"") == "e3b0c44298fc1c14"  # SHA-256 of nothing, first 16 hex digits
    assert len(version_of(b"x")) == 16
    assert version_of(b"x") == version_of(b"x")
    assert version_of(b"x") != version_of(b"y")


def test_parse_json_accepts_plain_json() -> None:
    assert parse_json(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {
        "a": [1, 2.5, "\u00e9", None, True]
    }


# -- key_from_jwk (re-validating stored keys) ------------------------------------------------


def test_key_from_jwk_round_trips_a_published_key() -> None:
    for source in _several():
        key = check(kf.body(source)).keys[0]
        again = key_from_jwk(key.jwk)
        assert again == key
        assert dict(again.jwk) == dict(key.jwk)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: kf.jwk("rsa2048", kid="k", private=True), "private_key", id="rsa-d"),
        pytest.param(lambda: kf.jwk("p256", kid="k", private=True), "private_key", id="ec-d"),
        pytest.param(lambda: kf.jwk("oct", kid="k"), "symmetric_key", id="oct"),
        pytest.param(lambda: kf.jwk("rsa1024", kid="k"), "weak_key", id="weak"),
        pytest.param(lambda: kf.jwk("p256", kid="k", use="enc"), "not_signing", id="enc"),
        pytest.param(lambda: "kty", "malformed", id="string"),
        pytest.param(lambda: [["kty", "EC"]], "malformed", id="pairs"),
    ],
)
def test_key_from_jwk_refuses_what_validate_would_not_publish(make: Any, reason: str) -> None:
    with pytest.raises(KeySetRejected) as info:
        key_from_jwk(make())
    assert info.value.reason == reason
    # The same rule an upstream body meets: a set of that key alone is rejected, or the key is
    # dropped for that very reason.
    raw = make()
    if isinstance(raw, dict) and reason in ("private_key", "symmetric_key"):
        assert rejection(kf.body(raw)).reason == reason
    else:
        kept = check(kf.body(raw, kf.jwk("p256", kid="other")))
        assert kept.dropped == {reason: 1}


# -- one policy: validate_keys, strict for what jwks-mirror wrote itself --------------------


def test_validate_is_validate_keys_on_the_parsed_body() -> None:
    members = _several()
    assert validate_keys(members, max_keys=MAX_KEYS) == check(kf.body(*members))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        pytest.param(lambda: kf.jwk("rsa1024", kid="weak"), "weak_key", id="weak"),
        pytest.param(lambda: kf.jwk("p256", kid="m", alg="ES384"), "bad_alg", id="alg-mismatch"),
        pytest.param(lambda: kf.jwk("p256", kid="m", use="enc"), "not_signing", id="enc"),
        pytest.param(lambda: kf.jwk("p256", kid="m", crv="P-192"), "unsupported_curve", id="curve"),
    ],
)
def test_strict_refuses_the_set_for_the_reason_an_upstream_key_is_dropped(
    extra: Any, reason: str
) -> None:
    good = kf.jwk("p256", kid="good", index=1)
    lenient = validate_keys([good, extra()], max_keys=MAX_KEYS)
    assert lenient.dropped == {reason: 1}
    with pytest.raises(KeySetRejected) as info:
        validate_keys([good, extra()], max_keys=MAX_KEYS, strict=True)
    assert info.value.reason == reason
    assert str(info.value).startswith("keys[1] ")


def test_strict_refuses_a_key_listed_twice_and_a_member_it_would_strip() -> None:
    key = kf.jwk("p256", kid="k")
    assert len(validate_keys([key, dict(key)], max_keys=MAX_KEYS).keys) == 1
    with pytest.raises(KeySetRejected) as info:
        validate_keys([key, dict(key)], max_keys=MAX_KEYS, strict=True)
    assert info.value.reason == "duplicate_key"
    foreign = kf.jwk("p256", kid="k") | {"x5c": kf.x5c_key(kid="c")["x5c"]}
    assert validate_keys([foreign], max_keys=MAX_KEYS).dropped == {"x5c_removed": 1}
    with pytest.raises(KeySetRejected) as info:
        validate_keys([foreign], max_keys=MAX_KEYS, strict=True)
    assert info.value.reason == "x5c_removed"


@pytest.mark.parametrize("strict", [False, True])
def test_kid_conflict_and_secrets_reject_the_set_in_both_modes(strict: bool) -> None:
    conflict = [kf.jwk("p256", kid="k"), kf.jwk("p256", kid="k", index=1)]
    with pytest.raises(KeySetRejected) as info:
        validate_keys(conflict, max_keys=MAX_KEYS, strict=strict)
    assert info.value.reason == "kid_conflict"
    secret = [kf.jwk("p256", kid="a"), kf.jwk("p256", kid="b", private=True, index=1)]
    with pytest.raises(KeySetRejected) as info:
        validate_keys(secret, max_keys=MAX_KEYS, strict=strict)
    assert info.value.reason == "private_key"


# -- the one alg table --------------------------------------------------------------------


def test_algs_follow_the_key_type_and_curve() -> None:
    assert algs_for({"kty": "EC", "crv": "P-256"}) == {"ES256"}
    assert algs_for({"kty": "EC", "crv": "P-384"}) == {"ES384"}
    assert algs_for({"kty": "EC", "crv": "P-521"}) == {"ES512"}
    assert algs_for({"kty": "EC", "crv": "secp256k1"}) == frozenset()
    assert algs_for({"kty": "OKP", "crv": "Ed25519"}) == {"EdDSA"}
    assert algs_for({"kty": "OKP", "crv": "Ed448"}) == frozenset()
    assert algs_for({"kty": "RSA"}) == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert algs_for({"kty": "oct"}) == frozenset()


def test_verifies_follows_the_table_and_the_keys_own_alg() -> None:
    p384 = check(kf.body(kf.jwk("p384", kid="k"))).keys[0].jwk
    assert verifies(p384, "ES384")
    assert not verifies(p384, "ES256")
    rsa = check(kf.body(kf.jwk("rsa2048", kid="k", alg="PS256"))).keys[0].jwk
    assert verifies(rsa, "PS256")
    assert not verifies(rsa, "RS256")
    # The table validate() publishes by is the table verifies() answers from.
    for kind, alg in [("p256", "ES256"), ("p384", "ES384"), ("p521", "ES512"), ("ed25519", "EdDSA")]:
        key = check(kf.body(kf.jwk(kind, kid="k", alg=alg))).keys[0].jwk
        assert verifies(key, alg)
        for other in ("ES256", "ES384", "ES512", "EdDSA", "RS256"):
            if other != alg:
                assert not verifies(key, other)
                assert rejection(kf.body(kf.jwk(kind, kid="k", alg=other))).reason == (
                    "no_usable_keys"
                )


# -- RFC 7638 thumbprints (jwcrypto's) --------------------------------------------------------

RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
    "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
    "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_thumbprint_is_the_rfc_7638_example() -> None:
    # RFC 7638 section 3.1: this RSA key's SHA-256 thumbprint.
    key = check(kf.body({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}))
    assert key.keys[0].thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert key.keys[0].ident == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.RS256"


def test_thumbprint_is_rfc_7638_for_every_key_type() -> None:
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    for key in check(kf.body(*_several())).keys:
        members = {m: key.jwk[m] for m in required[key.kty]}
        text = json.dumps(members, sort_keys=True, separators=(",", ":"))
        assert key.thumbprint == kf.b64url(hashlib.sha256(text.encode()).digest())


# -- property: nothing but KeySetRejected, nothing private, idempotent ------------------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSONISH = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
MEMBER_NAMES = st.sampled_from(
    [
        *sorted(PRIVATE_MEMBERS),
        *("kty", "kid", "use", "key_ops", "alg", "n", "e", "crv", "x", "y"),
        *("x5c", "x5t", "x5u", "x5t#S256", "ext"),
    ]
) | st.text(max_size=6)
BASE_KEYS = [
    lambda: kf.jwk("rsa2048", kid="r", alg="RS256"),
    lambda: kf.jwk("p256", kid="e", use="sig"),
    lambda: kf.jwk("p521", kid="e5"),
    lambda: kf.jwk("ed25519", kid="o", key_ops=["verify"]),
    lambda: kf.x5c_key(kid="c"),
    lambda: kf.jwk("rsa2048", kid="r", private=True),
]
MEMBER_VALUES = (
    JSONISH
    | st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256", "sig", "enc", "P-256", "RSA"])
    | st.sampled_from(["oct", "EC", "OKP", "Ed25519", "X25519", "AQAB", "AQ", "", "\udc80"])
    | st.builds(lambda: ["verify"])
)


@st.composite
def mutated_sets(draw: st.DrawFn) -> bytes:
    keys: list[Any] = [
        draw(st.sampled_from(BASE_KEYS))()
        for _ in range(draw(st.integers(min_value=0, max_value=4)))
    ]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if not keys:
            break
        index = draw(st.integers(min_value=0, max_value=len(keys) - 1))
        action = draw(st.sampled_from(["set", "delete", "replace-key", "insert-key"]))
        if action == "set" and isinstance(keys[index], dict):
            keys[index][draw(MEMBER_NAMES)] = draw(MEMBER_VALUES)
        elif action == "delete" and isinstance(keys[index], dict) and keys[index]:
            keys[index].pop(draw(st.sampled_from(sorted(keys[index]))))
        elif action == "replace-key":
            keys[index] = draw(JSONISH)
        elif action == "insert-key":
            keys.insert(index, draw(JSONISH))
    top: dict[str, Any] = {"keys": keys}
    if draw(st.booleans()):
        top[draw(st.text(max_size=5))] = draw(JSONISH)
    return json.dumps(top).encode()


def _holds_private(value: Any) -> bool:
    if isinstance(value, dict):
        return bool(PRIVATE_MEMBERS & set(value)) or any(_holds_private(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_private(v) for v in value)
    return False


def _assert_safe(body: bytes) -> None:
    try:
        result = check(body, max_keys=20)
    except KeySetRejected as exc:
        assert exc.reason in {
            "invalid_utf8",
            "invalid_json",
            "duplicate_member",
            "not_a_key_set",
            "too_many_keys",
            "too_large",
            "private_key",
            "symmetric_key",
            "no_usable_keys",
            "kid_conflict",
        }
        return
    out = render(result.keys)
    document = json.loads(out)
    assert document["keys"]
    assert not _holds_private(document)
    json.dumps(document, ensure_ascii=False).encode("utf-8")  # no lone surrogates
    assert all(k["kty"] in {"RSA", "EC", "OKP"} for k in document["keys"])
    again = check(out, max_keys=20)
    assert render(again.keys) == out
    assert again.dropped == {}


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@FAST
@given(JSONISH)
def test_property_arbitrary_json_documents(document: Any) -> None:
    _assert_safe(json.dumps(document).encode())


@FAST
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_property_arbitrary_bytes(body: bytes) -> None:
    _assert_safe(body)


@FAST
@given(mutated_sets())
def test_property_mutated_valid_sets(body: bytes) -> None:
    _assert_safe(body)


@FAST
@given(st.sampled_from(BASE_KEYS[:5]), MEMBER_NAMES, MEMBER_VALUES)
def test_property_one_member_set_to_any_value(make: Any, member: str, value: Any) -> None:
    _assert_safe(kf.body(make() | {member: value}))


@FAST
@given(st.sampled_from(BASE_KEYS[:5]), st.sampled_from(sorted(PRIVATE_MEMBERS)), JSON_LEAVES)
def test_property_injected_private_member_always_rejects(
    make: Any, member: str, value: Any
) -> None:
    key = make() | {member: value}
    exc = rejection(kf.body(good(), key))
    assert exc.reason == ("symmetric_key" if member == "k" else "private_key")
