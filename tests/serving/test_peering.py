"""Peer fill: a replica with no set copies a peer's last good set while the upstream is down.

Replicas are real mirrors on 127.0.0.1:0; hostile peers are real aiohttp servers answering
``/peer/{name}`` with whatever a test makes them say. Only DNS is injected (a headless
Service's records cannot be real here).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from jwks_mirror.cli.admin_client import format_status
from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.errors import ConfigError, PeerError
from jwks_mirror.serving.offers import parse_offer, share
from jwks_mirror.serving.peerfinder import PeerFinder
from jwks_mirror.serving.state import IssuerState

from ..conftest import Clock, answer, config_text, hang, jwks, signing_key, until

DEADLINE_S = 30.0


# -- helpers ----------------------------------------------------------------------------------


def config(upstream: str, *, peers: str = "", extra: str = "", **limits: str) -> str:
    """One issuer, ``idp``, on ``upstream``; ``limits`` override it (``timeout="30s"``)."""
    peers_line = f"peers: {peers}\n" if peers else ""
    overrides = "".join(f"    {key}: {value}\n" for key, value in limits.items())
    return config_text(
        f"  - name: idp\n    jwks_uri: {upstream}\n{overrides}", extra=peers_line + extra
    )


async def get(url: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.copy(), await response.read()


async def status_of(running) -> dict[str, Any]:
    code, _, body = await get(f"{running.admin_url}/status")
    assert code == 200
    (issuer,) = json.loads(body)["issuers"]
    return dict(issuer)


async def metric(running, sample: str, **labels: str) -> float | None:
    _, _, body = await get(f"{running.admin_url}/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def ready(running) -> bool:
    code, _, _ = await get(f"{running.admin_url}/readyz")
    return code == 200


def free_ports(count: int) -> list[int]:
    """Ports free a moment ago (held together, so they differ): replicas that name each
    other need their admin ports before either starts."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def offer(upstream: str, **overrides: Any) -> dict[str, Any]:
    """A well-formed /peer/idp answer, which a test then spoils in one way."""
    document: dict[str, Any] = {
        "name": "idp",
        "upstream": upstream,
        "source": "upstream",
        "last_success": time.time() - 5,
        "jwks": json.dumps(jwks("k1")),
        "retained": [],
    }
    document.update(overrides)
    return document


def serve_json(document: Any, status: int = 200) -> Callable[[web.Request], Awaitable[Any]]:
    async def behave(request: web.Request) -> web.StreamResponse:
        return web.json_response(document, status=status)

    return behave


# -- the whole path: one replica has the set, a fresh one copies it ----------------------------


