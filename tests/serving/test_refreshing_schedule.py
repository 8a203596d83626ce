"""The refresh schedule follows the upstream's Cache-Control within its bounds.

Over real loopback upstreams (200 and 304 answers), through the running mirror, its /status,
and the shipped ``jwks-mirror serve`` process; the pure schedule functions with seeded draws.
"""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest
from aiohttp import web

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import Limits
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.serving.refreshing import (
    CACHE_MARGIN_S,
    CACHE_SPREAD_S,
    after_failure,
    after_success,
    backoff_bound_s,
    cache_bound,
)

from ..cli.test_cli import _wait_for_line, serve_process, write_config
from ..conftest import Clock, config_text, jwks


def caching(cache_control: str | None, *, age: str | None = None, etag: str | None = None):
    """An upstream answering with these caching headers, 304 to a matching If-None-Match."""

    async def behave(request: web.Request) -> web.StreamResponse:
        headers = {}
        if cache_control is not None:
            headers["Cache-Control"] = cache_control
        if age is not None:
            headers["Age"] = age
        if etag is not None:
            headers["ETag"] = etag
            if request.headers.get("If-None-Match") == etag:
                return web.Response(status=304, headers=headers)
        return web.json_response(jwks("k1"), headers=headers)

    return behave


def one_issuer(url: str, *, limits: str = "refresh_interval: 1h") -> str:
    return config_text(f"  - name: a\n    jwks_uri: {url}\n    {limits}\n")


async def scheduled(running, clock: Clock) -> tuple[float, str]:
    (outcome,) = await running.mirror.refresh(["a"])
    assert outcome.outcome != "failed", outcome.error
    health = running.mirror.issuers["a"].health
    return health.next_refresh - clock.now, health.next_refresh_reason


async def test_upstream_max_age_bounds_the_next_refresh(fake_issuer, mirror_factory):
    """The reported defect: max-age=7 with refresh_interval 1h was scheduled ~3,900 s later."""
    issuer = await fake_issuer(behaviour=caching("max-age=7"))
    clock = Clock()
    running = await mirror_factory(
        one_issuer(issuer.url, limits="refresh_interval: 1h\n    min_refresh_interval: 1s"),
        clock=clock,
    )
    delay, reason = await scheduled(running, clock)
    assert 7 + CACHE_MARGIN_S <= delay <= 7 + CACHE_MARGIN_S + CACHE_SPREAD_S
    assert reason == "cache-control"


async def test_a_shorter_max_age_stops_at_min_refresh_interval(fake_issuer, mirror_factory):
    issuer = await fake_issuer(behaviour=caching("max-age=7"))
    clock = Clock()
    running = await mirror_factory(one_issuer(issuer.url), clock=clock)  # default floor: 10 s
    delay, reason = await scheduled(running, clock)
    assert 10 <= delay <= 10 + CACHE_SPREAD_S
    assert reason == "min"


async def test_age_is_subtracted(fake_issuer, mirror_factory):
    issuer = await fake_issuer(behaviour=caching("public, max-age=100", age="40"))
    clock = Clock()
    running = await mirror_factory(one_issuer(issuer.url), clock=clock)
    delay, reason = await scheduled(running, clock)
    assert 60 + CACHE_MARGIN_S <= delay <= 60 + CACHE_MARGIN_S + CACHE_SPREAD_S
    assert reason == "cache-control"


async def test_a_304_carries_the_bound_too(fake_issuer, mirror_factory):
    issuer = await fake_issuer(behaviour=caching("max-age=30", etag='"v1"'))
    clock = Clock()
    running = await mirror_factory(one_issuer(issuer.url), clock=clock)
    await scheduled(running, clock)
    delay, reason = await scheduled(running, clock)
    assert issuer.requests[-1].headers.get("If-None-Match") == '"v1"'  # answered 304
    assert 30 + CACHE_MARGIN_S <= delay <= 30 + CACHE_MARGIN_S + CACHE_SPREAD_S
    assert reason == "cache-control"


@pytest.mark.parametrize(
    "cache_control",
    [None, "no-store", "no-cache, max-age=7", "max-age=0", "max-age=abc", "max-age=7, max-age=9"],
)
async def test_no_usable_max_age_leaves_the_interval(fake_issuer, mirror_factory, cache_control):
    issuer = await fake_issuer(behaviour=caching(cache_control))
    clock = Clock()
    running = await mirror_factory(one_issuer(issuer.url), clock=clock)
    delay, reason = await scheduled(running, clock)
    assert 0.9 * 3600 <= delay <= 1.1 * 3600
    assert reason == "interval"


