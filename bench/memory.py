"""Where the memory of one issuer goes: a tracemalloc breakdown per issuer.

    python bench/memory.py                  # 10,000 issuers
    python bench/memory.py --issuers 1000 --top 15

The mirror runs in this process (``server.start``, both ports, the real fetcher) against the
fake upstream of ``bench/upstream.py`` in its own process, so only the mirror's allocations
are traced. A snapshot is taken after the imports and one once every issuer is servable; the
difference, divided by the number of issuers, is the cost of one issuer. It is grouped two
ways:

* by the allocating module (the innermost frame: aiohttp, asyncio, prometheus_client, ours);
* by the line of jwks-mirror that caused it (the innermost frame inside ``jwks_mirror/``),
  which says which of our objects to make smaller.

tracemalloc counts Python allocations only (not the interpreter's own arenas' slack, nor
OpenSSL's); the resident memory of the process is printed next to it for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import logging
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.upstream import issuer_name
from jwks_mirror.core.config.loader import load_settings
from jwks_mirror.core.logs import log
from jwks_mirror.serving import server

_PACKAGE = "/jwks_mirror/"
_FRAMES = 25


def _module(filename: str) -> str:
    """A short name for the file an allocation happened in."""
    path = Path(filename)
    parts = path.parts
    for marker in ("site-packages", "jwks_mirror"):
        if marker in parts:
            index = parts.index(marker)
            tail = parts[index + 1 :] if marker == "site-packages" else parts[index:]
            return tail[0] if marker == "site-packages" and len(tail) > 1 else "/".join(tail)
    if "python3" in filename and "lib" in parts:
        return "stdlib:" + path.stem
    return path.name


def _our_line(traceback: tracemalloc.Traceback) -> str:
    """The innermost jwks_mirror frame (tracemalloc lists the oldest frame first)."""
    for frame in reversed(traceback):
        if _PACKAGE in frame.filename:  # by name: --load reads snapshots of other checkouts
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "(outside jwks_mirror)"


def breakdown(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, issuers: int, top: int
) -> dict[str, object]:
    """Per-issuer bytes by allocating module and by the jwks_mirror line responsible."""
    old: collections.Counter[tracemalloc.Traceback] = collections.Counter()
    for stat in before.statistics("traceback"):
        old[stat.traceback] += stat.size
    by_module: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[str] = collections.Counter()
    total = 0
    for stat in after.statistics("traceback"):
        size = stat.size - old.get(stat.traceback, 0)
        if size == 0:
            continue
        total += size
        by_module[_module(stat.traceback[-1].filename)] += size
        by_line[_our_line(stat.traceback)] += size
    return {
        "issuers": issuers,
        "per_issuer_bytes": total / issuers,
        "by_module": [(k, v / issuers) for k, v in by_module.most_common(top)],
        "by_line": [(k, v / issuers) for k, v in by_line.most_common(top)],
    }


async def _measure(config: Path, issuers: int, timeout_s: float) -> tuple[
    tracemalloc.Snapshot, tracemalloc.Snapshot, float, float
]:
    gc.collect()
    before = tracemalloc.take_snapshot()
    rss_before, _ = common.rss_mb(_pid())
    running = await server.start(load_settings(config))
    try:
        deadline = time.monotonic() + timeout_s
        while running.mirror.not_servable():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(running.mirror.not_servable())} issuers never servable")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # let the last fetches' connections and log lines settle
        gc.collect()
        after = tracemalloc.take_snapshot()
        rss_after, _ = common.rss_mb(_pid())
    finally:
        await running.stop()
    return before, after, rss_before, rss_after


def _run(issuers: int, timeout_s: float) -> tuple[
    tracemalloc.Snapshot, tracemalloc.Snapshot, float, float
]:
    common.raise_fd_limit()
    common.banner(f"memory: tracemalloc per issuer, {issuers} issuers")
    log.addHandler(logging.NullHandler())  # the fetch lines would only cost time here
    log.propagate = False
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        upstream, url = common.start_upstream(issuers)
        with common.running(upstream):
            names = [issuer_name(i) for i in range(issuers)]
            # tracemalloc slows everything several times: a fetch must not time out for it
            config = common.mirror_config(Path(tmp), url, names, timeout="120s")
            tracemalloc.start(_FRAMES)
            try:
                return asyncio.run(_measure(config, issuers, timeout_s))
            finally:
                tracemalloc.stop()


def _pid() -> int:
    import os

    return os.getpid()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--issuers", type=int, default=10_000)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to become ready")
    parser.add_argument("--save", type=Path, help="also dump both snapshots into this directory")
    parser.add_argument("--load", type=Path, help="analyse snapshots saved by --save; run nothing")
    args = parser.parse_args(argv)
    if args.load:
        before = tracemalloc.Snapshot.load(str(args.load / "before.snapshot"))
        after = tracemalloc.Snapshot.load(str(args.load / "after.snapshot"))
        rss_before = rss_after = float("nan")
    else:
        before, after, rss_before, rss_after = _run(args.issuers, args.timeout)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            before.dump(str(args.save / "before.snapshot"))
            after.dump(str(args.save / "after.snapshot"))
    result = breakdown(before, after, args.issuers, args.top)
    per_issuer = float(result["per_issuer_bytes"])  # type: ignore[arg-type]
    print(
        f"   traced: {per_issuer / 1000:.1f} kB per issuer "
        f"({per_issuer * args.issuers / 1e6:.1f} MB for {args.issuers}); "
        f"RSS {rss_before:.0f} -> {rss_after:.0f} MB "
        f"({(rss_after - rss_before) * 1e6 / args.issuers / 1000:.1f} kB per issuer, "
        "tracemalloc's own bookkeeping included)"
    )
    for title, key in (("allocating module", "by_module"), ("jwks_mirror line", "by_line")):
        print(f"   per issuer, by {title}:")
        for name, size in result[key]:  # type: ignore[attr-defined]
            print(f"   {size / 1000:8.2f} kB  {100 * size / per_issuer:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