async def test_a_fresh_replica_serves_its_peers_set_while_the_upstream_is_down(
    fake_issuer, mirror_factory, tmp_path
):
    upstream = await fake_issuer(document=jwks("k1", "k2"))
    first = await mirror_factory(config(upstream.url))
    await first.mirror.refresh(["idp"])
    upstream.document = jwks("k2")  # a rotation: k1 is retained on the first replica
    await first.mirror.refresh(["idp"])
    upstream.behaviour = answer(503, b"down")
    (failed,) = await first.mirror.refresh(["idp"])
    assert failed.outcome == "failed"
    code, headers, body = await get(f"{first.public_url}/idp/jwks.json")
    assert code == 200
    first_status = await status_of(first)
    assert first_status["retained_kids"] == ["k1"] and first_status["source"] == "upstream"

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    second = await mirror_factory(
        config(
            upstream.url,
            peers=f"{{urls: [{first.admin_url}]}}",
            extra=f"state_dir: {state_dir}\n",
        )
    )
    await until(lambda: ready(second), what="the fresh replica to become ready")

    code2, headers2, body2 = await get(f"{second.public_url}/idp/jwks.json")
    assert code2 == 200, body2
    assert body2 == body and headers2["ETag"] == headers["ETag"]
    status = await status_of(second)
    assert status["source"] == "peer"
    assert status["filled_from_peer"] == first.admin_url
    assert status["stale"] is True and status["servable"] is True
    assert status["consecutive_failures"] >= 1
    # max_stale counts from the first replica's upstream success, not from the copy.
    assert status["last_success"] == first_status["last_success"]
    assert status["retained_kids"] == ["k1"] and status["upstream_kids"] == ["k2"]
    assert status["peer_fill"]["outcome"] == "filled"
    assert status["peer_fill"]["peers"] == [
        {"peer": first.admin_url, "result": "offered", "error": None}
    ]
    assert await metric(second, "jwks_mirror_filled_from_peer", issuer="idp") == 1
    # metrics.per_issuer: compact (the default): the gauge is absent while 0
    assert await metric(first, "jwks_mirror_filled_from_peer", issuer="idp") is None
    assert await metric(second, "jwks_mirror_peer_fills_total", issuer="idp", outcome="filled") == 1
    assert await metric(second, "jwks_mirror_stale", issuer="idp") == 1
    # A copy is never shared on, and never written to state_dir (a restart asks again).
    assert "stale (peer copy)" in format_status(
        json.loads((await get(f"{second.admin_url}/status"))[2])
    )
    code3, _, refused = await get(f"{second.admin_url}/peer/idp")
    assert code3 == 503 and json.loads(refused)["reason"] == "filled_from_peer"
    await second.mirror.refresh(["idp"])
    assert list(state_dir.iterdir()) == []

    # The upstream returns: the copy is replaced by the replica's own fetch.
    upstream.behaviour = None
    (outcome,) = await second.mirror.refresh(["idp"])
    assert outcome.outcome in ("changed", "unchanged")
    status = await status_of(second)
    assert status["source"] == "upstream" and status["filled_from_peer"] is None
    assert status["stale"] is False
    assert status["last_success"] > first_status["last_success"]
    assert await metric(second, "jwks_mirror_filled_from_peer", issuer="idp") is None
    await until(
        lambda: asyncio.to_thread(lambda: any(state_dir.iterdir())),
        what="the replica's own set to be persisted",
    )


async def test_peer_copies_fail_closed_at_the_peers_deadline(fake_issuer, mirror_factory):
    clock = Clock()
    upstream = await fake_issuer(document=jwks("k1"))
    first = await mirror_factory(config(upstream.url, max_stale="1h"), clock=clock)
    await first.mirror.refresh(["idp"])
    succeeded_at = clock.now
    upstream.behaviour = answer(503)
    clock.advance(1800)
    await first.mirror.refresh(["idp"])

    second = await mirror_factory(
        config(upstream.url, peers=f"{{urls: [{first.admin_url}]}}", max_stale="1h"),
        clock=clock,
    )
    # The settable clock does not move by itself, so the first fetch is triggered here.
    (outcome,) = await second.mirror.refresh(["idp"])
    assert outcome.outcome == "failed"
    assert second.mirror.issuers["idp"].state.last_success == succeeded_at
    assert second.mirror.issuers["idp"].state.source == "peer"

    clock.advance(1800 - 1)  # one second before max_stale from the first replica's success
    for replica in (first, second):
        code, _, _ = await get(f"{replica.public_url}/idp/jwks.json")
        assert code == 200
    clock.advance(2)
    for replica in (first, second):
        code, _, _ = await get(f"{replica.public_url}/idp/jwks.json")
        assert code == 503
        assert (await status_of(replica))["expired"] is True
    # An expired set is not offered either.
    code, _, body = await get(f"{first.admin_url}/peer/idp")
    assert code == 503 and json.loads(body)["reason"] == "expired"


# -- when peers are asked, and when not --------------------------------------------------------


async def test_no_peer_traffic_while_the_replica_has_its_own_servable_set(
    fake_issuer, mirror_factory
):
    upstream = await fake_issuer(document=jwks("k1"))
    peer = await fake_issuer(behaviour=serve_json(offer(upstream.url)))
    running = await mirror_factory(config(upstream.url, peers=f"{{urls: [{peer.base}]}}"))
    await running.mirror.refresh(["idp"])
    upstream.behaviour = answer(503)  # failing, but the last good set is still servable
    for _ in range(3):
        (outcome,) = await running.mirror.refresh(["idp"])
        assert outcome.outcome == "failed"
    assert peer.requests == []
    assert (await status_of(running))["peer_fill"] is None

    # The control: a replica with no set of its own asks the same peer at once.
    other = await mirror_factory(config(upstream.url, peers=f"{{urls: [{peer.base}]}}"))
    await until(lambda: ready(other), what="the empty replica to become ready")
    assert [r.path for r in peer.requests] == ["/peer/idp"]
    assert (await status_of(other))["source"] == "peer"


