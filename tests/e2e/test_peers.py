"""Scenario: replicas share their last good sets, so a fresh replica never answers 503 while
a peer has the keys.

Two replicas of ``jwks-mirror serve`` share an upstream behind its STRICT sidecar. Replica A
has the set; the issuer's pod goes away; replica B starts with no state and fills the set
from A's admin port. Its verifier (an Envoy with ``jwt_authn`` fed from B alone) accepts
tokens; past ``max_stale`` counted from A's last upstream success both fail closed together,
and once the issuer is back both recover by themselves. Then the hostile side: peers that
answer garbage, a private key, a set older than ``max_stale``, or hang; B publishes nothing
from them and says why.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from .harness import http
from .harness.mesh import IssuerWorkload, Mesh
from .harness.mirror import Mirror
from .harness.peer import HostilePeer, Poison, offer
from .harness.procs import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT_S = 5.0
MAX_STALE_S = 20.0
LIMITS = {"refresh_interval": "1s", "timeout": f"{TIMEOUT_S:g}s",
          "max_stale": f"{MAX_STALE_S:g}s", "retain_removed_keys": "1h"}


def _pod_gone(workload: IssuerWorkload) -> None:
    workload.app.go_away()
    workload.sidecar.proc.kill()


def _pod_back(workload: IssuerWorkload) -> None:
    workload.app.start()
    workload.sidecar.start()


def _event(mirror: Mirror, name: str, **fields: Any) -> dict[str, Any] | None:
    for event in mirror.log_events():
        if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
            return event
    return None


def _ts(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


def test_a_fresh_replica_serves_its_peers_set_and_fails_closed_with_it(mesh: Mesh) -> None:
    workload = mesh.add_issuer("idp")
    entry = workload.proxied_entry(mesh.mirror_sidecar().url)
    a = mesh.mirror([entry], defaults=LIMITS, name="mirror-a")
    b = mesh.mirror([entry], defaults=LIMITS, name="mirror-b",
                    peers={"urls": [a.admin_url]}, start=False)
    verifier = mesh.verifier_for(b, ["idp"], name="verifier-b")
    token = workload.app.token()
    published = a.jwks("idp")
    assert published.status == 200

    _pod_gone(workload)
    wait_until(lambda: a.status("idp")["consecutive_failures"] >= 1, timeout=15,
               what="replica A to see the issuer fail")
    a_success = a.status("idp")["last_success"]

    b.start(ready=False)
    b.wait_ready(timeout=30)
    # B is ready only once it has tried its peers: its set is there the moment it is ready.
    copied = b.jwks("idp")
    assert copied.status == 200, copied.text
    assert copied.body == published.body
    assert copied.headers["etag"] == published.headers["etag"]
    status = b.status("idp")
    assert status["stale"] is True and status["servable"] is True, status
    assert status["source"] == "peer" and status["filled_from_peer"] == a.admin_url, status
    assert status["last_success"] == a_success, "max_stale must count from A's success"
    assert b.metric("jwks_mirror_filled_from_peer", issuer="idp") == 1
    assert b.metric("jwks_mirror_peer_fills_total", issuer="idp", outcome="filled") == 1
    assert b.metric("jwks_mirror_stale", issuer="idp") == 1
    # Within one fetch timeout of listening, from B's own log: its first fetch failed and
    # the peer fill that followed adopted A's set.
    listening = _event(b, "listening")
    filled = _event(b, "peer_fill", outcome="filled")
    assert listening and filled, b.log_events()
    assert filled["peer"] == a.admin_url and filled["last_success"] == a_success
    assert _ts(filled) - _ts(listening) <= TIMEOUT_S, (listening, filled)

    wait_until(lambda: verifier.accepts("idp", token), timeout=10,
               what="B's verifier to accept a token with the copied keys")

    # Past max_stale counted from A's last success, both fail closed together: the same
    # deadline on the same clock, so once one answers 503 the other already does too.
    def one_closed() -> bool:
        return b.jwks("idp").status == 503 or a.jwks("idp").status == 503

    wait_until(one_closed, timeout=MAX_STALE_S + 15,
               what="a replica to fail closed past max_stale")
    assert b.jwks("idp").status == 503 and a.jwks("idp").status == 503
    assert a.status("idp")["expired"] is True and b.status("idp")["expired"] is True
    wait_until(lambda: verifier.status("idp", token) == 401, timeout=10,
               what="B's verifier to reject tokens once B fails closed")
    # An expired set is not offered to peers either; both replicas stay ready.
    refused = http.get(f"{a.admin_url}/peer/idp")
    assert refused.status == 503 and refused.json()["reason"] == "expired", refused
    assert a.readyz().status == 200 and b.readyz().status == 200

    _pod_back(workload)
    for replica in (a, b):
        wait_until(lambda r=replica: r.jwks("idp").status == 200, timeout=20,
                   what=f"{replica.name} to recover by itself")
    wait_until(lambda: b.status("idp")["source"] == "upstream", timeout=10,
               what="B to replace the copy with its own fetch")
    status = b.status("idp")
    assert status["filled_from_peer"] is None and status["stale"] is False, status
    assert b.jwks("idp").body == a.jwks("idp").body
    assert b.metric("jwks_mirror_filled_from_peer", issuer="idp") == 0
    wait_until(lambda: verifier.accepts("idp", token), timeout=10,
               what="B's verifier to accept tokens again")


def test_a_planted_key_stops_verifying_at_the_first_own_upstream_success(mesh: Mesh) -> None:
    """A pod that answers as a peer during an outage can get a key of its own published; that
    is the trust boundary (docs/peers.md). It must end with the outage: the replica's first
    own upstream success replaces the copy whole, and a token signed with the planted key is
    rejected from then on, although ``retain_removed_keys`` is an hour."""
    workload = mesh.add_issuer("idp")
    entry = workload.proxied_entry(mesh.mirror_sidecar().url)
    app = workload.app
    planted = app.extra_key
    peer = HostilePeer(Poison.PLANTED, lambda: offer(
        name="idp", upstream=entry["jwks_uri"], keys=[app.current.public, planted.public],
    )).start()
    mesh.on_close(peer.close)
    _pod_gone(workload)

    b = mesh.mirror([entry], defaults=LIMITS, name="mirror-b", start=False,
                    peers={"urls": [peer.url]})
    verifier = mesh.verifier_for(b, ["idp"], name="verifier-b")
    b.start(ready=False)
    b.wait_ready(timeout=30)
    forged = app.token(planted)
    assert b.status("idp")["source"] == "peer"
    wait_until(lambda: verifier.accepts("idp", forged), timeout=10,
               what="the copy (with the planted key) to reach the verifier")

    _pod_back(workload)
    wait_until(lambda: b.status("idp")["source"] == "upstream", timeout=20,
               what="B's own first upstream success")
    status = b.status("idp")
    assert status["kids"] == [app.current.kid] and status["retained_kids"] == [], status
    shared = http.get(f"{b.admin_url}/peer/idp").json()
    assert shared["retained"] == [] and planted.kid not in shared["jwks"], shared
    wait_until(lambda: verifier.status("idp", forged) == 401, timeout=15,
               what="the verifier to reject the planted key's token")
    assert verifier.accepts("idp", app.token())


HOSTILE = {
    Poison.GARBAGE: "invalid_json",
    Poison.PRIVATE_KEY: "private_key",
    Poison.TOO_OLD: "older_than_max_stale",
    Poison.HANG: "timeout",
}


def test_hostile_peers_give_nothing_and_the_replica_says_why(mesh: Mesh) -> None:
    workload = mesh.add_issuer("idp")
    entry = workload.proxied_entry(mesh.mirror_sidecar().url)
    app = workload.app

    def poisoned(poison: Poison) -> dict[str, Any]:
        if poison is Poison.PRIVATE_KEY:
            return offer(name="idp", upstream=entry["jwks_uri"], keys=[app.current.private])
        # A real, valid set of the issuer's, but its upstream success is long past max_stale.
        return offer(name="idp", upstream=entry["jwks_uri"], keys=[app.current.public],
                     last_success=1_700_000_000.0)

    peers: dict[Poison, HostilePeer] = {}
    for poison in HOSTILE:
        peers[poison] = HostilePeer(poison, lambda p=poison: poisoned(p)).start()
        mesh.on_close(peers[poison].close)
    _pod_gone(workload)

    b = mesh.mirror([entry], defaults=LIMITS, name="mirror-b", start=False,
                    peers={"urls": [p.url for p in peers.values()]})
    verifier = mesh.verifier_for(b, ["idp"], name="verifier-b")
    b.start(ready=False)
    b.wait_ready(timeout=30)

    resp = b.jwks("idp")
    assert resp.status == 503 and "retry-after" in resp.headers, resp
    assert verifier.status("idp", app.token()) == 401
    status = b.status("idp")
    assert status["servable"] is False and status["source"] is None, status
    report = status["peer_fill"]
    assert report["outcome"] == "rejected", report
    said = {r["peer"]: r["result"] for r in report["peers"]}
    assert said == {peers[p].url: reason for p, reason in HOSTILE.items()}, report
    assert all(r["error"] for r in report["peers"]), report
    for poison, reason in HOSTILE.items():
        assert peers[poison].requests and set(peers[poison].requests) == {"/peer/idp"}
        assert (b.metric("jwks_mirror_peer_errors_total", issuer="idp", reason=reason) or 0) >= 1
    logged = _event(b, "peer_fill", outcome="rejected")
    assert logged and logged["level"] == "warning", logged
    assert b.readyz().status == 200  # the replica is ready; only this issuer fails closed
