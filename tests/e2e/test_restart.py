"""Scenario 5: the mirror restarts while the issuer is down.

With ``state_dir`` it serves the last good set at once; without it (the control) it has
nothing to serve and says so, which is what makes the first test meaningful.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .harness.mesh import IssuerWorkload, Mesh
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {"refresh_interval": "1s", "timeout": "1s", "max_stale": "1h"}


def _issuer_down(workload: IssuerWorkload) -> None:
    workload.app.go_away()
    workload.sidecar.proc.kill()


def test_restart_with_state_dir_serves_the_last_good_set_at_once(
    mesh: Mesh, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    mirror, verifier = mesh.mirrored(["idp"], defaults=FAST, state_dir=state_dir)
    workload = mesh.issuers["idp"]
    old_token = workload.app.token(subject="signed-before-rotation")
    # A rotation just before the outage: the last good set holds a retained key too.
    old, new = workload.app.rotate()
    mirror.refresh("idp")
    token = workload.app.token()
    wait_until(lambda: verifier.accepts("idp", token), timeout=5, what="the new key to verify")
    assert verifier.accepts("idp", old_token)
    assert mirror.kids("idp") == sorted([old.kid, new.kid])
    before = mirror.jwks("idp")
    wait_until(lambda: any(state_dir.iterdir()), timeout=5, what="the state to be persisted")

    _issuer_down(workload)
    assert mirror.stop() == 0, "SIGTERM should end serve with exit code 0"
    # The verifier depends on the mirror: with it gone, its next fetch fails.
    wait_until(lambda: verifier.status("idp", token) == 401, timeout=5,
               what="the verifier to notice the mirror is gone")

    started = time.monotonic()
    mirror.start(ready=False)
    mirror.wait_ready(timeout=3)
    ready_after = time.monotonic() - started
    after = mirror.jwks("idp")
    assert after.status == 200, after.text
    assert after.body == before.body
    assert after.headers["etag"] == before.headers["etag"]
    wait_until(lambda: verifier.accepts("idp", token), timeout=5,
               what="the verifier to accept tokens from the restored set")
    assert verifier.accepts("idp", old_token), "the retained key was lost in the restart"
    assert mirror.status("idp")["retained_kids"] == [old.kid]

    # The restored set is served although every fetch of this process fails.
    wait_until(lambda: mirror.status("idp")["consecutive_failures"] >= 2, timeout=10,
               what="the restarted mirror to try the (down) issuer")
    assert verifier.accepts("idp", token)
    assert mirror.readyz().status == 200
    assert mirror.metric("jwks_mirror_fetch_total", issuer="idp", outcome="changed") is None
    assert ready_after < 3


def test_restart_without_state_dir_has_nothing_to_serve(mesh: Mesh) -> None:
    mirror, verifier = mesh.mirrored(["idp"], defaults=FAST)
    workload = mesh.issuers["idp"]
    token = workload.app.token()
    assert verifier.accepts("idp", token)

    _issuer_down(workload)
    assert mirror.stop() == 0
    mirror.start(ready=False)
    wait_until(lambda: mirror.status("idp")["consecutive_failures"] >= 1, timeout=10,
               what="the restarted mirror to try the (down) issuer")
    # Readiness is the process's: the replica is ready, and the issuer fails closed alone.
    assert mirror.readyz().status == 200
    assert mirror.readyz().json()["not_servable"] == ["idp"]
    assert mirror.cli("status", "--admin", mirror.admin_url).returncode == 1
    resp = mirror.jwks("idp")
    assert resp.status == 503 and "retry-after" in resp.headers, resp
    wait_until(lambda: verifier.status("idp", token) == 401, timeout=5,
               what="the verifier to reject tokens: the mirror has no keys")
