"""A hostile upstream corpus, played through a running mirror.

For every case: the refresh fails with its precise reason, the published bytes stay exactly as
they were, the reason is counted in the metrics, the mirror stays healthy and ready, and the
public port keeps answering fast.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import json
import ssl
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from jwcrypto import jwk

from ..conftest import (
    ISSUER_HOST,
    FakeIssuer,
    Pki,
    answer,
    config_text,
    drip,
    hang,
    jwks,
    public_jwk,
    reset,
    signing_key,
    truncated,
    until,
)

GOOD = jwks("good")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _private(kty: str) -> dict[str, Any]:
    if kty == "RSA":
        return dict(json.loads(signing_key("evil").export_private()))
    if kty == "EC":
        return dict(json.loads(signing_key("evil-ec", "EC").export_private()))
    key = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="evil-okp")
    return dict(json.loads(key.export_private()))


def _with(**members: Any) -> dict[str, Any]:
    key = public_jwk("other")
    key.update(members)
    return key


def _ec_off_curve() -> dict[str, Any]:
    key = public_jwk("ec", "EC")
    y = bytearray(base64.urlsafe_b64decode(key["y"] + "=="))
    y[-1] ^= 1
    key["y"] = _b64(bytes(y))
    return key


def _weak_rsa() -> dict[str, Any]:
    key = jwk.JWK.generate(kty="RSA", size=1024, kid="weak")
    return dict(json.loads(key.export_public()))


def _body(document: Any) -> bytes:
    return json.dumps(document).encode()


def _keys(*extra: dict[str, Any]) -> bytes:
    """The good key plus ``extra``: rejection must not depend on the bad key standing alone."""
    return _body({"keys": [public_jwk("good"), *extra]})


def _only(*keys: dict[str, Any]) -> bytes:
    return _body({"keys": list(keys)})


@dataclass(frozen=True)
class Case:
    id: str
    reason: str
    body: bytes | None = None
    behaviour: (
        Callable[[FakeIssuer], Callable[[web.Request], Awaitable[web.StreamResponse]]] | None
    ) = None
    timeout_s: float | None = None


def _serve(body: bytes, **headers: str):
    return lambda issuer: answer(200, body, **headers)


def _informational(issuer: FakeIssuer):
    async def behave(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.write(
            b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
        )
        await asyncio.sleep(0.2)
        request.transport.close()
        return web.Response()

    return behave


def _garbage_http(issuer: FakeIssuer):
    async def behave(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
        request.transport.close()
        return web.Response()

    return behave


CASES = [
    # -- private and symmetric material: the whole set is rejected --------------------------
    Case("rsa-private", "private_key", _keys(_private("RSA"))),
    Case("rsa-only-d", "private_key", _keys(_with(d="AQAB"))),
    Case("rsa-primes", "private_key", _keys(_with(p="AQAB", q="AQAB"))),
    Case("rsa-crt", "private_key", _keys(_with(dp="AQAB", dq="AQAB", qi="AQAB"))),
    Case("rsa-oth", "private_key", _keys(_with(oth=[{"r": "AQAB", "d": "AQAB", "t": "AQAB"}]))),
    Case("ec-private", "private_key", _keys(_private("EC"))),
    Case("okp-private", "private_key", _keys(_private("OKP"))),
    Case("private-in-unusable-key", "private_key", _keys({"kty": "XYZ", "d": "AQAB"})),
    Case("oct", "symmetric_key", _keys({"kty": "oct", "k": _b64(b"secret" * 6), "kid": "hmac"})),
    Case("oct-without-k", "symmetric_key", _keys({"kty": "oct", "kid": "hmac"})),
    Case("k-member-on-rsa", "symmetric_key", _keys(_with(k="c2VjcmV0"))),
    # -- weak, malformed and unusable-only sets ---------------------------------------------
    Case("only-weak-rsa", "no_usable_keys", _only(_weak_rsa())),
    Case("only-off-curve", "no_usable_keys", _only(_ec_off_curve())),
    Case("only-bad-base64", "no_usable_keys", _only(_with(n="not*base64!"))),
    Case(
        "only-short-coordinate",
        "no_usable_keys",
        _only({**public_jwk("ec", "EC"), "x": _b64(b"\x01" * 31)}),
    ),
    Case("only-encryption-keys", "no_usable_keys", _only(_with(use="enc"))),
    Case("only-encrypt-ops", "no_usable_keys", _only(_with(key_ops=["encrypt"]))),
    Case("only-unknown-kty", "no_usable_keys", _only({"kty": "PQC", "x": "AQAB"})),
    Case(
        "only-x25519",
        "no_usable_keys",
        _only({"kty": "OKP", "crv": "X25519", "x": _b64(b"\x09" * 32)}),
    ),
    Case(
        "only-ed448",
        "no_usable_keys",
        _only({"kty": "OKP", "crv": "Ed448", "x": _b64(b"\x09" * 57)}),
    ),
    Case("only-secp256k1", "no_usable_keys", _only({**public_jwk("ec", "EC"), "crv": "secp256k1"})),
    Case("only-alg-none", "no_usable_keys", _only(_with(alg="none"))),
    Case("only-alg-hs256", "no_usable_keys", _only(_with(alg="HS256"))),
    Case("only-alg-mismatch", "no_usable_keys", _only(_with(alg="ES256"))),
    Case("empty-keys", "no_usable_keys", _body({"keys": []})),
    Case(
        "kid-conflict",
        "kid_conflict",
        _only(public_jwk("good"), {**public_jwk("other"), "kid": "good"}),
    ),
    # -- structure ---------------------------------------------------------------------------
    Case(
        "duplicate-top-member",
        "duplicate_member",
        b'{"keys": [], "keys": ' + _body([public_jwk("x")]) + b"}",
    ),
    Case("duplicate-key-member", "duplicate_member", b'{"keys": [{"kty": "RSA", "kty": "EC"}]}'),
    Case("deep-nesting", "invalid_json", b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    Case("huge-number", "invalid_json", b'{"keys": [], "n": ' + b"9" * 10_000 + b"}"),
    Case("nan", "invalid_json", b'{"keys": [], "x": NaN}'),
    Case("infinity", "invalid_json", b'{"keys": [], "x": -Infinity}'),
    Case("invalid-utf8", "invalid_utf8", b'{"keys": [], "x": "\xff\xfe"}'),
    Case("bom", "invalid_json", b"\xef\xbb\xbf" + _body(GOOD)),
    Case("top-level-array", "not_a_key_set", _body([public_jwk("good")])),
    Case("top-level-string", "not_a_key_set", b'"keys"'),
    Case("keys-not-array", "not_a_key_set", _body({"keys": {"kty": "RSA"}})),
    Case("html", "invalid_json", b"<html><body>Login required</body></html>"),
    Case("empty-body", "invalid_json", b""),
    Case("too-many-keys", "too_many_keys", _body({"keys": [public_jwk("good")] * 101})),
    # -- protocol trouble ---------------------------------------------------------------------
    Case("enormous-body", "too_large", behaviour=_serve(b" " * 300_000 + _body(GOOD))),
    Case(
        "enormous-keys-array",
        "too_large",
        behaviour=_serve(_body({"keys": [{"kty": "RSA"}] * 30_000})),
    ),
    Case(
        "gzip-bomb",
        "too_large",
        behaviour=_serve(gzip.compress(b" " * (50 << 20)), **{"Content-Encoding": "gzip"}),
    ),
    Case(
        "deflate-bomb",
        "too_large",
        behaviour=_serve(zlib.compress(b"[" * (50 << 20)), **{"Content-Encoding": "deflate"}),
    ),
    Case(
        "brotli-unrequested",
        "encoding",
        behaviour=_serve(b"\x0b\x02\x80", **{"Content-Encoding": "br"}),
    ),
    Case(
        "redirect",
        "redirect",
        behaviour=lambda i: answer(302, Location="http://evil.example/jwks.json"),
    ),
    Case("permanent-redirect", "redirect", behaviour=lambda i: answer(308, Location="/elsewhere")),
    Case("not-modified-unasked", "status", behaviour=lambda i: answer(304)),
    Case("no-content", "status", behaviour=lambda i: answer(204)),
    Case("unauthorized", "status", behaviour=lambda i: answer(401, b"denied")),
    Case("not-found", "status", behaviour=lambda i: answer(404)),
    Case("server-error", "status", behaviour=lambda i: answer(500, b"oops")),
    Case("unavailable", "status", behaviour=lambda i: answer(503, Retry_After="10")),
    Case("informational-then-204", "status", behaviour=_informational),
    Case("not-http", "protocol", behaviour=_garbage_http),
    Case(
        "wrong-content-type-garbage",
        "invalid_utf8",
        behaviour=_serve(b"\x89PNG\r\n\x1a\n", Content_Type="image/png"),
    ),
    Case("truncated", "connection", behaviour=lambda i: truncated()),
    Case("reset", "connection", behaviour=lambda i: reset()),
    # Long enough that the public port is asked while the fetch is held (see below), on a
    # loaded machine too; the fetch's own timeout then ends it.
    Case("hang", "timeout", behaviour=hang, timeout_s=2.0),
    Case("slow-drip", "timeout", behaviour=lambda i: drip(), timeout_s=2.0),
]


def test_corpus_is_large_and_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.fixture
async def mirrored(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=GOOD)
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n    timeout: 2s\n")
    )
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome == "changed"
    return running, issuer


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


async def _metric(running, needle: str) -> bool:
    _, body = await _get(f"{running.admin_url}/metrics")
    return needle in body.decode()


@pytest.mark.parametrize(
    "case",
    # A timeout case lasts its timeout (2 s): slow.
    [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.timeout_s else []) for c in CASES],
)
async def test_hostile_upstream_publishes_nothing_new(mirrored, case: Case):
    running, issuer = mirrored
    _, before = await _get(f"{running.public_url}/a/jwks.json")
    if case.timeout_s is not None:
        state = running.mirror.issuers["a"].state
        limits = dataclasses.replace(state.settings.limits, timeout_s=case.timeout_s)
        state.settings = dataclasses.replace(state.settings, limits=limits)
    if case.behaviour is not None:
        hostile = case.behaviour(issuer)
    else:
        assert case.body is not None
        issuer.document = case.body
        hostile = answer(200, issuer.body(), **{"Content-Type": "application/json"})
    # The upstream holds the request until the public port has been asked, so the answer
    # below provably came while the hostile fetch was in flight (no clock involved).
    asked = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await asked.wait()
        return await hostile(request)

    issuer.behaviour = held
    requests_before = len(issuer.requests)
    refresh = asyncio.create_task(running.mirror.refresh(["a"]))
    await until(lambda: len(issuer.requests) > requests_before, what="the hostile fetch")
    status, during = await _get(f"{running.public_url}/a/jwks.json")
    assert not refresh.done(), "the hostile fetch ended before the public port answered"
    assert (status, during) == (200, before)
    asked.set()
    (outcome,) = await refresh
    assert (outcome.outcome, outcome.reason) == ("failed", case.reason), outcome.error
    status, after = await _get(f"{running.public_url}/a/jwks.json")
    assert (status, after) == (200, before)
    assert b'"d"' not in after and b'"k"' not in after
    assert await _metric(
        running, f'jwks_mirror_fetch_errors_total{{issuer="a",reason="{case.reason}"}} 1.0'
    )
    assert (await _get(f"{running.admin_url}/healthz"))[0] == 200
    assert (await _get(f"{running.admin_url}/readyz"))[0] == 200
    issuer.released.set()


@pytest.mark.parametrize(
    "trouble", ["wrong-ca", "wrong-name", "expired", "no-client-cert-accepted"]
)
async def test_tls_trouble_keeps_the_last_good_set(
    fake_issuer, mirror_factory, pki: Pki, tmp_path: Path, trouble
):
    context = pki.server_context()
    issuer = await fake_issuer(ssl_context=context, document=GOOD)
    tls = {
        "ca_file": pki.ca_file,
        "cert_file": pki.mirror_cert,
        "key_file": pki.mirror_key,
        "server_name": ISSUER_HOST,
    }
    running = await mirror_factory(
        config_text(
            f"  - name: a\n    jwks_uri: {issuer.url}\n    tls: "
            + json.dumps({k: str(v) for k, v in tls.items()})
            + "\n"
        )
    )
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome in {"changed", "unchanged"}
    _, before = await _get(f"{running.public_url}/a/jwks.json")
    # Now the upstream's TLS goes wrong in one way or another.
    await issuer.stop()
    if trouble == "wrong-ca":
        from jwks_mirror.demo.pki import MeshCA

        other = MeshCA(name="another mesh")
        cert, key = other.issue(
            namespace="myns", service_account="keys", dns_names=(ISSUER_HOST,)
        ).write(tmp_path, "other")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    elif trouble == "wrong-name":
        cert, key = pki.ca.issue(
            namespace="myns", service_account="keys", dns_names=("other.svc",)
        ).write(tmp_path, "name")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    elif trouble == "expired":
        context = pki.expired_server_context()
    else:  # the server now trusts another CA for clients: our certificate is refused
        from jwks_mirror.demo.pki import MeshCA

        other = MeshCA(name="client CA")
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=str(other.write_ca(tmp_path, "other-ca"))
        )
        context.load_cert_chain(pki.issuer_cert, pki.issuer_key)
        context.verify_mode = ssl.CERT_REQUIRED
    replacement = FakeIssuer(document=GOOD, port=issuer.port)
    await replacement.start(context)
    try:
        (outcome,) = await running.mirror.refresh()
        assert outcome.outcome == "failed"
        assert outcome.reason in {"tls", "connection"}, outcome.error
        status, after = await _get(f"{running.public_url}/a/jwks.json")
        assert (status, after) == (200, before)
    finally:
        await replacement.stop()
