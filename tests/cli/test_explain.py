"""``jwks-mirror explain`` against a running mirror, one token per outcome."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from jwcrypto import jwt

from jwks_mirror.cli import main

from ..conftest import config_text, jwks, signing_key

ISSUER = "https://issuer.test"


def token(kid: str = "k1", *, key_kid: str | None = None, iss: str = ISSUER, exp_in: int = 3600, **header) -> str:
    key = signing_key(key_kid or kid)
    claims = {"iss": iss, "sub": "alice", "aud": "api", "exp": int(time.time()) + exp_in}
    signed = jwt.JWT(header={"alg": "RS256", "kid": kid, **header}, claims=claims)
    signed.make_signed_token(key)
    return signed.serialize()


def unsigned(alg: str) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'kid': 'k1'})}.{part({'iss': ISSUER, 'exp': int(time.time()) + 60})}.c2ln"


@pytest.fixture
async def mirror(fake_issuer, mirror_factory, refused_url):
    issuer = await fake_issuer(document=jwks("old"))
    running = await mirror_factory(
        config_text(
            f"  - name: idp\n    jwks_uri: {issuer.url}\n    issuer: {ISSUER}\n    retain_removed_keys: 1h\n"
            f"  - name: gone\n    jwks_uri: {refused_url}\n    issuer: https://gone.test\n"
        )
    )
    await running.mirror.refresh(["idp"])
    issuer.document = jwks("k1")
    await running.mirror.refresh(["idp"])  # rotation: k1 current, "old" retained
    return running


async def run_explain(mirror, jwt_text: str, capsys) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["explain", jwt_text, "--admin", mirror.admin_url])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_valid_token_is_accepted(mirror, capsys):
    code, out = await run_explain(mirror, token("k1"), capsys)
    assert code == 0, out
    assert out.startswith("ACCEPTED")
    assert "current upstream key since" in out and "aud 'api'" in out


async def test_token_of_a_retained_key_is_accepted_and_says_so(mirror, capsys):
    code, out = await run_explain(mirror, token("old"), capsys)
    assert code == 0, out
    assert "which the upstream removed" in out and "stays published until" in out


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda: token("new-kid"), "unknown kid", "Jwks doesn't have key to match kid"),
        (lambda: token("k1", key_kid="other"), "signature mismatch", "signature does not verify"),
        (lambda: token("k1", exp_in=-3600), "expired", "Jwt is expired"),
        (lambda: token("k1", iss="https://elsewhere.test"), "wrong issuer", "Jwt issuer is not configured"),
        (lambda: unsigned("none"), "algorithm not allowed", "never accepted"),
        (lambda: unsigned("HS256"), "algorithm not allowed", "never accepted"),
        (lambda: token("k1", iss="https://gone.test"), "no key set", "serves no key set"),
    ],
    ids=["unknown-kid", "signature-mismatch", "expired", "wrong-issuer", "alg-none", "alg-hs256", "no-key-set"],
)
async def test_rejections_name_their_reason(mirror, capsys, make, reason, words):
    code, out = await run_explain(mirror, make(), capsys)
    assert code == 1, out
    assert out.startswith(f"REJECTED ({reason})"), out
    assert words in out


async def test_expiry_within_clock_skew_is_accepted(mirror, capsys):
    code, out = await run_explain(mirror, token("k1", exp_in=-30), capsys)
    assert code == 0, out


async def test_not_a_jwt_is_an_input_error(mirror, capsys):
    code, out = await run_explain(mirror, "not-a-token", capsys)
    assert code == 2
    assert "not a JWT" in out and out.count("\n") == 1


async def test_status_detail_endpoint(mirror):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{mirror.admin_url}/status/idp") as response:
            detail = await response.json()
        async with session.get(f"{mirror.admin_url}/status/nope") as response:
            assert response.status == 404
    history = {k["kid"]: k for k in detail["key_history"]}
    assert history["k1"]["status"] == "current" and history["k1"]["first_seen"] is not None
    assert history["old"]["status"] == "retained"
    assert history["old"]["retained_until"] == pytest.approx(history["old"]["removed_at"] + 3600)
    assert sorted(k["kid"] for k in detail["jwks"]["keys"]) == ["k1", "old"]


# -- the algorithm verdict is the validation policy's (keysets.verifies), not a copy ----------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def es_token(key, alg: str) -> str:
    """A token signed with ``key`` (P-384) under ``alg``'s hash, whatever the curve: a real
    signature, so only the algorithm rule can tell it from a good token."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    head = _b64(json.dumps({"alg": alg, "kid": "p384"}).encode())
    body = _b64(json.dumps({"iss": ISSUER, "exp": int(time.time()) + 600}).encode())
    digest = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384()}[alg]
    r, s = utils.decode_dss_signature(key.get_op_key("sign").sign(f"{head}.{body}".encode(), ec.ECDSA(digest)))
    return f"{head}.{body}.{_b64(r.to_bytes(48, 'big') + s.to_bytes(48, 'big'))}"


