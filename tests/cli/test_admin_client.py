"""The CLI's admin client against hostile admin ports: real aiohttp servers on 127.0.0.1:0.

No redirect is followed (the bearer token never leaves the given host, a 303 never turns
refresh's POST into a GET), the body is capped, one deadline bounds the whole command, answers
are type-checked, and a non-2xx or unexpected answer never exits 0. Every error is one line.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from jwks_mirror.cli import admin_client, main

from ..conftest import answer

TOKEN = "s3cret-admin-token"

STATUS = {
    "now": 1.0,
    "draining": False,
    "issuers": [
        {
            "name": "idp", "issuer": "https://idp.test", "upstream": "http://keys.svc/jwks.json",
            "kids": ["k1"], "upstream_kids": ["k1"], "retained_kids": [], "version": "0" * 16,
            "last_success": 1.0, "last_error": None, "consecutive_failures": 0,
            "servable": True, "stale": False, "next_refresh": 2.0, "source": "upstream",
        }
    ],
}
RESULTS = {"results": [{"name": "idp", "outcome": "changed", "kids": ["k1"], "error": None}]}


async def run(argv: list[str], capsys, monkeypatch=None) -> tuple[int, str, str]:
    if monkeypatch is not None:
        monkeypatch.setenv("JWKS_MIRROR_ADMIN_TOKEN", TOKEN)
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> None:
    assert err.startswith("jwks-mirror: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("command", "status"),
    [(["status"], 307), (["status"], 302), (["refresh"], 303), (["refresh", "idp"], 307)],
    ids=["status-307", "status-302", "refresh-303", "refresh-name-307"],
)
async def test_redirects_are_not_followed_and_the_token_stays(
    fake_issuer, capsys, monkeypatch, command, status
):
    elsewhere = await fake_issuer(document=STATUS | RESULTS)
    admin = await fake_issuer(
        behaviour=answer(status, b"", Location=f"{elsewhere.base}/status")
    )
    code, out, err = await run([*command, "--admin", admin.base], capsys, monkeypatch)
    assert code == 1, (out, err)
    assert elsewhere.requests == []  # neither the request nor the token went there
    assert admin.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    one_error_line(err)
    assert f"answered {status}" in err and "redirects are not followed" in err


async def test_the_body_is_capped(fake_issuer, capsys):
    # A valid status document, padded past the cap: it must not be read to the end.
    cap = getattr(admin_client, "MAX_ANSWER_BYTES", 32 << 20)
    padded = json.dumps(STATUS).encode() + b" " * cap
    admin = await fake_issuer(document=padded)
    code, _, err = await run(["status", "--admin", admin.base], capsys)
    assert code == 1
    one_error_line(err)
    assert f"larger than {cap} bytes" in err


@pytest.mark.slow
async def test_one_deadline_bounds_a_slow_drip(fake_issuer, capsys, monkeypatch):
    """Each byte comes well inside any per-read timeout; the whole answer would take 20 s.
    The command gives up at its one deadline, while the server is still dripping."""
    finished = asyncio.Event()
    body = json.dumps(STATUS).encode()

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        every_s = 20.0 / len(body)
        for byte in body:
            await response.write(bytes([byte]))
            await asyncio.sleep(every_s)
        finished.set()
        return response

    admin = await fake_issuer(behaviour=drip)
    monkeypatch.setattr(admin_client, "DEADLINE_S", 1.0, raising=False)
    code, _, err = await run(["status", "--admin", admin.base], capsys)
    assert not finished.is_set()  # gave up before the answer was complete
    assert code == 1
    one_error_line(err)
    assert "deadline" in err


@pytest.mark.parametrize(
    ("command", "body"),
    [
        (["status"], b"[" * 100_000 + b"]" * 100_000),
        (["status"], b'{"issuers": "idp"}'),
        (["status"], b'{"issuers": [1, "x"]}'),
        (["status"], b'{"issuers": [{"name": ["idp"], "kids": 5}]}'),
        (["status"], b'{"issuers": [{"name": "idp", "last_error": 7, "servable": true}]}'),
        (["status"], b'{"issuers": [{"name": "idp", "servable": true}], "x": NaN}'),
        (["refresh"], b'{"results": [1]}'),
        (["refresh"], b'{"results": [{"name": "idp", "outcome": "changed", "kids": 3}]}'),
        (["refresh"], b'{"results": [{"name": "idp", "outcome": "fine"}]}'),
        (["refresh"], b'{"results": [{"name": "idp", "outcome": ["k1"]}]}'),
        (["refresh"], b"{" * 50_000),
        (["explain", "TOKEN"], b"[" * 100_000 + b"]" * 100_000),
        (["explain", "TOKEN"], b'{"issuers": [{"name": "idp", "issuer": ["https://idp.test"]}]}'),
    ],
    ids=[
        "deep", "issuers-str", "issuers-ints", "name-list", "error-int", "nan",
        "results-int", "kids-int", "odd-outcome", "outcome-list", "deep-refresh", "explain-deep",
        "explain-issuer-list",
    ],
)
async def test_deep_or_wrongly_typed_answers_are_one_line(fake_issuer, capsys, command, body):
    from .test_explain import token

    command = [token("k1", iss="https://idp.test") if c == "TOKEN" else c for c in command]
    admin = await fake_issuer(behaviour=answer(200, body, **{"Content-Type": "application/json"}))
    code, out, err = await run([*command, "--admin", admin.base], capsys)
    assert code == 1, (out, err)
    one_error_line(err)


async def test_explain_with_a_wrongly_typed_detail_is_one_line(fake_issuer, capsys):
    from .test_explain import token

    detail = STATUS["issuers"][0] | {"key_history": "x", "jwks": {"keys": [{"kty": 5}]}}

    async def behave(request: web.Request) -> web.Response:
        document = detail if request.path == "/status/idp" else STATUS
        return web.json_response(document)

    admin = await fake_issuer(behaviour=behave)
    code, out, err = await run(["explain", token("k1", iss="https://idp.test"), "--admin", admin.base], capsys)
    assert code == 1, (out, err)
    one_error_line(err)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, b'{"results": []}'),
        (502, json.dumps(RESULTS).encode()),
        (500, json.dumps(RESULTS).encode()),
        (201, json.dumps(RESULTS).encode()),
        (200, b"not json"),
    ],
    ids=["502-empty", "502-no-failure", "500", "201", "not-json"],
)
async def test_refresh_never_exits_0_on_an_answer_it_did_not_expect(
    fake_issuer, capsys, status, body
):
    admin = await fake_issuer(behaviour=answer(status, body, **{"Content-Type": "application/json"}))
    code, out, err = await run(["refresh", "--admin", admin.base], capsys)
    assert code == 1, (out, err)


async def test_a_good_answer_still_works(fake_issuer, capsys):
    admin = await fake_issuer(document=STATUS | RESULTS)
    code, out, err = await run(["status", "--admin", admin.base], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[1].startswith("idp ")
    code, out, err = await run(["refresh", "--admin", admin.base], capsys)
    assert (code, out, err) == (0, "idp: changed (kids: k1)\n", "")
