"""Coverage-guided fuzzing of the CLI's admin-client JSON reader with atheris (libFuzzer).

    python fuzz/fuzz_admin_answers.py -max_total_time=60 [CORPUS_DIR ...]

The bytes are an admin port's answer body. Whatever they are,
:func:`~jwks_mirror.cli.admin_client.decode_answer` and the answer checks (``check_status``,
``check_detail``, ``check_results``) either accept the document or raise ``AdminError`` (exit
1); an accepted status renders with ``format_status`` and a detail drives ``explain`` without
any other exception, and the table holds no control character. With no corpus directory given,
the seed corpus is real answers of the admin handlers (``/status``, ``/status/{name}``,
``/refresh``) for a mirror with a published and an unpublished issuer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import atheris
import harness

with atheris.instrument_imports(include=["jwks_mirror"]):
    from jwks_mirror.cli.admin_client import (
        check_detail,
        check_results,
        check_status,
        decode_answer,
        format_status,
    )
    from jwks_mirror.cli.explain import explain
    from jwks_mirror.core.errors import AdminError, UsageError

NOW = 1_800_000_000.0
# An unsigned RS256 token of the issuer below (kid k1): explain reaches the key checks.
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci50ZXN0IiwiZXhwIjoxfQ"
    ".c2ln"
)


def check(data: bytes) -> None:
    document = decode_answer(data)
    try:
        status = check_status(document, where="fuzz")
    except AdminError:
        pass
    else:
        table = format_status(status, now=NOW)
        assert all(line.isprintable() for line in table.split("\n")), table
    with contextlib.suppress(AdminError):
        check_results(document, where="fuzz")
    try:
        detail = check_detail(document, where="fuzz")
    except AdminError:
        return
    issuers = [{"name": "idp", "issuer": "https://issuer.test", "servable": True}]
    with contextlib.suppress(UsageError):
        explain(JWT, issuers=issuers, detail=lambda name: detail, now=NOW)


def _real_answers() -> dict[str, Any]:
    """What the admin handlers answer, called on a real Mirror (no socket)."""
    from aiohttp.test_utils import make_mocked_request
    from jwcrypto import jwk

    from jwks_mirror.core.config.loader import parse_settings
    from jwks_mirror.core.keysets import validate
    from jwks_mirror.serving.counters import new_registry
    from jwks_mirror.serving.http import admin
    from jwks_mirror.serving.mirror import Issuer, Mirror
    from jwks_mirror.serving.pipeline import Outcome
    from jwks_mirror.serving.refreshing import Health
    from jwks_mirror.serving.state import IssuerState

    settings = parse_settings(
        "issuers:\n  - {name: idp, jwks_uri: 'http://keys.myns.svc/jwks.json', "
        "issuer: 'https://issuer.test'}\n  - {name: down, jwks_uri: 'http://down.myns.svc/j'}\n"
    )
    mirror = Mirror(settings, registry=new_registry(), clock=lambda: NOW)
    key = jwk.JWK.generate(kty="RSA", size=2048, kid="k1")
    body = json.dumps({"keys": [json.loads(key.export_public())]}).encode()
    served, empty = settings.issuers
    state = IssuerState(served)
    state.apply(validate(body, max_bytes=1 << 20, max_keys=100), now=NOW)
    down = IssuerState(empty)
    mirror.issuers = {
        "idp": Issuer(state, Health(next_refresh=NOW + 300)),
        "down": Issuer(down, Health(next_refresh=NOW + 5)),
    }
    app = admin.create_admin_app(mirror)

    async def answer(handler: Any, path: str, **match: str) -> bytes:
        request = make_mocked_request("GET", path, app=app, match_info=match)
        response = await handler(request)
        return bytes(response.body)

    async def collect() -> dict[str, bytes]:
        return {
            "status": await answer(admin.status, "/status"),
            "detail": await answer(admin.status_one, "/status/idp", name="idp"),
            "detail-none": await answer(admin.status_one, "/status/down", name="down"),
        }

    answers: dict[str, Any] = asyncio.run(collect())
    results = [
        Outcome("idp", "changed", kids=("k1",), added=("k1",)).as_json(),
        Outcome(
            "down", "failed", error="http://down.myns.svc/j: cannot connect", reason="connect"
        ).as_json(),
    ]
    answers["refresh"] = json.dumps({"results": results}).encode()
    return answers


def seed(directory: Path) -> None:
    try:
        answers = _real_answers()
    except Exception as exc:
        print(f"seeding from the admin handlers failed: {exc!r}")
        answers = {}
    for name, body in answers.items():
        (directory / name).write_bytes(body)
    (directory / "deep").write_bytes(b"[" * 5000 + b"]" * 5000)
    (directory / "typed").write_bytes(b'{"issuers": [{"name": ["idp"], "kids": 5}]}')
    (directory / "error").write_bytes(b'{"error": "unknown issuer: x\\u001b]0;t\\u0007"}')


def main() -> None:
    harness.run(check, seed, name="admin-answers")


if __name__ == "__main__":
    main()
