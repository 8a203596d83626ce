"""The doors other than the public port, through the shipped entrypoint: ``jwks-mirror serve``
started as a subprocess, its state directory, its peers and its admin port.

A defect that hangs the process must fail the test, not hang the suite: the process writes
its log to a file, and every wait is a condition polled with a deadline (``until``), after
which the process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ..conftest import answer, config_text, jwks, until

pytestmark = pytest.mark.slow

# The serve process's address space: enough for the service (about 0.5 GiB of mappings), far
# below the machine's memory, so a read without a bound fails fast instead of swapping.
ADDRESS_SPACE_BYTES = 1 << 30


def _argv() -> list[str]:
    script = Path(sys.executable).parent / "jwks-mirror"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "jwks_mirror"]
    return ["prlimit", f"--as={ADDRESS_SPACE_BYTES}", "--", *command]


class Served:
    """One ``jwks-mirror serve`` process; its log lines are read from a file."""

    def __init__(self, config: Path) -> None:
        self.log = config.with_suffix(".log")
        self.stderr = config.with_suffix(".stderr")
        with self.log.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(
                [*_argv(), "serve", "--config", str(config)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and (name is None or record.get("event") == name):
                    out.append(record)
        return out

    async def wait_for(self, name: str, *, timeout_s: float = 30.0, **fields: Any) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"serve exited {self.process.returncode} before {name!r}: "
                    f"{self.stderr.read_text()[-2000:]}"
                )
            found[:] = [
                e for e in self.events(name) if all(e.get(k) == v for k, v in fields.items())
            ]
            return bool(found)

        await until(seen, what=f"the {name!r} log line {fields}", timeout_s=timeout_s)
        return found[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def serve(config: Path) -> Iterator[Served]:
    served = Served(config)
    try:
        yield served
    finally:
        served.stop()
    assert "Traceback" not in served.stderr.read_text()


async def get(url: str) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status, await resp.read()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def state_config(upstream: str, state_dir: Path, *names: str) -> str:
    issuers = "".join(f"  - name: {n}\n    jwks_uri: {upstream}\n" for n in names or ("idp",))
    return config_text(issuers, extra=f"state_dir: {state_dir}\n")


# -- state files ---------------------------------------------------------------------------------


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    directory.mkdir()
    return directory


async def _starts_and_fetches_as_if_no_file(served: Served, upstream_url: str) -> dict[str, Any]:
    listening = await served.wait_for("listening")
    await served.wait_for("fetch", issuer="idp", outcome="changed")
    code, body = await get(f"{listening['public']}/idp/jwks.json")
    assert code == 200 and [k["kid"] for k in json.loads(body)["keys"]] == ["k1"]
    return listening


async def test_a_fifo_in_state_dir_does_not_hang_startup(fake_issuer, tmp_path, state_dir):
    upstream = await fake_issuer(document=jwks("k1"))
    os.mkfifo(state_dir / "idp.json")
    with serve(write(tmp_path, state_config(upstream.url, state_dir))) as served:
        listening = await _starts_and_fetches_as_if_no_file(served, upstream.url)
        ignored = served.events("state_ignored")
        assert [e["reason"] for e in ignored] == ["not_regular_file"], ignored
        _, metrics = await get(f"{listening['admin']}/metrics")
        assert (
            'jwks_mirror_state_ignored_total{issuer="idp",reason="not_regular_file"} 1.0'
            in metrics.decode()
        )


async def test_a_symlink_to_dev_zero_in_state_dir_is_refused(fake_issuer, tmp_path, state_dir):
    upstream = await fake_issuer(document=jwks("k1"))
    (state_dir / "idp.json").symlink_to("/dev/zero")
    with serve(write(tmp_path, state_config(upstream.url, state_dir))) as served:
        await _starts_and_fetches_as_if_no_file(served, upstream.url)
        assert [e["reason"] for e in served.events("state_ignored")] == ["symlink"]


async def test_a_reload_adding_an_issuer_whose_state_file_is_a_fifo_keeps_serving(
    fake_issuer, tmp_path, state_dir
):
    upstream = await fake_issuer(document=jwks("k1"))
    config = write(tmp_path, state_config(upstream.url, state_dir))
    with serve(config) as served:
        listening = await _starts_and_fetches_as_if_no_file(served, upstream.url)
        os.mkfifo(state_dir / "late.json")
        config.write_text(state_config(upstream.url, state_dir, "idp", "late"))
        served.process.send_signal(signal.SIGHUP)
        await served.wait_for("config_reloaded")
        await served.wait_for("fetch", issuer="late", outcome="changed")
        assert [e["issuer"] for e in served.events("state_ignored")] == ["late"]
        code, _ = await get(f"{listening['admin']}/healthz")
        assert code == 200
        code, _ = await get(f"{listening['public']}/late/jwks.json")
        assert code == 200


async def test_a_removal_time_in_the_future_does_not_keep_a_key_published(
    fake_issuer, tmp_path, state_dir
):
    """A retained key whose ``removed_at`` lies in 2286 is dropped after retain_removed_keys
    counted from the restore, and neither re-persisted nor shared with that time."""
    upstream = await fake_issuer(document=jwks("k1"))
    peer_view = config_text(
        f"  - name: idp\n    jwks_uri: {upstream.url}\n    retain_removed_keys: 2s\n",
        extra=f"state_dir: {state_dir}\n",
    )
    with serve(write(tmp_path, peer_view)) as served:
        await served.wait_for("fetch", issuer="idp", outcome="changed")
        await until(lambda: (state_dir / "idp.json").exists(), what="the state file")
    document = json.loads((state_dir / "idp.json").read_bytes())
    document["retained"] = [{"jwk": jwks("gone")["keys"][0], "removed_at": 10_000_000_000.0}]
    (state_dir / "idp.json").write_text(json.dumps(document))
    upstream.behaviour = answer(503, b"down")
    with serve(write(tmp_path, peer_view)) as served:
        listening = await served.wait_for("listening")
        loaded = await served.wait_for("state_loaded", issuer="idp")
        assert "gone" in loaded["kids"]

        async def gone_published() -> bool:
            code, body = await get(f"{listening['public']}/idp/jwks.json")
            return code == 200 and b'"gone"' not in body

        await until(gone_published, what="the retained key to expire")
        code, body = await get(f"{listening['admin']}/peer/idp")
        assert code == 200 and json.loads(body)["retained"] == []


# -- the peer path -------------------------------------------------------------------------------


async def test_a_peer_copy_is_replaced_whole_by_the_first_own_upstream_success(
    fake_issuer, tmp_path, state_dir
):
    upstream = await fake_issuer(document=jwks("k1"), behaviour=answer(503, b"down"))
    planted = {
        "name": "idp",
        "upstream": upstream.url,
        "source": "upstream",
        "last_success": time.time() - 5,
        "jwks": json.dumps(jwks("k1", "planted")),
        "retained": [{"jwk": jwks("planted-old")["keys"][0], "removed_at": time.time()}],
    }

    async def offer(request: web.Request) -> web.StreamResponse:
        return web.json_response(planted)

    peer = await fake_issuer(behaviour=offer)
    config = config_text(
        f"  - name: idp\n    jwks_uri: {upstream.url}\n    refresh_interval: 1s\n",
        extra=f"state_dir: {state_dir}\npeers: {{urls: [{peer.base}]}}\n",
    )
    with serve(write(tmp_path, config)) as served:
        listening = await served.wait_for("listening")
        await served.wait_for("peer_fill", issuer="idp", outcome="filled")
        code, body = await get(f"{listening['public']}/idp/jwks.json")
        assert code == 200 and b'"planted"' in body

        upstream.behaviour = None
        await until(
            lambda: any(e["issuer"] == "idp" and e["outcome"] != "failed"
                        for e in served.events("fetch")),
            what="the replica's own first upstream success",
        )
        code, body = await get(f"{listening['public']}/idp/jwks.json")
        assert [k["kid"] for k in json.loads(body)["keys"]] == ["k1"]
        code, body = await get(f"{listening['admin']}/peer/idp")
        shared = json.loads(body)
        assert code == 200 and shared["retained"] == []
        assert [k["kid"] for k in json.loads(shared["jwks"])["keys"]] == ["k1"]
        await until(lambda: (state_dir / "idp.json").exists(), what="the state file")
    written = json.loads((state_dir / "idp.json").read_bytes())
    assert [k["kid"] for k in written["keys"]] == ["k1"] and written["retained"] == []


# -- the admin port ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [b"\xff\xfe", "caf\u00e9".encode(), b"\xe2\x82\xac"])
async def test_a_token_that_is_not_ascii_is_401_not_500(fake_issuer, tmp_path, token):
    upstream = await fake_issuer(document=jwks("k1"))
    token_file = tmp_path / "admin-token"
    token_file.write_text("s3cret-token\n")
    config = config_text(f"  - name: idp\n    jwks_uri: {upstream.url}\n").replace(
        "admin: {host: 127.0.0.1, port: 0}",
        f"admin: {{host: 127.0.0.1, port: 0, token_file: {token_file}}}",
    )
    with serve(write(tmp_path, config)) as served:
        listening = await served.wait_for("listening")
        host, port = listening["admin"].removeprefix("http://").rsplit(":", 1)
        # Not loopback as the admin port counts it: 127.0.0.6 is where a sidecar forwards from.
        reader, writer = await asyncio.open_connection(
            host, int(port), local_addr=("127.0.0.6", 0)
        )
        writer.write(
            b"POST /refresh HTTP/1.1\r\nHost: mirror\r\nContent-Length: 0\r\n"
            b"Authorization: Bearer " + token + b"\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        answer_bytes = await reader.read()
        writer.close()
        status_line = answer_bytes.split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 401 Unauthorized", answer_bytes[:300]
        assert not [e for e in served.events() if e.get("level") == "error"]


async def test_a_malformed_admin_request_is_400_without_a_traceback(fake_issuer, tmp_path):
    """aiohttp logs each request it cannot parse at ERROR with a traceback; under ``serve``
    that reached stderr once per request, so any client of the admin port could fill it."""
    upstream = await fake_issuer(document=jwks("k1"))
    with serve(write(tmp_path, config_text(f"  - name: idp\n    jwks_uri: {upstream.url}\n"))) as served:
        listening = await served.wait_for("listening")
        host, port = listening["admin"].removeprefix("http://").rsplit(":", 1)
        for request in (
            b"GET /healthz HTTP/1.1\r\nHost: m\r\nX-Bad: \x01\r\n\r\n",
            b"GET /status HTTP/1.1\r\nHost: m\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/9.9\r\nHost: m\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            answer_bytes = await reader.read()
            writer.close()
            assert answer_bytes.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer_bytes[:200]
        code, _ = await get(f"{listening['admin']}/healthz")
        assert code == 200
    assert served.stderr.read_text() == ""
