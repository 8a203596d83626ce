"""The admin port: liveness, readiness, metrics, status, and the refresh write action.

``POST /refresh`` is the only write. It is allowed from loopback (``kubectl exec ... --
jwks-mirror refresh``) or with ``Authorization: Bearer <admin.token_file>``. Loopback means
exactly 127.0.0.1 and ::1: Istio's sidecar forwards inbound mesh traffic from 127.0.0.6, so
"anything in 127.0.0.0/8" would let every workload in the mesh trigger refreshes.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST

from jwks_mirror.core.errors import UnknownIssuer
from jwks_mirror.core.keysets import Key
from jwks_mirror.serving.exposition import exposition
from jwks_mirror.serving.mirror import Issuer, Mirror
from jwks_mirror.serving.offers import share

MIRROR = web.AppKey("mirror", Mirror)
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


class _MalformedRequests(logging.Filter):
    """Drops aiohttp's record of a request it could not parse (it answered 400).

    aiohttp logs each one at ERROR with a traceback (``aiohttp.server``), which under
    ``serve`` reached stderr once per request: any client of the admin port could fill the
    log. The 400 answer is the whole story; errors raised by a handler are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HttpProcessingError)


_QUIET = _MalformedRequests()


def create_admin_app(mirror: Mirror) -> web.Application:
    server_log = logging.getLogger("aiohttp.server")
    if _QUIET not in server_log.filters:
        server_log.addFilter(_QUIET)
    app = web.Application()
    app[MIRROR] = mirror
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_get("/status/{name}", status_one)
    app.router.add_get("/peer/{name}", peer)
    app.router.add_post("/refresh", refresh)
    app.router.add_post("/refresh/{name}", refresh)
    return app


def _json(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, indent=2, sort_keys=True) + "\n",
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """200 once every issuer has settled, 503 before that and while draining. Issuers
    without a servable set are named but do not make the replica unready (see
    ``Mirror.ready``): each fails closed on its own path and is alerted on per issuer."""
    mirror = request.app[MIRROR]
    ready = mirror.ready
    body = {
        "ready": ready,
        "draining": mirror.draining,
        "pending": mirror.pending(),
        "not_servable": mirror.not_servable(),
    }
    return _json(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = exposition(request.app[MIRROR].metrics.registry)
    response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
    # Prometheus asks for gzip; with thousands of issuers that is a tenth of the bytes.
    response.enable_compression()
    return response


def _summary(issuer: Issuer, now: float) -> dict[str, Any]:
    state, health = issuer.state, issuer.health
    published = state.published
    return {
        "name": state.name,
        "upstream": state.settings.upstream,
        "issuer": state.settings.issuer,
        "kids": list(published.kids) if published else [],
        "upstream_kids": sorted({k.kid for k in state.current if k.kid is not None}),
        "retained_kids": list(state.retained_kids()),
        "etag": published.etag if published else None,
        "version": published.version if published else None,
        "keys": len(state.current),
        "last_attempt": health.last_attempt,
        "last_success": state.last_success,
        "last_change": state.last_change,
        "last_key_added": state.key_added_at,
        "last_error": health.last_error,
        "last_error_reason": health.last_error_reason,
        "consecutive_failures": health.consecutive_failures,
        "stale": issuer.is_stale(now),
        "servable": state.servable(now),
        "expired": state.is_expired(now),
        "next_refresh": health.next_refresh,
        "next_refresh_reason": health.next_refresh_reason,
        "path": f"/{state.name}/jwks.json",
        "source": state.source,
        "filled_from_peer": state.filled_from,
        "peer_fill": health.peer_fill.as_json() if health.peer_fill else None,
    }


async def status(request: web.Request) -> web.Response:
    mirror = request.app[MIRROR]
    now = mirror.clock()
    issuers = [_summary(issuer, now) for issuer in mirror.issuers.values()]
    return _json({"now": now, "draining": mirror.draining, "issuers": issuers})


async def status_one(request: web.Request) -> web.Response:
    """One issuer in detail: the summary, the published key set, and each key's history."""
    mirror = request.app[MIRROR]
    issuer = mirror.issuers.get(request.match_info["name"])
    if issuer is None:
        return _json({"error": f"unknown issuer: {request.match_info['name']}"}, status=404)
    state = issuer.state
    now = mirror.clock()
    keep = state.settings.limits.retain_removed_keys_s
    keys = [
        {
            **_key_fields(key),
            "status": "current",
            "first_seen": state.first_seen.get((key.kid, key.ident)),
        }
        for key in state.current
    ]
    keys += [
        {
            **_key_fields(r.key),
            "status": "retained",
            "first_seen": state.first_seen.get((r.key.kid, r.key.ident)),
            "removed_at": r.removed_at,
            "retained_until": r.removed_at + keep,
        }
        for r in state.retained.values()
    ]
    detail = _summary(issuer, now)
    detail["now"] = now
    detail["key_history"] = keys
    detail["jwks"] = json.loads(state.published.body) if state.published else None
    return _json(detail)


async def peer(request: web.Request) -> web.Response:
    """What a replica with no set copies while its upstream is down (see peering.py)."""
    mirror = request.app[MIRROR]
    issuer = mirror.issuers.get(request.match_info["name"])
    if issuer is None:
        return _json({"error": f"unknown issuer: {request.match_info['name']}"}, status=404)
    code, document = share(issuer.state, mirror.clock())
    # Compact: the asking replica caps the answer's size (see peering.py).
    return web.Response(
        body=json.dumps(document, separators=(",", ":")).encode(),
        status=code,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _key_fields(key: Key) -> dict[str, Any]:
    return {"kid": key.kid, "kty": key.kty, "alg": key.jwk.get("alg"), "thumbprint": key.thumbprint}


async def refresh(request: web.Request) -> web.Response:
    mirror = request.app[MIRROR]
    denied = _authorize(request, mirror)
    if denied is not None:
        return denied
    name = request.match_info.get("name")
    purge = request.query.get("purge_retained", "").lower() in ("1", "true", "yes")
    try:
        outcomes = await mirror.refresh([name] if name else None, purge_retained=purge)
    except UnknownIssuer as exc:
        return _json({"error": f"unknown issuer: {exc.args[0]}"}, status=404)
    ok = all(o.outcome != "failed" for o in outcomes)
    return _json({"results": [o.as_json() for o in outcomes]}, status=200 if ok else 502)


def _authorize(request: web.Request, mirror: Mirror) -> web.Response | None:
    if request.remote in LOOPBACK:
        return None
    token_file = mirror.settings.admin.token_file
    if token_file is None:
        return _json(
            {
                "error": "refresh is allowed from loopback only (set admin.token_file to allow "
                "bearer tokens)"
            },
            status=403,
        )
    try:
        expected = token_file.read_text(encoding="utf-8").strip()
    except OSError:
        return _json({"error": "admin token unavailable"}, status=503)
    supplied = request.headers.get("Authorization", "")
    scheme, _, token = supplied.partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not _same_token(token.strip(), expected)
    ):
        return web.Response(
            status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"}
        )
    return None


def _same_token(supplied: str, expected: str) -> bool:
    """Compared as ASCII bytes, in constant time. A header value is decoded from whatever
    bytes the client sent (bytes that are not UTF-8 become surrogates), so a value that is
    not ASCII is a wrong token (401), never an encoding error (500)."""
    if not supplied.isascii() or not expected.isascii():
        return False
    return hmac.compare_digest(supplied.encode("ascii"), expected.encode("ascii"))
