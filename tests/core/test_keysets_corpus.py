"""Real published key sets (``tests/fixtures/jwks``, see its SOURCES.md) through the validator.

For each set: every key Envoy could verify with comes out under the same kid with the same key
material, compared as numbers (leading zeros, padding and alphabet do not matter); the keys
the policy drops are exactly the ones listed in :data:`DROPPED`, for the reason given there;
and the published bytes validate again to themselves. The expectations are written out per
provider rather than derived from the validator, so a policy change that starts dropping a
real provider's key fails here by name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from jwks_mirror.core.keysets import Validated, render, validate, validate_keys

CORPUS = Path(__file__).parents[1] / "fixtures" / "jwks"
FIXTURES = sorted(p.stem for p in CORPUS.glob("*.json"))
PROVIDERS_WANTED = 20

# fixture -> {index in "keys": reason it is dropped}. Everything else must be published.
DROPPED: dict[str, dict[int, str]] = {
    "keycloak": {1: "not_signing"},  # use "enc", alg RSA-OAEP
    "openbanking-uk-directory": {0: "not_signing", 2: "not_signing"},  # use "enc", use "tls"
    "paypal": {7: "unsupported_curve"},  # an X25519 (key agreement) key
    "yahoo": {0: "weak_key", 2: "weak_key", 3: "weak_key"},  # 1024-bit RSA
}
# fixture -> members removed from kept keys (counted under these names, the key stays).
REMOVED: dict[str, dict[str, int]] = {
    # Auth0's first x5t is the base64url of the SHA-1 *hex string* (40 bytes), not a digest.
    "auth0": {"x5t_removed": 1},
}
MAX_BYTES = 262144  # the configuration default
MAX_KEYS = 100


def load(name: str) -> bytes:
    return (CORPUS / f"{name}.json").read_bytes()


def number(value: str) -> int:
    """A base64 or base64url member, padded or not, as the big-endian number it encodes."""
    text = value.rstrip("=").replace("+", "-").replace("/", "_")
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def material(key: dict[str, Any]) -> tuple[Any, ...]:
    if key["kty"] == "RSA":
        return ("RSA", number(key["n"]), number(key["e"]))
    if key["kty"] == "EC":
        return ("EC", key["crv"], number(key["x"]), number(key["y"]))
    return (key["kty"], key["crv"], number(key["x"]))


def entry(key: dict[str, Any]) -> tuple[Any, ...]:
    return (key.get("kid"), key.get("alg"), material(key))


def check(name: str) -> Validated:
    return validate(load(name), max_bytes=MAX_BYTES, max_keys=MAX_KEYS)


def test_the_corpus_covers_enough_providers() -> None:
    sources = (CORPUS / "SOURCES.md").read_text()
    rows = [line for line in sources.splitlines() if line.startswith("| `")]
    assert sorted(re.findall(r"^\| `([^`]+)\.json`", sources, re.M)) == FIXTURES
    providers = {row.split("|")[2].split("(")[0].strip() for row in rows}
    assert len(providers) >= PROVIDERS_WANTED, providers
    for name in FIXTURES:
        for key in json.loads(load(name))["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & key.keys(), name


@pytest.mark.parametrize("name", FIXTURES)
def test_every_usable_key_is_published_with_the_same_kid_and_material(name: str) -> None:
    source = json.loads(load(name))["keys"]
    result = check(name)
    published = json.loads(render(result.keys))["keys"]

    dropped = DROPPED.get(name, {})
    expected = {entry(key) for index, key in enumerate(source) if index not in dropped}
    assert {entry(key) for key in published} == expected
    assert len(published) == len(expected)  # each (kid, alg, key) once

    counts = Counter(dropped.values())
    assert result.dropped == dict(counts) | REMOVED.get(name, {})
    for index, reason in dropped.items():
        assert any(n.startswith(f"keys[{index}] dropped ({reason})") for n in result.notes)


@pytest.mark.parametrize("name", FIXTURES)
def test_published_form_is_canonical_and_stable(name: str) -> None:
    body = render(check(name).keys)
    again = validate(body, max_bytes=MAX_BYTES, max_keys=MAX_KEYS)
    assert render(again.keys) == body
    assert again.dropped == {}
    for key in json.loads(body)["keys"]:
        for member in ("n", "e", "x", "y"):
            if member in key:
                assert re.fullmatch(r"[A-Za-z0-9_-]+", key[member]), (name, member)
        if key["kty"] == "EC":
            size = {"P-256": 32, "P-384": 48, "P-521": 66}[key["crv"]]
            assert len(key["x"]) == len(key["y"]) == (size * 4 + 2) // 3
        if key["kty"] == "RSA":
            assert not base64.urlsafe_b64decode(key["n"] + "==").startswith(b"\0")


def test_battle_net_standard_base64_is_published_as_base64url() -> None:
    raw = json.loads(load("battle-net"))["keys"]
    assert all(k["n"].endswith("=") and re.search(r"[+/]", k["n"]) for k in raw)
    published = json.loads(render(check("battle-net").keys))["keys"]
    assert {k["kid"]: number(k["n"]) for k in published} == {k["kid"]: number(k["n"]) for k in raw}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", k["n"]) for k in published)


def test_short_p521_coordinate_is_published_full_size() -> None:
    raw = {k["kid"]: k for k in json.loads(load("envoy-jwt-verify-lib-ec"))["keys"]}
    assert len(base64.urlsafe_b64decode(raw["es512"]["y"] + "=")) == 65  # one byte short
    body = render(check("envoy-jwt-verify-lib-ec").keys)
    published = {k["kid"]: k for k in json.loads(body)["keys"]}
    y = base64.urlsafe_b64decode(published["es512"]["y"] + "==")
    assert len(y) == 66 and y[0] == 0
    assert number(published["es512"]["y"]) == number(raw["es512"]["y"])


def test_padded_x5t_matching_the_certificate_is_kept_canonically() -> None:
    raw = json.loads(load("openbanking-uk-directory"))["keys"][1]
    assert raw["x5t"].endswith("=")
    published = json.loads(render(check("openbanking-uk-directory").keys))["keys"]
    assert [k["kid"] for k in published] == [raw["kid"]]
    assert published[0]["x5t"] == raw["x5t"].rstrip("=")
    assert published[0]["x5t#S256"] == raw["x5t#S256"].rstrip("=")
    assert published[0]["x5c"] == raw["x5c"]
    assert "x5u" not in published[0]


@pytest.mark.parametrize("name", FIXTURES)
def test_the_published_set_meets_the_strict_policy_a_state_file_meets(name: str) -> None:
    # A state file holds the published members; restoring them goes through the same policy,
    # strictly (nothing may be dropped or stripped), and must give back the same set.
    keys = check(name).keys
    again = validate_keys([dict(k.jwk) for k in keys], max_keys=MAX_KEYS, strict=True)
    assert again.keys == keys
    assert render(again.keys) == render(keys)


@pytest.mark.parametrize("name", FIXTURES)
def test_thumbprints_are_rfc_7638_over_the_published_members(name: str) -> None:
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    for key in check(name).keys:
        text = json.dumps({m: key.jwk[m] for m in required[key.kty]}, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).digest()
        assert key.thumbprint == base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), (name, key.kid)
