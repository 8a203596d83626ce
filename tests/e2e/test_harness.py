"""The harness itself: each issuer behaviour reaches the mirror's side of the mesh as intended.

Scenario tests lean on these behaviours; checking them through the real sidecars here means a
scenario failure points at the mirror, not at the test double.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from .harness.issuer import Mode
from .harness.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def _fetch(url: str, proxy: str) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=3)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, proxy=proxy) as resp,
    ):
        return resp.status, await resp.read()


@pytest.mark.parametrize(
    ("mode", "status"),
    [(Mode.UNAVAILABLE, 503), (Mode.RESET, 503), (Mode.GARBAGE, 200),
     (Mode.PRIVATE_KEY, 200), (Mode.SYMMETRIC_KEY, 200)],
)
async def test_issuer_modes_seen_through_the_mirror_sidecar(
    mesh: Mesh, mode: Mode, status: int
) -> None:
    idp = mesh.add_issuer("idp")
    sidecar = mesh.mirror_sidecar()
    url = f"http://{idp.host}/jwks.json"
    assert (await _fetch(url, sidecar.url))[0] == 200
    idp.app.set_mode(mode)
    got, body = await _fetch(url, sidecar.url)
    assert got == status, body
    if mode is Mode.PRIVATE_KEY:
        assert "d" in json.loads(body)["keys"][0]
    if mode is Mode.SYMMETRIC_KEY:
        assert any(k["kty"] == "oct" for k in json.loads(body)["keys"])
    if mode is Mode.GARBAGE:
        with pytest.raises(ValueError):
            json.loads(body)


async def test_issuer_hangs_then_goes_away_and_returns(mesh: Mesh) -> None:
    idp = mesh.add_issuer("idp")
    sidecar = mesh.mirror_sidecar()
    url = f"http://{idp.host}/jwks.json"
    idp.app.set_mode(Mode.HANG)
    with pytest.raises(TimeoutError):
        await _fetch(url, sidecar.url)
    idp.app.set_mode(Mode.SERVE)
    idp.app.go_away()
    assert (await _fetch(url, sidecar.url))[0] == 503
    idp.app.start()
    assert (await _fetch(url, sidecar.url))[0] == 200
