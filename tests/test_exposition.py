"""exposition.py: the /metrics answer."""

from __future__ import annotations

from prometheus_client import generate_latest

from jwks_mirror.counters import Metrics


def test_exposition_is_byte_for_byte_what_prometheus_client_renders():
    from prometheus_client import Counter, Gauge, Info, Summary

    from jwks_mirror.counters import new_registry
    from jwks_mirror.exposition import exposition
    from jwks_mirror.keysets import validate
    from jwks_mirror.settings import parse_settings
    from jwks_mirror.state import IssuerState

    registry = new_registry()  # process, platform and GC collectors included
    issuers = parse_settings(
        "issuers: [{name: a, jwks_uri: 'http://k.ns.svc/'}, {name: b, jwks_uri: 'http://l.ns.svc/'}]"
    ).issuers
    states = [IssuerState(issuer) for issuer in issuers]
    body = (
        b'{"keys":[{"kty":"EC","crv":"P-256","kid":"k1",'
        b'"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
        b'"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
    )
    states[0].apply(validate(body, max_bytes=1 << 16, max_keys=10), now=5.0)
    states[0].requests[200] = 7
    metrics = Metrics(
        registry,
        states=lambda: states,
        unknown_requests={404: 2},
        clock=lambda: 9.0,
        per_issuer=lambda: "full",
    )
    metrics.fetch_total.labels("a", "changed").inc()
    metrics.fetch_duration_seconds.observe(0.3)
    metrics.config_reloads_total.labels("success").inc()
    # awkward values: escaping in label values and help text, big and special floats
    odd = Gauge("odd_gauge", 'help with "quotes", a \\ and a\nnewline', ["v"], registry=registry)
    odd.labels('say "hi"\\\n').set(1764489600.123)
    odd.labels("inf").set(float("inf"))
    Counter("plain_events", "no labels", registry=registry).inc(3)
    Summary("a_summary", "sum and count", registry=registry).observe(2)
    Info("build", "an info metric", registry=registry).info({"version": "1"})
    # one collection rendered both ways (process CPU and memory move between two)
    frozen = Frozen(list(registry.collect()))
    assert exposition(frozen) == generate_latest(frozen)
    assert b'jwks_mirror_keys{issuer="a"} 1.0' in exposition(frozen)
    assert b"process_cpu_seconds_total" in exposition(frozen)


class Frozen:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families
