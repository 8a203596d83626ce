"""Scenario: istiod fetches over HTTPS from the mirror, trusting only a private CA.

Istio's ``jwksResolverExtraRootCA`` makes istiod trust a private CA for ``https`` jwksUris;
here the verifier Envoy's ``remote_jwks`` cluster (both replicas, health-checked on
``/readyz``) trusts only the mesh test CA and checks the Service's DNS name. The serving
certificate sits in a directory laid out as Kubernetes mounts a Secret, and is renewed in
place the way cert-manager does it (``..data`` swapped atomically) while tokens flow.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from http.client import HTTPException
from pathlib import Path

import pytest
from cryptography import x509

from jwks_mirror.demo.pki import MeshCA

from .harness import http
from .harness.mesh import Mesh
from .harness.procs import wait_until
from .harness.tokens import SigningKey, claims
from .test_replicas import HOURLY, Traffic, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICE_HOST = "jwks-mirror.jwks-mirror.svc.cluster.local"


def publish(volume: Path, mesh: Mesh, generation: int) -> int:
    """Issue a serving certificate into ``volume`` as the kubelet updates a Secret volume;
    return its serial number."""
    issued = mesh.ca.issue(namespace="jwks-mirror", service_account="jwks-mirror",
                           dns_names=(SERVICE_HOST,))
    target = volume / f"..gen{generation}"
    target.mkdir()
    (target / "tls.crt").write_bytes(issued.cert_pem)
    (target / "tls.key").write_bytes(issued.key_pem)
    (target / "tls.key").chmod(0o600)
    link = volume / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, volume / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")
    return int(x509.load_pem_x509_certificate(issued.cert_pem).serial_number)


def served_serial(port: int, ca_file: Path) -> int:
    """The serial of the certificate a new connection to ``port`` gets."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=SERVICE_HOST) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_verifier_fetches_over_https_trusting_only_the_private_ca(mesh: Mesh) -> None:
    volume = mesh.workdir / "serving-cert"
    volume.mkdir()
    first = publish(volume, mesh, 1)
    tls = {"cert_file": str(volume / "tls.crt"), "key_file": str(volume / "tls.key")}
    replicas = mesh.replicas(["idp"], defaults=HOURLY, public_tls=tls)
    service = f"https://{SERVICE_HOST}:8443"
    verifier = mesh.verifier_for_replicas(
        replicas, ["idp"], service=service, tls_ca=mesh.ca_file, tls_server_name=SERVICE_HOST,
        cache_duration="0.2s", new_connection_per_fetch=True)
    wait_healthy(verifier, "idp", 2)
    idp = mesh.issuers["idp"].app

    token = idp.token()
    assert verifier.accepts("idp", token)
    forged = SigningKey(kid=idp.current.kid).sign(claims(idp.issuer_url))
    resp = verifier.call("idp", forged)
    assert resp.status == 401 and "verification fail" in resp.text, resp.text
    for replica in replicas:
        assert served_serial(replica.public_port, mesh.ca_file) == first

    # Plain HTTP on the public port gets no key set: the port speaks TLS only.
    for replica in replicas:
        try:
            plain = http.get(f"http://127.0.0.1:{replica.public_port}/idp/jwks.json")
        except (OSError, HTTPException):
            continue
        assert plain.status != 200 and b"keys" not in plain.body, plain

    # A verifier that trusts another CA cannot fetch: the private CA is what makes it work.
    other_ca = mesh.workdir / "other-ca.crt"
    other_ca.write_bytes(MeshCA().cert_pem)
    stranger = mesh.verifier_for_replicas(
        replicas, ["idp"], service=service, tls_ca=other_ca, tls_server_name=SERVICE_HOST,
        name="verifier-other-ca")
    assert stranger.status("idp", token) == 401
    assert stranger.jwks_fetches().get("http.workload.jwt_authn.jwks_fetch_failed", 0) >= 1

    # cert-manager renews the certificate in place, under continuous token traffic.
    handshakes = "cluster.jwks-idp.ssl.handshake"
    fetched = "http.workload.jwt_authn.jwks_fetch_success"
    with Traffic(verifier, "idp", token) as traffic:
        wait_until(lambda: traffic.accepted >= 20, timeout=30, what="token traffic to flow")
        second = publish(volume, mesh, 2)
        for replica in replicas:
            wait_until(lambda r=replica: served_serial(r.public_port, mesh.ca_file) == second,
                       timeout=30, what=f"{replica.name} to serve the renewed certificate")
        # From here every fetch is a new handshake, so it can only use the new certificate.
        handshakes_after = verifier.proxy.stats(handshakes).get(handshakes, 0)
        fetches_after = verifier.jwks_fetches().get(fetched, 0)
        wait_until(lambda: verifier.jwks_fetches().get(fetched, 0) >= fetches_after + 20,
                   timeout=30, what="20 more JWKS fetches after the renewal")
    assert traffic.rejected == [], traffic.rejected[:5]
    assert verifier.proxy.stats(handshakes).get(handshakes, 0) >= handshakes_after + 20
    failed = verifier.jwks_fetches().get("http.workload.jwt_authn.jwks_fetch_failed", 0)
    assert failed == 0
    for replica in replicas:
        assert replica.metric("jwks_mirror_public_tls_reloads_total", outcome="success") == 1
    print("https rotation under traffic:", json.dumps({
        "tokens_sent": traffic.accepted + len(traffic.rejected),
        "valid_tokens_rejected": len(traffic.rejected), "jwks_fetch_failed": failed}))
