"""Every upstream mode and failure of one fetch, against real servers on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import IssuerSettings
from jwks_mirror.core.errors import UpstreamError
from jwks_mirror.serving.admission import Admission
from jwks_mirror.serving.discovery import MAX_TTL_S, DiscoveryCache, max_age_s, rebase_origin
from jwks_mirror.serving.fetching import Fetcher, Validators

from ..conftest import (
    ISSUER_HOST,
    Behaviour,
    Clock,
    Pki,
    answer,
    drip,
    gzipped,
    hang,
    jwks,
    reset,
    truncated,
    until,
)


def issuer_settings(body: str, *, timeout: str = "2s") -> IssuerSettings:
    text = f"defaults: {{timeout: {timeout}}}\nissuers:\n  - name: keys-myns\n{body}"
    return parse_settings(text).issuers[0]


def mtls_settings(url: str, pki: Pki) -> IssuerSettings:
    """An issuer fetched over mTLS with the mirror's certificate from ``pki``."""
    return issuer_settings(
        f"    jwks_uri: {url}\n"
        f"    tls: {{ca_file: {pki.ca_file}, cert_file: {pki.mirror_cert}, "
        f"key_file: {pki.mirror_key}, server_name: {ISSUER_HOST}}}\n"
    )


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    instance = Fetcher()
    yield instance
    await instance.close()


async def test_plain_http_fetch_returns_body_and_validators(fake_issuer, fetcher):
    issuer = await fake_issuer(etag='"v1"', last_modified="Sun, 29 Nov 2026 00:00:00 GMT")
    result = await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert json.loads(result.body) == issuer.document
    assert result.etag == '"v1"'
    assert result.last_modified == "Sun, 29 Nov 2026 00:00:00 GMT"
    request = issuer.requests[0]
    assert request.headers["User-Agent"].startswith("jwks-mirror/")
    assert "If-None-Match" not in request.headers


async def test_conditional_get_sends_validators_and_maps_304(fake_issuer, fetcher):
    issuer = await fake_issuer(etag='"v1"')
    settings = issuer_settings(f"    jwks_uri: {issuer.url}\n")
    result = await fetcher.fetch(settings, validators=Validators(etag='"v1"'))
    assert result.not_modified
    assert issuer.requests[0].headers["If-None-Match"] == '"v1"'
    issuer.etag, issuer.last_modified = None, "Sat, 28 Nov 2026 10:00:00 GMT"
    result = await fetcher.fetch(
        settings, validators=Validators(last_modified="Sat, 28 Nov 2026 10:00:00 GMT")
    )
    assert result.not_modified
    assert issuer.requests[1].headers["If-Modified-Since"] == "Sat, 28 Nov 2026 10:00:00 GMT"


async def test_unsolicited_304_is_a_status_error(fake_issuer, fetcher):
    issuer = await fake_issuer(behaviour=answer(304))
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert info.value.reason == "status"


@pytest.mark.parametrize("status", [201, 204, 401, 403, 404, 500, 503])
async def test_only_200_is_success(fake_issuer, fetcher, status):
    issuer = await fake_issuer(behaviour=answer(status, json.dumps(jwks("k1")).encode()))
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert info.value.reason == "status"
    assert f"answered {status}" in str(info.value)


async def test_error_body_excerpt_is_truncated_and_printable(fake_issuer, fetcher):
    issuer = await fake_issuer(behaviour=answer(500, b"\x1b[31m" + b"x" * 5000))
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    message = str(info.value)
    assert "\x1b" not in message
    assert len(message) < 400


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_not_followed(fake_issuer, fetcher, status):
    target = await fake_issuer()
    issuer = await fake_issuer(behaviour=answer(status, Location=target.url))
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert info.value.reason == "redirect"
    assert target.requests == []


