"""Smoke-run every benchmark on a tiny size: each must run and produce its numbers.

Benchmarks are not tests, so nothing here asserts a timing; only that the figures exist and
are plausible numbers (a benchmark that silently measured nothing would pass otherwise).
Needs nginx, wrk and taskset (``.ci/run`` installs them; run as root the script does).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Runs the benchmarks against nginx under wrk: tens of seconds.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("wrk", "nginx")


def _have(name: str) -> bool:
    return shutil.which(name) is not None or Path(f"/usr/sbin/{name}").exists()


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not all(_have(t) for t in TOOLS) and os.geteuid() != 0:
        pytest.skip("nginx and wrk are not installed (apt-get install -y nginx wrk)")
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--smoke",
            "--no-record",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "versions:" in proc.stdout and "command:" in proc.stdout
    return json.loads(out.read_text())


def _number(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def test_serving_benchmark_produces_its_numbers(results):
    cases = results["serving"]["cases"]
    assert set(cases) == {"new-conn", "varied", "repeated"}
    for case in cases.values():
        for side in ("mirror", "nginx"):
            assert case[side]["rps"] > 0
            assert _number(case[side]["p50_ms"]) and _number(case[side]["p99_ms"])
        assert case["ratio"] > 0
    assert results["serving"]["mirror_requests_counted"] > 0


def test_scale_benchmark_produces_its_numbers(results):
    scale = results["scale"]
    assert scale["issuers"] == 20
    median = scale["median"]
    for key in ("ready_s", "rss_ready_mb", "rss_peak_mb", "unchanged_cpu_s", "changed_cpu_s"):
        assert _number(median[key]), key
    assert median["ready_s"] > 0 and median["rss_ready_mb"] > 0


def test_many_issuers_benchmark_produces_its_numbers(results):
    many = results["issuers10k"]
    assert many["issuers"] == 50
    figures = many["result"]
    for key in (
        "ready_s", "rss_ready_mb", "unchanged_cpu_s", "changed_cpu_s", "metrics_s", "metrics_mb",
        "metrics_gzip_mb",
    ):
        assert _number(figures[key]), key
    assert figures["unchanged_failed"] == 0 and figures["changed_failed"] == 0
    # 50 issuers export at least the three series metrics.per_issuer: compact always keeps
    # (keys, last_success, key_set_info), and stay within the budget of 5 each plus the rest
    assert 50 * 3 <= figures["metrics_samples"] <= 50 * 5 + 1000
    assert 0 < figures["metrics_gzip_mb"] < figures["metrics_mb"]
    for serving_cases in (figures["serving"], many["serving_one_issuer"]):
        assert set(serving_cases) == {"200", "304", "200x1000"}
        assert all(case["ratio"] > 0 for case in serving_cases.values())


def test_freshness_benchmark_produces_its_numbers(results):
    size = results["freshness"]["sizes"]["20"]
    (run,) = size["runs"]
    assert run["interval"] == "10s" and run["cycle_304s"] == 20  # one scheduled 304 each
    assert run["idle_wall_s"] >= 5 and run["cycle_wall_s"] > 0
    assert _number(size["idle_cpu_per_min"]) and _number(size["per_fetch_ms"])
    assert set(size["steady"]) == {"5m", "1m", "30s"}
    rps = {t: row["upstream_rps"] for t, row in size["steady"].items()}
    assert rps == {"5m": 20 / 300, "1m": 20 / 60, "30s": 20 / 30}
    assert size["steady"]["30s"]["cpu_s_per_min"] >= size["steady"]["5m"]["cpu_s_per_min"]


def test_rows_render_for_the_results_file(results, tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench import common, freshness, issuers10k, scale, serving

    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "x\n<!-- serving-rows -->\ny\n<!-- scale-rows -->\nz\n<!-- freshness-rows -->\n"
        "<!-- issuers10k-rows -->\n"
    )
    common.record("serving-rows", serving.rows(results["serving"], "smoke"), doc=doc)
    common.record("scale-rows", scale.rows(results["scale"], "smoke"), doc=doc)
    common.record("freshness-rows", freshness.rows(results["freshness"], "smoke"), doc=doc)
    common.record("issuers10k-rows", issuers10k.rows(results["issuers10k"], "smoke"), doc=doc)
    lines = doc.read_text().splitlines()
    assert len([line for line in lines if line.startswith("| ")]) == 6
    assert lines[-1] == "<!-- issuers10k-rows -->"


def test_rewrite_benchmark_produces_its_numbers(results):
    rewrite = results["rewrite"]
    assert set(rewrite) == {
        "rewrite (stdout, --config-out)", "rewrite --check", "rewrite --in-place",
        "rewrite --restore --in-place",
    }
    assert all(math.isfinite(v) and v > 0 for v in rewrite.values())
