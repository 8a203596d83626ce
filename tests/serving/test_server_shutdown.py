"""Graceful drain: on SIGTERM readiness goes 503 at once, both ports keep answering for
``shutdown_delay``, then in-flight requests finish and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.serving.counters import new_registry
from jwks_mirror.serving.mirror import Mirror
from jwks_mirror.serving.server import start

from ..cli.test_cli import _get, _wait_for_line, serve_process, write_config
from ..conftest import config_text, jwks, until


async def get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url) as response:
        await response.read()
        return response.status


async def test_during_the_delay_both_ports_answer_and_readiness_is_503(fake_issuer):
    issuer = await fake_issuer(document=jwks("k1"))
    settings = parse_settings(config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    running = await start(settings, mirror=Mirror(settings, registry=new_registry()))
    await running.mirror.refresh()
    jwks_url = f"{running.public_url}/a/jwks.json"
    # A keep-alive connection opened before SIGTERM, and new ones during the delay.
    async with aiohttp.ClientSession() as before:
        assert await get(before, jwks_url) == 200
        stopping = asyncio.create_task(running.stop(delay_s=3600))
        async with aiohttp.ClientSession() as after:

            async def not_ready() -> bool:
                return await get(after, f"{running.admin_url}/readyz") == 503

            await until(not_ready, what="/readyz to answer 503 once stopping began")
            assert await get(before, jwks_url) == 200
            assert await get(after, jwks_url) == 200
            assert await get(after, f"{running.admin_url}/healthz") == 200
            assert await get(after, f"{running.admin_url}/status") == 200
            assert not stopping.done()

            running.hurry()  # a second SIGTERM ends the delay
            await asyncio.wait_for(stopping, timeout=30)
            try:
                await get(after, jwks_url)
            except aiohttp.ClientConnectionError:
                pass
            else:
                raise AssertionError("the public port still answers after the drain")


@pytest.mark.slow
async def test_sigterm_waits_shutdown_delay_then_exits_0(fake_issuer, tmp_path: Path):
    issuer = await fake_issuer()
    path = write_config(
        tmp_path, config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n", extra="shutdown_delay: 5m\n")
    )
    with serve_process(path) as process:
        listening = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "listening")
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        assert (await asyncio.to_thread(_get, f"{listening['admin']}/readyz"))[0] == 200

        process.send_signal(signal.SIGTERM)
        shutting = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "shutting_down")
        assert shutting["delay_s"] == 300
        status, body = await asyncio.to_thread(_get, f"{listening['admin']}/readyz")
        assert status == 503 and json.loads(body)["draining"] is True
        # Five minutes of delay: whatever the machine's load, these are answered inside it.
        status, body = await asyncio.to_thread(_get, f"{listening['public']}/a/jwks.json")
        assert status == 200 and b"k1" in body
        assert process.poll() is None

        process.send_signal(signal.SIGTERM)  # the second signal skips the rest of the delay
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "stopped")
        assert await asyncio.to_thread(process.wait, 30) == 0


@pytest.mark.slow
async def test_a_short_delay_ends_by_itself_with_exit_0(fake_issuer, tmp_path: Path):
    issuer = await fake_issuer()
    path = write_config(
        tmp_path, config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n", extra="shutdown_delay: 200ms\n")
    )
    with serve_process(path) as process:
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        process.send_signal(signal.SIGTERM)
        shutting = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "shutting_down")
        assert shutting["delay_s"] == 0.2
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "stopped")
        assert await asyncio.to_thread(process.wait, 30) == 0
