"""Scenario: two mirror replicas behind one Service, as istiod reaches them.

The verifier's JWKS cluster holds both replicas; Envoy health-checks each on ``/readyz`` (on
the admin port) and sends fetches only to ready ones, as a Service's endpoints follow the
readiness probe, with no panic routing (no ready replica: no fetch).

* a broken issuer leaves both replicas ready, and the other issuers' tokens keep verifying;
* restarting one replica under continuous token traffic (SIGTERM, ``shutdown_delay``, start
  again) rejects no valid token and fails no JWKS fetch;
* ``rotate --admin A --admin B`` (with ``--purge-retained``) acts on both replicas, so a
  purged key is gone whichever replica istiod reaches; a purge on one replica is not enough.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import pytest

from .harness.issuer import Mode
from .harness.mesh import Mesh, Verifier
from .harness.mirror import Mirror
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOURLY = {"refresh_interval": "1h", "max_stale": "72h", "retain_removed_keys": "1h"}


def healthy_replicas(verifier: Verifier, provider: str) -> int:
    return verifier.proxy.stats(f"cluster.jwks-{provider}.membership_healthy").get(
        f"cluster.jwks-{provider}.membership_healthy", -1)


def wait_healthy(verifier: Verifier, provider: str, count: int) -> None:
    wait_until(lambda: healthy_replicas(verifier, provider) == count, timeout=20,
               what=f"Envoy to see {count} ready replicas for {provider}",
               describe=lambda: str(verifier.proxy.stats(f"cluster.jwks-{provider}.")))


def test_a_broken_issuer_leaves_both_replicas_ready(mesh: Mesh) -> None:
    mesh.add_issuer("alpha")
    mesh.add_issuer("beta").app.set_mode(Mode.UNAVAILABLE)  # broken before the mirror starts
    replicas = mesh.replicas(["alpha", "beta"], defaults=HOURLY)
    verifier = mesh.verifier_for_replicas(replicas, ["alpha", "beta"], cache_duration="0.2s")

    for replica in replicas:
        ready = replica.readyz()
        assert ready.status == 200, ready.text
        assert ready.json()["not_servable"] == ["beta"]
        missing = replica.jwks("beta")
        assert missing.status == 503 and "retry-after" in missing.headers, missing
        assert replica.status("beta")["servable"] is False
        assert replica.metric("jwks_mirror_servable", issuer="beta") == 0
        assert replica.metric("jwks_mirror_servable", issuer="alpha") == 1
    wait_healthy(verifier, "alpha", 2)

    alpha = mesh.issuers["alpha"].app
    statuses: list[int] = []

    def both_replicas_fetched() -> bool:
        statuses.append(verifier.status("alpha", alpha.token(subject=f"user-{len(statuses)}")))
        return all(r.served("alpha") > 0 for r in replicas)

    wait_until(both_replicas_fetched, timeout=30, what="fetches to reach both replicas")
    assert set(statuses) == {200}, statuses
    # The broken issuer fails closed on its own path: its tokens are rejected.
    assert verifier.status("beta", mesh.issuers["beta"].app.token()) == 401


@dataclass
class Traffic:
    """Valid tokens sent through the verifier in a loop, until stopped."""

    verifier: Verifier
    provider: str
    token: str
    accepted: int = 0
    rejected: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            response = self.verifier.call(self.provider, self.token)
            if response.status == 200:
                self.accepted += 1
            else:
                self.rejected.append(f"{response.status} {response.text.strip()}")

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)


def test_restarting_a_replica_under_traffic_rejects_no_token(mesh: Mesh) -> None:
    replicas = mesh.replicas(["idp"], defaults=HOURLY, shutdown_delay="5s")
    # JWKS cached 0.2 s: Envoy keeps fetching from the replicas throughout the restart.
    verifier = mesh.verifier_for_replicas(replicas, ["idp"], cache_duration="0.2s")
    wait_healthy(verifier, "idp", 2)
    token = mesh.issuers["idp"].app.token()
    assert verifier.accepts("idp", token)
    fetches_before = verifier.jwks_fetches()
    cluster_before = verifier.proxy.stats("cluster.jwks-idp.")
    restarted: Mirror = replicas[0]

    with Traffic(verifier, "idp", token) as traffic:
        wait_until(lambda: traffic.accepted >= 50, timeout=30,
                   what="token traffic to flow before the restart")
        assert restarted.stop(grace=60) == 0  # SIGTERM; exits 0 after the delay and drain
        during_restart = traffic.accepted
        restarted.start()  # waits for /readyz 200
        wait_healthy(verifier, "idp", 2)
        wait_until(lambda: restarted.served("idp") >= 5, timeout=30,
                   what="the restarted replica to serve fetches again")
        wait_until(lambda: traffic.accepted >= during_restart + 50, timeout=30,
                   what="token traffic to continue after the restart")

    fetches = verifier.jwks_fetches()
    cluster = verifier.proxy.stats("cluster.jwks-idp.")

    def delta(stats: dict[str, int], before: dict[str, int], name: str) -> int:
        return stats.get(name, 0) - before.get(name, 0)

    prefix = "http.workload.jwt_authn."
    figures = {
        "tokens_sent": traffic.accepted + len(traffic.rejected),
        "valid_tokens_rejected": len(traffic.rejected),
        "jwks_fetch_success": delta(fetches, fetches_before, prefix + "jwks_fetch_success"),
        "jwks_fetch_failed": delta(fetches, fetches_before, prefix + "jwks_fetch_failed"),
        **{name: delta(cluster, cluster_before, f"cluster.jwks-idp.{name}") for name in (
            "upstream_rq_200", "upstream_rq_503", "upstream_cx_connect_fail",
            "upstream_rq_pending_failure_eject", "upstream_cx_destroy_remote_with_active_rq",
            "health_check.failure")},
    }
    print("restart under traffic:", json.dumps(figures))
    assert traffic.rejected == [], traffic.rejected[:5]
    assert figures["jwks_fetch_failed"] == 0, figures
    assert figures["jwks_fetch_success"] >= 20, figures
    assert figures["upstream_cx_connect_fail"] == 0, figures
    # Envoy did see the terminating replica go unready: the readiness probe took it out.
    assert figures["health_check.failure"] >= 1, figures


def test_rotate_and_purge_act_on_every_replica(mesh: Mesh) -> None:
    replicas = mesh.replicas(["idp"], defaults=HOURLY)
    first, second = replicas
    admins = ["--admin", first.admin_url, "--admin", second.admin_url]
    pooled = mesh.verifier_for_replicas(replicas, ["idp"])
    # One verifier per replica: "whichever replica istiod reaches", made deterministic.
    only = [mesh.verifier_for(r, ["idp"], name=f"verifier-{r.name}") for r in replicas]
    idp = mesh.issuers["idp"].app
    compromised = idp.token(subject="signed-with-the-compromised-key")
    assert all(v.accepts("idp", compromised) for v in [pooled, *only])

    old, new = idp.rotate()  # the key is removed upstream
    done = first.cli("rotate", "idp", *admins)
    assert done.returncode == 0, done.stdout + done.stderr
    for replica in replicas:
        assert replica.kids("idp") == sorted([old.kid, new.kid])
        assert replica.status("idp")["retained_kids"] == [old.kid]

    # The old way, one replica (kubectl exec reaches one pod): the other still serves it.
    first.refresh("idp", purge_retained=True)
    assert first.kids("idp") == [new.kid]
    assert second.kids("idp") == sorted([old.kid, new.kid])
    wait_until(lambda: only[0].status("idp", compromised) == 401, timeout=10,
               what="the purged replica's verifier to reject the key")
    assert only[1].accepts("idp", compromised), "the other replica should still serve the key"

    done = first.cli("rotate", "idp", *admins, "--purge-retained")
    assert done.returncode == 0, done.stdout + done.stderr
    assert first.admin_url in done.stdout and second.admin_url in done.stdout, done.stdout
    for replica in replicas:
        assert replica.kids("idp") == [new.kid]
    fresh = idp.token(subject="signed-with-the-new-key")
    for verifier in [pooled, *only]:
        wait_until(lambda v=verifier: v.status("idp", compromised) == 401, timeout=10,
                   what=f"{verifier.proxy.name} to reject the purged key's token")
        assert verifier.accepts("idp", fresh)
    # Fetch after fetch through the Service (either replica): none brings the key back.
    success = "http.workload.jwt_authn.jwks_fetch_success"
    before = pooled.jwks_fetches().get(success, 0)

    statuses: list[int] = []

    def refetched() -> bool:
        statuses.append(pooled.status("idp", compromised))
        return pooled.jwks_fetches().get(success, 0) >= before + 4

    wait_until(refetched, timeout=30, what="four more JWKS fetches through the Service")
    assert set(statuses) == {401}, statuses