async def test_explicit_proxy_carries_the_request(fake_issuer, fetcher):
    """As through a sidecar: the mesh host name only resolves at the proxy."""
    upstream = await fake_issuer()
    seen: list[str] = []

    async def forward(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{upstream.base}{request.path}") as response:
                return web.Response(status=response.status, body=await response.read())

    proxy = await fake_issuer(behaviour=forward)
    settings = issuer_settings(
        f"    jwks_uri: http://{ISSUER_HOST}/jwks.json\n    proxy: http://127.0.0.1:{proxy.port}\n"
    )
    result = await fetcher.fetch(settings)
    assert json.loads(result.body) == upstream.document
    assert seen == [f"http://{ISSUER_HOST}/jwks.json"]


async def test_direct_mtls_with_private_ca_and_server_name(fake_issuer, fetcher, pki: Pki):
    """Connect to an address, verify the certificate for the mesh name, present ours."""
    issuer = await fake_issuer(ssl_context=pki.server_context())
    settings = mtls_settings(issuer.url, pki)
    result = await fetcher.fetch(settings)
    assert json.loads(result.body) == issuer.document
    peer = issuer.requests[0].transport.get_extra_info("peercert")
    uris = [value for kind, value in peer["subjectAltName"] if kind == "URI"]
    assert uris == [pki.ca.spiffe_id("jwks-mirror", "jwks-mirror")]


@pytest.mark.parametrize(
    "tls_yaml",
    [
        pytest.param(
            "{ca_file: CA, server_name: keys.myns.svc.cluster.local}", id="no-client-cert"
        ),
        pytest.param(
            "{cert_file: CERT, key_file: KEY, server_name: keys.myns.svc.cluster.local}",
            id="system-ca-does-not-know-mesh-ca",
        ),
        pytest.param(
            "{ca_file: CA, cert_file: CERT, key_file: KEY, server_name: wrong.svc.cluster.local}",
            id="wrong-name",
        ),
    ],
)
async def test_tls_failures_are_reported_as_tls(fake_issuer, fetcher, pki: Pki, tls_yaml):
    issuer = await fake_issuer(ssl_context=pki.server_context())
    tls = (
        tls_yaml.replace("CA", str(pki.ca_file))
        .replace("CERT", str(pki.mirror_cert))
        .replace("KEY", str(pki.mirror_key))
    )
    settings = issuer_settings(f"    jwks_uri: {issuer.url}\n    tls: {tls}\n")
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason in {"tls", "connection"}
    assert issuer.requests == []


async def test_expired_server_certificate_is_refused(
    fake_issuer, fetcher, pki: Pki, tmp_path: Path
):
    context = pki.expired_server_context()
    issuer = await fake_issuer(ssl_context=context)
    settings = issuer_settings(
        f"    jwks_uri: {issuer.url}\n    tls: {{ca_file: {pki.ca_file}, server_name: {ISSUER_HOST}}}\n"
    )
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "tls"
    assert "expired" in str(info.value)


async def test_bearer_token_file_is_reread_on_every_fetch(fake_issuer, fetcher, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("first\n")
    issuer = await fake_issuer()
    settings = issuer_settings(
        f"    jwks_uri: {issuer.url}\n    bearer_token_file: {token}\n"
        "    headers: {X-Tenant: blue, Accept-Language: en}\n"
    )
    await fetcher.fetch(settings)
    token.write_text("second")
    await fetcher.fetch(settings)
    assert [r.headers["Authorization"] for r in issuer.requests] == [
        "Bearer first",
        "Bearer second",
    ]
    assert issuer.requests[0].headers["X-Tenant"] == "blue"
    token.write_text("")
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "credentials"


async def test_discovery_follows_the_issuers_jwks_uri(fake_issuer, fetcher):
    keys = await fake_issuer()
    issuer_url = ""

    async def discovery(request: web.Request) -> web.StreamResponse:
        if request.path == "/.well-known/openid-configuration":
            return web.json_response({"issuer": issuer_url, "jwks_uri": keys.url})
        return web.Response(status=404)

    oidc = await fake_issuer(behaviour=discovery)
    issuer_url = oidc.base
    settings = issuer_settings(f"    issuer: {issuer_url}\n    discovery: true\n")
    result = await fetcher.fetch(settings)
    assert result.url == keys.url
    assert json.loads(result.body) == keys.document


def bare_name_idp(keys_document: object) -> Behaviour:
    """An IdP that, like one configured as ``http://auth:8080`` in its namespace, names itself
    and its keys by a host the mirror (and this test) cannot resolve."""

    async def behave(request: web.Request) -> web.StreamResponse:
        if request.path == "/.well-known/openid-configuration":
            return web.json_response(
                {"issuer": "http://auth:8080", "jwks_uri": "http://auth:8080/keys?set=1"}
            )
        if request.path == "/keys" and request.query_string == "set=1":
            return web.json_response(keys_document)
        return web.Response(status=404)

    return behave


async def test_discovery_url_fetches_the_keys_from_its_own_origin(fake_issuer, fetcher):
    """The document says ``http://auth:8080/keys``; that host only resolves in the issuer's
    namespace, so the keys come from discovery_url's origin, same path and query."""
    idp = await fake_issuer()
    idp.behaviour = bare_name_idp(idp.document)
    settings = issuer_settings(
        "    issuer: http://auth:8080\n    discovery: true\n"
        f"    discovery_url: {idp.base}/.well-known/openid-configuration\n"
    )
    result = await fetcher.fetch(settings)
    assert result.url == f"{idp.base}/keys?set=1"
    assert json.loads(result.body) == idp.document
    assert [r.path_qs for r in idp.requests] == ["/.well-known/openid-configuration", "/keys?set=1"]


async def test_discovery_url_keeps_the_issuer_check(fake_issuer, fetcher):
    idp = await fake_issuer()
    idp.behaviour = bare_name_idp(idp.document)
    settings = issuer_settings(
        "    issuer: http://auth.billing.svc.cluster.local:8080\n    discovery: true\n"
        f"    discovery_url: {idp.base}/.well-known/openid-configuration\n"
    )
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "discovery"
    assert "names issuer 'http://auth:8080'" in str(info.value)
    assert len(idp.requests) == 1  # no key fetch after a document for another issuer


async def test_discovery_url_leaves_a_jwks_uri_on_another_origin_alone(fake_issuer, fetcher):
    keys = await fake_issuer()

    async def discovery(request: web.Request) -> web.StreamResponse:
        return web.json_response({"issuer": "http://auth:8080", "jwks_uri": keys.url})

    idp = await fake_issuer(behaviour=discovery)
    settings = issuer_settings(
        "    issuer: http://auth:8080\n    discovery: true\n"
        f"    discovery_url: {idp.base}/.well-known/openid-configuration\n"
    )
    result = await fetcher.fetch(settings)
    assert result.url == keys.url
    assert len(keys.requests) == 1


async def test_a_discovered_metadata_address_is_refused_and_never_cached(fake_issuer, fetcher):
    """A discovery document naming a literal metadata address as its ``jwks_uri``: the fetch
    fails with reason ``address`` without a request there, and the next attempt reads the
    document again instead of trusting a cached answer. (Configured URLs are refused when the
    config is loaded; a discovered one is checked when it is discovered.)"""

    async def discovery(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"issuer": issuer_url, "jwks_uri": "http://169.254.169.254/latest/meta-data/"},
            headers={"Cache-Control": "max-age=3600"},
        )

    idp = await fake_issuer(behaviour=discovery)
    issuer_url = idp.base
    settings = issuer_settings(f"    issuer: {issuer_url}\n    discovery: true\n")
    for attempt in (1, 2):
        with pytest.raises(UpstreamError) as info:
            await fetcher.fetch(settings)
        assert info.value.reason == "address"
        assert "169.254.169.254" in str(info.value) and "link-local" in str(info.value)
        assert len(idp.requests) == attempt  # the document each time, nothing else


class CachingIdp:
    """An IdP on loopback whose discovery document carries ``cache_control``; it serves its
    keys at ``keys_path`` (which a test may move) and counts each kind of request."""

    def __init__(self, cache_control: str | None) -> None:
        self.cache_control = cache_control
        self.keys_path = "/keys-v1"
        self.base = ""
        self.documents = 0
        self.key_fetches = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/.well-known/openid-configuration":
            self.documents += 1
            headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
            return web.json_response(
                {"issuer": self.base, "jwks_uri": self.base + self.keys_path}, headers=headers
            )
        if request.path == self.keys_path:
            self.key_fetches += 1
            return web.json_response(jwks("k1"))
        return web.Response(status=404)


async def caching_idp(fake_issuer, cache_control: str | None) -> tuple[CachingIdp, IssuerSettings]:
    idp = CachingIdp(cache_control)
    server = await fake_issuer(behaviour=idp)
    idp.base = server.base
    return idp, issuer_settings(f"    issuer: {idp.base}\n    discovery: true\n")


async def test_discovery_document_is_reused_while_its_max_age_lasts(fake_issuer):
    clock = Clock(now=1000.0)
    fetcher = Fetcher(clock=clock)
    try:
        idp, settings = await caching_idp(fake_issuer, "public, max-age=300")
        for _ in range(3):
            result = await fetcher.fetch(settings)
            assert json.loads(result.body) == jwks("k1")
        assert (idp.documents, idp.key_fetches) == (1, 3)  # one request per refresh, not two
        clock.now += 299
        await fetcher.fetch(settings)
        assert idp.documents == 1
        clock.now += 2  # past max-age: the document is read again
        await fetcher.fetch(settings)
        assert (idp.documents, idp.key_fetches) == (2, 5)
    finally:
        await fetcher.close()


@pytest.mark.parametrize(
    "cache_control",
    [None, "no-store", "max-age=300, no-store", "no-cache, max-age=300", "public", "max-age=0"],
)
async def test_discovery_document_without_a_usable_max_age_is_read_every_time(
    fake_issuer, fetcher, cache_control
):
    idp, settings = await caching_idp(fake_issuer, cache_control)
    await fetcher.fetch(settings)
    await fetcher.fetch(settings)
    assert (idp.documents, idp.key_fetches) == (2, 2)


async def test_failed_keys_fetch_drops_the_cached_document(fake_issuer, fetcher):
    """The IdP moves its keys: the cached jwks_uri now answers 404. That fetch fails (nothing
    is masked), and the next one reads the document again and follows the move."""
    idp, settings = await caching_idp(fake_issuer, "max-age=3600")
    await fetcher.fetch(settings)
    idp.keys_path = "/keys-v2"
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "status"
    assert idp.documents == 1
    result = await fetcher.fetch(settings)
    assert result.url == idp.base + "/keys-v2"
    assert (idp.documents, idp.key_fetches) == (2, 2)


async def test_cached_document_is_not_shared_with_another_issuer(fake_issuer, fetcher):
    idp, settings = await caching_idp(fake_issuer, "max-age=3600")
    other = dataclasses.replace(settings, name="other-ns")
    await fetcher.fetch(settings)
    await fetcher.fetch(other)
    assert idp.documents == 2


@pytest.mark.parametrize(
    ("cache_control", "age", "expected"),
    [
        ("max-age=300", None, 300.0),
        ("public, max-age=300, must-revalidate", None, 300.0),
        ('max-age="60"', None, 60.0),
        ("MAX-AGE=60", "20", 40.0),
        ("max-age=60", "60", None),  # already as old as allowed
        ("max-age=99999999", None, MAX_TTL_S),
        ("s-maxage=300", None, None),
        ("max-age=abc", None, None),
        ("no-store", None, None),
        ("private, no-cache", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_max_age_s(cache_control, age, expected) -> None:
    assert max_age_s(cache_control, age) == expected


def test_discovery_cache_is_bounded() -> None:
    clock = Clock(now=0.0)
    cache = DiscoveryCache(clock=clock, maxsize=2)
    for name in ("a", "b", "c"):
        cache.put((name, None, "u"), f"http://{name}/keys", 60.0)
    assert len(cache) == 2
    assert cache.get(("a", None, "u")) is None  # the least recently used went first
    assert cache.get(("c", None, "u")) == "http://c/keys"
    cache.put(("c", None, "u"), "http://c/keys", None)  # a no-store answer forgets the entry
    assert cache.get(("c", None, "u")) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://auth:8080/keys", "http://10.0.0.1:9000/keys"),
        ("http://AUTH:8080/k?a=1", "http://10.0.0.1:9000/k?a=1"),
        ("http://auth:8081/keys", "http://auth:8081/keys"),  # another port
        ("https://auth:8080/keys", "https://auth:8080/keys"),  # another scheme
        ("http://auth.billing:8080/keys", "http://auth.billing:8080/keys"),  # another host
    ],
)
def test_rebase_origin(url: str, expected: str) -> None:
    assert rebase_origin(url, old="http://auth:8080", new="http://10.0.0.1:9000/.well-known/x") == (
        expected
    )


def test_rebase_origin_fills_in_default_ports() -> None:
    assert rebase_origin("https://auth/k", old="https://auth:443/", new="http://x:1/d") == (
        "http://x:1/k"
    )


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(
            {"issuer": "https://evil.example", "jwks_uri": "http://x/"}, id="issuer-mismatch"
        ),
        pytest.param({"issuer": "ISSUER"}, id="no-jwks-uri"),
        pytest.param({"issuer": "ISSUER", "jwks_uri": "file:///etc/passwd"}, id="not-http"),
        pytest.param(["not", "an", "object"], id="not-object"),
    ],
)
async def test_bad_discovery_documents(fake_issuer, fetcher, document):
    holder: dict[str, str] = {}

    async def discovery(request: web.Request) -> web.StreamResponse:
        text = json.dumps(document).replace("ISSUER", holder["issuer"])
        return web.Response(text=text, content_type="application/json")

    oidc = await fake_issuer(behaviour=discovery)
    holder["issuer"] = oidc.base
    settings = issuer_settings(f"    issuer: {oidc.base}\n    discovery: true\n")
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "discovery"


