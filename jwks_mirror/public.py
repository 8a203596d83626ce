"""The public, plain-HTTP port: ``GET|HEAD /{name}/jwks.json`` and nothing else.

This is the port istiod reaches, so it must be cheap and boring. The handler is a low-level
aiohttp server handler (no router, no middleware): one dict lookup, precomputed body and
ETag, a plain-int request counter. Query strings are ignored on purpose: istiod caches by the
exact URI, so ``?v=<version>`` is how an operator makes every istiod fetch at once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from aiohttp import web

from jwks_mirror.mirror import Mirror

JSON = "application/json"
_SUFFIX = "/jwks.json"


def etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of entity tags, or ``*``."""
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(c.strip().removeprefix("W/") == opaque for c in header.split(","))


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def make_handler(mirror: Mirror) -> Handler:
    """The request handler of the public port, closed over the running mirror."""
    states = mirror.states
    unknown = mirror.unknown_requests
    clock = mirror.clock

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        # The raw target, not the decoded path: names are DNS labels, so anything encoded
        # is not one of ours, and nothing is decoded into a name by accident.
        path = request.raw_path.partition("?")[0]
        state = states.get(path[1 : -len(_SUFFIX)]) if path.endswith(_SUFFIX) else None
        if state is None:
            unknown[404] = unknown.get(404, 0) + 1
            return web.Response(status=404, text="not found\n")
        counts = state.requests
        if request.method not in ("GET", "HEAD"):
            counts[405] = counts.get(405, 0) + 1
            return web.Response(
                status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"}
            )
        now = clock()
        published = state.published
        if published is None or now > state.stale_deadline():
            counts[503] = counts.get(503, 0) + 1
            retry = max(1, math.ceil(state.next_refresh - now))
            return web.Response(
                status=503,
                text="no servable key set\n",
                headers={"Retry-After": str(retry), "Cache-Control": "no-store"},
            )
        max_age = max(0, int(state.next_refresh - now))
        headers = {"ETag": published.etag, "Cache-Control": f"public, max-age={max_age}"}
        inm = request.headers.get("If-None-Match")
        if inm is not None and etag_matches(inm, published.etag):
            counts[304] = counts.get(304, 0) + 1
            return web.Response(status=304, headers=headers)
        counts[200] = counts.get(200, 0) + 1
        return web.Response(body=published.body, content_type=JSON, headers=headers)

    return handle
