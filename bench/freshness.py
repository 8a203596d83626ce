"""Benchmark 5, freshness: what a shorter ``refresh_interval`` costs, in steady state.

For each size N and interval T: a fresh ``jwks-mirror serve`` process (core 0) with N issuers
and ``refresh_interval: T`` on the fake upstream of ``bench/upstream.py`` (core 1). The first
fetch of each issuer is a 200; every later one is a conditional request the upstream answers
304, as with an IdP whose keys did not change. Each issuer's second fetch comes
T x uniform(0.9, 1.1) after its first (refreshing.py), so one run shows two phases, told apart
by the upstream's own request counter (polled every 0.25 s):

* idle: from ready (+1 s) until the first 304: no fetch is due; the mirror's CPU per minute
  when it only waits (timers, GC);
* cycle: from the first 304 until the N-th (+0.5 s for the last log lines): every issuer
  fetched once more; its CPU less the idle rate over its wall time, divided by N, is the CPU
  one scheduled 304 fetch costs (request, JSON log line, state update).

Steady state at interval T' is then ``idle per minute + per-fetch CPU x N x 60 / T'`` mirror
CPU seconds per minute, and ``N / T'`` requests per second to the upstream (the jitter averages
to 1). The per-fetch cost does not depend on T, which two measured intervals check; intervals
too long to wait for (5 minutes) are computed from the shorter runs' per-fetch cost.

CPU is user+system from ``/proc/<pid>/stat`` (10 ms ticks); the machine may be shared, so
compare figures measured in one run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.upstream import issuer_name

POLL_S = 0.25
SETTLE_S = 1.0
TAIL_S = 0.5


def _upstream_304s(url: str) -> int:
    return int(json.loads(common.http("GET", f"{url}/stats")[2])["requests"]["304"])


def one_run(directory: Path, upstream_url: str, issuers: int, interval: str) -> dict[str, Any]:
    interval_s = _seconds(interval)
    names = [issuer_name(i) for i in range(issuers)]
    config = common.mirror_config(directory, upstream_url, names, refresh_interval=interval)
    base = _upstream_304s(upstream_url)
    started = time.monotonic()
    mirror = common.start_mirror(config)
    with common.running(mirror):
        admin = mirror.wait_json("listening", timeout_s=300)["admin"]
        if not common.wait_until(
            lambda: common.http("GET", f"{admin}/readyz")[0] == 200, 300, interval_s=0.1
        ):
            raise RuntimeError("mirror never became ready")
        ready_s = time.monotonic() - started
        pid = common.mirror_pid(mirror)
        time.sleep(SETTLE_S)
        idle_cpu0, idle_wall0 = common.cpu_seconds(pid), time.monotonic()
        idle_cpu1, idle_wall1 = idle_cpu0, idle_wall0
        deadline = started + 1.1 * interval_s + 120
        while _upstream_304s(upstream_url) == base:
            idle_cpu1, idle_wall1 = common.cpu_seconds(pid), time.monotonic()
            if idle_wall1 > deadline:
                raise RuntimeError("no scheduled fetch came")
            time.sleep(POLL_S)
        while (seen := _upstream_304s(upstream_url) - base) < issuers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {seen} of {issuers} scheduled fetches came")
            time.sleep(POLL_S)
        time.sleep(TAIL_S)
        cycle_cpu1, cycle_wall1 = common.cpu_seconds(pid), time.monotonic()
        extra = _upstream_304s(upstream_url) - base - issuers  # a third fetch: should be 0
    idle_wall = idle_wall1 - idle_wall0
    if idle_wall < 5:
        raise RuntimeError(f"only {idle_wall:.1f} s idle before the cycle: use a longer interval")
    idle_per_s = (idle_cpu1 - idle_cpu0) / idle_wall
    cycle_wall = cycle_wall1 - idle_wall1
    cycle_cpu = cycle_cpu1 - idle_cpu1
    per_fetch = max(0.0, cycle_cpu - idle_per_s * cycle_wall) / issuers
    return {
        "interval": interval,
        "interval_s": interval_s,
        "ready_s": ready_s,
        "idle_wall_s": idle_wall,
        "idle_cpu_per_min": idle_per_s * 60,
        "cycle_wall_s": cycle_wall,
        "cycle_cpu_s": cycle_cpu,
        "cycle_304s": issuers + extra,
        "per_fetch_ms": per_fetch * 1000,
    }


def steady(
    issuers: int, idle_cpu_per_min: float, per_fetch_ms: float, interval_s: float
) -> dict[str, float]:
    return {
        "cpu_s_per_min": idle_cpu_per_min + per_fetch_ms / 1000 * issuers * 60 / interval_s,
        "upstream_rps": issuers / interval_s,
    }


def run(
    *, sizes: tuple[int, ...], intervals: tuple[str, ...], report: tuple[str, ...]
) -> dict[str, Any]:
    common.raise_fd_limit()
    info = common.banner(
        f"freshness: steady-state cost of refresh_interval {', '.join(report)} at "
        f"{', '.join(str(s) for s in sizes)} issuers (304s)"
    )
    out: dict[str, Any] = {"info": info, "sizes": {}}
    for issuers in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp:
            upstream, url = common.start_upstream(issuers)
            with common.running(upstream):
                runs = []
                for interval in intervals:
                    result = one_run(Path(tmp), url, issuers, interval)
                    runs.append(result)
                    print(
                        f"   {issuers} issuers, refresh_interval {interval}: ready "
                        f"{result['ready_s']:.1f} s; idle "
                        f"{result['idle_cpu_per_min']:.3f} CPU-s/min over "
                        f"{result['idle_wall_s']:.0f} s; cycle of {result['cycle_304s']} 304s "
                        f"in {result['cycle_wall_s']:.1f} s, {result['cycle_cpu_s']:.2f} CPU-s, "
                        f"{result['per_fetch_ms']:.3f} ms per fetch",
                        flush=True,
                    )
        idle = common.median([r["idle_cpu_per_min"] for r in runs])
        per_fetch = common.median([r["per_fetch_ms"] for r in runs])
        table = {t: steady(issuers, idle, per_fetch, _seconds(t)) for t in report}
        for t, row in table.items():
            print(
                f"   {issuers} issuers at {t}: {row['cpu_s_per_min']:.2f} mirror CPU-s per minute "
                f"({row['cpu_s_per_min'] / 60 * 100:.1f} % of a core), "
                f"{row['upstream_rps']:.1f} requests/s upstream"
            )
        out["sizes"][str(issuers)] = {
            "runs": runs,
            "idle_cpu_per_min": idle,
            "per_fetch_ms": per_fetch,
            "steady": table,
        }
    return out


def rows(out: dict[str, Any], label: str) -> list[str]:
    info = out["info"]
    lines = []
    for issuers, size in out["sizes"].items():
        cells = " / ".join(
            f"{t}: **{row['cpu_s_per_min']:.2f}** ({row['upstream_rps']:.0f} rps)"
            for t, row in size["steady"].items()
        )
        measured = ", ".join(
            f"{r['interval']}: {r['per_fetch_ms']:.3f} ms x {r['cycle_304s']}"
            for r in size["runs"]
        )
        lines.append(
            f"| {info['date']} | {label} | `{info['commit']}` | {issuers} "
            f"| {size['idle_cpu_per_min']:.3f} | {measured} | {cells} "
            f"| {common.setup_text(info)} | `{info['command']}` |"
        )
    return lines


def _seconds(duration: str) -> float:
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    return float(duration[:-1]) * units[duration[-1]]
