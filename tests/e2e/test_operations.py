"""Operations around the scenarios: the mirror's own certificate rotating (Istio reissues
workload certificates daily), a configuration reload, and ``jwks-mirror status``."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .harness.mesh import MIRROR_NS, MIRROR_SA, Mesh
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOURLY = {"refresh_interval": "1h", "max_stale": "72h"}


def _cert_hash(pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _caller_cert_hash(xfcc: str) -> str:
    """The ``Hash=`` element of the x-forwarded-client-cert the issuer's sidecar set."""
    fields = dict(part.split("=", 1) for part in xfcc.split(";") if "=" in part)
    return fields.get("Hash", "")


def test_direct_mtls_uses_the_rotated_workload_certificate(mesh: Mesh) -> None:
    mirror, verifier = mesh.mirrored(["idp"], direct=("idp",), defaults=HOURLY)
    app = mesh.issuers["idp"].app
    identity = mesh.mirror_identity
    first = _caller_cert_hash(app.last_headers.get("x-forwarded-client-cert", ""))
    assert first == _cert_hash(identity.cert_file.read_bytes())

    # Same identity, new key pair, same file paths: what Istio's agent does on rotation.
    rotated = mesh.ca.issue(namespace=MIRROR_NS, service_account=MIRROR_SA)
    rotated.write(identity.cert_file.parent, identity.cert_file.stem)
    mirror.refresh("idp")
    second = _caller_cert_hash(app.last_headers.get("x-forwarded-client-cert", ""))
    assert second == _cert_hash(rotated.cert_pem) != first
    assert verifier.accepts("idp", app.token())


def test_reload_adds_and_removes_issuers(mesh: Mesh) -> None:
    mesh.add_issuer("alpha")
    beta = mesh.add_issuer("beta")
    mirror, verifier = mesh.mirrored(["alpha"], defaults=HOURLY)
    alpha_token = mesh.issuers["alpha"].app.token()
    assert verifier.accepts("alpha", alpha_token)
    assert mirror.jwks("beta").status == 404

    proxy_url = mirror.issuers[0]["proxy"]
    mirror.issuers = [*mirror.issuers, beta.proxied_entry(proxy_url)]
    mirror.reload()
    wait_until(lambda: mirror.jwks("beta").status == 200, timeout=10,
               what="the reloaded mirror to serve beta")
    beta_verifier = mesh.verifier_for(mirror, ["beta"], name="verifier-beta")
    assert beta_verifier.accepts("beta", beta.app.token())
    assert verifier.accepts("alpha", alpha_token), "alpha was disturbed by the reload"

    mirror.issuers = [beta.proxied_entry(proxy_url)]
    mirror.reload()
    wait_until(lambda: mirror.jwks("alpha").status == 404, timeout=10,
               what="the reloaded mirror to drop alpha")
    wait_until(lambda: verifier.status("alpha", alpha_token) == 401, timeout=5,
               what="alpha's tokens to stop verifying once alpha is removed")
    assert beta_verifier.accepts("beta", beta.app.token())


def test_status_command_reports_servable_issuers(mesh: Mesh) -> None:
    mirror, _ = mesh.mirrored(["idp"], defaults=HOURLY)
    done = mirror.cli("status", "--admin", mirror.admin_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "idp" in done.stdout
    done = mirror.cli("status", "--json", "--admin", mirror.admin_url)
    assert done.returncode == 0, done.stderr
    assert '"servable": true' in done.stdout
