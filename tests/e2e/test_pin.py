"""Scenario: rotation with ``jwks-mirror rotate``/``pin``, seen by an istiod-like resolver.

istiod fetches each ``jwksUri``, caches the key set by the exact URI string and refetches it
only every 20 minutes; Envoy gets the keys inline in its config and never fetches on an
unknown ``kid``. So after a rotation, tokens signed with the new key are rejected ("Jwks
doesn't have key to match kid or alg from Jwt") until istiod's next refresh, even though the
mirror already serves the new key. A new ``?v=`` is a URI istiod has never seen: it fetches
it at the push that carries it.

The test models istiod with :class:`Istiod`, a tiny HTTP server in the test process between
the mirror and the verifier Envoy::

    manifest (jwksUri) --apply--> Istiod: cache {exact jwksUri -> key set}, refresh 20 min
                                     |  fetch from the mirror only for a URI not cached
                                     v
    token --> verifier Envoy (jwt_authn) --remote_jwks, cache 1 s--> Istiod: the set of the
                                                                       applied jwksUri

``apply()`` is ``kubectl apply`` plus istiod's push: it reads the manifest's ``jwksUri`` and,
for a URI not in the cache, fetches it from the mirror at once, as istiod does at config push.
Envoy's 1 s ``remote_jwks`` cache stands in for the xDS push delay. The mirror refreshes on its
own only hourly, so every change comes from the commands under test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from .harness import http
from .harness.envoy import Provider
from .harness.mesh import Mesh
from .harness.mirror import Mirror
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOURLY = {"refresh_interval": "1h", "max_stale": "72h", "retain_removed_keys": "1h"}
ISTIOD_REFRESH_S = 20 * 60  # PILOT_JWT_PUB_KEY_REFRESH_INTERVAL
NAME = "keys-idp"  # what `jwks-mirror rewrite` calls keys.idp.svc.cluster.local

MANIFEST = """\
# the workload's JWT policy, as it sits in a GitOps repository
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: api-jwt
  namespace: api
spec:
  jwtRules:
  - issuer: {issuer}
    jwksUri: http://keys.idp.svc.cluster.local/jwks.json  # the in-mesh key endpoint
