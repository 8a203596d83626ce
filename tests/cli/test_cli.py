"""The command line: exit codes, one-line errors, and the real ``serve`` process with signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from jwks_mirror.cli import main

from ..conftest import config_text, jwks, until
from ..e2e.harness.mirror import cli_argv
from ..e2e.harness.procs import wait_until


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_check_config_ok_and_invalid(tmp_path: Path, capsys):
    good = write_config(tmp_path, config_text("  - name: a\n    jwks_uri: http://keys.ns.svc/jwks.json\n"))
    assert main(["check-config", "--config", str(good)]) == 0
    assert "ok (1 issuers: a)" in capsys.readouterr().out
    good.write_text(config_text("  - name: a\n    jwks_uri: http://k/\n    tls: {cert_file: /missing.pem}\n"))
    assert main(["check-config", "--config", str(good)]) == 2
    err = capsys.readouterr().err
    assert err == "jwks-mirror: error: issuers[0].tls.cert_file: no such file\n"


POD_ONLY = """\
public: {tls: {cert_file: /etc/jwks-mirror/tls/tls.crt, key_file: /etc/jwks-mirror/tls/tls.key}}
admin: {token_file: /var/run/secrets/jwks-mirror/admin-token}
state_dir: /var/lib/jwks-mirror-not-here
issuers:
  - name: a
    jwks_uri: https://keys.ns.svc.cluster.local/jwks.json
    bearer_token_file: /var/run/secrets/tokens/jwks
    tls: {ca_file: /etc/mesh/ca.pem, cert_file: /etc/mesh/cert.pem, key_file: /etc/mesh/key.pem}
"""


def test_check_config_offline_skips_only_what_the_pod_has(tmp_path: Path, capsys):
    path = write_config(tmp_path, POD_ONLY)
    assert main(["check-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == "jwks-mirror: error: public.tls.cert_file: no such file\n"
    assert main(["check-config", "--offline", "--config", str(path)]) == 0
    assert "ok (offline: files not checked) (1 issuers: a)" in capsys.readouterr().out
    # Everything that is not a file on the pod is still checked offline.
    path.write_text(POD_ONLY.replace("tls: {ca_file", "refresh_interval: soon\n    tls: {ca_file"))
    assert main(["check-config", "--offline", "--config", str(path)]) == 2
    assert "issuers[0].refresh_interval: invalid duration 'soon'" in capsys.readouterr().err
    path.write_text(POD_ONLY.replace("https://keys", "http://keys"))
    assert main(["check-config", "--offline", "--config", str(path)]) == 2
    assert "issuers[0].tls: tls needs an https upstream" in capsys.readouterr().err


def test_check_config_reads_the_environment(tmp_path: Path, capsys, monkeypatch):
    path = write_config(tmp_path, "issuers: []\n")
    monkeypatch.setenv("JWKS_MIRROR_CONFIG", str(path))
    assert main(["check-config"]) == 0
    monkeypatch.setenv("JWKS_MIRROR_CONFIG", str(tmp_path / "nope.yaml"))
    assert main(["check-config"]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err


def test_usage_errors_exit_2_in_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice" in err


def test_admin_unreachable_is_exit_1(capsys):
    assert main(["status", "--admin", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the mirror" in capsys.readouterr().err
    assert main(["refresh", "--admin", "not a url"]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "not-a-jwt"], "not a JWT: expected three dot-separated parts"),
        (["explain", "a.b.c"], "not a JWT: "),
        (["status", "--admin", "ftp://127.0.0.1:9"], "--admin: not an http(s) URL"),
        (["status", "--token-file", "/no/such/token"], "--token-file: No such file"),
        (["pin", "--in-place", "--diff", "x.yaml"], "--in-place and --diff are exclusive"),
        (["rewrite", "--mirror-url", "http://m:8080", "--match", "("], "--match: invalid"),
    ],
)
def test_bad_input_on_the_command_line_is_a_usage_error(capsys, argv, message):
    """A bad JWT, URL, file or flag combination is the operator's input: exit 2, one line,
    raised as a UsageError (not a ConfigError: no configuration file is involved)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jwks-mirror: error: ") and err.count("\n") == 1
    assert message in err


