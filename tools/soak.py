"""Soak test: a real ``jwks-mirror serve`` under steady load, refreshes and key rotations.

    python tools/soak.py --duration 300 [--issuers 20] [--concurrency 32] [--json OUT]

It starts a fake upstream (rotating each issuer's key every ``--rotate-every`` seconds), the
mirror as a subprocess, and a bounded-rate load of GETs over loopback, plus ``POST /refresh``
every few seconds. It reports request count, errors (anything but 200/304), p50/p99 latency,
and the mirror's resident memory sampled over time (first and last quarter compared), and
exits 1 if there was any error. Everything stays on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from jwcrypto import jwk


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Upstream:
    """N issuers; each rotates to a new key (keeping the previous one) on a timer."""

    def __init__(self, issuers: int) -> None:
        self.pool = [
            json.loads(jwk.JWK.generate(kty="EC", crv="P-256", kid=f"k{i}").export_public())
            for i in range(8)
        ]
        self.generation = [0] * issuers
        self.down = False  # --flap-every toggles this: every issuer answers 503 while down

    def rotate(self) -> None:
        for index in range(len(self.generation)):
            self.generation[index] += 1

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, text="flapping\n")
        index = int(request.match_info["index"])
        generation = self.generation[index]
        keys = [self.pool[(generation + i) % len(self.pool)] for i in (0, 1)]
        etag = f'"{index}-{generation}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.json_response({"keys": keys}, headers={"ETag": etag})


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    upstream = Upstream(args.issuers)
    app = web.Application()
    app.router.add_get("/{index}/jwks.json", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream_port = runner.addresses[0][1]
    with tempfile.TemporaryDirectory(prefix="jwks-mirror-soak-") as tmp:
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        issuers = "".join(
            f"  - name: i{n}\n    jwks_uri: http://127.0.0.1:{upstream_port}/{n}/jwks.json\n"
            for n in range(args.issuers)
        )
        config = Path(tmp) / "config.yaml"
        config.write_text(
            "public: {host: 127.0.0.1, port: 0}\nadmin: {host: 127.0.0.1, port: 0}\n"
            f"state_dir: {state_dir}\n"
            "defaults: {refresh_interval: 2s, retain_removed_keys: 3s}\n"
            f"issuers:\n{issuers}"
        )
        process = subprocess.Popen(  # noqa: ASYNC220, S603 - our own command, started once
            [sys.executable, "-m", "jwks_mirror", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            listening = {}
            while not listening:
                line = await asyncio.to_thread(process.stdout.readline)
                if not line:
                    raise RuntimeError("mirror exited during start")
                record = json.loads(line)
                if record.get("event") == "listening":
                    listening = record
            drain = asyncio.create_task(asyncio.to_thread(_drain, process.stdout))
            result = await _load(args, process.pid, listening, upstream)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(process.wait, 30)
        result["exit_code"] = code
        await drain
    await runner.cleanup()
    return result


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


async def _load(
    args: argparse.Namespace, pid: int, listening: dict[str, Any], upstream: Upstream
) -> dict[str, Any]:
    public, admin = listening["public"], listening["admin"]
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            async with session.get(f"{admin}/readyz") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.1)
        latencies: list[float] = []
        errors: dict[str, int] = {}
        etags: dict[str, str] = {}
        rss: list[tuple[float, int]] = []
        started = time.monotonic()
        end = started + args.duration
        rng = random.Random(1)  # noqa: S311 - load pattern, not security

        async def worker() -> None:
            while time.monotonic() < end:
                name = f"i{rng.randrange(args.issuers)}"
                headers = {}
                if rng.random() < 0.5 and name in etags:
                    headers["If-None-Match"] = etags[name]
                t0 = time.perf_counter()
                try:
                    url = f"{public}/{name}/jwks.json"
                    async with session.get(url, headers=headers) as response:
                        await response.read()
                        status = response.status
                        if status == 200:
                            etags[name] = response.headers["ETag"]
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = type(exc).__name__  # type: ignore[assignment]
                latencies.append(time.perf_counter() - t0)
                if status not in (200, 304):
                    errors[str(status)] = errors.get(str(status), 0) + 1
                if args.rate:
                    await asyncio.sleep(args.concurrency / args.rate)

        async def operator() -> None:
            next_rotation = started + args.rotate_every
            while time.monotonic() < end:
                await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
                rss.append((time.monotonic() - started, _rss_kib(pid)))
                if time.monotonic() >= next_rotation:
                    upstream.rotate()
                    next_rotation += args.rotate_every
                    async with session.post(f"{admin}/refresh") as response:
                        # While flapping a refresh may meet a 503 upstream: that is the
                        # point of the exercise, not an error of the mirror.
                        if response.status != 200 and not args.flap_every:
                            key = f"refresh {response.status}"
                            errors[key] = errors.get(key, 0) + 1

        async def flapper() -> None:
            while args.flap_every and time.monotonic() < end:
                await asyncio.sleep(args.flap_every)
                upstream.down = not upstream.down
            upstream.down = False

        await asyncio.gather(operator(), flapper(), *(worker() for _ in range(args.concurrency)))
        elapsed = time.monotonic() - started
        async with session.get(f"{admin}/metrics") as response:
            metrics = _metric_sums(await response.text())
    latencies.sort()
    quarter = max(1, len(rss) // 4)
    return {
        "duration_s": round(elapsed, 1),
        "issuers": args.issuers,
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 2) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
        "rss_kib_first_quarter": int(statistics.mean(r for _, r in rss[:quarter])) if rss else None,
        "rss_kib_last_quarter": int(statistics.mean(r for _, r in rss[-quarter:])) if rss else None,
        "rss_kib_max": max((r for _, r in rss), default=None),
        "rotations": upstream.generation[0],
        "flap_every_s": args.flap_every,
        "fetches": metrics,
    }


def _metric_sums(text: str) -> dict[str, float]:
    """Totals over all issuers of the fetch counters, and the worst consecutive failures."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        family = name.split("{", 1)[0]
        if family == "jwks_mirror_fetch_total":
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0]
            sums[outcome] = sums.get(outcome, 0.0) + float(value)
        elif family == "jwks_mirror_consecutive_failures":
            sums["max_consecutive_failures"] = max(
                sums.get("max_consecutive_failures", 0.0), float(value)
            )
    return sums


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    parser.add_argument("--issuers", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0, help="cap requests/s (0: no cap)")
    parser.add_argument("--rotate-every", type=float, default=10.0, help="seconds per rotation")
    parser.add_argument(
        "--flap-every", type=float, default=0.0, help="toggle the upstream up/down (seconds)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if not result["errors"] and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
