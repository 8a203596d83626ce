"""Peer fill: a replica with no servable set copies a peer's last good set while the upstream
is down.

Why: a replica that starts empty (a rescheduled pod, a scale-up) while an issuer's upstream is
down would answer 503 for that issuer, although its peer one pod away still serves the keys.
istiod's first fetch of a *new* ``jwksUri`` may land on it and then push a key set that
rejects every token.

The peer side, ``GET /peer/{name}`` on the admin port (:func:`jwks_mirror.serving.offers.share`)::

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
  policy as an upstream body (:func:`jwks_mirror.core.keysets.validate` on the ``jwks`` bytes,
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
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from jwks_mirror import __version__
from jwks_mirror.core.config.model import IssuerSettings, PeersSettings, PeerTLSSettings
from jwks_mirror.core.errors import PeerError, UpstreamError
from jwks_mirror.core.logs import event
from jwks_mirror.core.tls import build_peer_ssl_context
from jwks_mirror.serving.counters import Metrics
from jwks_mirror.serving.httpclient import ClientErrors, Sessions, file_stamps, read_body
from jwks_mirror.serving.offers import Offer, PeerFillReport, parse_offer
from jwks_mirror.serving.peerfinder import PeerFinder
from jwks_mirror.serving.state import IssuerState

# The answer holds the current keys and the retained ones: at most twice the upstream cap,
# plus room for the JSON around them.
_ENVELOPE_BYTES = 65_536
# Reasons a peer gives for having nothing to share: benign, not counted as peer errors.
_NOTHING_TO_SHARE = frozenset({"no_set", "expired", "filled_from_peer"})
# Reasons (httpclient.CLIENT_ERRORS) for a peer that gave no answer at all.
_UNREACHABLE = frozenset({"timeout", "connect", "connection", "protocol"})



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
        self._sessions = Sessions(
            headers={
                "User-Agent": f"jwks-mirror/{__version__} (peer fill)",
                "Accept": "application/json",
                "Accept-Encoding": "identity",
            },
            dns_cache=False,
        )
        self._metrics = metrics

    async def close(self) -> None:
        await self._sessions.close()

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
        refused = [r for r in results if r.offer is None and r.result not in _NOTHING_TO_SHARE]
        for result in refused:
            self._metrics.peer_errors_total.labels(state.name, result.result).inc()
        duration = loop.time() - started
        report = PeerFillReport(
            at=now,
            outcome=outcome,
            peer=best.peer if outcome == "filled" and best else None,
            duration_s=round(duration, 4),
            peers=tuple(r.as_json() for r in results),
        )
        event(
            "peer_fill",
            issuer=state.name,
            outcome=outcome,
            peer=report.peer,
            last_success=best.last_success if outcome == "filled" and best else None,
            kids=list(state.published.kids) if outcome == "filled" and state.published else [],
            duration_s=round(duration, 4),
            peers=[r.as_json() for r in results],
            level=logging.WARNING if refused else logging.INFO,
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
        if reasons - _NOTHING_TO_SHARE - _UNREACHABLE:
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
        except (PeerError, UpstreamError) as exc:
            return PeerResult(url, exc.reason, str(exc))
        return PeerResult(url, "offered", None, offer)

    async def _get(
        self, client: aiohttp.ClientSession, url: str, issuer: IssuerSettings
    ) -> tuple[int, bytes]:
        limit = 2 * issuer.limits.max_response_bytes + _ENVELOPE_BYTES
        timeout_s = issuer.limits.timeout_s
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=timeout_s)
        with ClientErrors(url, timeout_s=timeout_s):
            async with client.get(url, timeout=timeout, allow_redirects=False) as resp:
                return resp.status, await read_body(resp, limit)

    def _client(self, tls: PeerTLSSettings | None) -> aiohttp.ClientSession:
        """The session for the configured TLS profile; a new one when the profile or its
        files change (certificates rotate on disk)."""
        if tls is None:
            return self._sessions.get("peers", None, lambda: True)
        version = (tls, *file_stamps((tls.ca_file, tls.cert_file, tls.key_file)))
        return self._sessions.get("peers", version, lambda: build_peer_ssl_context(tls))


def _refusal(status: int, body: bytes) -> tuple[str, str]:
    """(reason, message) for a non-200 answer; only known reasons are taken from the body."""
    reason = None
    try:
        document = json.loads(body[:4096])
        if isinstance(document, dict):
            reason = document.get("reason")
    except (ValueError, RecursionError):
        pass
    if status == 503 and isinstance(reason, str) and reason in _NOTHING_TO_SHARE:
        return str(reason), f"peer has nothing to share ({reason})"
    return "status", f"peer answered {status}"

