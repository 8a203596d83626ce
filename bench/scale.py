"""Benchmark 2, scale: 1,000 issuers against a local fake upstream.

The mirror is a real ``jwks-mirror serve`` process pinned to core 0; the fake upstream
(``bench/upstream.py``, a separate process) runs on core 1. Per run, with a fresh mirror:

* ready: wall time from spawning the process to ``/readyz`` answering 200 (every issuer
  fetched, validated and servable), and the CPU seconds spent by then;
* memory: resident set (VmRSS) once ready, and its peak (VmHWM) at the end;
* unchanged cycle: CPU seconds of the mirror process for one ``POST /refresh`` of every issuer
  while nothing changed (conditional requests, the upstream answers 304);
* changed cycle: the same after the upstream rotated every issuer to different keys.

CPU is user+system from ``/proc/<pid>/stat`` (10 ms ticks), so it includes the admin request
that triggers the cycle and the JSON log line per fetch, as in production.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.upstream import issuer_name


def cycle(
    pid: int, admin: str, expect: str, *, tolerate: bool = False
) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, failed fetches) of one POST /refresh of every issuer.

    With ``tolerate``, failed fetches are reported (a count and their reasons) instead of
    ending the run, so a configuration that cannot keep up still gets its figures."""
    cpu0, wall0 = common.cpu_seconds(pid), time.monotonic()
    status, _, body = common.http("POST", f"{admin}/refresh", timeout_s=300)
    wall = time.monotonic() - wall0
    cpu = common.cpu_seconds(pid) - cpu0
    results = json.loads(body)["results"]
    outcomes = {r["outcome"] for r in results}
    failed = [r for r in results if r["outcome"] != expect]
    if status != 200 or outcomes != {expect}:
        reasons = sorted({f"{r['outcome']}: {r['reason']}" for r in failed})
        message = (
            f"refresh answered {status}: {len(failed)} of {len(results)} not {expect} "
            f"({', '.join(reasons[:5])})"
        )
        if not tolerate or outcomes - {expect, "failed"}:
            raise RuntimeError(message)
        print(f"   {message}", flush=True)
    return cpu, wall, len(failed)


def one_run(directory: Path, upstream_url: str, issuers: int) -> dict[str, float]:
    names = [issuer_name(i) for i in range(issuers)]
    config = common.mirror_config(directory, upstream_url, names)
    started = time.monotonic()
    mirror = common.start_mirror(config)
    with common.running(mirror):
        admin = mirror.wait_json("listening", timeout_s=60)["admin"]
        if not common.wait_until(
            lambda: common.http("GET", f"{admin}/readyz")[0] == 200, 120, interval_s=0.02
        ):
            raise RuntimeError("mirror never became ready")
        # Ready means every first fetch attempt is done; the figure also needs them to succeed.
        not_servable = json.loads(common.http("GET", f"{admin}/readyz")[2])["not_servable"]
        if not_servable:
            raise RuntimeError(f"{len(not_servable)} issuers not servable once ready")
        ready_s = time.monotonic() - started
        pid = common.mirror_pid(mirror)
        ready_cpu = common.cpu_seconds(pid)
        rss_ready, _ = common.rss_mb(pid)
        time.sleep(0.5)  # let the startup's state settle (pending log writes, GC)
        unchanged_cpu, unchanged_wall, _ = cycle(pid, admin, "unchanged")
        common.http("POST", f"{upstream_url}/rotate")
        changed_cpu, changed_wall, _ = cycle(pid, admin, "changed")
        rss_end, hwm = common.rss_mb(pid)
    return {
        "ready_s": ready_s,
        "ready_cpu_s": ready_cpu,
        "rss_ready_mb": rss_ready,
        "rss_end_mb": rss_end,
        "rss_peak_mb": hwm,
        "unchanged_cpu_s": unchanged_cpu,
        "unchanged_wall_s": unchanged_wall,
        "changed_cpu_s": changed_cpu,
        "changed_wall_s": changed_wall,
    }


def run(*, issuers: int, rounds: int) -> dict[str, Any]:
    common.raise_fd_limit()
    info = common.banner(f"scale: {issuers} issuers against a local fake upstream")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        upstream, url = common.start_upstream(issuers)
        with common.running(upstream):
            for r in range(rounds):
                result = one_run(Path(tmp), url, issuers)
                runs.append(result)
                print(
                    f"   run {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()),
                    flush=True,
                )
    summary = {k: common.median([run[k] for run in runs]) for k in runs[0]}
    print("   median: " + ", ".join(f"{k} {v:.2f}" for k, v in summary.items()))
    return {"info": info, "issuers": issuers, "rounds": rounds, "median": summary, "runs": runs}


def rows(result: dict[str, Any], label: str) -> list[str]:
    info, m = result["info"], result["median"]
    return [
        f"| {info['date']} | {label} | `{info['commit']}` | {result['issuers']} "
        f"| {m['ready_s']:.2f} ({m['ready_cpu_s']:.2f} CPU) | {m['rss_ready_mb']:.0f} "
        f"/ {m['rss_peak_mb']:.0f} | **{m['unchanged_cpu_s']:.2f}** ({m['unchanged_wall_s']:.2f}) "
        f"| {m['changed_cpu_s']:.2f} ({m['changed_wall_s']:.2f}) | {result['rounds']} "
        f"| {common.setup_text(info)} | `{info['command']}` |"
    ]
