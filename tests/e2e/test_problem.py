"""The problem is real, and the data path the mirror relies on works.

istiod fetches ``jwksUri`` itself, with no sidecar and no workload certificate. A verifier
whose keys come straight from the issuer's STRICT port therefore gets no keys and rejects
every token, valid or not. The mirror's sidecar, presenting the mirror's identity, does get
through; a different identity does not.
"""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from .harness.envoy import Provider
from .harness.mesh import Mesh

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_verifier_pointed_at_the_strict_issuer_rejects_every_token(mesh: Mesh) -> None:
    idp = mesh.add_issuer("idp")
    verifier = mesh.verifier([
        # What istiod does with http://keys.idp.svc.cluster.local/jwks.json: plain text.
        Provider("plain", idp.app.issuer_url, f"http://{idp.host}/jwks.json", idp.strict_port),
        # And with https://...: TLS, trusting the mesh CA even, but no client certificate.
        Provider("https", idp.app.issuer_url, f"https://{idp.host}/jwks.json", idp.strict_port,
                 tls_ca=mesh.ca_file),
    ])
    valid = idp.app.token()
    for provider in ("plain", "https"):
        for token in (valid, idp.app.token(subject="bob"), None):
            resp = verifier.call(provider, token)
            assert resp.status == 401, (provider, resp.status, resp.text)
        resp = verifier.call(provider, valid)
        assert "Jwks remote fetch is failed" in resp.text, resp.text
    assert idp.app.requests == 0, "the STRICT sidecar let a request without identity through"
    fetches = verifier.jwks_fetches()
    assert fetches.get("http.workload.jwt_authn.jwks_fetch_failed", 0) >= 2, fetches
    assert fetches.get("http.workload.jwt_authn.jwks_fetch_success", 0) == 0, fetches


async def test_a_plain_client_without_identity_cannot_read_the_strict_port(mesh: Mesh) -> None:
    idp = mesh.add_issuer("idp")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{idp.strict_port}/jwks.json") as resp:
                await resp.read()
    assert idp.app.requests == 0


async def test_mirror_sidecar_originates_mtls_with_the_mirror_identity(mesh: Mesh) -> None:
    idp = mesh.add_issuer("idp")
    sidecar = mesh.mirror_sidecar()
    # What the mirror does with ``proxy:``: an absolute-form request to its sidecar.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{idp.host}/jwks.json", proxy=sidecar.url) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert await resp.json() == idp.app.jwks()
    xfcc = idp.app.last_headers.get("x-forwarded-client-cert", "")
    assert f"URI={mesh.mirror_identity.spiffe_id}" in xfcc, xfcc


async def test_direct_mtls_with_the_mirror_certificate_works(mesh: Mesh) -> None:
    idp = mesh.add_issuer("idp")
    context = ssl.create_default_context(cafile=str(mesh.ca_file))
    context.load_cert_chain(mesh.mirror_identity.cert_file, mesh.mirror_identity.key_file)
    async with aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{idp.strict_port}/jwks.json"
        async with session.get(url, ssl=context, server_hostname=idp.host) as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.json() == idp.app.jwks()


async def test_strict_issuer_refuses_another_mesh_identity(mesh: Mesh) -> None:
    idp = mesh.add_issuer("idp")
    intruder = mesh.identity("jwks-mirror", "someone-else")
    sidecar = mesh.mirror_sidecar(identity=intruder, name="intruder-sidecar")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{idp.host}/jwks.json", proxy=sidecar.url) as resp:
            assert resp.status == 503, await resp.text()
        context = ssl.create_default_context(cafile=str(mesh.ca_file))
        context.load_cert_chain(intruder.cert_file, intruder.key_file)
        url = f"https://127.0.0.1:{idp.strict_port}/jwks.json"
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url, ssl=context, server_hostname=idp.host) as resp:
                await resp.read()
    assert idp.app.requests == 0
