"""counters.py: the per-issuer counters kept as plain numbers, as a scrape exports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import jwks_mirror
from jwks_mirror.serving.counters import Metrics


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), issuers=list, clock=lambda: 0.0, per_issuer=lambda: "full")


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
    assert samples["jwks_mirror_fetch_total"] == {(("issuer", "b"), ("outcome", "unchanged")): 1.0}
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


def _package_modules_using_prometheus() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(Path(jwks_mirror.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        if any(name.split(".")[0] == "prometheus_client" for name in names):
            out.append((path.name, tree))
    return out


def test_no_module_reads_prometheus_client_internals():
    """Private attributes (``_metrics``, ``_value``, ``_names_to_collectors``...) change between
    prometheus_client releases. A module that uses prometheus_client touches no ``_``
    attribute but its own (``self._x``) and imports no private name from it."""
    modules = _package_modules_using_prometheus()
    assert {"counters.py", "collectors.py", "mirror.py"} <= {name for name, _ in modules}
    found = []
    for name, tree in modules:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                if not own and not node.attr.startswith("__") and node.attr != "_replace":
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "prometheus_client"
            ):
                found += [f"{name}: imports {a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []


def test_per_issuer_series_come_from_the_scrape_time_collectors():
    """No prometheus_client metric object is labelled by issuer: a child per issuer is an
    object and a lock, kept until someone reaches into the internals to delete it. Per-issuer
    series are computed by the collectors in collectors.py at scrape time instead."""
    labelled = []
    for name, tree in _package_modules_using_prometheus():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in ("Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"):
                continue
            labels = [*node.args[2:3], *(k.value for k in node.keywords if k.arg == "labelnames")]
            if any("issuer" in ast.unparse(arg) for arg in labels):
                labelled.append(f"{name}:{node.lineno}")
    assert labelled == []
