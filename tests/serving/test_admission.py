"""Admission of fetches: a FIFO of slots, each given back early or after slot_s (the end to
end case, a hanging fetch behind which a healthy one still runs, is in test_fetching.py)."""

from __future__ import annotations

import asyncio

from jwks_mirror.serving.admission import Admission


async def test_admission_queues_fetches_beyond_the_limit_until_a_slot_is_given_back():
    admission = Admission(limit=2, slot_s=3600)
    first, second = await admission.enter(), await admission.enter()
    third = asyncio.ensure_future(admission.enter())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not third.done()  # both slots are held, for an hour unless given back
    first()
    first()  # giving a slot back twice frees one slot, not two
    release_third = await asyncio.wait_for(third, timeout=10)
    fourth = asyncio.ensure_future(admission.enter())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not fourth.done()
    second()
    (await asyncio.wait_for(fourth, timeout=10))()
    release_third()


async def test_admission_serves_waiters_in_order_and_skips_cancelled_ones():
    admission = Admission(limit=1, slot_s=3600)
    held = await admission.enter()
    order: list[str] = []

    async def want(tag: str):
        release = await admission.enter()
        order.append(tag)
        return release

    a, b, c = (asyncio.ensure_future(want(tag)) for tag in "abc")
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == []
    b.cancel()
    held()
    (await asyncio.wait_for(a, timeout=10))()
    (await asyncio.wait_for(c, timeout=10))()
    assert order == ["a", "c"] and b.cancelled()
    (await asyncio.wait_for(admission.enter(), timeout=10))()  # the one slot is free again
