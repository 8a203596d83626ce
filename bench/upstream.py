"""A fake upstream for the benchmarks: N issuers' JWKS on one aiohttp port, with ETags.

Run as its own process (``python bench/upstream.py --issuers 1000``) so its CPU is never
counted as the mirror's. Each issuer serves two EC P-256 public keys taken from a pool that is
generated once at start; ``POST /rotate`` moves every issuer to two different keys, so the
next refresh cycle sees every set changed. Conditional requests (``If-None-Match``) get 304.

Prints one JSON line ``{"event": "listening", "url": ...}`` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def key_pool(size: int) -> list[dict[str, str]]:
    """EC P-256 public JWKs (P-256, not RSA: generating thousands of RSA keys takes minutes)."""
    pool = []
    for i in range(size):
        numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
        pool.append(
            {
                "kty": "EC",
                "crv": "P-256",
                "kid": f"k{i:05d}",
                "use": "sig",
                "alg": "ES256",
                "x": _b64(numbers.x),
                "y": _b64(numbers.y),
            }
        )
    return pool


def issuer_name(i: int) -> str:
    return f"iss{i:05d}"


class Upstream:
    def __init__(self, issuers: int) -> None:
        self.issuers = issuers
        self.pool = key_pool(2 * issuers + 2)
        self.generation = 0
        self.requests = {200: 0, 304: 0}
        self._cache: dict[tuple[int, int], tuple[bytes, str]] = {}

    def document(self, i: int) -> tuple[bytes, str]:
        """Issuer i's body and ETag in the current generation (two keys, shifted by 2 per
        generation, so consecutive generations share no key)."""
        cached = self._cache.get((i, self.generation))
        if cached is None:
            size = len(self.pool)
            first = (2 * i + 2 * self.generation) % size
            keys = [self.pool[first], self.pool[(first + 1) % size]]
            body = json.dumps({"keys": keys}).encode()
            cached = body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            self._cache[(i, self.generation)] = cached
        return cached

    async def jwks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            i = int(name.removeprefix("iss"))
        except ValueError:
            raise web.HTTPNotFound() from None
        if not 0 <= i < self.issuers:
            raise web.HTTPNotFound()
        body, etag = self.document(i)
        if request.headers.get("If-None-Match") == etag:
            self.requests[304] += 1
            return web.Response(status=304, headers={"ETag": etag})
        self.requests[200] += 1
        return web.Response(body=body, content_type="application/json", headers={"ETag": etag})

    async def rotate(self, request: web.Request) -> web.Response:
        self.generation += 1
        self._cache.clear()
        return web.json_response({"generation": self.generation})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"generation": self.generation, "requests": self.requests})


async def main(issuers: int) -> None:
    upstream = Upstream(issuers)
    app = web.Application()
    app.router.add_get("/{name}/jwks.json", upstream.jwks)
    app.router.add_post("/rotate", upstream.rotate)
    app.router.add_get("/stats", upstream.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"event": "listening", "url": f"http://127.0.0.1:{port}"}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--issuers", type=int, default=1000)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.issuers))