async def test_readiness_waits_for_the_peer_fill(fake_issuer, mirror_factory, refused_url):
    gate = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await gate.wait()
        return web.json_response(offer(refused_url))

    peer = await fake_issuer(behaviour=slow)
    running = await mirror_factory(
        config(refused_url, peers=f"{{urls: [{peer.base}]}}", timeout="30s")
    )
    await until(lambda: asyncio.sleep(0, bool(peer.requests)), what="the peer to be asked")
    code, _, body = await get(f"{running.admin_url}/readyz")
    assert code == 503 and json.loads(body)["pending"] == ["idp"]
    assert running.mirror.issuers["idp"].health.consecutive_failures == 1  # the fetch is over

    gate.set()
    await until(lambda: ready(running), what="readiness after the peer answered")
    code, _, _ = await get(f"{running.public_url}/idp/jwks.json")
    assert code == 200


async def test_two_empty_replicas_do_not_wait_on_each_other(mirror_factory, refused_url):
    ports = free_ports(2)
    timeout_s = 30.0

    def replica(own: int, other: int) -> str:
        return config(
            refused_url,
            peers=f"{{urls: ['http://127.0.0.1:{other}']}}",
            timeout=f"{timeout_s:g}s",
        ).replace("admin: {host: 127.0.0.1, port: 0}", f"admin: {{host: 127.0.0.1, port: {own}}}")

    first = await mirror_factory(replica(ports[0], ports[1]))
    second = await mirror_factory(replica(ports[1], ports[0]))
    for running in (first, second):
        await until(lambda r=running: ready(r), what="both empty replicas to become ready")
        code, _, _ = await get(f"{running.public_url}/idp/jwks.json")
        assert code == 503
    report = (await status_of(second))["peer_fill"]
    assert report["outcome"] == "no_set", report  # the first one answered at once: nothing
    assert report["duration_s"] < timeout_s
    first_report = (await status_of(first))["peer_fill"]
    assert first_report["outcome"] in ("no_set", "unreachable"), first_report
    assert first_report["duration_s"] < timeout_s
    assert await metric(second, "jwks_mirror_peer_errors_total", issuer="idp") is None


# -- hostile or broken peers -------------------------------------------------------------------


def _private(upstream: str) -> dict[str, Any]:
    key = json.loads(signing_key("k1").export_private())
    return offer(upstream, jwks=json.dumps({"keys": [key]}))


def _private_retained(upstream: str) -> dict[str, Any]:
    key = json.loads(signing_key("k0").export_private())
    return offer(upstream, retained=[{"jwk": key, "removed_at": time.time() - 10}])


