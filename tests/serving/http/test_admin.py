"""The admin port: probes, metrics, status, and the protected refresh action."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ...conftest import config_text, jwks, public_jwk


async def call(url: str, method: str = "GET", *, local_addr: str | None = None, **kwargs):
    connector = aiohttp.TCPConnector(local_addr=(local_addr, 0) if local_addr else None)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, url, **kwargs) as response,
    ):
        body = await response.read()
        return response.status, response.headers.copy(), body


def parsed(body: bytes):
    return json.loads(body)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
async def two_issuers(fake_issuer, mirror_factory, refused_url):
    good = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(
            f"  - name: good\n    jwks_uri: {good.url}\n"
            f"  - name: down\n    jwks_uri: {refused_url}\n"
        )
    )
    await running.mirror.refresh()
    return running, good


async def test_healthz_is_always_ok(two_issuers):
    running, _ = two_issuers
    status, _, body = await call(f"{running.admin_url}/healthz")
    assert (status, body) == (200, b"ok\n")


async def test_readyz_names_the_issuers_that_are_not_servable_but_stays_ready(two_issuers):
    running, _ = two_issuers
    status, _, body = await call(f"{running.admin_url}/readyz")
    assert status == 200
    assert parsed(body)["not_servable"] == ["down"]


async def test_readyz_ok_when_all_servable_and_503_while_draining(fake_issuer, mirror_factory):
    issuer = await fake_issuer()
    running = await mirror_factory(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    await running.mirror.refresh()
    status, _, body = await call(f"{running.admin_url}/readyz")
    assert status == 200 and parsed(body)["ready"] is True
    running.mirror.draining = True
    status, _, body = await call(f"{running.admin_url}/readyz")
    assert status == 503 and parsed(body)["draining"] is True


async def test_status_reports_every_issuer(two_issuers):
    running, _ = two_issuers
    status, _, body = await call(f"{running.admin_url}/status")
    assert status == 200
    issuers = {item["name"]: item for item in parsed(body)["issuers"]}
    good, down = issuers["good"], issuers["down"]
    assert good["kids"] == ["k1"] and good["servable"] is True and good["stale"] is False
    assert good["etag"].startswith('"') and good["last_error"] is None
    assert good["next_refresh"] > good["last_success"]
    assert down["servable"] is False and down["consecutive_failures"] >= 1
    assert down["last_error_reason"] == "connect" and "cannot connect" in down["last_error"]
    assert down["kids"] == [] and down["etag"] is None


async def test_metrics_expose_every_documented_family(two_issuers):
    running, _ = two_issuers
    status, headers, body = await call(f"{running.admin_url}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    for name in (
        "fetch_total", "fetch_errors_total", "fetch_duration_seconds_bucket", "keys",
        "last_success_timestamp_seconds", "stale", "key_set_info",
        "keys_rejected_total", "requests_total", "config_reloads_total",
    ):
        assert f"jwks_mirror_{name}" in text, name
    # metrics.per_issuer: compact (the default): fetch outcomes summed across issuers, and
    # the per-issuer failure detail only for the failing issuer
    assert samples(text, "jwks_mirror_fetch_total")[(("outcome", "changed"),)] == 1
    assert samples(text, "jwks_mirror_fetch_errors_total")[(("issuer", "down"), ("reason", "connect"))] >= 1
    assert samples(text, "jwks_mirror_stale") == {(("issuer", "down"),): 1}
    assert samples(text, "jwks_mirror_keys")[(("issuer", "good"),)] == 1


async def test_metrics_are_gzipped_for_scrapers_that_ask(two_issuers):
    running, _ = two_issuers
    url = f"{running.admin_url}/metrics"
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as response:
            plain_headers, plain = response.headers.copy(), await response.read()
        async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
            gz_headers, compressed = response.headers.copy(), await response.read()
    assert "Content-Encoding" not in plain_headers
    assert gz_headers["Content-Encoding"] == "gzip"
    unzipped = gzip.decompress(compressed).decode()
    assert samples(unzipped, "jwks_mirror_keys") == samples(plain.decode(), "jwks_mirror_keys")
    assert samples(unzipped, "jwks_mirror_keys")[(("issuer", "good"),)] == 1


async def test_refresh_reports_outcomes_and_status_codes(two_issuers):
    running, good = two_issuers
    status, _, body = await call(f"{running.admin_url}/refresh/good", "POST")
    assert status == 200
    assert parsed(body)["results"][0]["outcome"] == "unchanged"
    good.document = jwks("k1", "k2")
    status, _, body = await call(f"{running.admin_url}/refresh/good", "POST")
    (result,) = parsed(body)["results"]
    assert (status, result["outcome"], result["added"]) == (200, "changed", ["k2"])
    status, _, body = await call(f"{running.admin_url}/refresh", "POST")
    results = {r["name"]: r for r in parsed(body)["results"]}
    assert status == 502
    assert results["down"]["outcome"] == "failed" and results["down"]["reason"] == "connect"
    assert results["good"]["outcome"] == "unchanged"
    status, _, body = await call(f"{running.admin_url}/refresh/nope", "POST")
    assert status == 404 and "nope" in parsed(body)["error"]


async def test_refresh_is_post_only(two_issuers):
    running, _ = two_issuers
    status, _, _ = await call(f"{running.admin_url}/refresh")
    assert status == 405


async def test_purge_retained_revokes_at_once(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("old"))
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n    retain_removed_keys: 1h\n")
    )
    await running.mirror.refresh()
    issuer.document = jwks("new")
    _, _, body = await call(f"{running.admin_url}/refresh/a", "POST")
    (result,) = parsed(body)["results"]
    assert result["kids"] == ["new", "old"] and result["retained"] == ["old"]
    _, _, body = await call(f"{running.admin_url}/refresh/a?purge_retained=1", "POST")
    (result,) = parsed(body)["results"]
    assert result["kids"] == ["new"] and result["purged"] == ["old"]
    _, _, served = await call(f"{running.public_url}/a/jwks.json")
    assert [k["kid"] for k in json.loads(served)["keys"]] == ["new"]


async def test_refresh_from_the_mesh_needs_the_token(fake_issuer, mirror_factory, tmp_path: Path):
    """127.0.0.6 is where Istio's sidecar forwards inbound mesh traffic from: not trusted."""
    issuer = await fake_issuer()
    url = f"  - name: a\n    jwks_uri: {issuer.url}\n"
    running = await mirror_factory(config_text(url))
    status, _, body = await call(f"{running.admin_url}/refresh", "POST", local_addr="127.0.0.6")
    assert status == 403 and "loopback" in parsed(body)["error"]
    status, _, _ = await call(f"{running.admin_url}/status", local_addr="127.0.0.6")
    assert status == 200  # reading is fine; only the write is protected

    token = tmp_path / "admin-token"
    token.write_text("s3cret-token\n")
    with_token = await mirror_factory(
        config_text(url).replace(
            "admin: {host: 127.0.0.1, port: 0}", f"admin: {{host: 127.0.0.1, port: 0, token_file: {token}}}"
        )
    )
    endpoint = f"{with_token.admin_url}/refresh"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        status, response_headers, _ = await call(endpoint, "POST", local_addr="127.0.0.6", headers=headers)
        assert status == 401 and response_headers["WWW-Authenticate"] == "Bearer"
    status, _, _ = await call(
        endpoint, "POST", local_addr="127.0.0.6", headers={"Authorization": "Bearer s3cret-token"}
    )
    assert status == 200
    status, _, _ = await call(endpoint, "POST")  # loopback needs no token
    assert status == 200


