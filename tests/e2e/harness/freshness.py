"""Key freshness end to end: identity providers that rotate on a schedule, istiod's resolver
with its refresh interval, and a stream of tokens that records every verdict.

- :class:`ScheduledIdP` is the plain issuer (a real aiohttp server behind its STRICT sidecar)
  with a key schedule: the next key is published at ``publish_at`` and signs from
  ``sign_at`` (both wall-clock, ``time.time()``). Equal instants make a Dex-like IdP that signs
  with a new key the moment it publishes it; ``publish_at`` well before ``sign_at`` makes an
  Auth0/Okta-like IdP that publishes the next key ahead. Its ``Cache-Control`` is either
  Dex's (``max-age`` = whole seconds to the next rotation, truncated as Dex does) or fixed.
- :class:`IstiodResolver` is istiod's JWKS resolver reduced to what sets the window: a cache
  keyed by the exact URI, filled at once for a URI it has not seen (the push that carries a
  new ``?v=``), refreshed every ``interval_s`` on a timer of its own whatever the traffic
  (``PILOT_JWT_PUB_KEY_REFRESH_INTERVAL``), each fetch on a new connection. The verifier Envoy
  fetches from it with a short ``cache_duration``, which stands for istiod's push.
- :class:`TokenStream` sends the token the IdP currently signs with every ``period_s`` and
  keeps every verdict, so the window is read off the record: from the moment the IdP starts
  signing with the new key to the last rejected valid token.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiohttp import web
from ruamel.yaml import YAML

from . import envoy, http
from .issuer import PlainIssuer
from .mesh import IssuerWorkload, Mesh, Verifier
from .tokens import SigningKey


class ScheduledIdP(PlainIssuer):
    """An IdP whose published keys and signing key follow a schedule.

    ``arm(now)`` starts it: the next key is published ``publish_after_s`` later and signs from
    ``sign_after_s`` later (wall-clock ``publish_at``/``sign_at``). A Dex-like IdP keeps
    publishing the old key as a verification key. ``cache_control`` is ``"dex"`` (``max-age``
    = whole seconds to the next rotation, ``sign_at`` and then ``sign_at + period_s``,
    truncated as Dex truncates it; ``period_s`` while not armed), a fixed value, or None.
    """

    def __init__(self, name: str, *, publish_after_s: float, sign_after_s: float,
                 cache_control: str | None, period_s: float = 3600.0) -> None:
        super().__init__(name)
        self.first = self.keys[0]
        self.next = SigningKey(kid=f"{name}-2")
        self.publish_after_s = publish_after_s
        self.sign_after_s = sign_after_s
        self.cache_control = cache_control
        self.period_s = period_s
        self.publish_at = math.inf
        self.sign_at = math.inf
        self._tokens: dict[str, str] = {}

    def arm(self, now: float) -> None:
        self.publish_at = now + self.publish_after_s
        self.sign_at = now + self.sign_after_s

    def published(self, now: float) -> list[SigningKey]:
        return [self.first, self.next] if now >= self.publish_at else [self.first]

    def signing(self, now: float) -> SigningKey:
        return self.next if now >= self.sign_at else self.first

    def valid_token(self, now: float) -> tuple[str, str]:
        """(kid, token) of a token this IdP would mint at ``now``; one token per key, long
        lived, so the stream measures key freshness and nothing else."""
        key = self.signing(now)
        if key.kid not in self._tokens:
            self._tokens[key.kid] = self.token(key, lifetime=3600)
        return key.kid, self._tokens[key.kid]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public for k in self.published(time.time())]}

    def cache_control_value(self, now: float) -> str | None:
        if self.cache_control != "dex":
            return self.cache_control
        if self.sign_at == math.inf:
            return f"max-age={int(self.period_s)}, must-revalidate"
        rotation = self.sign_at if now < self.sign_at else self.sign_at + self.period_s
        # Dex: fmt.Sprintf("max-age=%d, must-revalidate", int(maxAge.Seconds())): truncated.
        return f"max-age={max(0, math.floor(rotation - now))}, must-revalidate"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        value = self.cache_control_value(time.time())
        if value is not None and response.status in (200, 304):
            response.headers["Cache-Control"] = value
        return response


def add_idp(mesh: Mesh, app: PlainIssuer) -> IssuerWorkload:
    """``mesh.add_issuer`` for an app built by the caller: started, behind a STRICT sidecar
    that admits only the mirror."""
    mesh.on_close(app.close)
    app.start()
    identity = mesh.identity(app.name, "keys", dns_names=(f"keys.{app.name}.svc.cluster.local",))
    sidecar = mesh.envoy(f"{app.name}-sidecar", lambda port: envoy.issuer_sidecar(
        port=port, app_port=app.port, identity=identity, ca_file=mesh.ca_file,
        allowed=[mesh.mirror_identity.spiffe_id]))
    workload = IssuerWorkload(app.name, app, sidecar, identity)
    mesh.issuers[app.name] = workload
    return workload


class IstiodResolver:
    """istiod's JWKS resolver: a cache by exact URI, a refresh timer, a push to one verifier.

    ``apply(uri)`` is the push that carries a ``jwksUri``: a URI not cached is fetched at once.
    Every ``interval_s`` the timer refetches every cached URI (a new connection each). The
    verifier's GETs are answered from the cache of the applied URI. ``tick_at(t)`` moves the
    timer so its next refresh comes at ``t`` (then every ``interval_s``).
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.cache: dict[str, bytes] = {}
        self.fetches: list[tuple[float, str]] = []
        self.applied: str | None = None
        self._lock = threading.Lock()
        self._next_tick = time.time() + interval_s
        self._wake = threading.Event()
        self._closed = False
        resolver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with resolver._lock:
                    body = resolver.cache.get(resolver.applied or "", b"")
                self.send_response(200 if body else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._timer, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def _fetch(self, uri: str) -> None:
        response = http.get(uri)
        if response.status == 200:  # istiod keeps the last good set on a failed refresh
            with self._lock:
                self.cache[uri] = response.body
                self.fetches.append((time.time(), uri))

    def apply(self, uri: str) -> str:
        if uri not in self.cache:
            self._fetch(uri)
        with self._lock:
            self.applied = uri
        return uri

    def apply_manifest(self, manifest: Path) -> str:
        """``kubectl apply`` of a RequestAuthentication: the push carrying its ``jwksUri``."""
        rule = YAML(typ="safe").load(manifest.read_text())["spec"]["jwtRules"][0]
        return self.apply(str(rule["jwksUri"]))

    def tick_at(self, when: float) -> None:
        with self._lock:
            self._next_tick = when
        self._wake.set()

    def _timer(self) -> None:
        while not self._closed:
            with self._lock:
                delay = self._next_tick - time.time()
            if self._wake.wait(max(0.0, delay)):
                self._wake.clear()
                continue  # moved or closing: read the schedule again
            with self._lock:
                self._next_tick += self.interval_s
                uris = list(self.cache)
            for uri in uris:
                self._fetch(uri)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Verdict:
    sent_at: float
    kid: str
    status: int


@dataclass
class TokenStream:
    """Sends ``token_at(now)`` to ``verifier`` under ``provider`` every ``period_s`` until
    stopped, recording each verdict."""

    verifier: Verifier
    provider: str
    token_at: Callable[[float], tuple[str, str]]
    period_s: float = 0.05
    verdicts: list[Verdict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TokenStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            sent_at = time.time()
            kid, token = self.token_at(sent_at)
            try:
                status = self.verifier.status(self.provider, token)
            except OSError:
                status = 0
            self.verdicts.append(Verdict(sent_at, kid, status))
            self._stop.wait(max(0.0, sent_at + self.period_s - time.time()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def rejected(self, *, since: float = 0.0) -> list[Verdict]:
        return [v for v in list(self.verdicts) if v.sent_at >= since and v.status != 200]

    def settled(self, *, since: float, for_s: float) -> bool:
        """True once every token sent in the last ``for_s`` seconds (after ``since``) was
        accepted and that stretch is ``for_s`` long."""
        recent = [v for v in list(self.verdicts) if v.sent_at >= since]
        if not recent or recent[-1].sent_at - since < for_s:
            return False
        tail = [v for v in recent if v.sent_at >= recent[-1].sent_at - for_s]
        return all(v.status == 200 for v in tail)