async def test_hanging_upstream_times_out(fake_issuer, fetcher):
    issuer = await fake_issuer()
    issuer.behaviour = hang(issuer)
    settings = issuer_settings(f"    jwks_uri: {issuer.url}\n", timeout="300ms")
    with pytest.raises(UpstreamError) as info:
        await asyncio.wait_for(fetcher.fetch(settings), timeout=60)  # a bound on a hang
    assert info.value.reason == "timeout"
    assert not issuer.released.is_set()  # the upstream never answered: the timeout ended it


async def test_a_hanging_fetch_gives_its_admission_slot_back_before_its_timeout(fake_issuer):
    """With one slot, a healthy issuer queued behind a hanging one is fetched long before
    the hanging fetch times out (a slot is held for slot_s at most, not for the timeout)."""
    stuck, healthy = await fake_issuer(), await fake_issuer()
    stuck.behaviour = hang(stuck)
    fetcher = Fetcher(admission=Admission(limit=1, slot_s=0.05))
    try:
        hanging = asyncio.ensure_future(
            fetcher.fetch(issuer_settings(f"    jwks_uri: {stuck.url}\n", timeout="60s"))
        )
        await until(lambda: stuck.requests, what="the hanging fetch to reach its upstream")
        result = await asyncio.wait_for(
            fetcher.fetch(issuer_settings(f"    jwks_uri: {healthy.url}\n")), timeout=30
        )
        assert json.loads(result.body) == healthy.document
        assert not hanging.done()  # still waiting for its upstream: it only gave the slot up
    finally:
        stuck.released.set()
        with pytest.raises(UpstreamError):
            await hanging
        await fetcher.close()