async def test_a_longer_max_age_does_not_stretch_the_interval(fake_issuer, mirror_factory):
    issuer = await fake_issuer(behaviour=caching("max-age=86400"))
    clock = Clock()
    running = await mirror_factory(one_issuer(issuer.url, limits="refresh_interval: 60s"), clock=clock)
    delay, reason = await scheduled(running, clock)
    assert 54 <= delay <= 66
    assert reason == "interval"


async def test_issuers_told_the_same_instant_do_not_fetch_together(fake_issuer, mirror_factory):
    """Dex-like: max-age counts down to one rotation instant. Forty names behind it are all
    due after that instant, never before, and spread over the spread window."""
    clock = Clock()
    rotation_at = clock.now + 40.0

    async def countdown(request: web.Request) -> web.StreamResponse:
        left = int(rotation_at - clock.now)
        return web.json_response(jwks("k1"), headers={"Cache-Control": f"max-age={left}"})

    issuer = await fake_issuer(behaviour=countdown)
    issuers = "".join(
        f"  - name: i{n}\n    jwks_uri: {issuer.url}\n    refresh_interval: 5m\n" for n in range(40)
    )
    running = await mirror_factory(config_text(issuers), clock=clock, rng=random.Random(3))
    for step in range(4):  # the fetches happen at different times, as they would
        clock.advance(step)
        await running.mirror.refresh([f"i{n}" for n in range(step, 40, 4)])
    healths = [i.health for i in running.mirror.issuers.values()]
    due = sorted(h.next_refresh - rotation_at for h in healths)
    assert {h.next_refresh_reason for h in healths} == {"cache-control"}
    assert due[0] >= CACHE_MARGIN_S
    assert due[-1] <= CACHE_MARGIN_S + CACHE_SPREAD_S
    assert due[-1] - due[0] > CACHE_SPREAD_S / 2  # spread, not one instant
    assert len({round(d, 2) for d in due}) > 30


async def test_status_shows_why_the_next_refresh_is_when_it_is(fake_issuer, mirror_factory, refused_url):
    bounded = await fake_issuer(behaviour=caching("max-age=20"))
    plain = await fake_issuer()
    running = await mirror_factory(
        config_text(
            f"  - name: bounded\n    jwks_uri: {bounded.url}\n"
            f"  - name: plain\n    jwks_uri: {plain.url}\n"
            f"  - name: down\n    jwks_uri: {refused_url}\n"
        )
    )
    await running.mirror.refresh()
    async with aiohttp.ClientSession() as session, session.get(f"{running.admin_url}/status") as r:
        document = await r.json()
    reasons = {i["name"]: i["next_refresh_reason"] for i in document["issuers"]}
    assert reasons == {"bounded": "cache-control", "plain": "interval", "down": "backoff"}


@pytest.mark.slow
async def test_serve_process_schedules_by_the_upstreams_max_age(fake_issuer, tmp_path):
    """The shipped entrypoint, as the defect was reported: max-age=7, refresh_interval 1h."""
    issuer = await fake_issuer(behaviour=caching("max-age=7"))
    path = write_config(
        tmp_path, config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n    refresh_interval: 1h\n")
    )
    with serve_process(path) as process:
        fetched = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        assert fetched["outcome"] == "changed"
        assert fetched["next_refresh_in_s"] <= 10 + CACHE_SPREAD_S, fetched
        assert fetched["next_refresh_reason"] == "min"
        # And it does fetch again on that schedule, not an hour later.
        again = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        assert again["outcome"] == "unchanged"
        process.terminate()


# -- the pure schedule ------------------------------------------------------------------------


@pytest.mark.parametrize("fresh_for", [0.0, 3.0, 9.0, 30.0, 59.0, 120.0, None])
def test_after_success_bounds(fresh_for: float | None) -> None:
    limits = Limits(refresh_interval_s=60.0, min_refresh_interval_s=10.0)
    rng = random.Random(11)
    for _ in range(2000):
        due = after_success(limits, fresh_for_s=fresh_for, rng=rng)
        assert 10.0 <= due.delay_s <= 66.0
        if due.reason == "interval":
            assert due.delay_s >= 54.0
        elif due.reason == "min":
            assert fresh_for is not None and fresh_for + CACHE_MARGIN_S < 10.0
            assert due.delay_s <= 10.0 + CACHE_SPREAD_S
        else:
            assert due.reason == "cache-control" and fresh_for is not None
            assert fresh_for + CACHE_MARGIN_S <= due.delay_s <= fresh_for + CACHE_MARGIN_S + 4
    if fresh_for is None or fresh_for >= 66:
        assert after_success(limits, fresh_for_s=fresh_for, rng=rng).reason == "interval"