"""


class Istiod:
    """istiod's JWKS resolver, reduced to what matters here: a cache keyed by the exact URI."""

    def __init__(self) -> None:
        self.cache: dict[str, tuple[float, bytes]] = {}
        self.fetches: list[str] = []  # every URI fetched from the mirror, in order
        self.pushes = 0  # key sets handed to the verifier
        self.applied: str | None = None
        self._lock = threading.Lock()
        istiod = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = istiod.push()
                self.send_response(200 if body else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _fetch(self, uri: str) -> bytes:
        response = http.get(uri)
        assert response.status == 200, f"istiod's fetch of {uri}: {response.status}"
        self.fetches.append(uri)
        self.cache[uri] = (time.monotonic(), response.body)
        return response.body

    def apply(self, manifest: Path) -> str:
        """``kubectl apply``: the push that carries the manifest's ``jwksUri``."""
        rule = YAML(typ="safe").load(manifest.read_text())["spec"]["jwtRules"][0]
        uri = str(rule["jwksUri"])
        with self._lock:
            if uri not in self.cache:
                self._fetch(uri)  # a URI istiod has not seen: fetched at once
            self.applied = uri
        return uri

    def push(self) -> bytes:
        with self._lock:
            if self.applied is None:
                return b""
            fetched_at, body = self.cache[self.applied]
            if time.monotonic() - fetched_at > ISTIOD_REFRESH_S:  # never within a test
                body = self._fetch(self.applied)
            self.pushes += 1
            return body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def istiod() -> Iterator[Istiod]:
    resolver = Istiod()
    try:
        yield resolver
    finally:
        resolver.close()


def _cli(mirror: Mirror, *args: str, expect: int = 0) -> str:
    done = mirror.cli(*args)
    assert done.returncode == expect, (
        f"jwks-mirror {' '.join(args)} exited {done.returncode}\n"
        f"stdout: {done.stdout}\nstderr: {done.stderr}"
    )
    return done.stdout


def test_pinned_rotation_reaches_the_verifier_without_waiting_for_istiod(
    mesh: Mesh, istiod: Istiod, tmp_path: Path
) -> None:
    workload = mesh.add_issuer("idp")
    idp = workload.app
    sidecar = mesh.mirror_sidecar()
    mirror = mesh.mirror([{**workload.proxied_entry(sidecar.url), "name": NAME}], defaults=HOURLY)
    verifier = mesh.verifier(
        [Provider("idp", idp.issuer_url, f"http://127.0.0.1:{istiod.port}/jwks", istiod.port)]
    )

    # Adoption: rewrite the manifest to the mirror, pin it, apply it.
    manifest = tmp_path / "api-jwt.yaml"
    manifest.write_text(MANIFEST.format(issuer=idp.issuer_url))
    _cli(mirror, "rewrite", str(manifest), "--mirror-url", mirror.public_url, "--in-place")
    # The mirror is not the Service deploy/ installs: pin and rotate are told where it is
    # (the rewrite annotation alone never makes a URI the mirror's).
    at = ("--mirror-url", mirror.public_url)
    _cli(mirror, "pin", str(manifest), "--admin", mirror.admin_url, *at, "--in-place")
    first = istiod.apply(manifest)
    assert first == mirror.jwks_url(NAME, f"v={mirror.status(NAME)['version']}")
    before_rotation = idp.token(subject="signed-before-rotation")
    wait_until(lambda: verifier.accepts("idp", before_rotation), timeout=10,
               what="the verifier to accept a token through istiod and the mirror")

    # The issuer rotates: the new key signs at once, the old one is no longer published.
    old, new = idp.rotate()
    after_rotation = idp.token(subject="signed-after-rotation")
    out = _cli(mirror, "rotate", NAME, str(manifest), "--admin", mirror.admin_url, *at)
    assert f"  added:     {new.kid}" in out.splitlines(), out
    assert f"  retained:  {old.kid}" in out.splitlines(), out
    assert f"  removed:   {old.kid}" in out.splitlines(), out
    assert mirror.kids(NAME) == sorted([old.kid, new.kid])

    # Control: the mirror has the new key, but while the applied URI is the cached one, istiod
    # keeps pushing the old set and the verifier rejects the new key's tokens, even after
    # refetching from istiod (more than its 1 s cache later).
    # The verifier refetches when a request finds its cache expired: call until one has.
    pushes = istiod.pushes

    def answer_after_a_refetch() -> http.Response | None:
        response = verifier.call("idp", after_rotation)
        return response if istiod.pushes > pushes else None

    rejected = wait_until(answer_after_a_refetch, timeout=10, interval=0.1,
                          what="the verifier to refetch its keys from istiod")
    assert rejected.status == 401, rejected.text
    assert "Jwks doesn't have key to match kid or alg from Jwt" in rejected.text
    assert istiod.fetches == [first]

    # Applying the pinned manifest: a URI istiod has not seen, fetched at once.
    pinned = istiod.apply(manifest)
    assert pinned != first
    assert istiod.fetches == [first, pinned]
    assert pinned == mirror.jwks_url(NAME, f"v={mirror.status(NAME)['version']}")
    wait_until(lambda: verifier.accepts("idp", after_rotation), timeout=5,
               what="the verifier to accept a token signed with the new key")
    assert verifier.accepts("idp", before_rotation), "the retained key's token was rejected"
    _cli(mirror, "pin", str(manifest), "--admin", mirror.admin_url, *at, "--check")

    # Emergency path: revoke the retained key at once, pin, apply.
    out = _cli(mirror, "rotate", NAME, str(manifest), "--admin", mirror.admin_url, *at,
               "--purge-retained")
    assert f"  purged:    {old.kid}" in out.splitlines(), out
    revoked = istiod.apply(manifest)
    assert istiod.fetches == [first, pinned, revoked]
    wait_until(lambda: verifier.status("idp", before_rotation) == 401, timeout=5,
               what="the verifier to reject the purged key's token")
    assert verifier.accepts("idp", after_rotation)