async def test_slow_drip_body_hits_the_total_timeout(fake_issuer, fetcher):
    issuer = await fake_issuer(behaviour=drip())
    settings = issuer_settings(f"    jwks_uri: {issuer.url}\n", timeout="400ms")
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "timeout"


async def test_connection_reset_and_refused(fake_issuer, fetcher):
    issuer = await fake_issuer(behaviour=reset())
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert info.value.reason == "connection"
    port = issuer.port
    await issuer.stop()
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: http://127.0.0.1:{port}/jwks.json\n"))
    assert info.value.reason == "connect"


async def test_declared_oversize_body_is_refused(fake_issuer, fetcher):
    issuer = await fake_issuer(document=b" " * 5000)
    settings = issuer_settings(f"    jwks_uri: {issuer.url}\n    max_response_bytes: 4096\n")
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "too_large"


async def test_chunked_oversize_body_is_refused_while_reading(fake_issuer, fetcher):
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b"x" * 1024)
        return response

    issuer = await fake_issuer(behaviour=endless)
    settings = issuer_settings(f"    jwks_uri: {issuer.url}\n    max_response_bytes: 4096\n")
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "too_large"


async def test_gzip_body_is_decompressed(fake_issuer, fetcher):
    body = json.dumps(jwks("k1")).encode()
    issuer = await fake_issuer(behaviour=gzipped(body))
    result = await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert result.body == body
    assert "gzip" in issuer.requests[0].headers["Accept-Encoding"]


