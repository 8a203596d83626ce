"""Benchmark 4, 10,000 issuers: one mirror process with every figure the targets name.

One fresh ``jwks-mirror serve`` process (core 0) with N issuers (10,000 by default) on the
fake upstream of ``bench/upstream.py`` (core 1), measured in this order:

* ready: wall seconds from spawning the process to ``/readyz`` = 200, and CPU seconds by then;
* RSS at ready (VmRSS), and the peak (VmHWM) at the end of the run;
* an unchanged refresh cycle (every answer a 304) and a changed one (after ``/rotate``): CPU
  seconds of the mirror process, wall seconds, and how many fetches failed (should be none);
* one ``/metrics`` scrape: wall seconds, bytes as sent plain, and bytes with gzip (what
  Prometheus asks for), plus the number of samples;
* serving: the mirror with N issuers configured against nginx, the same cases as
  ``bench/serving.py`` (wrk on core 1, both servers on core 0, alternating rounds), and in the
  same run the same cases against a mirror with one issuer, so the two ratios are side by side.

CPU is user+system from ``/proc/<pid>/stat``; the machine is shared, so ratios measured side by
side in one run are the figures to compare, and CPU seconds rather than wall seconds.
"""

from __future__ import annotations

import gzip
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common, scale, serving

TARGETS = {
    "ready_s": 8.0,
    "rss_ready_mb": 150.0,
    "unchanged_cpu_s": 3.0,
    "changed_cpu_s": 6.0,
    "metrics_s": 1.0,
    # the per-issuer series budget (metrics.per_issuer: compact, docs/metrics.md)
    "metrics_mb": 4.0,
    "metrics_samples": 60_000,
}


def _scrape(admin: str, *, compressed: bool) -> tuple[float, int, bytes]:
    headers = {"Accept-Encoding": "gzip"} if compressed else {}
    started = time.monotonic()
    status, got, body = common.http("GET", f"{admin}/metrics", headers=headers)
    wall = time.monotonic() - started
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    text = gzip.decompress(body) if got.get("Content-Encoding") == "gzip" else body
    return wall, len(body), text


def _serving(
    listening: dict[str, Any], directory: Path, rounds: int, duration_s: float, warmup_s: float
) -> dict[str, Any]:
    mirror_url = f"{listening['public']}/{serving.NAME}/jwks.json"
    _, _, body = common.http("GET", mirror_url)
    nginx, nginx_url = serving.start_nginx(directory, body)
    with common.running(nginx):
        targets = {"mirror": mirror_url, "nginx": nginx_url}
        etags = {k: common.http("GET", u)[1]["ETag"] for k, u in targets.items()}
        return serving._measure(targets, etags, rounds, duration_s, warmup_s)


def one_run(
    directory: Path, upstream_url: str, issuers: int, serve: dict[str, float]
) -> dict[str, Any]:
    # /readyz polled every 100 ms, not every 20 as bench/scale.py: at 10,000 issuers 50 polls
    # a second would add ~2 CPU-s to what is measured. Kubernetes probes every 10 s.
    with scale.ready_and_cycled(
        directory,
        upstream_url,
        issuers,
        poll_s=0.1,
        ready_timeout_s=300,
        settle_s=1.0,
        tolerate=True,
    ) as (listening, _, figures):
        metrics_s, metrics_bytes, text = _scrape(listening["admin"], compressed=False)
        metrics_gz_s, metrics_gz_bytes, _ = _scrape(listening["admin"], compressed=True)
        samples = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        figures |= {
            "metrics_s": metrics_s,
            "metrics_mb": metrics_bytes / 1e6,
            "metrics_gzip_s": metrics_gz_s,
            "metrics_gzip_mb": metrics_gz_bytes / 1e6,
            "metrics_samples": samples,
            "serving": _serving(
                listening,
                directory / "nginx-many",
                int(serve["rounds"]),
                serve["duration_s"],
                serve["warmup_s"],
            ),
        }
    return figures


