"""Scenario 6: both upstream modes and several issuers in one mirror.

``alpha`` and ``gamma`` are fetched through the mirror's sidecar, ``beta`` over direct mTLS
with the mirror's certificate. Keys never cross issuers, and one issuer's trouble does not
hold up the others.
"""

from __future__ import annotations

import time

import pytest

from .harness import http
from .harness.issuer import Mode
from .harness.mesh import Mesh
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {"refresh_interval": "1s", "timeout": "2s", "max_stale": "1h"}
NAMES = ["alpha", "beta", "gamma"]


def test_several_issuers_through_the_sidecar_and_direct_mtls(mesh: Mesh) -> None:
    # beta's own timeout is long, so "not held up by beta" is measurable against it.
    mirror, verifier = mesh.mirrored(NAMES, direct=("beta",), defaults=FAST,
                                     limits={"beta": {"timeout": "3s"}})
    apps = {n: mesh.issuers[n].app for n in NAMES}
    tokens = {n: apps[n].token() for n in NAMES}

    assert mirror.status("beta")["upstream"].startswith("https://127.0.0.1:")
    assert mirror.status("alpha")["upstream"] == "http://keys.alpha.svc.cluster.local/jwks.json"
    for name in NAMES:
        assert mirror.kids(name) == [apps[name].current.kid]
        assert verifier.accepts(name, tokens[name]), name
        # Whichever the mode, the issuer saw the mirror's mesh identity.
        xfcc = apps[name].last_headers.get("x-forwarded-client-cert", "")
        assert f"URI={mesh.mirror_identity.spiffe_id}" in xfcc, (name, xfcc)
    # alpha's token, re-labelled as beta's: beta's keys must not verify it.
    assert verifier.status("beta", apps["alpha"].current.sign(
        {"iss": apps["beta"].issuer_url, "exp": int(time.time()) + 600})) == 401
    assert verifier.status("alpha", tokens["beta"]) == 401

    # beta hangs: alpha and gamma refresh promptly regardless; "refresh all" reports beta.
    apps["beta"].set_mode(Mode.HANG)
    hung = apps["beta"].requests
    wait_until(lambda: apps["beta"].requests > hung, timeout=5,
               what="beta's scheduled fetch to arrive (and hang)")
    started = time.monotonic()
    for name in ("alpha", "gamma"):
        resp = http.request("POST", f"{mirror.admin_url}/refresh/{name}", timeout=10)
        assert resp.status == 200, resp.text
    # beta's fetch is still hanging (3 s timeout): the others did not wait for it.
    assert time.monotonic() - started < 2, "a hanging issuer held up the others"
    mirror.refresh("alpha", "gamma")
    done = mirror.refresh(expect=1)
    assert "beta: failed" in done.stdout and "alpha: unchanged" in done.stdout, done.stdout
    for name in NAMES:
        assert verifier.accepts(name, tokens[name]), name

    # gamma rotates while beta is still down: only gamma changes.
    _, new = apps["gamma"].rotate()
    mirror.refresh("gamma")
    wait_until(lambda: verifier.accepts("gamma", apps["gamma"].token()), timeout=5,
               what="gamma's new key to verify")
    assert new.kid in mirror.kids("gamma")
    assert mirror.kids("alpha") == [apps["alpha"].current.kid]
    assert verifier.accepts("beta", tokens["beta"])
    apps["beta"].set_mode(Mode.SERVE)


def test_direct_mtls_with_another_identity_is_refused(mesh: Mesh) -> None:
    idp = mesh.add_issuer("idp")
    intruder = mesh.identity("jwks-mirror", "someone-else")
    mirror = mesh.mirror([idp.direct_entry(intruder, mesh.ca_file)], defaults=FAST, start=False)
    mirror.start(ready=False)
    wait_until(lambda: mirror.status("idp")["consecutive_failures"] >= 1, timeout=10,
               what="the mirror's fetch as the wrong identity to fail")
    assert mirror.readyz().status == 200  # ready: the issuer fails closed on its own path
    assert mirror.jwks("idp").status == 503
    assert idp.app.requests == 0
