"""Readiness is scoped to the process: one broken issuer never makes a replica unready.

Every replica shares the configuration, so an issuer that fails everywhere would otherwise
empty the Service and istiod would lose every issuer. /readyz waits only for each issuer's
first fetch attempt (or a restored set) and for draining; a broken issuer fails closed on
its own path.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from jwks_mirror.core.config.loader import load_settings
from jwks_mirror.serving.server import ConfigWatcher

from ..conftest import config_text, gated, jwks, until


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.read()


async def readyz(running) -> tuple[int, dict[str, object]]:
    status, _, body = await get(f"{running.admin_url}/readyz")
    return status, json.loads(body)


async def test_unready_until_every_first_attempt_completes(fake_issuer, mirror_factory):
    gate = asyncio.Event()
    slow = await fake_issuer()
    slow.behaviour = gated(gate)
    fast = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(
            f"  - name: fast\n    jwks_uri: {fast.url}\n  - name: slow\n    jwks_uri: {slow.url}\n"
        )
    )
    await running.mirror.refresh(["fast"])
    # The slow upstream holds its first request: that issuer has not settled yet.
    await until(lambda: slow.requests, what="the slow issuer's first fetch")
    status, body = await readyz(running)
    assert status == 503
    assert body["pending"] == ["slow"] and body["not_servable"] == ["slow"]
    assert body["ready"] is False and body["draining"] is False

    gate.set()
    await running.mirror.refresh(["slow"])
    status, body = await readyz(running)
    assert status == 200, body
    assert body == {"ready": True, "draining": False, "pending": [], "not_servable": []}


async def test_a_broken_issuer_keeps_the_replica_ready_and_fails_closed_alone(
    fake_issuer, mirror_factory, refused_url
):
    good = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(
            f"  - name: good\n    jwks_uri: {good.url}\n  - name: down\n    jwks_uri: {refused_url}\n"
        )
    )
    outcomes = {o.name: o.outcome for o in await running.mirror.refresh()}
    assert outcomes == {"good": "changed", "down": "failed"}

    status, body = await readyz(running)
    assert status == 200, body
    assert body["not_servable"] == ["down"] and body["pending"] == []

    status, headers, _ = await get(f"{running.public_url}/down/jwks.json")
    assert status == 503 and "Retry-After" in headers
    status, _, served = await get(f"{running.public_url}/good/jwks.json")
    assert status == 200 and [k["kid"] for k in json.loads(served)["keys"]] == ["k1"]

    _, _, metrics = await get(f"{running.admin_url}/metrics")
    text = metrics.decode()
    assert 'jwks_mirror_servable{issuer="down"} 0.0' in text
    # metrics.per_issuer: compact (the default): servable only while it is 0
    assert 'jwks_mirror_servable{issuer="good"}' not in text
    _, _, status_body = await get(f"{running.admin_url}/status")
    shown = {i["name"]: i for i in json.loads(status_body)["issuers"]}
    assert shown["down"]["servable"] is False and shown["down"]["last_error"]


async def test_a_restored_set_is_ready_before_any_fetch(fake_issuer, mirror_factory, tmp_path: Path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    issuer = await fake_issuer(document=jwks("k1"))
    config = config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n", extra=f"state_dir: {state_dir}\n")
    first = await mirror_factory(config)
    await first.mirror.refresh()
    await first.stop()

    gate = asyncio.Event()
    issuer.behaviour = gated(gate)  # the upstream now holds every fetch
    second = await mirror_factory(config)
    status, body = await readyz(second)
    assert status == 200, body
    assert body["pending"] == [] and body["not_servable"] == []
    gate.set()


async def test_draining_is_unready_whatever_the_issuers(fake_issuer, mirror_factory):
    issuer = await fake_issuer()
    running = await mirror_factory(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    await running.mirror.refresh()
    assert (await readyz(running))[0] == 200
    running.mirror.draining = True
    status, body = await readyz(running)
    assert status == 503 and body["draining"] is True and body["ready"] is False


async def test_an_issuer_added_by_reload_does_not_make_a_ready_replica_unready(
    fake_issuer, mirror_factory, tmp_path: Path
):
    one = await fake_issuer(document=jwks("k1"))
    gate = asyncio.Event()
    slow = await fake_issuer()
    slow.behaviour = gated(gate)
    path = tmp_path / "config.yaml"
    path.write_text(config_text(f"  - name: one\n    jwks_uri: {one.url}\n"))
    running = await mirror_factory(load_settings(path))
    await running.mirror.refresh()
    assert (await readyz(running))[0] == 200

    path.write_text(
        config_text(f"  - name: one\n    jwks_uri: {one.url}\n  - name: slow\n    jwks_uri: {slow.url}\n")
    )
    await ConfigWatcher(running.mirror, str(path)).reload()
    status, body = await readyz(running)
    assert status == 200, body
    assert body["pending"] == ["slow"] and body["not_servable"] == ["slow"]
    gate.set()
