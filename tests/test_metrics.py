"""The per-issuer counters kept as plain numbers, as a scrape exports them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jwks_mirror.metrics import Metrics


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), states=list, unknown_requests={}, clock=lambda: 0.0)


def test_issuer_counters_are_exported_at_scrape_time_without_created_series(metrics):
    metrics.fetch_total.labels("a", "changed").inc()
    metrics.fetch_total.labels("a", "changed").inc()
    metrics.fetch_total.labels("b", "failed").inc()
    metrics.keys_rejected_total.labels("a", "weak_key").inc(3)
    metrics.persist_errors_total.labels("b").inc()
    samples = scrape(metrics.registry)
    assert samples["jwks_mirror_fetch_total"] == {
        (("issuer", "a"), ("outcome", "changed")): 2.0,
        (("issuer", "b"), ("outcome", "failed")): 1.0,
    }
    assert samples["jwks_mirror_keys_rejected_total"] == {
        (("issuer", "a"), ("reason", "weak_key")): 3.0
    }
    assert samples["jwks_mirror_persist_errors_total"] == {(("issuer", "b"),): 1.0}
    created = {name for name in samples if name.endswith("_created")}
    assert created == {"jwks_mirror_fetch_duration_seconds_created"}  # one, not one per issuer


def test_forget_drops_every_series_of_a_removed_issuer(metrics):
    metrics.fetch_total.labels("a", "changed").inc()
    metrics.fetch_errors_total.labels("a", "timeout").inc()
    metrics.fetch_total.labels("b", "unchanged").inc()
    metrics.forget("a")
    samples = scrape(metrics.registry)
    assert samples["jwks_mirror_fetch_total"] == {
        (("issuer", "b"), ("outcome", "unchanged")): 1.0
    }
    assert "jwks_mirror_fetch_errors_total" not in samples


def test_counters_refuse_wrong_labels_and_decrements(metrics):
    with pytest.raises(ValueError):
        metrics.fetch_total.labels("a")
    with pytest.raises(ValueError):
        metrics.persist_errors_total.labels("a", "extra")
    with pytest.raises(ValueError):
        metrics.fetch_total.labels("a", "changed").inc(-1)


def test_fetch_duration_is_one_histogram_for_all_issuers(metrics):
    metrics.fetch_duration_seconds.observe(0.02)
    metrics.fetch_duration_seconds.observe(3.0)
    samples = scrape(metrics.registry)
    assert samples["jwks_mirror_fetch_duration_seconds_count"] == {(): 2.0}
    assert samples["jwks_mirror_fetch_duration_seconds_bucket"][(("le", "0.025"),)] == 1.0
