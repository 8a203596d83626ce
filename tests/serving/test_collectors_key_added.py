"""jwks_mirror_last_key_added_timestamp_seconds: when a rotation began, per issuer, cheaply.

Over a real loopback upstream whose keys change, scraped from the admin port."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Clock, config_text, jwks, public_jwk

NAME = "jwks_mirror_last_key_added_timestamp_seconds"


async def scrape(running) -> dict[str, float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{running.admin_url}/metrics") as response,
    ):
        text = await response.text()
    return {
        sample.labels["issuer"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == NAME
    }


async def status(running, name: str) -> dict:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{running.admin_url}/status/{name}") as response,
    ):
        return await response.json()


async def test_a_new_kid_is_stamped_and_the_first_set_is_not(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("k1"))
    quiet = await fake_issuer(document=jwks("k1"))
    clock = Clock()
    running = await mirror_factory(
        config_text(
            f"  - name: a\n    jwks_uri: {issuer.url}\n"
            f"  - name: quiet\n    jwks_uri: {quiet.url}\n"
        ),
        clock=clock,
    )
    await running.mirror.refresh()
    assert await scrape(running) == {}  # a replica's first set is not a rotation
    clock.advance(100)
    issuer.document = jwks("k1", "k2")
    await running.mirror.refresh()
    rotated_at = clock.now
    assert await scrape(running) == {"a": rotated_at}  # the quiet issuer exports nothing
    assert (await status(running, "a"))["last_key_added"] == rotated_at
    assert (await status(running, "quiet"))["last_key_added"] is None

    clock.advance(50)
    issuer.document = jwks("k2")  # k1 removed: retained, not an addition
    await running.mirror.refresh(["a"])
    assert await scrape(running) == {"a": rotated_at}


async def test_new_key_material_under_a_known_kid_counts(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("k1"))
    clock = Clock()
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"), clock=clock
    )
    await running.mirror.refresh()
    clock.advance(10)
    issuer.document = {"keys": [public_jwk("k1", "EC")]}  # the same kid, another key
    await running.mirror.refresh()
    assert await scrape(running) == {"a": clock.now}


async def test_a_retained_key_coming_back_is_not_an_addition(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("k1", "k2"))
    clock = Clock()
    running = await mirror_factory(
        config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"), clock=clock
    )
    await running.mirror.refresh()
    issuer.document = jwks("k1")
    clock.advance(10)
    await running.mirror.refresh()  # k2 retained, still published
    issuer.document = jwks("k1", "k2")
    clock.advance(10)
    await running.mirror.refresh()  # k2 back: istiod had it all along
    assert await scrape(running) == {}


async def test_the_series_goes_away_after_an_hour_or_retention(fake_issuer, mirror_factory):
    issuer = await fake_issuer(document=jwks("k1"))
    clock = Clock()
    running = await mirror_factory(
        config_text(
            f"  - name: a\n    jwks_uri: {issuer.url}\n"
            f"  - name: long\n    jwks_uri: {issuer.url}\n    retain_removed_keys: 2h\n"
        ),
        clock=clock,
    )
    await running.mirror.refresh()
    issuer.document = jwks("k1", "k2")
    await running.mirror.refresh()
    added = clock.now
    clock.advance(3599)
    assert await scrape(running) == {"a": added, "long": added}
    clock.advance(2)
    assert await scrape(running) == {"long": added}
    clock.advance(3600)
    assert await scrape(running) == {}
