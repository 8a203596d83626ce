"""Upstream URLs on a link-local or cloud metadata address are refused, as istiod refuses them.

``check-config`` refuses them in ``jwks_uri``, ``discovery_url`` and a discovery ``issuer``;
the running mirror's fetcher refuses a literal address (a discovered ``jwks_uri``, say) and a
host name that resolves to one at fetch time, without connecting. Loopback and private ranges
stay allowed: tests, the demo and in-mesh upstreams use them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.errors import ConfigError, UpstreamError
from jwks_mirror.serving.fetching import Fetcher

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fe80::1]/jwks.json",
    "http://[fe80::1%25eth0]:8080/jwks.json",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://100.100.100.200/latest/meta-data/",
    "http://168.63.129.16/machine",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://[::ffff:169.254.169.254]/latest/",
    "http://[::ffff:a9fe:a9fe]/latest/",
]
ALLOWED = [
    "http://127.0.0.1:8080/jwks.json",
    "http://[::1]:8080/jwks.json",
    "http://localhost:8080/jwks.json",
    "http://10.0.0.7/jwks.json",
    "http://172.16.3.4/jwks.json",
    "http://192.168.1.9/jwks.json",
    "http://[fd00::7]/jwks.json",
    "http://100.64.0.1/jwks.json",
    "http://keys.myns.svc.cluster.local/jwks.json",
    "https://www.googleapis.com/oauth2/v3/certs",
]


def config(issuer: str) -> str:
    return f"issuers:\n  - name: up\n{issuer}"


@pytest.mark.parametrize("url", REFUSED)
def test_check_config_refuses_link_local_and_metadata_upstreams(tmp_path: Path, url: str) -> None:
    cases = {
        "jwks_uri": f"    jwks_uri: {url}\n",
        "discovery_url": (
            f"    issuer: http://auth.myns.svc:8080\n    discovery: true\n    discovery_url: {url}\n"
        ),
        "issuer": f"    issuer: {url}\n    discovery: true\n",
    }
    for field, body in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_settings(config(body), offline=True)
        assert info.value.field == f"issuers[0].{field}"
        assert "refused" in str(info.value)
    path = tmp_path / "config.yaml"
    path.write_text(config(cases["jwks_uri"]))
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "check-config", "--config", str(path), "--offline"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("jwks-mirror: error: issuers[0].jwks_uri: refused")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("url", ALLOWED)
def test_loopback_private_and_mesh_upstreams_stay_allowed(url: str) -> None:
    settings = parse_settings(config(f"    jwks_uri: {url}\n"), offline=True)
    assert settings.issuers[0].jwks_uri == url


def test_the_address_rule_itself() -> None:
    from jwks_mirror.core.config.fields import forbidden_address

    assert forbidden_address("127.0.0.1") is None
    assert forbidden_address("169.254.169.254") is not None
    assert forbidden_address("keys.svc") is None


class MapResolver(AbstractResolver):
    """Maps chosen names to chosen addresses, as a real DNS answer could (a test cannot make
    real DNS answer 169.254.169.254); every other name fails."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.asked: list[str] = []

    async def resolve(self, host, port=0, family=0):
        self.asked.append(host)
        import socket

        address = self.records[host]
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [{"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[Fetcher, MapResolver]]:
    resolver = MapResolver({})
    fetcher = Fetcher(resolver=lambda: resolver)
    yield fetcher, resolver
    await fetcher.close()


def issuer(url: str, *, discovery: bool = False):
    body = f"    issuer: {url}\n    discovery: true\n" if discovery else f"    jwks_uri: {url}\n"
    return parse_settings(f"defaults: {{timeout: 2s}}\n{config(body)}").issuers[0]


async def test_fetch_refuses_a_name_that_resolves_to_a_metadata_address(fake_issuer, guarded):
    fetcher, resolver = guarded
    keys = await fake_issuer()
    resolver.records = {"keys.test": "169.254.169.254", "good.test": "127.0.0.1",
                        "six.test": "fd00:ec2::254"}
    for name in ("keys.test", "six.test"):
        with pytest.raises(UpstreamError) as info:
            await fetcher.fetch(issuer(f"http://{name}:{keys.port}/jwks.json"))
        assert info.value.reason == "address"
        assert f"{name} resolves to" in str(info.value)
    assert keys.requests == []
    # the same path through a name that resolves to loopback is fetched
    result = await fetcher.fetch(issuer(f"http://good.test:{keys.port}/jwks.json"))
    assert result.body is not None and len(keys.requests) == 1
    assert resolver.asked.count("good.test") == 1


async def test_fetch_refuses_a_discovered_metadata_jwks_uri(fake_issuer):
    """The discovery document is the upstream's answer: a jwks_uri on the metadata address
    is refused before any connection (check-config never saw it)."""
    base = ""

    async def idp(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"issuer": base, "jwks_uri": "http://169.254.169.254/latest/meta-data/"}
        )

    oidc = await fake_issuer(behaviour=idp)
    base = oidc.base
    fetcher = Fetcher()
    try:
        with pytest.raises(UpstreamError) as info:
            await fetcher.fetch(issuer(base, discovery=True))
    finally:
        await fetcher.close()
    assert info.value.reason == "address"
    assert "169.254.169.254" in str(info.value)
    assert len(oidc.requests) == 1  # the document only


async def test_real_resolution_of_localhost_is_allowed(fake_issuer):
    keys = await fake_issuer()
    fetcher = Fetcher()
    try:
        result = await fetcher.fetch(issuer(f"http://localhost:{keys.port}/jwks.json"))
    finally:
        await fetcher.close()
    assert result.body is not None
