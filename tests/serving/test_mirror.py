"""Scheduling, single-flight, isolation, retention, persistence and reload of a running mirror."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from jwks_mirror.serving.refreshing import backoff_bound_s
from jwks_mirror.serving.server import ConfigWatcher

from ..conftest import Clock, config_text, gated, hang, jwks, until


async def fetch_public(running, name: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{running.public_url}/{name}/jwks.json") as response,
    ):
        return response.status, await response.read()


async def test_concurrent_refreshes_share_one_fetch(fake_issuer, mirror_factory):
    gate = asyncio.Event()
    issuer = await fake_issuer(behaviour=gated(gate))
    running = await mirror_factory(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    callers = [asyncio.create_task(running.mirror.refresh(["a"])) for _ in range(10)]
    # The callers join before the fetch they started reaches the upstream, where it waits.
    await until(lambda: issuer.requests, what="the fetch to reach the upstream")
    gate.set()
    results = await asyncio.gather(*callers)
    assert len(issuer.requests) == 1  # the scheduled first fetch, joined by all ten callers
    assert {r[0].outcome for r in results} == {"changed"}


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(fake_issuer, mirror_factory):
    gate = asyncio.Event()
    issuer = await fake_issuer(behaviour=gated(gate))
    running = await mirror_factory(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    impatient = asyncio.create_task(running.mirror.refresh(["a"]))
    await until(lambda: issuer.requests, what="the shared fetch to reach the upstream")
    assert not impatient.done()
    impatient.cancel()
    gate.set()
    (outcome,) = await running.mirror.refresh(["a"])
    assert outcome.outcome in {"changed", "unchanged"}
    assert running.mirror.issuers["a"].state.published is not None


async def test_backoff_grows_exponentially_with_jitter_and_caps(mirror_factory, refused_url):
    clock = Clock()
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {refused_url}\n    refresh_interval: 20s\n"),
        clock=clock,
        rng=random.Random(7),
        backoff_base_s=1.0,
    )
    health = running.mirror.issuers["a"].health
    steps = []
    for _ in range(7):
        await running.mirror.refresh(["a"])
        steps.append((health.consecutive_failures, health.next_refresh - clock.now))
    # Each refresh is one more consecutive failure (the background task may have added the
    # first), and the n-th waits backoff_bound_s(n) x [0.5, 1.0]: 1, 2, 4, 8, 16, then 20.
    counts = [n for n, _ in steps]
    assert counts == list(range(counts[0], counts[0] + 7))
    for n, delay in steps:
        bound = backoff_bound_s(n, base_s=1.0, cap_s=20.0)
        assert bound == min(20.0, 2.0 ** (n - 1))
        assert 0.5 * bound <= delay <= bound, (n, delay, bound)


async def test_success_schedules_the_next_fetch_with_jitter(fake_issuer, mirror_factory):
    issuer = await fake_issuer()
    running = await mirror_factory(
        config_text(
            "".join(f"  - name: i{n}\n    jwks_uri: {issuer.url}\n    refresh_interval: 100s\n" for n in range(20))
        )
    )
    await running.mirror.refresh()
    now = time.time()
    delays = [i.health.next_refresh - now for i in running.mirror.issuers.values()]
    assert all(88 <= d <= 111 for d in delays)
    assert max(delays) - min(delays) > 2  # not in lockstep


async def test_a_hanging_issuer_never_delays_another(fake_issuer, mirror_factory):
    healthy = await fake_issuer()
    stuck = await fake_issuer()
    stuck.behaviour = hang(stuck)
    running = await mirror_factory(
        config_text(
            f"  - name: stuck\n    jwks_uri: {stuck.url}\n    timeout: 5m\n"
            f"  - name: healthy\n    jwks_uri: {healthy.url}\n"
        )
    )
    stuck_state = running.mirror.issuers["stuck"].state
    stuck_fetch = asyncio.create_task(running.mirror.refresh(["stuck"]))
    await until(lambda: stuck.requests, what="the stuck fetch to reach its upstream")
    (outcome,) = await running.mirror.refresh(["healthy"])
    assert outcome.outcome in {"changed", "unchanged"}
    for _ in range(20):
        status, _ = await fetch_public(running, "healthy")
        assert status == 200
    # All of that happened while the stuck fetch was still in flight: it ends only when its
    # upstream is released (its timeout is five minutes), so no clock is needed to show it.
    assert not stuck_fetch.done()
    assert stuck_state.published is None and running.mirror.issuers["stuck"].health.consecutive_failures == 0
    stuck.released.set()
    (stuck_outcome,) = await stuck_fetch
    assert stuck_outcome.outcome == "failed"


async def test_retained_keys_expire_on_schedule_without_a_fetch(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("old"))
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n    retain_removed_keys: 500ms\n")
    )
    await running.mirror.refresh()
    issuer.document = jwks("new")
    (outcome,) = await running.mirror.refresh()
    assert outcome.kids == ("new", "old")
    requests_before = len(issuer.requests)
    await until(lambda: not running.mirror.issuers["a"].state.retained, what="the retention to end")
    _, body = await fetch_public(running, "a")
    assert [k["kid"] for k in json.loads(body)["keys"]] == ["new"]
    assert len(issuer.requests) == requests_before


async def test_unchanged_bytes_skip_revalidation_and_304_keeps_the_set(fake_issuer, mirror_factory):
    issuer = await fake_issuer(etag='"e1"')
    running = await mirror_factory(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    (first,) = await running.mirror.refresh()
    (second,) = await running.mirror.refresh()
    assert second.outcome == "unchanged"
    assert issuer.requests[-1].headers["If-None-Match"] == '"e1"'
    issuer.etag = None
    (third,) = await running.mirror.refresh()
    assert third.outcome == "unchanged"
    assert first.kids == third.kids == ("k1",)


async def test_restart_during_an_outage_serves_the_persisted_set(fake_issuer, mirror_factory, tmp_path: Path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    issuer = await fake_issuer(document=jwks("k1", "k2"))
    config = config_text(
        f"  - name: a\n    jwks_uri: {issuer.url}\n", extra=f"state_dir: {state_dir}\n"
    )
    first = await mirror_factory(config)
    await first.mirror.refresh()
    _, served_before = await fetch_public(first, "a")
    await first.stop()
    assert (state_dir / "a.json").exists()
    assert not [p for p in state_dir.iterdir() if p.name.endswith(".tmp")]
    await issuer.stop()

    second = await mirror_factory(config)
    status, served_after = await fetch_public(second, "a")  # before any fetch could succeed
    assert status == 200 and served_after == served_before
    (outcome,) = await second.mirror.refresh()
    assert outcome.outcome == "failed"
    assert (await fetch_public(second, "a"))[1] == served_before


async def test_persisted_set_older_than_max_stale_is_not_served(fake_issuer, mirror_factory, tmp_path: Path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    issuer = await fake_issuer()
    config = config_text(
        f"  - name: a\n    jwks_uri: {issuer.url}\n    max_stale: 1h\n", extra=f"state_dir: {state_dir}\n"
    )
    clock = Clock()
    first = await mirror_factory(config, clock=clock)
    await first.mirror.refresh()
    await first.stop()
    await issuer.stop()
    clock.advance(3601)
    second = await mirror_factory(config, clock=clock)
    assert (await fetch_public(second, "a"))[0] == 503


async def test_corrupt_state_file_is_ignored_never_served(mirror_factory, tmp_path: Path, refused_url):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "a.json").write_text('{"format": 1, "keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {refused_url}\n", extra=f"state_dir: {state_dir}\n")
    )
    assert (await fetch_public(running, "a"))[0] == 503


async def test_reload_adds_removes_and_keeps_unchanged_issuers(fake_issuer, mirror_factory, tmp_path: Path):
    one = await fake_issuer(document=jwks("k1"))
    two = await fake_issuer(document=jwks("k2"))
    path = tmp_path / "config.yaml"
    path.write_text(config_text(f"  - name: one\n    jwks_uri: {one.url}\n  - name: two\n    jwks_uri: {two.url}\n"))
    from jwks_mirror.core.config.loader import load_settings

    running = await mirror_factory(load_settings(path))
    await running.mirror.refresh()
    kept_state = running.mirror.issuers["one"].state
    requests_to_one = len(one.requests)
    watcher = ConfigWatcher(running.mirror, str(path))

    three = await fake_issuer(document=jwks("k3"))
    path.write_text(config_text(f"  - name: one\n    jwks_uri: {one.url}\n  - name: three\n    jwks_uri: {three.url}\n"))
    await watcher.reload()
    assert set(running.mirror.issuers) == {"one", "three"}
    assert running.mirror.issuers["one"].state is kept_state
    assert (await fetch_public(running, "one"))[0] == 200
    assert (await fetch_public(running, "two"))[0] == 404
    await running.mirror.refresh(["three"])
    assert (await fetch_public(running, "three"))[0] == 200
    assert len(one.requests) == requests_to_one  # unchanged issuer was not refetched

    path.write_text("issuers: [{name: Bad_Name, jwks_uri: x}]\n")
    await watcher.reload()
    assert set(running.mirror.issuers) == {"one", "three"}
    _, _, metrics = await _admin(running, "/metrics")
    assert 'jwks_mirror_config_reloads_total{outcome="failure"} 1.0' in metrics.decode()
    assert 'jwks_mirror_config_reloads_total{outcome="success"} 1.0' in metrics.decode()


async def test_config_file_change_is_noticed_by_polling(fake_issuer, mirror_factory, tmp_path: Path):
    one = await fake_issuer()
    path = tmp_path / "config.yaml"
    path.write_text(config_text(f"  - name: one\n    jwks_uri: {one.url}\n"))
    from jwks_mirror.core.config.loader import load_settings

    running = await mirror_factory(load_settings(path))
    watcher = ConfigWatcher(running.mirror, str(path))
    task = asyncio.create_task(watcher.run(0.05))
    try:
        path.write_text(config_text(f"  - name: renamed\n    jwks_uri: {one.url}\n"))
        await until(lambda: "renamed" in running.mirror.issuers, what="the reload")
        assert set(running.mirror.issuers) == {"renamed"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _admin(running, path: str):
    async with aiohttp.ClientSession() as session, session.get(f"{running.admin_url}{path}") as response:
        return response.status, response.headers, await response.read()


def persist_error_counted(running):
    async def counted() -> bool:
        _, _, metrics = await _admin(running, "/metrics")
        return 'jwks_mirror_persist_errors_total{issuer="a"}' in metrics.decode()

    return counted


async def test_unwritable_state_dir_is_reported_and_serving_continues(fake_issuer, mirror_factory, tmp_path: Path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n", extra=f"state_dir: {state_dir}\n")
    )
    await running.mirror.refresh()
    state_dir.rename(tmp_path / "gone")  # the volume went away under the running mirror
    issuer.document = jwks("k2")
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome == "changed"
    await until(persist_error_counted(running), what="the persist error to be counted")
    status, body = await fetch_public(running, "a")
    assert status == 200 and [k["kid"] for k in json.loads(body)["keys"]] == ["k1", "k2"]
    assert (await _admin(running, "/readyz"))[0] == 200


@pytest.mark.slow
async def test_a_flapping_issuer_backs_off_without_growing_tasks(fake_issuer, mirror_factory):
    """Every other answer is a 503: bounded fetches, bounded tasks, failures in metrics."""
    issuer = await fake_issuer(document=jwks("k1"))

    async def flapping(request: web.Request) -> web.StreamResponse:
        if len(issuer.requests) % 2 == 0:
            return web.Response(status=503)
        return web.json_response(jwks("k1"))

    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n    refresh_interval: 1s\n"),
        backoff_base_s=0.02,
    )
    await running.mirror.refresh()
    issuer.behaviour = flapping
    tasks_before = len(asyncio.all_tasks())
    first = len(issuer.requests)
    started = time.monotonic()
    await until(lambda: len(issuer.requests) >= first + 5, what="five more fetches")
    elapsed = time.monotonic() - started
    tasks_after = len(asyncio.all_tasks())
    assert tasks_after <= tasks_before + 2, (tasks_before, tasks_after)
    # A success schedules the next fetch 0.9-1.1 s later and a failure retries after 10-20 ms,
    # so in `elapsed` seconds there are at most elapsed/0.9 + 1 successes, each followed by at
    # most one failure: never a hot loop. A loaded machine only makes the count smaller.
    fetched = len(issuer.requests) - first
    assert fetched <= 2 * (elapsed / 0.9 + 1) + 1, (fetched, elapsed)
    state = running.mirror.issuers["a"].state
    assert state.published is not None and state.servable(time.time())
    _, _, metrics = await _admin(running, "/metrics")
    text = metrics.decode()
    failures = [line for line in text.splitlines() if line.startswith('jwks_mirror_fetch_errors_total{issuer="a",reason="status"}')]
    assert failures and float(failures[0].split()[-1]) >= 1


@pytest.fixture
def full_directory(tmp_path: Path):
    """A directory on a tiny tmpfs filled to the last byte (needs root; CI runs as root)."""
    import subprocess

    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True, check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        fd = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: full, as wanted
        finally:
            os.close(fd)
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_full_state_dir_is_reported_and_serving_continues(fake_issuer, mirror_factory, full_directory: Path):
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n", extra=f"state_dir: {full_directory}\n")
    )
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome in {"changed", "unchanged"}
    await until(persist_error_counted(running), what="the full disk to be counted")
    assert not [p for p in full_directory.iterdir() if p.name != "filler"]  # no temp file left
    status, body = await fetch_public(running, "a")
    assert status == 200 and [k["kid"] for k in json.loads(body)["keys"]] == ["k1"]


async def test_first_fetches_are_spread_over_a_second(fake_issuer, mirror_factory):
    """Many issuers starting together do not hit their upstreams in the same instant."""
    issuer = await fake_issuer()
    clock = Clock()
    start = clock.now
    running = await mirror_factory(
        config_text("".join(f"  - name: i{n}\n    jwks_uri: {issuer.url}?n={n}\n" for n in range(30))),
        clock=clock,
        rng=random.Random(3),
    )
    healths = [i.health for i in running.mirror.issuers.values()]
    await until(lambda: all(h.next_refresh > 0 for h in healths), what="every first fetch to be scheduled")
    firsts = [h.next_refresh - start for h in healths]
    assert all(0 <= d <= 1.0 for d in firsts), firsts  # within a second (5 % of 60 s is 3 s)
    assert max(firsts) - min(firsts) > 0.3, firsts  # spread, not lockstep
    assert not issuer.requests  # the clock has not reached any of them
    clock.advance(1.0)
    await until(lambda: not running.mirror.not_servable(), what="every issuer to be fetched")
    assert len(issuer.requests) == 30


async def test_unchanged_sets_are_written_only_as_often_as_max_stale_needs(fake_issuer, mirror_factory, tmp_path: Path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    issuer = await fake_issuer(etag='"e1"')
    clock = Clock()
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n    max_stale: 10h\n", extra=f"state_dir: {state_dir}\n"),
        clock=clock,
    )
    path = state_dir / "a.json"

    async def persisted_success() -> float | None:
        # The write runs in a thread after the refresh returns: wait for it (and any write
        # queued before it) to finish, as shutdown does.
        await running.mirror.writes_done()
        return json.loads(path.read_text())["last_success"] if path.exists() else None

    await running.mirror.refresh()
    first = clock.now
    assert await persisted_success() == first
    clock.advance(1800)  # 30 min: under a tenth of max_stale (1 h), nothing changed
    (outcome,) = await running.mirror.refresh()
    assert outcome.outcome == "unchanged"
    assert await persisted_success() == first
    clock.advance(1800)  # 1 h since the last write: a tenth of max_stale has passed
    await running.mirror.refresh()
    assert await persisted_success() == first + 3600