def test_cli_maps_the_error_tree_to_exit_codes(monkeypatch, capsys):
    """cli.main is the one place errors become exit codes: UsageError and its children 2,
    any other MirrorError 1."""
    import jwks_mirror.cli as cli
    from jwks_mirror.core import errors

    raised: list[Exception] = [
        errors.UsageError("u"),
        errors.ConfigError("c", field="f"),
        errors.ManifestError("m"),
        errors.UpstreamError("status", "s"),
        errors.KeySetRejected("too_large", "k"),
        errors.AdminError("a"),
    ]
    codes = []
    for exc in raised:
        def fail(args, exc=exc):
            raise exc

        monkeypatch.setattr(cli, "cmd_check_config", fail)
        codes.append(main(["check-config"]))
        assert capsys.readouterr().err == f"jwks-mirror: error: {exc}\n"
    assert codes == [2, 2, 2, 1, 1, 1]


async def test_refresh_and_status_commands(fake_issuer, mirror_factory, capsys, refused_url):
    issuer = await fake_issuer(document=jwks("k1"))
    running = await mirror_factory(
        config_text(f"  - name: up\n    jwks_uri: {issuer.url}\n  - name: down\n    jwks_uri: {refused_url}\n")
    )
    admin = ["--admin", running.admin_url]
    assert await asyncio.to_thread(main, ["refresh", "up", *admin]) == 0
    # The startup fetch may or may not have finished before this refresh joined or followed it.
    assert capsys.readouterr().out.strip() in {"up: changed (kids: k1)", "up: unchanged (kids: k1)"}
    issuer.document = jwks("k1", "k2")
    assert await asyncio.to_thread(main, ["refresh", "up", *admin]) == 0
    assert "up: changed (kids: k1, k2)" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["refresh", *admin]) == 1
    out = capsys.readouterr().out
    assert "down: failed" in out and "cannot connect" in out
    assert await asyncio.to_thread(main, ["refresh", "nope", *admin]) == 1
    assert "unknown issuer: nope" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["status", *admin]) == 1  # "down" is not servable
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["ISSUER", "STATE", "KIDS"]
    assert any(line.startswith("up") and "k1,k2" in line for line in table.splitlines())
    assert any(line.startswith("down") and "no keys" in line for line in table.splitlines())
    assert await asyncio.to_thread(main, ["status", "--json", *admin]) == 1
    document = json.loads(capsys.readouterr().out)
    assert {i["name"] for i in document["issuers"]} == {"up", "down"}



@contextlib.contextmanager
def serve_process(config: Path) -> Iterator[subprocess.Popen[str]]:
    """``jwks-mirror serve`` as a real process; killed if the test leaves it running.

    stderr goes to a file so a long run never blocks on a full pipe; the test fails if the
    process wrote a traceback there.
    """
    stderr_path = config.with_suffix(".stderr")
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*cli_argv(), "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
    assert "Traceback" not in stderr_path.read_text()


_END_OF_OUTPUT: dict = {"event": None}


def _wait_for_line(process: subprocess.Popen, predicate, timeout: float = 60) -> dict:
    """The next JSON log line of ``process`` that ``predicate`` accepts (reading on from the
    last one matched); fails at once if the output ends first."""
    stdout = process.stdout
    assert stdout is not None

    def next_match() -> dict | None:
        line = stdout.readline()
        if not line:
            return _END_OF_OUTPUT
        record = json.loads(line)
        return record if predicate(record) else None

    record = wait_until(next_match, timeout=timeout, interval=0, what="the expected log line")
    assert record is not _END_OF_OUTPUT, "the output ended before the expected log line"
    return record


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@pytest.mark.slow
async def test_serve_process_reloads_on_sighup_and_drains_on_sigterm(fake_issuer, tmp_path: Path):
    issuer = await fake_issuer()
    path = write_config(tmp_path, config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n"))
    with serve_process(path) as process:
        listening = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "listening")
        fetched = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        assert fetched["issuer"] == "a" and fetched["outcome"] == "changed"
        assert fetched["kids_added"] == ["k1"] and isinstance(fetched["duration_s"], float)
        status, body = await asyncio.to_thread(_get, f"{listening['public']}/a/jwks.json")
        assert status == 200 and b"k1" in body

        path.write_text(config_text(f"  - name: b\n    jwks_uri: {issuer.url}\n"))
        process.send_signal(signal.SIGHUP)
        reloaded = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "config_reloaded")
        assert reloaded["added"] == ["b"] and reloaded["removed"] == ["a"]

        path.write_text("issuers: 7\n")
        process.send_signal(signal.SIGHUP)
        rejected = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "config_rejected")
        assert "issuers: expected a list" in rejected["error"]
        status, _ = await asyncio.to_thread(_get, f"{listening['admin']}/healthz")
        assert status == 200

        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "stopped")
        assert await asyncio.to_thread(process.wait, 10) == 0


