"""Peer fill: a replica with no servable set copies a peer's last good set while the upstream
is down.

Why: a replica that starts empty (a rescheduled pod, a scale-up) while an issuer's upstream is
down would answer 503 for that issuer, although its peer one pod away still serves the keys.
istiod's first fetch of a *new* ``jwksUri`` may land on it and then push a key set that
rejects every token.

The peer side, ``GET /peer/{name}`` on the admin port (:func:`jwks_mirror.offers.share`)::

    200 {"name", "upstream", "source": "upstream" | "state",
         "last_success": <the peer's last upstream success, epoch seconds>,
         "jwks": "<canonical JSON of the keys the upstream last served>",
         "retained": [{"jwk": {...}, "removed_at": <epoch seconds>}, ...]}
    503 {"error", "reason": "no_set" | "expired" | "filled_from_peer"}   nothing to share
    404 unknown issuer

The asking side (:class:`PeerFiller`), and why each rule:

* Peers are asked only when the issuer has no servable set *and* its own fetch has just
  failed, so no peer traffic flows while a replica has its own set. Every peer is asked at
  once; the whole attempt (DNS included) is bounded by the issuer's fetch ``timeout``.
* An answer is untrusted input: capped in size, time-limited, and validated by the same
  policy as an upstream body (:func:`jwks_mirror.keysets.validate` on the ``jwks`` bytes,
  with the issuer's ``max_response_bytes`` and ``max_keys``). It must name the same upstream,
  and be within ``max_stale`` counted from the peer's ``last_success``.
* The copy keeps the peer's ``last_success`` (never later than now): ``max_stale`` is counted
  from the original upstream success, so every replica fails closed at the same moment.
* Sets that were themselves copied from a peer are never shared (503 ``filled_from_peer``):
  only sets from an upstream fetch, or restored from ``state_dir`` after one, travel, so a
  copy is always one hop from its upstream and a bad copy cannot spread.
* Answering never waits (for a fetch or for the peer's own peer fill), so two replicas
  that start empty together do not wait on each other.
* Of several valid answers the one with the newest ``last_success`` wins.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from jwks_mirror import __version__
from jwks_mirror.errors import ConfigError, PeerError
from jwks_mirror.logs import event
from jwks_mirror.metrics import Metrics
from jwks_mirror.offers import Offer, PeerFillReport, parse_offer
from jwks_mirror.settings import IssuerSettings, PeersSettings
from jwks_mirror.state import IssuerState
from jwks_mirror.tls import PeerTLSSettings, build_peer_ssl_context

# The answer holds the current keys and the retained ones: at most twice the upstream cap,
# plus room for the JSON around them.
_ENVELOPE_BYTES = 65_536
_CHUNK = 16_384
# Reasons a peer gives for having nothing to share: benign, not counted as peer errors.
_NOTHING_TO_SHARE = frozenset({"no_set", "expired", "filled_from_peer"})

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


# -- finding peers ----------------------------------------------------------------------------


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Every A/AAAA record of ``host`` (the resolver the pod has: kube-dns for a headless
    Service returns one record per pod)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _normalise(address: str) -> str | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0].strip()).compressed
    except ValueError:
        return None


def base_url(address: str, port: int, scheme: str = "http") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


class PeerFinder:
    """Peer admin URLs: ``peers.urls`` as given, or every address of ``peers.dns`` except
    this replica's own.

    Own addresses come from ``POD_IP`` / ``POD_IPS`` (the downward API) when set, else from
    resolving this host's name (a pod's hostname resolves to its IP through /etc/hosts).
    """

    def __init__(
        self, *, resolver: Resolver = system_resolver, environ: Mapping[str, str] | None = None
    ) -> None:
        self._resolver = resolver
        env = os.environ if environ is None else environ
        declared = [part for name in ("POD_IP", "POD_IPS") for part in env.get(name, "").split(",")]
        own = {a for a in (_normalise(p) for p in declared if p.strip()) if a is not None}
        self._own: frozenset[str] | None = frozenset(own) if own else None

    async def own_addresses(self) -> frozenset[str]:
        if self._own is None:
            try:
                found = await self._resolver(socket.gethostname(), 0)
            except OSError:
                found = []
            self._own = frozenset(a for a in (_normalise(x) for x in found) if a is not None)
        return self._own

    async def urls(self, peers: PeersSettings) -> list[str]:
        """Raises OSError when the DNS name does not resolve."""
        if peers.dns is None:
            return list(peers.urls)
        own = await self.own_addresses()
        addresses = [_normalise(a) for a in await self._resolver(peers.dns, peers.port)]
        unique = sorted({a for a in addresses if a is not None and a not in own})
        scheme = "https" if peers.tls is not None else "http"
        return [base_url(a, peers.port, scheme) for a in unique]


# -- asking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerResult:
    """What one peer answered: ``result`` is "offered" or the reason it gave nothing."""

    peer: str
    result: str
    error: str | None = None
    offer: Offer | None = None

    def as_json(self) -> dict[str, Any]:
        return {"peer": self.peer, "result": self.result, "error": self.error}


class PeerFiller:
    """Asks the peers for one issuer's set and adopts the best valid answer."""

    def __init__(
        self,
        peers: Callable[[], PeersSettings],
        *,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        finder: PeerFinder | None = None,
    ) -> None:
        self._peers = peers
        self._clock = clock
        self._finder = finder or PeerFinder()
        self._session: aiohttp.ClientSession | None = None
        self._session_key: tuple[object, ...] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._metrics = metrics

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def fill(self, state: IssuerState) -> PeerFillReport | None:
        """One peer-fill attempt for ``state``, bounded by its fetch timeout; its report (None
        without peers). Never raises for anything a peer does; the outcome also goes to the
        log and the metrics."""
        peers = self._peers()
        if not peers.enabled:
            return None
        loop = asyncio.get_running_loop()
        timeout = state.settings.limits.timeout_s
        started = loop.time()
        results: list[PeerResult] = []
        try:
            urls = await asyncio.wait_for(self._finder.urls(peers), timeout)
        except (OSError, TimeoutError) as exc:
            urls = []
            results.append(PeerResult(peers.dns or "", "dns", f"cannot resolve: {exc}"))
        if urls:
            results += await self._ask_all(state, urls, deadline=started + timeout)
        now = self._clock()
        # Checked again now: an offer may have reached max_stale while slower peers answered.
        max_stale_s = state.settings.limits.max_stale_s
        offers = [r.offer for r in results if r.offer and r.offer.last_success + max_stale_s > now]
        best = max(offers, key=lambda o: o.last_success, default=None)
        if best is not None and not state.servable(now):
            state.adopt_from_peer(
                best.validated,
                retained=best.retained,
                last_success=best.last_success,
                peer=best.peer,
                now=now,
            )
        outcome = self._outcome(state, best, urls, results)
        self._metrics.peer_fills_total.labels(state.name, outcome).inc()
        for result in results:
            if result.offer is None and result.result not in _NOTHING_TO_SHARE:
                self._metrics.peer_errors_total.labels(state.name, result.result).inc()
        duration = loop.time() - started
        report = PeerFillReport(
            at=now,
            outcome=outcome,
            peer=best.peer if outcome == "filled" and best else None,
            duration_s=round(duration, 4),
            peers=tuple(r.as_json() for r in results),
        )
        rejected = any(r.offer is None and r.result not in _NOTHING_TO_SHARE for r in results)
        event(
            "peer_fill",
            issuer=state.name,
            outcome=outcome,
            peer=report.peer,
            last_success=best.last_success if outcome == "filled" and best else None,
            kids=list(state.published.kids) if outcome == "filled" and state.published else [],
            duration_s=round(duration, 4),
            peers=[r.as_json() for r in results],
            level=logging.WARNING if rejected else logging.INFO,
        )
        return report

    @staticmethod
    def _outcome(
        state: IssuerState, best: Offer | None, urls: list[str], results: list[PeerResult]
    ) -> str:
        if best is not None and state.source == "peer" and state.filled_from == best.peer:
            return "filled"
        if not urls:
            return "no_peers"
        reasons = {r.result for r in results}
        if reasons - _NOTHING_TO_SHARE - {"timeout", "connect"}:
            return "rejected"
        if reasons & _NOTHING_TO_SHARE:
            return "no_set"
        return "unreachable"

    async def _ask_all(
        self, state: IssuerState, urls: list[str], *, deadline: float
    ) -> list[PeerResult]:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._ask(state, url)) for url in urls]
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        results = []
        for url, task in zip(urls, tasks, strict=True):
            if task in pending:
                results.append(PeerResult(url, "timeout", "no complete answer in time"))
            else:
                results.append(task.result())
        return results

    async def _ask(self, state: IssuerState, url: str) -> PeerResult:
        issuer = state.settings
        try:
            client = self._client(self._peers().tls)
            status, body = await self._get(client, f"{url}/peer/{issuer.name}", issuer)
            if status != 200:
                return PeerResult(url, *_refusal(status, body))
            offer = parse_offer(body, issuer=issuer, peer=url, now=self._clock())
        except PeerError as exc:
            return PeerResult(url, exc.reason, str(exc))
        return PeerResult(url, "offered", None, offer)

    async def _get(
        self, client: aiohttp.ClientSession, url: str, issuer: IssuerSettings
    ) -> tuple[int, bytes]:
        limit = 2 * issuer.limits.max_response_bytes + _ENVELOPE_BYTES
        timeout = aiohttp.ClientTimeout(
            total=issuer.limits.timeout_s, sock_connect=issuer.limits.timeout_s
        )
        try:
            async with client.get(url, timeout=timeout, allow_redirects=False) as resp:
                if resp.content_length is not None and resp.content_length > limit:
                    raise PeerError("too_large", f"answer of {resp.content_length} bytes")
                parts: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PeerError("too_large", f"answer exceeds {limit} bytes")
                    parts.append(chunk)
                return resp.status, b"".join(parts)
        except TimeoutError as exc:
            raise PeerError("timeout", "no complete answer in time") from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PeerError(
                "tls", f"certificate not accepted: {_oneline(exc.certificate_error)}"
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise PeerError("tls", f"TLS failed: {_oneline(exc)}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise PeerError("connect", f"cannot connect: {_oneline(exc.os_error)}") from exc
        except aiohttp.ClientError as exc:
            raise PeerError("connect", f"connection failed: {_oneline(exc)}") from exc

    def _client(self, tls: PeerTLSSettings | None) -> aiohttp.ClientSession:
        """The session for the configured TLS profile; a new one when the profile or its
        files change (certificates rotate on disk), the old one closed in the background."""
        key = _profile_key(tls)
        if self._session is not None and key != self._session_key:
            task = asyncio.get_running_loop().create_task(self._session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            self._session = None
        if self._session is None:
            context: ssl.SSLContext | bool = True
            if tls is not None:
                try:
                    context = build_peer_ssl_context(tls)
                except ConfigError as exc:
                    raise PeerError("tls", f"cannot load peers.tls files: {exc}") from exc
            self._session_key = key
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                headers={
                    "User-Agent": f"jwks-mirror/{__version__} (peer fill)",
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",
                },
                cookie_jar=aiohttp.DummyCookieJar(),
                connector=aiohttp.TCPConnector(ssl=context, limit=0, use_dns_cache=False),
            )
        return self._session


def _profile_key(tls: PeerTLSSettings | None) -> tuple[object, ...]:
    if tls is None:
        return (None,)
    stamps: list[object] = []
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        try:
            info = path.stat() if path else None
        except OSError:
            info = None
        stamps.append((info.st_mtime_ns, info.st_size) if info else None)
    return (tls, *stamps)


def _refusal(status: int, body: bytes) -> tuple[str, str]:
    """(reason, message) for a non-200 answer; only known reasons are taken from the body."""
    reason = None
    try:
        document = json.loads(body[:4096])
        if isinstance(document, dict):
            reason = document.get("reason")
    except (ValueError, RecursionError):
        pass
    if status == 503 and reason in _NOTHING_TO_SHARE:
        return str(reason), f"peer has nothing to share ({reason})"
    return "status", f"peer answered {status}"


def _oneline(exc: object) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