def test_the_spread_shrinks_with_a_short_interval() -> None:
    limits = Limits(refresh_interval_s=5.0)  # floor: min(10 s, 5 s)
    rng = random.Random(5)
    delays = [after_success(limits, fresh_for_s=1.0, rng=rng).delay_s for _ in range(500)]
    assert min(delays) >= 4.5 and max(delays) <= 5.5


def test_after_failure_is_backoff() -> None:
    limits = Limits(refresh_interval_s=20.0)
    due = after_failure(limits, failures=3, base_s=1.0, rng=random.Random(1))
    assert due.reason == "backoff" and 2.0 <= due.delay_s <= 4.0


# -- the setting ------------------------------------------------------------------------------


def test_min_refresh_interval_defaults_and_inherits() -> None:
    loaded = parse_settings(
        "defaults: {refresh_interval: 1m, min_refresh_interval: 20s}\n"
        "issuers:\n"
        "  - {name: a, jwks_uri: 'http://a/jwks.json'}\n"
        "  - {name: b, jwks_uri: 'http://b/jwks.json', min_refresh_interval: 5s}\n"
        "  - {name: c, jwks_uri: 'http://c/jwks.json', refresh_interval: 30s}\n"
    )
    floors = [i.limits.refresh_floor_s for i in loaded.issuers]
    assert floors == [20.0, 5.0, 20.0]
    assert Limits().refresh_floor_s == 10.0
    assert Limits(refresh_interval_s=2.0).refresh_floor_s == 2.0  # never above the interval
    short = parse_settings("defaults: {refresh_interval: 5s}\n")  # the default floor: no error
    assert Limits(refresh_interval_s=5.0) == parse_settings(
        "issuers: [{name: a, jwks_uri: 'http://a/j', refresh_interval: 5s}]"
    ).issuers[0].limits
    assert short.issuers == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "defaults: {refresh_interval: 1m, min_refresh_interval: 2m}",
            "defaults.min_refresh_interval: min_refresh_interval (120s) is longer than "
            "refresh_interval (60s)",
        ),
        (
            "defaults: {min_refresh_interval: 30s}\n"
            "issuers: [{name: a, jwks_uri: 'http://a/j', refresh_interval: 20s}]",
            "issuers[0].refresh_interval: min_refresh_interval (30s) is longer than "
            "refresh_interval (20s)",
        ),
        ("defaults: {min_refresh_interval: 0s}", "defaults.min_refresh_interval: must be at least 1s"),
    ],
)
def test_min_refresh_interval_is_validated(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text)
    assert str(info.value) == message


def test_check_config_refuses_a_floor_above_the_interval(tmp_path, capsys) -> None:
    from jwks_mirror.cli import main

    path = tmp_path / "config.yaml"
    path.write_text("defaults: {refresh_interval: 30s, min_refresh_interval: 1m}\n")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "min_refresh_interval" in err
    assert "Traceback" not in err


def test_backoff_steps_double_from_the_base_and_stop_at_the_cap() -> None:
    steps = [backoff_bound_s(n, base_s=1.0, cap_s=20.0) for n in range(1, 9)]
    assert steps == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0]
    assert backoff_bound_s(10_000, base_s=0.5, cap_s=3600.0) == 3600.0  # no overflow


def test_after_failure_jitters_each_step_down_to_half_its_bound() -> None:
    limits = Limits(refresh_interval_s=20.0, max_stale_s=3600.0)
    rng = random.Random(3)
    for n in range(1, 9):
        bound = backoff_bound_s(n, base_s=1.0, cap_s=20.0)
        delays = [after_failure(limits, failures=n, base_s=1.0, rng=rng).delay_s for _ in range(50)]
        assert all(0.5 * bound <= d <= bound for d in delays), n
        assert max(delays) > 0.9 * bound and min(delays) < 0.6 * bound, n


@pytest.mark.parametrize(
    ("fresh_for", "floor", "expected"),
    [
        (100.0, 30.0, (100.0 + CACHE_MARGIN_S, "cache-control")),
        (0.0, 30.0, (30.0, "min")),
        (28.5, 30.0, (30.0, "min")),
        (29.0, 30.0, (30.0, "cache-control")),
        (29.0 - CACHE_MARGIN_S + 2, 30.0, (30.0 + 1, "cache-control")),
    ],
)
def test_the_cache_control_bound(fresh_for, floor, expected) -> None:
    assert cache_bound(fresh_for, floor_s=floor) == expected
