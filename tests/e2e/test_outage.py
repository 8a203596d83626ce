"""Scenario 3: the issuer fails in every way a network service does; tokens keep verifying.

The verifier's JWKS cache lasts 1 s and it fetches on demand, so during the outage it keeps
going back to the mirror: the test counts those fetches (the mirror's request counter and
Envoy's own) to prove the mirror really served the whole time, not a cache in front of it.
The mirror refreshes every second here and recovers with no operator action.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from .harness.issuer import Mode
from .harness.mesh import IssuerWorkload, Mesh, Verifier
from .harness.mirror import Mirror
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {"refresh_interval": "1s", "timeout": "1s", "max_stale": "1h",
        "retain_removed_keys": "1h"}
WINDOW_S = 3.0
FETCH_OK = "http.workload.jwt_authn.jwks_fetch_success"


Step = Callable[[IssuerWorkload], None]


def _switch(mode: Mode) -> tuple[Step, Step]:
    return (lambda w: w.app.set_mode(mode)), (lambda w: w.app.set_mode(Mode.SERVE))


def _app_gone(w: IssuerWorkload) -> None:
    w.app.go_away()


def _app_back(w: IssuerWorkload) -> None:
    w.app.start()


def _pod_gone(w: IssuerWorkload) -> None:
    w.app.go_away()
    w.sidecar.proc.kill()


def _pod_back(w: IssuerWorkload) -> None:
    w.app.start()
    w.sidecar.start()


OUTAGES = {
    "503": _switch(Mode.UNAVAILABLE),
    "hang": _switch(Mode.HANG),
    "reset": _switch(Mode.RESET),
    "app-gone": (_app_gone, _app_back),
    "pod-gone": (_pod_gone, _pod_back),
}


def verify_throughout(mirror: Mirror, verifier: Verifier, token: str, *,
                      until: Callable[[], bool], at_least_s: float, timeout: float,
                      what: str) -> None:
    """Call the verifier every 100 ms, each call must be accepted, until ``until()`` holds
    and at least ``at_least_s`` have passed. The verifier must have re-fetched its keys from
    the mirror meanwhile (one fetch per second of its 1 s cache)."""
    served = mirror.served("idp")
    fetched = verifier.jwks_fetches().get(FETCH_OK, 0)
    started = time.monotonic()
    while True:
        resp = verifier.call("idp", token)
        assert resp.status == 200, f"rejected while {what}: {resp.status} {resp.text}"
        elapsed = time.monotonic() - started
        if elapsed >= at_least_s and until():
            break
        assert elapsed < timeout, f"timed out after {timeout}s {what}: {mirror.status('idp')}"
        time.sleep(0.1)
    expected = int(at_least_s) - 1
    assert mirror.served("idp") >= served + expected, (served, mirror.served("idp"))
    assert verifier.jwks_fetches().get(FETCH_OK, 0) >= fetched + expected


CASES = [pytest.param(o, "sidecar", id=f"{o}-via-sidecar") for o in OUTAGES] + [
    pytest.param(o, "direct", id=f"{o}-direct-mtls") for o in ("hang", "reset", "pod-gone")
]


@pytest.mark.parametrize(("outage", "upstream"), CASES)
def test_tokens_keep_verifying_through_an_outage_and_the_mirror_recovers(
    mesh: Mesh, outage: str, upstream: str
) -> None:
    direct = ("idp",) if upstream == "direct" else ()
    mirror, verifier = mesh.mirrored(["idp"], direct=direct, defaults=FAST)
    workload = mesh.issuers["idp"]
    token = workload.app.token()
    assert verifier.accepts("idp", token)
    published = mirror.jwks("idp").body
    fail, restore = OUTAGES[outage]

    fail(workload)
    verify_throughout(
        mirror, verifier, token, at_least_s=WINDOW_S, timeout=15,
        until=lambda: mirror.status("idp")["consecutive_failures"] >= 2,
        what=f"the issuer is down ({outage})",
    )
    status = mirror.status("idp")
    assert status["consecutive_failures"] >= 2 and status["last_error"], status
    assert status["servable"] is True, status
    assert (mirror.metric("jwks_mirror_consecutive_failures", issuer="idp") or 0) >= 2
    assert (mirror.metric("jwks_mirror_fetch_total", issuer="idp", outcome="failed") or 0) >= 2
    assert mirror.jwks("idp").body == published
    assert mirror.readyz().status == 200

    restored_at = time.time()
    restore(workload)
    verify_throughout(
        mirror, verifier, token, at_least_s=0, timeout=10,
        until=lambda: (s := mirror.status("idp"))["consecutive_failures"] == 0
        and s["last_success"] >= restored_at,
        what="waiting for the mirror to recover by itself",
    )
    assert mirror.jwks("idp").body == published


def test_fails_closed_once_max_stale_passes_and_reopens_by_itself(mesh: Mesh) -> None:
    """The other side of serving the last good copy: not forever. Past ``max_stale`` the
    mirror answers 503, the verifier's next fetch fails and it rejects tokens."""
    mirror, verifier = mesh.mirrored(
        ["idp"], defaults={"refresh_interval": "1s", "timeout": "1s", "max_stale": "3s"})
    workload = mesh.issuers["idp"]
    token = workload.app.token()
    assert verifier.accepts("idp", token)

    _pod_gone(workload)
    wait_until(lambda: mirror.jwks("idp").status == 503, timeout=10,
               what="the mirror to stop serving a set older than max_stale")
    assert mirror.readyz().status == 200  # one broken issuer never makes a replica unready
    assert mirror.status("idp")["servable"] is False
    assert mirror.metric("jwks_mirror_servable", issuer="idp") == 0
    assert mirror.metric("jwks_mirror_stale", issuer="idp") == 1
    wait_until(lambda: verifier.status("idp", token) == 401, timeout=5,
               what="the verifier to reject tokens once the mirror fails closed")

    _pod_back(workload)
    wait_until(lambda: verifier.accepts("idp", token), timeout=10,
               what="tokens to verify again once the issuer is back")
    assert mirror.readyz().status == 200
    assert mirror.metric("jwks_mirror_stale", issuer="idp") == 0


@pytest.mark.parametrize("outage", ["503", "pod-gone"])
def test_outage_is_reported_as_stale(mesh: Mesh, outage: str) -> None:
    """During an outage /status and the metrics show the issuer stale while the last good
    set is still served; once the issuer is back, stale clears by itself."""
    mirror, verifier = mesh.mirrored(["idp"], defaults=FAST)
    workload = mesh.issuers["idp"]
    token = workload.app.token()
    assert mirror.status("idp")["stale"] is False
    assert mirror.metric("jwks_mirror_stale", issuer="idp") == 0
    fail, restore = OUTAGES[outage]

    fail(workload)
    wait_until(lambda: mirror.status("idp")["consecutive_failures"] >= 2, timeout=10,
               what="the mirror to see the issuer fail")
    assert verifier.accepts("idp", token)
    status = mirror.status("idp")
    assert status["stale"] is True, f"/status does not report the failing issuer stale: {status}"
    assert mirror.metric("jwks_mirror_stale", issuer="idp") == 1

    restore(workload)
    wait_until(lambda: mirror.status("idp")["stale"] is False, timeout=10,
               what="stale to clear after recovery")
    assert mirror.metric("jwks_mirror_stale", issuer="idp") == 0