async def test_gzip_bomb_stops_at_the_limit(fake_issuer, fetcher):
    """64 MiB of zeros compress to ~64 KiB; the cap applies after decompression."""
    bomb_source = b"0" * (64 << 20)
    issuer = await fake_issuer(behaviour=gzipped(bomb_source))
    settings = issuer_settings(f"    jwks_uri: {issuer.url}\n")
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "too_large"
    assert "262144" in str(info.value)


async def test_deflate_and_unknown_encodings(fake_issuer, fetcher):
    body = json.dumps(jwks("k1")).encode()

    async def deflated(request: web.Request) -> web.StreamResponse:
        return web.Response(body=zlib.compress(body), headers={"Content-Encoding": "deflate"})

    issuer = await fake_issuer(behaviour=deflated)
    assert (await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))).body == body
    issuer.behaviour = answer(200, body, **{"Content-Encoding": "br"})
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert info.value.reason == "encoding"
    issuer.behaviour = answer(200, b"not gzip at all", **{"Content-Encoding": "gzip"})
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert info.value.reason == "encoding"


async def test_truncated_body_is_a_connection_error(fake_issuer, fetcher):
    issuer = await fake_issuer(behaviour=truncated())
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(issuer_settings(f"    jwks_uri: {issuer.url}\n"))
    assert info.value.reason == "connection"