async def test_rejected_set_keeps_the_published_bytes(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    await running.mirror.refresh()
    _, _, before = await call(f"{running.public_url}/a/jwks.json")
    leaked = public_jwk("k2")
    leaked["d"] = "AQAB"
    issuer.document = {"keys": [public_jwk("k1"), leaked]}
    status, _, body = await call(f"{running.admin_url}/refresh/a", "POST")
    (result,) = parsed(body)["results"]
    assert status == 502 and result["reason"] == "private_key"
    _, _, after = await call(f"{running.public_url}/a/jwks.json")
    assert after == before
    _, _, metrics = await call(f"{running.admin_url}/metrics")
    rejected = samples(metrics.decode(), "jwks_mirror_keys_rejected_total")
    assert rejected[(("issuer", "a"), ("reason", "private_key"))] == 1


@pytest.mark.parametrize(
    "token", [b"\xff\xfe", b"s3cret-token\xff", "s3cret-t\u00f6ken".encode(), b"\x80"]
)
async def test_a_token_that_is_not_ascii_is_401(fake_issuer, mirror_factory, tmp_path: Path, token):
    """Clients refuse to send such bytes, so a raw socket does; from 127.0.0.6 (not loopback)."""
    issuer = await fake_issuer()
    token_file = tmp_path / "admin-token"
    token_file.write_text("s3cret-token\n")
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n").replace(
            "admin: {host: 127.0.0.1, port: 0}",
            f"admin: {{host: 127.0.0.1, port: 0, token_file: {token_file}}}",
        )
    )
    host, port = running.admin_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=("127.0.0.6", 0))
    writer.write(
        b"POST /refresh HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token + b"\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"WWW-Authenticate: Bearer" in answer


async def test_a_request_aiohttp_cannot_parse_is_400_and_logs_no_error(
    fake_issuer, mirror_factory, caplog
):
    issuer = await fake_issuer()
    running = await mirror_factory(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    host, port = running.admin_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: m\r\nX-Bad: \x01\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
