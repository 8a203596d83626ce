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

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import common
from bench.upstream import issuer_name


def cycle(pid: int, admin: str, expect: str, *, tolerate: bool = False) -> tuple[float, float, int]:
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


@contextlib.contextmanager
def ready_and_cycled(
    directory: Path,
    upstream_url: str,
    issuers: int,
    *,
    poll_s: float = 0.02,
    ready_timeout_s: float = 120,
    settle_s: float = 0.5,
    tolerate: bool = False,
    package_dir: Path | None = None,
) -> Iterator[tuple[dict[str, Any], int, dict[str, Any]]]:
    """Spawn a mirror over ``issuers`` fake issuers, time it to ready (every issuer servable),
    then run an unchanged and a changed refresh cycle. Yields ``(listening, pid, figures)``
    while the mirror still runs, so a caller can measure more before it stops.

    ``poll_s``: each ``/readyz`` lists every issuer not yet ready, so with many issuers the
    polling itself costs the mirror CPU (3.3 ms a poll at 10,000) and should be slower.
    ``package_dir``: run the package found there (a baseline) instead of this tree's."""
    names = [issuer_name(i) for i in range(issuers)]
    config = common.mirror_config(directory, upstream_url, names)
    started = time.monotonic()
    mirror = common.start_mirror(config, package_dir=package_dir)
    with common.running(mirror):
        listening = mirror.wait_json("listening", timeout_s=ready_timeout_s)
        admin = listening["admin"]
        if not common.wait_until(
            lambda: common.http("GET", f"{admin}/readyz")[0] == 200,
            ready_timeout_s,
            interval_s=poll_s,
        ):
            raise RuntimeError("mirror never became ready")
        ready_s = time.monotonic() - started
        # Ready means every first fetch attempt is done; the figure also needs them to succeed.
        not_servable = json.loads(common.http("GET", f"{admin}/readyz")[2])["not_servable"]
        if not_servable:
            raise RuntimeError(f"{len(not_servable)} issuers not servable once ready")
        pid = common.mirror_pid(mirror)
        figures: dict[str, Any] = {
            "ready_s": ready_s,
            "ready_cpu_s": common.cpu_seconds(pid),
            "rss_ready_mb": common.rss_mb(pid)[0],
        }
        time.sleep(settle_s)  # let the startup's stragglers (log writes, GC) settle
        for name, expect in (("unchanged", "unchanged"), ("changed", "changed")):
            if expect == "changed":
                common.http("POST", f"{upstream_url}/rotate")
            cpu, wall, failed = cycle(pid, admin, expect, tolerate=tolerate)
            figures |= {f"{name}_cpu_s": cpu, f"{name}_wall_s": wall, f"{name}_failed": failed}
        yield listening, pid, figures
        figures["rss_end_mb"], figures["rss_peak_mb"] = common.rss_mb(pid)


def one_run(
    directory: Path, upstream_url: str, issuers: int, package_dir: Path | None = None
) -> dict[str, Any]:
    # /readyz polled every 100 ms above 1,000 issuers (a poll lists every issuer not ready)
    poll_s = 0.1 if issuers > 1000 else 0.02
    with ready_and_cycled(
        directory, upstream_url, issuers, poll_s=poll_s, ready_timeout_s=300,
        package_dir=package_dir,
    ) as (_, _, figures):
        pass
    return figures


def run(*, issuers: int, rounds: int) -> dict[str, Any]:
    """``rounds`` fresh mirrors; with ``common.BASELINE`` each round also runs the baseline
    package right after this tree's, on the same upstream, so both see the same machine."""
    common.raise_fd_limit()
    info = common.banner(f"scale: {issuers} issuers against a local fake upstream")
    sides: dict[str, Path | None] = {"mirror": None}
    if common.BASELINE is not None:
        sides["baseline"] = common.BASELINE
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        upstream, url = common.start_upstream(issuers)
        with common.running(upstream):
            for r in range(rounds):
                for side, package in sides.items():
                    directory = Path(tmp) / f"{side}-{r}"
                    directory.mkdir()
                    result = one_run(directory, url, issuers, package)
                    runs[side].append(result)
                    print(
                        f"   run {r + 1} {side}: "
                        + ", ".join(f"{k} {v:.2f}" for k, v in result.items()),
                        flush=True,
                    )
    medians = {
        side: {k: common.median([x[k] for x in rs]) for k in rs[0]} for side, rs in runs.items()
    }
    for side, m in medians.items():
        print(f"   median {side}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    out = {"info": info, "issuers": issuers, "rounds": rounds, "median": medians["mirror"],
           "runs": runs["mirror"]}
    if "baseline" in medians:
        base = medians["baseline"]
        out["baseline"] = {"median": base, "runs": runs["baseline"]}
        out["ratio"] = {k: v / base[k] for k, v in medians["mirror"].items() if base[k]}
        compared = ("ready_cpu_s", "unchanged_cpu_s", "changed_cpu_s")
        ratios = ", ".join(f"{k} {out['ratio'][k]:.2f}" for k in compared)
        print(f"   this tree / baseline: {ratios}")
    return out


def rows(result: dict[str, Any], label: str) -> list[str]:
    """One row of medians; with a baseline, its row too (tagged with its own label), and the
    ratios this tree / baseline in this tree's label."""
    info = result["info"]
    sides = [(label, f"`{info['commit']}`", result["median"])]
    if "baseline" in result:
        ratio = result["ratio"]
        sides[0] = (
            f"{label} (this / baseline: ready CPU {ratio['ready_cpu_s']:.2f}, unchanged "
            f"{ratio['unchanged_cpu_s']:.2f}, changed {ratio['changed_cpu_s']:.2f})",
            sides[0][1], sides[0][2],
        )
        sides.append((common.BASELINE_LABEL, "baseline", result["baseline"]["median"]))
    return [
        f"| {info['date']} | {tag} | {commit} | {result['issuers']} "
        f"| {m['ready_s']:.2f} ({m['ready_cpu_s']:.2f} CPU) | {m['rss_ready_mb']:.0f} "
        f"/ {m['rss_peak_mb']:.0f} | **{m['unchanged_cpu_s']:.2f}** ({m['unchanged_wall_s']:.2f}) "
        f"| {m['changed_cpu_s']:.2f} ({m['changed_wall_s']:.2f}) | {result['rounds']} "
        f"| {common.setup_text(info)} | `{info['command']}` |"
        for tag, commit, m in sides
    ]