HOSTILE: dict[str, tuple[Callable[[str], Any], str]] = {
    "garbage": (lambda u: answer(200, b"<html>oops</html>"), "invalid_json"),
    "private-key": (lambda u: serve_json(_private(u)), "private_key"),
    "private-retained-key": (lambda u: serve_json(_private_retained(u)), "private_key"),
    "symmetric-key": (
        lambda u: serve_json(
            offer(u, jwks=json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
        ),
        "symmetric_key",
    ),
    "older-than-max-stale": (
        lambda u: serve_json(offer(u, last_success=time.time() - 7200)),
        "older_than_max_stale",
    ),
    "other-upstream": (
        lambda u: serve_json(offer("http://elsewhere.example/jwks.json")),
        "upstream_mismatch",
    ),
    "re-shared-copy": (lambda u: serve_json(offer(u, source="peer")), "malformed"),
    # JSON arrays and objects are unhashable: a set membership test on them raised TypeError
    "source-not-a-string": (lambda u: serve_json(offer(u, source=["upstream"])), "malformed"),
    "refusal-reason-not-a-string": (
        lambda u: serve_json({"reason": ["no_set"]}, status=503), "status"
    ),
    "no-last-success": (lambda u: serve_json(offer(u, last_success=None)), "malformed"),
    "too-large": (lambda u: answer(200, b" " * 700_000), "too_large"),
    "server-error": (lambda u: answer(500, b"boom"), "status"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_peer_is_counted_and_nothing_is_published(
    case, fake_issuer, mirror_factory, refused_url
):
    make, reason = HOSTILE[case]
    peer = await fake_issuer(behaviour=make(refused_url))
    running = await mirror_factory(
        config(refused_url, peers=f"{{urls: [{peer.base}]}}", max_stale="1h")
    )
    await until(lambda: ready(running), what="readiness after the peer fill")
    assert peer.requests, "the peer was never asked"
    code, _, _ = await get(f"{running.public_url}/idp/jwks.json")
    assert code == 503
    status = await status_of(running)
    assert status["servable"] is False and status["source"] is None
    assert status["peer_fill"]["outcome"] == "rejected"
    (result,) = status["peer_fill"]["peers"]
    assert result["peer"] == peer.base and result["result"] == reason, result
    assert result["error"]
    assert await metric(running, "jwks_mirror_peer_errors_total", issuer="idp", reason=reason) == 1
    assert (
        await metric(running, "jwks_mirror_peer_fills_total", issuer="idp", outcome="rejected") == 1
    )


async def test_the_hostile_cases_control_a_well_formed_answer_is_adopted(
    fake_issuer, mirror_factory, refused_url
):
    """The same fake peer with nothing spoiled: proves the rejections above are the spoils'."""
    peer = await fake_issuer(behaviour=serve_json(offer(refused_url)))
    running = await mirror_factory(
        config(refused_url, peers=f"{{urls: [{peer.base}]}}", max_stale="1h")
    )
    await until(lambda: ready(running), what="readiness after the peer fill")
    code, _, body = await get(f"{running.public_url}/idp/jwks.json")
    assert code == 200 and [k["kid"] for k in json.loads(body)["keys"]] == ["k1"]


async def test_a_hanging_peer_is_cut_off_at_the_fetch_timeout_and_a_good_one_still_wins(
    fake_issuer, mirror_factory, refused_url
):
    stuck = await fake_issuer()
    stuck.behaviour = hang(stuck)
    good = await fake_issuer(behaviour=serve_json(offer(refused_url)))
    running = await mirror_factory(
        config(
            refused_url,
            peers=f"{{urls: [{stuck.base}, {good.base}]}}",
            timeout="1s",
        )
    )
    await until(lambda: ready(running), what="readiness despite a hanging peer")
    status = await status_of(running)
    results = {r["peer"]: r["result"] for r in status["peer_fill"]["peers"]}
    assert results == {stuck.base: "timeout", good.base: "offered"}
    assert status["peer_fill"]["outcome"] == "filled"
    assert status["filled_from_peer"] == good.base
    assert (
        await metric(running, "jwks_mirror_peer_errors_total", issuer="idp", reason="timeout") == 1
    )


async def test_a_hanging_peer_alone_leaves_the_issuer_failing_closed(
    fake_issuer, mirror_factory, refused_url
):
    stuck = await fake_issuer()
    stuck.behaviour = hang(stuck)
    running = await mirror_factory(
        config(refused_url, peers=f"{{urls: [{stuck.base}]}}", timeout="1s")
    )
    await until(lambda: ready(running), what="readiness despite a hanging peer")
    status = await status_of(running)
    assert status["peer_fill"]["outcome"] == "unreachable"
    assert status["peer_fill"]["peers"][0]["result"] == "timeout"
    assert status["servable"] is False


# -- the newest offer wins ---------------------------------------------------------------------


async def test_of_two_valid_answers_the_newest_upstream_success_wins(
    fake_issuer, mirror_factory, refused_url
):
    older = await fake_issuer(
        behaviour=serve_json(offer(refused_url, last_success=time.time() - 600))
    )
    newer_doc = offer(refused_url, last_success=time.time() - 60, jwks=json.dumps(jwks("k2")))
    newer = await fake_issuer(behaviour=serve_json(newer_doc))
    running = await mirror_factory(
        config(refused_url, peers=f"{{urls: [{older.base}, {newer.base}]}}")
    )
    await until(lambda: ready(running), what="readiness after the peer fill")
    state = running.mirror.issuers["idp"].state
    assert state.filled_from == newer.base
    assert state.last_success == newer_doc["last_success"]
    assert state.published is not None and state.published.kids == ("k2",)


# -- DNS peers ---------------------------------------------------------------------------------


def resolver(records: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return records[host]

    return resolve


async def test_fill_through_dns_reaches_the_peer_and_skips_itself(fake_issuer, mirror_factory):
    upstream = await fake_issuer(document=jwks("k1"))
    first = await mirror_factory(config(upstream.url))
    await first.mirror.refresh(["idp"])
    upstream.behaviour = answer(503)
    admin_port = int(first.admin_url.rsplit(":", 1)[1])
    # Its own record (10.9.9.9) would not even be reachable: being asked would time out.
    finder = PeerFinder(
        resolver=resolver({"jwks-mirror-peers": ["10.9.9.9", "127.0.0.1"]}),
        environ={"POD_IP": "10.9.9.9"},
    )
    second = await mirror_factory(
        config(upstream.url, peers=f"{{dns: jwks-mirror-peers, port: {admin_port}}}"),
        peer_finder=finder,
    )
    await until(lambda: ready(second), what="the fresh replica to become ready")
    status = await status_of(second)
    assert status["filled_from_peer"] == f"http://127.0.0.1:{admin_port}"
    assert [p["peer"] for p in status["peer_fill"]["peers"]] == [status["filled_from_peer"]]


async def test_a_dns_name_that_does_not_resolve_is_reported(mirror_factory, refused_url):
    finder = PeerFinder(resolver=resolver({}), environ={"POD_IP": "10.0.0.1"})
    running = await mirror_factory(
        config(refused_url, peers="{dns: jwks-mirror-peers}"), peer_finder=finder
    )
    await until(lambda: ready(running), what="readiness")
    report = (await status_of(running))["peer_fill"]
    assert report["outcome"] == "no_peers"
    assert report["peers"][0]["result"] == "dns" and "not known" in report["peers"][0]["error"]
    assert await metric(running, "jwks_mirror_peer_errors_total", issuer="idp", reason="dns") == 1


# -- the pure parts ----------------------------------------------------------------------------


def _issuer(upstream: str = "http://keys.example/jwks.json", **limits: str):
    settings = parse_settings(config(upstream, **limits))
    return settings.issuers[0]


def test_share_offers_upstream_and_restored_sets_only():
    issuer = _issuer()
    state = IssuerState(issuer)
    assert share(state, 100.0) == (503, {"error": "no key set yet", "reason": "no_set"})
    document = {
        "format": 1,
        "name": "idp",
        "upstream": issuer.upstream,
        "last_success": 90.0,
        "keys": jwks("k1")["keys"],
    }
    state.restore(document, now=100.0)
    code, answer_ = share(state, 100.0)
    assert code == 200 and answer_["source"] == "state" and answer_["last_success"] == 90.0
    offered = parse_offer(json.dumps(answer_).encode(), issuer=issuer, peer="p", now=100.0)
    assert [k.kid for k in offered.validated.keys] == ["k1"]


def test_a_peer_clock_ahead_of_ours_does_not_extend_max_stale():
    issuer = _issuer()
    body = json.dumps(offer(issuer.upstream, last_success=5_000.0)).encode()
    assert parse_offer(body, issuer=issuer, peer="p", now=1_000.0).last_success == 1_000.0


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        ({"name": "other"}, "malformed"),
        ({"jwks": {"keys": []}}, "malformed"),
        ({"jwks": json.dumps({"keys": []})}, "no_usable_keys"),
        ({"last_success": float("nan")}, "invalid_json"),
        ({"last_success": True}, "malformed"),
        ({"retained": {"not": "a list"}}, "malformed"),
        ({"retained": [{"removed_at": 1.0}]}, "malformed"),
        ({"source": ["upstream"]}, "malformed"),  # found by fuzz/fuzz_peer_offer.py
        ({"source": {"upstream": 1}}, "malformed"),
    ],
)
def test_parse_offer_rejects(spoil, reason):
    issuer = _issuer()
    body = json.dumps(offer(issuer.upstream, **spoil)).encode()
    with pytest.raises(PeerError) as caught:
        parse_offer(body, issuer=issuer, peer="p", now=time.time())
    assert caught.value.reason == reason


def test_too_many_keys_in_a_peer_set_is_the_upstream_rule():
    issuer = _issuer(max_keys="1")
    body = json.dumps(offer(issuer.upstream, jwks=json.dumps(jwks("k1", "k2")))).encode()
    with pytest.raises(PeerError) as caught:
        parse_offer(body, issuer=issuer, peer="p", now=time.time())
    assert caught.value.reason == "too_many_keys"


async def test_without_peers_settings_there_is_no_peer_fill(fake_issuer, mirror_factory):
    upstream = await fake_issuer()
    upstream.behaviour = answer(503)
    peer = await fake_issuer(behaviour=serve_json(offer(upstream.url)))
    running = await mirror_factory(config(upstream.url))
    await until(lambda: ready(running), what="readiness")
    status = await status_of(running)
    assert status["peer_fill"] is None and status["source"] is None
    assert status["servable"] is False
    assert peer.requests == []
    assert await metric(running, "jwks_mirror_peer_fills_total", issuer="idp") is None


# -- a copy never outlives the outage ---------------------------------------------------------


def planted_offer(upstream: str) -> dict[str, Any]:
    """What a pod that answers as a peer could offer: the issuer's real key, plus a key of its
    own in the set and another among the retained ones."""
    return offer(
        upstream,
        jwks=json.dumps(jwks("k1", "planted")),
        retained=[{"jwk": jwks("planted-old")["keys"][0], "removed_at": time.time() - 10}],
    )


async def test_the_first_own_upstream_success_replaces_a_peer_copy_whole(
    fake_issuer, mirror_factory, tmp_path
):
    upstream = await fake_issuer(document=jwks("k1"), behaviour=answer(503, b"down"))
    peer = await fake_issuer(behaviour=serve_json(planted_offer(upstream.url)))
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    running = await mirror_factory(
        config(
            upstream.url,
            peers=f"{{urls: [{peer.base}]}}",
            extra=f"state_dir: {state_dir}\n",
            retain_removed_keys="1h",
        )
    )
    await until(lambda: ready(running), what="readiness after the peer fill")
    status = await status_of(running)
    assert status["source"] == "peer"
    assert status["kids"] == ["k1", "planted", "planted-old"]

    upstream.behaviour = None  # the upstream answers again: k1 only
    (outcome,) = await running.mirror.refresh(["idp"])
    assert outcome.outcome != "failed"
    status = await status_of(running)
    assert status["source"] == "upstream"
    assert status["kids"] == ["k1"], status
    assert status["retained_kids"] == []
    code, _, body = await get(f"{running.public_url}/idp/jwks.json")
    assert code == 200 and [k["kid"] for k in json.loads(body)["keys"]] == ["k1"]
    # Shared on /peer: the replica's own set, nothing from the copy.
    code, _, body = await get(f"{running.admin_url}/peer/idp")
    shared = json.loads(body)
    assert code == 200 and shared["retained"] == []
    assert [k["kid"] for k in json.loads(shared["jwks"])["keys"]] == ["k1"]
    # Written to state_dir: the same.
    path = state_dir / "idp.json"
    await until(lambda: asyncio.to_thread(path.exists), what="the own set to be persisted")
    await running.mirror.writes_done()
    written = json.loads(path.read_bytes())
    assert [k["kid"] for k in written["keys"]] == ["k1"] and written["retained"] == []


# -- direct TLS to peers: the peer must present the mirror's own identity ------------------------

MIRROR_ID = "spiffe://cluster.local/ns/jwks-mirror/sa/jwks-mirror"


def peer_context(ca_file, cert, key, *, require_client: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
    return context


def tls_peers(url: str, pki, identity: str = MIRROR_ID) -> str:
    return (
        f"{{urls: [{url}], tls: {{ca_file: {pki.ca_file}, cert_file: {pki.mirror_cert}, "
        f"key_file: {pki.mirror_key}, identity: '{identity}'}}}}"
    )


async def test_a_tls_peer_presenting_the_mirrors_identity_is_adopted(
    fake_issuer, mirror_factory, refused_url, pki
):
    """The peer also requires this replica's client certificate, as a mesh peer would."""
    context = peer_context(pki.ca_file, pki.mirror_cert, pki.mirror_key)
    peer = await fake_issuer(context, behaviour=serve_json(offer(refused_url)))
    assert peer.base.startswith("https://")
    running = await mirror_factory(config(refused_url, peers=tls_peers(peer.base, pki)))
    await until(lambda: ready(running), what="readiness after the peer fill")
    status = await status_of(running)
    assert status["peer_fill"]["outcome"] == "filled", status["peer_fill"]
    assert status["filled_from_peer"] == peer.base and status["kids"] == ["k1"]


async def test_a_tls_peer_by_dns_name_identity(fake_issuer, mirror_factory, refused_url, pki):
    cert, key = pki.ca.issue(
        namespace="jwks-mirror", service_account="jwks-mirror", dns_names=("Peers.Example",)
    ).write(pki.directory, "dns-peer")
    peer = await fake_issuer(
        peer_context(pki.ca_file, cert, key), behaviour=serve_json(offer(refused_url))
    )
    running = await mirror_factory(
        config(refused_url, peers=tls_peers(peer.base, pki, identity="peers.example"))
    )
    await until(lambda: ready(running), what="readiness after the peer fill")
    assert (await status_of(running))["peer_fill"]["outcome"] == "filled"


def _other_account(pki):
    return pki.ca.issue(namespace="jwks-mirror", service_account="intruder").write(
        pki.directory, "intruder"
    )


def _other_namespace(pki):
    return pki.ca.issue(namespace="elsewhere", service_account="jwks-mirror").write(
        pki.directory, "elsewhere"
    )


def _other_ca(pki):
    from jwks_mirror.demo.pki import MeshCA

    return MeshCA().issue(namespace="jwks-mirror", service_account="jwks-mirror").write(
        pki.directory, "foreign"
    )


def _issuers_identity(pki):
    return pki.issuer_cert, pki.issuer_key


@pytest.mark.parametrize(
    ("make", "identity"),
    [
        pytest.param(_other_account, MIRROR_ID, id="another-service-account"),
        pytest.param(_other_namespace, MIRROR_ID, id="another-namespace"),
        pytest.param(_other_ca, MIRROR_ID, id="another-ca"),
        pytest.param(_issuers_identity, MIRROR_ID, id="a-workload-of-the-mesh"),
        pytest.param(_other_account, "peers.example", id="dns-name-not-in-certificate"),
        pytest.param(_other_account, MIRROR_ID + "x", id="spiffe-prefix-only"),
    ],
)
async def test_a_tls_peer_without_the_mirrors_identity_is_refused(
    make, identity, fake_issuer, mirror_factory, refused_url, pki
):
    cert, key = make(pki)
    # A valid, well-formed answer: only the identity is wrong.
    peer = await fake_issuer(
        peer_context(pki.ca_file, cert, key, require_client=False),
        behaviour=serve_json(offer(refused_url)),
    )
    running = await mirror_factory(
        config(refused_url, peers=tls_peers(peer.base, pki, identity=identity))
    )
    await until(lambda: ready(running), what="readiness after the peer fill")
    status = await status_of(running)
    assert status["servable"] is False and status["source"] is None
    (result,) = status["peer_fill"]["peers"]
    assert result["result"] == "tls", result
    assert peer.requests == [], "no request may reach a peer with another identity"
    assert await metric(running, "jwks_mirror_peer_errors_total", issuer="idp", reason="tls") == 1


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        (
            "{urls: [http://10.0.0.7:9090], tls: {identity: 'spiffe://td/ns/a/sa/b'}}",
            "peers.urls[0]: peers.tls is set: peer URLs must be https",
        ),
        ("{dns: peers, tls: {ca_file: /etc/hosts}}", "peers.tls.identity: required"),
        ("{dns: peers, tls: {identity: 'spiffe://td'}}", "is neither a spiffe:// URI"),
        ("{dns: peers, tls: {identity: 'a b'}}", "is neither a spiffe:// URI"),
        ("{dns: peers, tls: {identity: x, server_name: y}}", "peers.tls.server_name: unknown key"),
    ],
)
def test_peers_tls_settings_are_checked(peers: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_settings(config("http://keys.example/jwks.json", peers=peers))
