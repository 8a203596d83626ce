"""A hostile config reload through ``jwks-mirror serve``: it is refused (logged, counted), the
running config stays, and both ports answer within 100 ms throughout (jwks_mirror.serving.server's
ConfigWatcher parses off the event loop, within jwks_mirror.core.yamlsafe's bounds)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from ..cli.test_cli import _wait_for_line, serve_process, write_config
from ..conftest import config_text
from ..hostile_yaml import deep_config, merge_bomb

pytestmark = pytest.mark.slow

LATENCY_S = 0.100


def big_invalid_config(url: str) -> str:
    """10,000 issuers (0.8 MB, a parse of about half a second) and one unknown key at the
    end: valid YAML the loader must read through before it refuses it."""
    issuers = "".join(f"  - name: i{n}\n    jwks_uri: {url}\n" for n in range(10_000))
    return config_text(issuers) + "no_such_key: 1\n"


async def _poll(session: aiohttp.ClientSession, url: str, worst: list[float], stop: asyncio.Event) -> int:
    loop = asyncio.get_running_loop()
    count = 0
    while not stop.is_set():
        started = loop.time()
        async with session.get(url) as response:
            await response.read()
            assert response.status == 200, (url, response.status)
        worst.append(loop.time() - started)
        count += 1
    return count


HOSTILE = {
    "nested-40000-deep": lambda url: deep_config(40_000),
    "merge-key-bomb-20-levels": lambda url: merge_bomb(20),
    "10000-issuers-and-an-unknown-key": big_invalid_config,
}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_a_hostile_reload_is_refused_while_both_ports_answer_within_100_ms(
    fake_issuer, tmp_path: Path, case: str
):
    issuer = await fake_issuer()
    path = write_config(tmp_path, config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    with serve_process(path) as process:
        listening = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "listening")
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        public = f"{listening['public']}/a/jwks.json"
        admin = f"{listening['admin']}/healthz"
        path.write_text(HOSTILE[case](issuer.url))
        async with aiohttp.ClientSession() as session:
            worst: list[float] = []
            stop = asyncio.Event()
            pollers = [asyncio.create_task(_poll(session, url, worst, stop)) for url in (public, admin)]
            try:
                process.send_signal(signal.SIGHUP)
                outcome = await asyncio.to_thread(
                    _wait_for_line, process,
                    lambda r: r["event"] in ("config_rejected", "config_reloaded"),
                )
            finally:
                stop.set()
                counts = await asyncio.gather(*pollers, return_exceptions=True)
            assert outcome["event"] == "config_rejected", outcome
            assert process.poll() is None
            assert all(isinstance(c, int) and c > 0 for c in counts), counts
            print(f"\n{case}: worst {max(worst) * 1000:.1f} ms over {len(worst)} requests")
            assert max(worst) < LATENCY_S, (max(worst), len(worst))
            async with session.get(public) as response:  # the running config stayed
                assert response.status == 200 and b"k1" in await response.read()
            async with session.get(f"{listening['admin']}/metrics") as response:
                metrics = await response.text()
        assert 'jwks_mirror_config_reloads_total{outcome="failure"} 1.0' in metrics
