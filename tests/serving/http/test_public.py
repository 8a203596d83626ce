"""The public port, exercised over real sockets against a running mirror."""

from __future__ import annotations

import json

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from jwks_mirror.core.keysets import render, validate

from ...conftest import Clock, config_text, jwks


async def get(url: str | URL, method: str = "GET", **kwargs) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


@pytest.fixture
async def served(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("k2", "k1"))
    running = await mirror_factory(
        config_text(f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n    refresh_interval: 300s\n")
    )
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome == "changed"
    return running, issuer


async def test_serves_the_canonical_set_with_caching_headers(served):
    running, issuer = served
    status, headers, body = await get(f"{running.public_url}/keys-myns/jwks.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    expected = render(validate(issuer.body(), max_bytes=1 << 20, max_keys=10).keys)
    assert body == expected
    assert [k["kid"] for k in json.loads(body)["keys"]] == ["k1", "k2"]
    assert headers["ETag"].startswith('"') and headers["ETag"].endswith('"')
    max_age = int(headers["Cache-Control"].removeprefix("public, max-age="))
    assert 250 <= max_age <= 330  # 300 s +-10 % jitter


async def test_query_strings_are_ignored(served):
    running, _ = served
    _, _, plain = await get(f"{running.public_url}/keys-myns/jwks.json")
    status, _, versioned = await get(f"{running.public_url}/keys-myns/jwks.json?v=abc123&x=1")
    assert status == 200
    assert versioned == plain


async def test_head_has_headers_and_no_body(served):
    running, _ = served
    _, get_headers, body = await get(f"{running.public_url}/keys-myns/jwks.json")
    status, headers, head_body = await get(f"{running.public_url}/keys-myns/jwks.json", "HEAD")
    assert status == 200
    assert head_body == b""
    assert headers["ETag"] == get_headers["ETag"]
    assert int(headers["Content-Length"]) == len(body)


@pytest.mark.parametrize(
    "template", ["{etag}", "W/{etag}", '"other", {etag}', "*"], ids=["strong", "weak", "list", "star"]
)
async def test_if_none_match_answers_304(served, template):
    running, _ = served
    url = f"{running.public_url}/keys-myns/jwks.json"
    _, headers, _ = await get(url)
    status, headers304, body = await get(url, headers={"If-None-Match": template.format(etag=headers["ETag"])})
    assert status == 304
    assert body == b""
    assert headers304["ETag"] == headers["ETag"]
    status, _, _ = await get(url, headers={"If-None-Match": '"something-else"'})
    assert status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/unknown/jwks.json",
        "/keys-myns",
        "/keys-myns/",
        "/keys-myns/jwks.json/extra",
        "/keys-myns/jwks.JSON",
        "/metrics",
        "/status",
        "/healthz",
        "/%2e%2e/keys-myns/jwks.json",
        "/keys-myns%2Fjwks.json",
        "//keys-myns/jwks.json",
    ],
)
async def test_everything_else_is_404(served, path):
    running, _ = served
    status, _, body = await get(URL(f"{running.public_url}{path}", encoded=True))
    assert status == 404
    assert b"keys" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_are_405(served, method):
    running, _ = served
    status, headers, _ = await get(f"{running.public_url}/keys-myns/jwks.json", method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


async def test_503_with_retry_after_until_a_set_is_servable(mirror_factory, refused_url):
    running = await mirror_factory(config_text(f"  - name: down\n    jwks_uri: {refused_url}\n"))
    await running.mirror.refresh()
    status, headers, body = await get(f"{running.public_url}/down/jwks.json")
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert headers["Cache-Control"] == "no-store"
    assert b"keys" not in body


async def test_stale_set_fails_closed_after_max_stale(fake_issuer, mirror_factory):
    clock = Clock()
    issuer = await fake_issuer()
    running = await mirror_factory(
        config_text(f"  - name: keys-myns\n    jwks_uri: {issuer.url}\n    max_stale: 1h\n"),
        clock=clock,
    )
    await running.mirror.refresh()
    url = f"{running.public_url}/keys-myns/jwks.json"
    await issuer.stop()
    clock.advance(3599)
    assert (await get(url))[0] == 200
    clock.advance(2)
    status, headers, _ = await get(url)
    assert status == 503
    assert "Retry-After" in headers


async def test_request_counts_reach_metrics(served):
    running, _ = served
    url = f"{running.public_url}/keys-myns/jwks.json"
    for _ in range(3):
        await get(url)
    await get(url, "POST")
    await get(f"{running.public_url}/nope/jwks.json")
    _, _, metrics = await get(f"{running.admin_url}/metrics")
    text = metrics.decode()
    # metrics.per_issuer: compact (the default) sums the issuers (and unknown names) by code
    assert 'jwks_mirror_requests_total{code="200"} 3.0' in text
    assert 'jwks_mirror_requests_total{code="405"} 1.0' in text
    assert 'jwks_mirror_requests_total{code="404"} 1.0' in text


async def test_request_counts_are_read_from_the_public_server(served):
    running, _ = served
    url = f"{running.public_url}/keys-myns/jwks.json"
    await get(url)
    await get(url, "HEAD")
    await get(url, "DELETE")
    await get(f"{running.public_url}/nope/jwks.json")
    assert running.public.requests("keys-myns") == {200: 2, 405: 1}
    assert running.public.requests(None) == {404: 1}
    assert running.public.requests("nope") == {}
