"""collectors.py: the per-issuer series at scrape time, and the compact series budget."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.errors import FetchError
from jwks_mirror.core.keysets import validate
from jwks_mirror.serving.collectors import FAMILIES, MonotonicSum
from jwks_mirror.serving.counters import Metrics
from jwks_mirror.serving.mirror import Issuer
from jwks_mirror.serving.refreshing import Health
from jwks_mirror.serving.state import IssuerState

K1 = (
    b'{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
    b'"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}'
)
ISSUERS = (
    "issuers: [{name: a, jwks_uri: 'http://k.ns.svc/'}, {name: b, jwks_uri: 'http://l.ns.svc/'}]"
)


class Scene:
    """Two issuers on a bare registry, as Mirror wires them, with a settable clock and mode."""

    def __init__(self, mode: str = "compact") -> None:
        self.now = 10.0
        self.mode = mode
        self.states = [IssuerState(i) for i in parse_settings(ISSUERS).issuers]
        self.health = {state.name: Health() for state in self.states}
        # the public server's request counts by issuer (None: names not configured)
        self.requests: dict[str | None, dict[int, int]] = {None: {}}
        self.unknown = self.requests[None]
        self.metrics = Metrics(
            CollectorRegistry(),
            issuers=lambda: [Issuer(state, self.health[state.name]) for state in self.states],
            clock=lambda: self.now,
            per_issuer=lambda: self.mode,
        )
        self.metrics.requests = lambda name: self.requests.get(name, {})

    def healthy(self) -> None:
        """Both issuers fetched (a change, then 304s) and served with 200 and 304."""
        for state in self.states:
            state.apply(
                validate(b'{"keys":[' + K1 + b"]}", max_bytes=1 << 16, max_keys=10), now=1.0
            )
            self.metrics.fetch_total.labels(state.name, "changed").inc()
            for _ in range(3):
                state.mark_unchanged(now=2.0)
                self.metrics.fetch_total.labels(state.name, "unchanged").inc()
            self.requests[state.name] = {200: 40, 304: 9}
            self.metrics.fetch_duration_seconds.observe(0.02)
        self.now = 2.0 + 3600 * 2  # past the key-added window: steady state

    def series(
        self, issuer: str | None = None
    ) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        text = generate_latest(self.metrics.registry).decode()
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                if issuer is not None and sample.labels.get("issuer") != issuer:
                    continue
                labels = tuple(sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[labels] = sample.value
        return out


def count(series: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> int:
    return sum(len(samples) for samples in series.values())


def test_a_healthy_issuer_exports_at_most_5_series_in_compact_mode():
    """3 in fact: 10,000 issuers that all rotate at once (retained_keys and
    last_key_added_timestamp_seconds for an hour) stay within 5 each (bench/issuers10k.py)."""
    scene = Scene()
    scene.healthy()
    mine = scene.series("a")
    assert count(mine) <= 5, mine
    assert set(mine) == {
        "jwks_mirror_keys",
        "jwks_mirror_last_success_timestamp_seconds",
        "jwks_mirror_key_set_info",
    }
    every = scene.series()
    # what needs no issuer label is summed across issuers
    assert every["jwks_mirror_fetch_total"] == {
        (("outcome", "changed"),): 2.0,
        (("outcome", "unchanged"),): 6.0,
    }
    assert every["jwks_mirror_requests_total"] == {
        (("code", "200"),): 80.0,
        (("code", "304"),): 18.0,
    }


def test_full_mode_restores_every_series_zeros_included():
    scene = Scene("full")
    scene.healthy()
    mine = scene.series("a")
    assert count(mine) == 13, mine
    assert mine["jwks_mirror_consecutive_failures"] == {(("issuer", "a"),): 0.0}
    assert mine["jwks_mirror_fetch_total"][(("issuer", "a"), ("outcome", "unchanged"))] == 3.0
    assert mine["jwks_mirror_requests_total"][(("code", "304"), ("issuer", "a"))] == 9.0


def test_a_failing_issuers_detail_appears_and_disappears():
    scene = Scene()
    scene.healthy()
    a = scene.states[0]
    scene.health["a"].failed(FetchError("timeout", "timed out"), now=scene.now)
    scene.metrics.fetch_errors_total.labels("a", "timeout").inc()
    scene.metrics.fetch_total.labels("a", "failed").inc()
    failing = scene.series("a")
    assert failing["jwks_mirror_consecutive_failures"] == {(("issuer", "a"),): 1.0}
    assert failing["jwks_mirror_stale"] == {(("issuer", "a"),): 1.0}
    assert failing["jwks_mirror_fetch_errors_total"] == {
        (("issuer", "a"), ("reason", "timeout")): 1.0
    }
    assert "jwks_mirror_stale" not in scene.series("b")  # the healthy one is unchanged
    a.mark_unchanged(now=scene.now + 60)
    scene.health["a"].succeeded(now=scene.now + 60)
    recovered = scene.series("a")
    assert "jwks_mirror_consecutive_failures" not in recovered
    assert "jwks_mirror_stale" not in recovered
    # an event counter, once counted, stays (until the issuer is removed): only it remains
    assert set(recovered) - set(scene.series("b")) == {"jwks_mirror_fetch_errors_total"}


def test_retained_keys_and_a_peers_copy_show_only_while_they_are_not_0():
    from jwcrypto import jwk

    scene = Scene()
    scene.healthy()
    a = scene.states[0]
    assert "jwks_mirror_retained_keys" not in scene.series("a")
    k2 = jwk.JWK.generate(kty="EC", crv="P-256", kid="k2").export_public().encode()
    a.apply(validate(b'{"keys":[' + k2 + b"]}", max_bytes=1 << 16, max_keys=10), now=scene.now)
    assert scene.series("a")["jwks_mirror_retained_keys"] == {(("issuer", "a"),): 1.0}
    a.purge_retained(now=scene.now)
    assert "jwks_mirror_retained_keys" not in scene.series("a")
    a.source = "peer"  # as adopt_from_peer leaves it (peering.py)
    assert scene.series("a")["jwks_mirror_filled_from_peer"] == {(("issuer", "a"),): 1.0}
    a.source = "upstream"
    assert "jwks_mirror_filled_from_peer" not in scene.series("a")
    assert {f.name for f in FAMILIES if f.when == "unhealthy"} == {
        "retained_keys",
        "stale",
        "servable",
        "consecutive_failures",
        "filled_from_peer",
    }


def test_an_issuer_not_served_shows_servable_0_and_stale():
    scene = Scene()
    scene.healthy()
    scene.now += 73 * 3600  # past max_stale (72h) without a success: fail closed
    mine = scene.series("a")
    assert mine["jwks_mirror_servable"] == {(("issuer", "a"),): 0.0}
    assert mine["jwks_mirror_stale"] == {(("issuer", "a"),): 1.0}
    assert count(mine) <= 5


def test_during_a_rotation_an_issuer_exports_at_most_5_series():
    from jwcrypto import jwk

    scene = Scene()
    scene.healthy()
    k2 = jwk.JWK.generate(kty="EC", crv="P-256", kid="k2").export_public().encode()
    scene.states[0].apply(
        validate(b'{"keys":[' + k2 + b"]}", max_bytes=1 << 16, max_keys=10), now=scene.now
    )
    mine = scene.series("a")
    assert "jwks_mirror_last_key_added_timestamp_seconds" in mine
    assert "jwks_mirror_retained_keys" in mine
    assert count(mine) == 5


def test_sums_across_issuers_never_go_down_when_an_issuer_is_removed():
    scene = Scene()
    scene.healthy()
    before = scene.series()["jwks_mirror_fetch_total"][(("outcome", "unchanged"),)]
    scene.metrics.forget("b")
    removed = scene.states.pop()
    after = scene.series()
    assert after["jwks_mirror_fetch_total"][(("outcome", "unchanged"),)] == before
    assert after["jwks_mirror_requests_total"][(("code", "200"),)] == 80.0
    scene.states.append(IssuerState(removed.settings))  # re-added: counts start again from 0
    scene.requests.setdefault(scene.states[-1].name, {})[200] = 1
    assert scene.series()["jwks_mirror_requests_total"][(("code", "200"),)] == 81.0


def test_monotonic_sum_keeps_what_an_issuer_counted_before_it_restarted():
    total = MonotonicSum()
    assert total.update({("a", "200"): 5, ("b", "200"): 2}) == {"200": 7}
    assert total.update({("a", "200"): 1, ("b", "200"): 3}) == {"200": 9}  # a restarted at 0
    assert total.update({("b", "200"): 3}) == {"200": 9}  # a removed
