"""Coverage-guided fuzzing of the admin port's request handling and authorization with atheris.

    python fuzz/fuzz_admin.py -max_total_time=60 [CORPUS_DIR ...]

A real admin app (``admin.create_admin_app``, on an aiohttp runner set up as ``server.start``
sets it up) listens on 127.0.0.1 with an admin token file; each input is one connection to it
from 127.0.0.6, the address Istio's sidecar forwards mesh traffic from, which the admin port
does not count as loopback, so every write needs the token. The first byte picks the shape:

* even: the rest is sent as raw bytes (then the write side is shut);
* odd: a request is built from the rest: the next two bytes pick a method and a path, and the
  rest (up to 256 bytes) is the ``Authorization`` value: not valid UTF-8, not ASCII, controls.

Whatever the bytes:

* nothing answers 5xx, and nothing is logged at ERROR (a handler that raised, or a request
  aiohttp could not parse: it answers those 400, see ``admin._MalformedRequests``);
* a built ``POST /refresh`` is answered 200 only if its ``Authorization`` carries the token,
  and always 200 when it is exactly ``Bearer <token>``;
* the port keeps answering: ``/healthz`` is 200 after every input.

With no corpus directory given, a seed corpus of real admin requests is written to a temporary
directory: the probes, status, metrics, a peer read, refreshes with the right and wrong tokens.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import atheris
import harness

with atheris.instrument_imports(include=["jwks_mirror"]):
    from aiohttp import web

    from jwks_mirror.core.config.loader import parse_settings
    from jwks_mirror.core.keysets import validate
    from jwks_mirror.serving.counters import new_registry
    from jwks_mirror.serving.http.admin import create_admin_app
    from jwks_mirror.serving.mirror import Issuer, Mirror
    from jwks_mirror.serving.refreshing import Health
    from jwks_mirror.serving.state import IssuerState

TOKEN = b"s3cret-admin-token"
NOW = 1_800_000_000.0
KEY = (
    b'{"keys":[{"kty":"EC","crv":"P-256","kid":"k1",'
    b'"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
    b'"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
)
METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"post", b"G\x00T"]
PATHS = [b"/refresh", b"/refresh/idp", b"/refresh/none", b"/healthz", b"/readyz",
         b"/metrics", b"/status", b"/status/idp", b"/peer/idp", b"/peer/none", b"/"]
READ_TIMEOUT_S = 2.0


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Admin:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors = Errors()
        logging.getLogger().addHandler(self.errors)
        directory = Path(tempfile.mkdtemp(prefix="fuzz-admin-"))
        token_file = directory / "token"
        token_file.write_bytes(TOKEN + b"\n")
        settings = parse_settings(
            f"admin: {{host: 127.0.0.1, port: 0, token_file: {token_file}}}\n"
            "issuers:\n  - {name: idp, jwks_uri: 'http://idp.ns.svc/jwks.json'}\n"
        )
        mirror = Mirror(settings, registry=new_registry(), clock=lambda: NOW)
        state = IssuerState(settings.issuers[0])
        state.apply(validate(KEY, max_bytes=1 << 16, max_keys=10), now=NOW - 10)
        mirror.issuers = {"idp": Issuer(state, Health())}
        self.runner = web.AppRunner(create_admin_app(mirror), access_log=None,
                                    keepalive_timeout=READ_TIMEOUT_S)
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def exchange(self, data: bytes) -> bytes:
        return self.loop.run_until_complete(self._exchange(data))

    async def _exchange(self, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=("127.0.0.6", 0)
        )
        try:
            writer.write(data)
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.read(1 << 20), READ_TIMEOUT_S)
            except TimeoutError:
                return b""
        except ConnectionError:
            return b""
        finally:
            writer.close()


ADMIN: Admin | None = None


def _status(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def check(data: bytes) -> None:
    global ADMIN
    if ADMIN is None:
        ADMIN = Admin()
    admin = ADMIN
    if not data:
        return
    if data[0] % 2 == 0:
        answer = admin.exchange(data[1:])
    else:
        method = METHODS[data[1] % len(METHODS)] if len(data) > 1 else METHODS[0]
        path = PATHS[data[2] % len(PATHS)] if len(data) > 2 else PATHS[0]
        value = data[3:259]
        request = (
            method + b" " + path + b" HTTP/1.1\r\nHost: mirror\r\nContent-Length: 0\r\n"
            b"Connection: close\r\nAuthorization: " + value + b"\r\n\r\n"
        )
        answer = admin.exchange(request)
        status = _status(answer)
        if method == b"POST" and path == b"/refresh" and status is not None:
            if status == 200:
                assert TOKEN in value, value
            if value == b"Bearer " + TOKEN:
                assert status == 200, answer[:200]
    status = _status(answer)
    assert status is None or status < 500, answer[:300]
    assert not admin.errors.records, admin.errors.records[0].getMessage()
    health = admin.exchange(b"GET /healthz HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
    assert _status(health) == 200, health[:200]


def seed(directory: Path) -> None:
    requests = {
        "healthz": b"\x00GET /healthz HTTP/1.1\r\nHost: m\r\n\r\n",
        "status": b"\x00GET /status/idp HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        "metrics": b"\x00GET /metrics HTTP/1.1\r\nHost: m\r\nAccept-Encoding: gzip\r\n\r\n",
        "peer": b"\x00GET /peer/idp HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        "refresh-ok": b"\x00POST /refresh HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n"
        b"Authorization: Bearer " + TOKEN + b"\r\n\r\n",
        "refresh-not-ascii": b"\x00POST /refresh HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n"
        b"Authorization: Bearer \xff\xfe\r\n\r\n",
        "pipelined": b"\x00GET /readyz HTTP/1.1\r\nHost: m\r\n\r\n"
        b"POST /refresh/idp?purge_retained=1 HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n",
    }
    for name, data in requests.items():
        (directory / name).write_bytes(data)
    # Built requests: method 1 (POST), path 0 (/refresh), then the Authorization value.
    for name, value in {"built-ok": b"Bearer " + TOKEN, "built-basic": b"Basic " + TOKEN,
                        "built-utf8": "Bearer caf\u00e9".encode(),
                        "built-not-utf8": b"Bearer \xff\xfe"}.items():
        (directory / name).write_bytes(b"\x01" + bytes([1, 0]) + value)


def main() -> None:
    harness.run(check, seed, name="admin")


if __name__ == "__main__":
    main()