def _one_issuer_serving(
    directory: Path, upstream_url: str, serve: dict[str, float]
) -> dict[str, Any]:
    """The same serving cases against a mirror configured with a single issuer."""
    (directory / "one").mkdir()
    config = common.mirror_config(directory / "one", upstream_url, [serving.NAME])
    mirror = common.start_mirror(config)
    with common.running(mirror):
        listening = mirror.wait_json("listening")
        admin = listening["admin"]
        if not common.wait_until(lambda: common.http("GET", f"{admin}/readyz")[0] == 200, 60):
            raise RuntimeError("one-issuer mirror never became ready")
        return _serving(
            listening,
            directory / "nginx-one",
            int(serve["rounds"]),
            serve["duration_s"],
            serve["warmup_s"],
        )


def run(*, issuers: int, serve: dict[str, float]) -> dict[str, Any]:
    common.raise_fd_limit()
    common.ensure_tools("nginx", "wrk")
    info = common.banner(f"{issuers} issuers: ready, memory, refresh cycles, /metrics, serving")
    with tempfile.TemporaryDirectory(prefix="bench-issuers10k-") as tmp:
        directory = Path(tmp)
        upstream, url = common.start_upstream(issuers)
        with common.running(upstream):
            result = one_run(directory, url, issuers, serve)
            one = _one_issuer_serving(directory, url, serve)
    out = {"info": info, "issuers": issuers, "result": result, "serving_one_issuer": one}
    _print(out)
    return out


def _print(out: dict[str, Any]) -> None:
    r = out["result"]
    print(
        f"   ready {r['ready_s']:.2f} s ({r['ready_cpu_s']:.2f} CPU-s), RSS at ready "
        f"{r['rss_ready_mb']:.0f} MB (peak {r['rss_peak_mb']:.0f}, end {r['rss_end_mb']:.0f})"
    )
    print(
        f"   unchanged cycle {r['unchanged_cpu_s']:.2f} CPU-s ({r['unchanged_wall_s']:.2f} s, "
        f"{r['unchanged_failed']} failed); changed cycle {r['changed_cpu_s']:.2f} CPU-s "
        f"({r['changed_wall_s']:.2f} s, {r['changed_failed']} failed)"
    )
    print(
        f"   /metrics: {r['metrics_s']:.2f} s, {r['metrics_mb']:.2f} MB plain "
        f"({r['metrics_samples']} samples); gzip {r['metrics_gzip_s']:.2f} s, "
        f"{r['metrics_gzip_mb']:.2f} MB"
    )
    print(f"   {'case':<10} {'ratio, N issuers':>17} {'ratio, 1 issuer':>16}")
    for name, case in r["serving"].items():
        one = out["serving_one_issuer"][name]
        print(f"   {name:<10} {case['ratio']:>17.2f} {one['ratio']:>16.2f}")
    for key, target in TARGETS.items():
        verdict = "met" if r[key] <= target else "MISSED"
        print(f"   target {key} < {target:g}: {r[key]:.2f} {verdict}")


def rows(out: dict[str, Any], label: str) -> list[str]:
    info, r = out["info"], out["result"]
    ratios = " / ".join(
        f"{case['ratio']:.2f} ({out['serving_one_issuer'][name]['ratio']:.2f})"
        for name, case in r["serving"].items()
    )
    return [
        f"| {info['date']} | {label} | `{info['commit']}` | {out['issuers']} "
        f"| {r['ready_s']:.2f} ({r['ready_cpu_s']:.2f} CPU) "
        f"| {r['rss_ready_mb']:.0f} / {r['rss_peak_mb']:.0f} "
        f"| **{r['unchanged_cpu_s']:.2f}** ({r['unchanged_wall_s']:.2f}, "
        f"{r['unchanged_failed']} failed) "
        f"| **{r['changed_cpu_s']:.2f}** ({r['changed_wall_s']:.2f}, {r['changed_failed']} failed) "
        f"| {r['metrics_s']:.2f} s, {r['metrics_mb']:.1f} MB ({r['metrics_gzip_mb']:.2f} gzip) "
        f"| {ratios} | {common.setup_text(info)} | `{info['command']}` |"
    ]