@pytest.fixture
async def p384_mirror(fake_issuer, mirror_factory):
    from jwcrypto import jwk

    key = jwk.JWK.generate(kty="EC", crv="P-384", kid="p384")  # published without "alg"
    issuer = await fake_issuer(document={"keys": [json.loads(key.export_public())]})
    running = await mirror_factory(config_text(f"  - name: idp\n    jwks_uri: {issuer.url}\n    issuer: {ISSUER}\n"))
    await running.mirror.refresh(["idp"])
    return running, key


async def test_es256_token_on_a_p384_key_is_an_algorithm_mismatch(p384_mirror, capsys):
    running, key = p384_mirror
    code, out = await run_explain(running, es_token(key, "ES256"), capsys)
    assert code == 1, out
    assert out.startswith("REJECTED (algorithm mismatch)"), out
    assert "key 'p384' (EC) cannot verify ES256" in out
    code, out = await run_explain(running, es_token(key, "ES384"), capsys)
    assert code == 0, out
    assert out.startswith("ACCEPTED"), out


# -- hostile tokens: one line and exit 2 (or a verdict), never a traceback --------------------


def raw_token(header: bytes, claims: bytes, signature: str = "c2ln") -> str:
    return f"{_b64(header)}.{_b64(claims)}.{signature}"


@pytest.mark.parametrize(
    "jwt_text",
    [
        raw_token(b'{"alg":' + b"[" * 2000 + b"]" * 2000 + b"}", b'{"iss":"x"}'),
        raw_token(b'{"alg":"RS256"}', b'{"iss":' + b"[" * 2000 + b"]" * 2000 + b"}"),
        raw_token(b'{"alg":"RS256", "alg":"none"}', b'{"iss":"x"}'),
        raw_token(b'{"alg":"RS256"}', b'{"iss":NaN}'),
    ],
    ids=["deep-header", "deep-claims", "duplicate-member", "nan"],
)
def test_hostile_token_json_is_one_line_and_exit_2(capsys, jwt_text):
    # Refused before any admin request: the port named here is never contacted.
    assert main(["explain", jwt_text, "--admin", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jwks-mirror: error: not a JWT") and err.count("\n") == 1, err


@pytest.mark.parametrize("claim", ["exp", "nbf"])
@pytest.mark.parametrize("value", [1e20, -1e20, 10**30])
async def test_times_out_of_range_are_a_verdict_not_a_traceback(mirror, capsys, claim, value):
    key = signing_key("k1")
    claims = {"iss": ISSUER, "sub": "alice", claim: value}
    signed = jwt.JWT(header={"alg": "RS256", "kid": "k1"}, claims=claims)
    signed.make_signed_token(key)
    code, out = await run_explain(mirror, signed.serialize(), capsys)
    assert "Traceback" not in out
    assert code in (0, 1), out
    assert out.startswith(("ACCEPTED", "REJECTED")), out


async def test_token_claims_are_printed_inert(fake_issuer, mirror_factory, capsys):
    """The token's iss is the caller's input: a newline in it must not start a new line in
    the output (a CI log would read '::error ...' as an annotation), nor ESC reach the terminal."""
    issuer = await fake_issuer(document=jwks("k1"))
    evil = "https://x.test\n::error file=a.yaml::forged\x1b]0;title\x07"
    running = await mirror_factory(config_text(f"  - name: idp\n    jwks_uri: {issuer.url}\n    issuer: {ISSUER}\n"))
    await running.mirror.refresh(["idp"])  # so the kid hint names the token's iss
    code, out = await run_explain(running, token("k1", iss=evil), capsys)
    assert "is published by idp" in out
    assert code == 1
    assert not any(line.startswith("::error") for line in out.splitlines()), out
    assert "\x1b" not in out and "\x07" not in out
