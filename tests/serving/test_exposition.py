"""exposition.py: the /metrics answer, as prometheus_client renders and parses it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.keysets import validate
from jwks_mirror.serving.counters import Metrics, new_registry
from jwks_mirror.serving.exposition import exposition
from jwks_mirror.serving.mirror import Issuer
from jwks_mirror.serving.refreshing import Health
from jwks_mirror.serving.state import IssuerState

BODY = (
    b'{"keys":[{"kty":"EC","crv":"P-256","kid":"k1",'
    b'"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
    b'"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
)


def scrape(mode: str) -> bytes:
    registry = new_registry()  # process, platform and GC collectors included
    issuers = parse_settings(
        "issuers: [{name: a, jwks_uri: 'http://k.ns.svc/'}, {name: b, jwks_uri: 'http://l.ns.svc/'}]"
    ).issuers
    states = [IssuerState(issuer) for issuer in issuers]
    states[0].apply(validate(BODY, max_bytes=1 << 16, max_keys=10), now=5.0)
    metrics = Metrics(
        registry,
        issuers=lambda: [Issuer(state, Health()) for state in states],
        clock=lambda: 9.0,
        per_issuer=lambda: mode,
    )
    requests = {"a": {200: 7}, None: {404: 2}}  # the public server's counts
    metrics.requests = lambda name: requests.get(name, {})
    metrics.fetch_total.labels("a", "changed").inc()
    metrics.fetch_duration_seconds.observe(0.3)
    metrics.config_reloads_total.labels("success").inc()
    return exposition(registry)


def test_the_answer_parses_and_carries_every_kind_of_series():
    for mode in ("compact", "full"):
        text = scrape(mode).decode()
        names = {
            sample.name
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert {
            "jwks_mirror_keys", "jwks_mirror_fetch_total", "jwks_mirror_requests_total",
            "jwks_mirror_fetch_duration_seconds_bucket", "jwks_mirror_config_reloads_total",
            "process_cpu_seconds_total",
        } <= names, mode
        assert 'jwks_mirror_keys{issuer="a"} 1.0' in text


def test_label_values_are_escaped():
    """An ETag is quoted (RFC 9110): its quotes are escaped in ``key_set_info``."""
    text = scrape("full").decode()
    line = next(x for x in text.splitlines() if x.startswith("jwks_mirror_key_set_info{"))
    assert 'etag="\\"' in line and line.endswith('\\"",issuer="a"} 1.0')


def test_compact_sums_requests_and_fetches_across_issuers():
    text = scrape("compact").decode()
    assert 'jwks_mirror_requests_total{code="200"} 7.0' in text
    assert 'jwks_mirror_requests_total{code="404"} 2.0' in text
    assert 'jwks_mirror_fetch_total{outcome="changed"} 1.0' in text