async def test_rotated_client_certificate_is_picked_up(fake_issuer, fetcher, pki: Pki):
    """Mesh certificates rotate on disk; the next fetch presents the new one."""
    issuer = await fake_issuer(ssl_context=pki.server_context())
    settings = mtls_settings(issuer.url, pki)
    await fetcher.fetch(settings)
    rotated = pki.ca.issue(namespace="jwks-mirror", service_account="rotated")
    pki.mirror_cert.write_bytes(rotated.cert_pem)
    pki.mirror_key.write_bytes(rotated.key_pem)
    await fetcher.fetch(settings)
    identities = [
        [v for k, v in r.transport.get_extra_info("peercert")["subjectAltName"] if k == "URI"]
        for r in issuer.requests
    ]
    assert identities == [
        [pki.ca.spiffe_id("jwks-mirror", "jwks-mirror")],
        [pki.ca.spiffe_id("jwks-mirror", "rotated")],
    ]


async def test_a_rotated_key_file_that_is_unusable_fails_the_fetch_cleanly(fake_issuer, fetcher, pki: Pki):
    """An encrypted key appearing on disk must fail as "tls", never prompt for a passphrase."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    issuer = await fake_issuer(ssl_context=pki.server_context())
    settings = mtls_settings(issuer.url, pki)
    await fetcher.fetch(settings)
    pki.mirror_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(UpstreamError) as info:
        await fetcher.fetch(settings)
    assert info.value.reason == "tls"
    assert "key_file: not an unencrypted PEM private key" in str(info.value)
