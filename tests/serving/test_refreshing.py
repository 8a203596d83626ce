"""refreshing: an issuer's fetch health and schedule (Health), written by its refresher only,
read by /status and the metrics through mirror.Issuer. The schedule's pure functions are in
tests/serving/test_refreshing_schedule.py; the refresher over real sockets in tests/serving/test_mirror.py."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from jwks_mirror.core.config.loader import IssuerSettings, Limits
from jwks_mirror.core.errors import KeySetRejected, UpstreamError
from jwks_mirror.core.keysets import validate
from jwks_mirror.serving.counters import Metrics
from jwks_mirror.serving.fetching import NO_VALIDATORS, Fetcher, Validators
from jwks_mirror.serving.mirror import Issuer
from jwks_mirror.serving.refreshing import Health, IssuerRefresher, NextRefresh
from jwks_mirror.serving.state import IssuerState

from .. import keyfactory as kf
from ..conftest import answer


def test_failures_count_up_and_a_success_clears_them() -> None:
    health = Health()
    health.failed(UpstreamError("timeout", "timed out after 5s"), 2000.0)
    health.failed(KeySetRejected("private_key", "keys[0] holds d"), 3000.0)
    assert health.consecutive_failures == 2
    assert (health.last_error, health.last_error_reason) == ("keys[0] holds d", "private_key")
    assert health.last_attempt == 3000.0
    health.succeeded(4000.0)
    assert health.consecutive_failures == 0 and health.last_attempt == 4000.0
    assert health.last_error is None and health.last_error_reason is None


def test_the_schedule_is_when_and_why() -> None:
    health = Health()
    assert (health.next_refresh, health.next_refresh_reason) == (0.0, "start")
    health.schedule(100.0, NextRefresh(4.5, "backoff"))
    assert (health.next_refresh, health.next_refresh_reason) == (104.5, "backoff")


@pytest.mark.parametrize(("failures", "servable", "stale"), [(0, True, False), (1, True, True), (0, False, True)])
def test_an_issuer_is_stale_after_a_failure_or_without_a_servable_set(
    failures: int, servable: bool, stale: bool
) -> None:
    limits = Limits(refresh_interval_s=60.0, max_stale_s=100.0)
    state = IssuerState(IssuerSettings(name="i", jwks_uri="http://k.example/", limits=limits))
    state.apply(validate(kf.body(kf.jwk("p256", kid="a")), max_bytes=1 << 16, max_keys=5), now=0.0)
    issuer = Issuer(state, Health(consecutive_failures=failures))
    now = 50.0 if servable else 150.0
    assert issuer.is_stale(now) is stale


async def test_after_a_peer_copy_the_next_fetch_is_unconditional(fake_issuer) -> None:
    """The validators a replica held belong to its own last fetch; once a peer's copy is
    served, a 304 could not confirm it, so the refresher drops them (apply_result's None covers
    a 304 all the same)."""
    upstream = await fake_issuer(etag='"e1"', behaviour=answer(503))
    state = IssuerState(IssuerSettings(name="idp", jwks_uri=upstream.url, limits=Limits()))
    copy = validate(kf.body(kf.jwk("p256", kid="k1")), max_bytes=1 << 16, max_keys=5)

    async def adopt(target: IssuerState) -> None:  # what PeerFiller.fill does with an offer
        now = time.time()
        target.adopt_from_peer(copy, retained=(), last_success=now, peer="p", now=now)

    fetcher = Fetcher()
    metrics = Metrics(CollectorRegistry(), issuers=list, clock=time.time)
    refresher = IssuerRefresher(
        state, fetcher=fetcher, metrics=metrics, peer_fill=adopt, validators=Validators('"e1"')
    )
    try:
        assert (await refresher.refresh()).outcome == "failed"
        assert upstream.requests[-1].headers.get("If-None-Match") == '"e1"'
        assert state.source == "peer" and refresher.validators == NO_VALIDATORS
        upstream.behaviour = None
        assert (await refresher.refresh()).outcome == "changed"
        assert "If-None-Match" not in upstream.requests[-1].headers
        assert state.source == "upstream" and refresher.validators.etag == '"e1"'
    finally:
        await fetcher.close()