@pytest.mark.slow
async def test_sigterm_lets_an_inflight_request_finish(fake_issuer, tmp_path: Path):
    """A refresh in flight when SIGTERM arrives still gets its answer; then exit 0."""
    gate = asyncio.Event()
    from aiohttp import web

    async def slow(request: web.Request) -> web.StreamResponse:
        if len(issuer.requests) > 1:
            await asyncio.wait_for(gate.wait(), 5)
        return web.json_response(jwks("k1"))

    issuer = await fake_issuer(behaviour=slow)
    path = write_config(  # no shutdown_delay: the drain itself must wait for the answer
        tmp_path, config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n", extra="shutdown_delay: 0\n")
    )
    with serve_process(path) as process:
        listening = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "listening")
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        request = urllib.request.Request(f"{listening['admin']}/refresh/a", method="POST")
        pending = asyncio.create_task(asyncio.to_thread(_post, request))
        await until(lambda: len(issuer.requests) >= 2, what="the refresh to reach the upstream")
        process.send_signal(signal.SIGTERM)
        # Release the upstream only once the process is draining, with the refresh in flight.
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "shutting_down")
        assert not pending.done()
        gate.set()
        status, body = await pending
        assert status == 200 and json.loads(body)["results"][0]["outcome"] == "unchanged"
        assert await asyncio.to_thread(process.wait, 10) == 0


def _post(request: urllib.request.Request) -> tuple[int, bytes]:
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.slow
def test_demo_once_passes_its_checks():
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "demo", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed." in result.stdout
    assert result.stdout.count("  ok   ") == 7
    assert "curl -s http://127.0.0.1:" in result.stdout


@pytest.mark.slow
async def test_sigterm_under_load_fails_no_accepted_request(fake_issuer, tmp_path: Path):
    """Requests the server accepted complete; afterwards new connections are refused."""
    import aiohttp

    issuer = await fake_issuer()
    path = write_config(  # no shutdown_delay: this is about the drain that follows it
        tmp_path, config_text(f"  - name: a\n    jwks_uri: {issuer.url}\n", extra="shutdown_delay: 0\n")
    )
    ok, refused, failed = 0, 0, []
    with serve_process(path) as process:
        listening = await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "listening")
        await asyncio.to_thread(_wait_for_line, process, lambda r: r["event"] == "fetch")
        url = f"{listening['public']}/a/jwks.json"
        stop_at = time.monotonic() + 120  # a cap on a hang: the workers stop when the port closes
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                nonlocal ok, refused
                while time.monotonic() < stop_at and not port_closed.is_set():
                    try:
                        async with session.get(url) as response:
                            await response.read()
                            if response.status == 200:
                                ok += 1
                            else:
                                failed.append(response.status)
                    except aiohttp.ClientConnectorError:
                        refused += 1
                        if process.poll() is not None:
                            port_closed.set()
                        await asyncio.sleep(0.01)
                    except aiohttp.ClientError as exc:
                        failed.append(type(exc).__name__)

            port_closed = asyncio.Event()
            workers = [asyncio.create_task(worker()) for _ in range(16)]
            await until(lambda: ok > 50 or failed, what="traffic before the SIGTERM", timeout_s=60)
            process.send_signal(signal.SIGTERM)
            await asyncio.gather(*workers)
        assert await asyncio.to_thread(process.wait, 10) == 0
    assert ok > 50 and refused > 0
    assert failed == []
