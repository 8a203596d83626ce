"""OpenID Connect discovery: the document's checks, and a cache that honours its Cache-Control.

An issuer configured with ``discovery: true`` costs two upstream requests per refresh: the
discovery document, then the keys. The document changes far less often than the keys, and
IdPs say how long it stays valid in ``Cache-Control: max-age``; :class:`DiscoveryCache` keeps
the resolved ``jwks_uri`` that long, so a refresh costs one request. It never hides a change:

- a document answered with ``no-store``, ``no-cache`` or without ``max-age`` is not kept;
- an entry lives at most ``MAX_TTL_S``, whatever the IdP says;
- a failed keys fetch drops the entry (the fetcher does it): the IdP may have moved its keys,
  and the next attempt reads the document again.

The cache is bounded (``MAX_ENTRIES``, least recently used out first) and keyed by the issuer's
name, its ``issuer`` and the document's URL, so an edited issuer never reuses a stale answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from cachetools import TLRUCache

from jwks_mirror.core.cachecontrol import freshness_lifetime_s
from jwks_mirror.core.config.model import IssuerSettings
from jwks_mirror.core.errors import KeySetRejected, UpstreamError
from jwks_mirror.core.strictjson import parse_json

MAX_TTL_S = 86_400.0
MAX_ENTRIES = 16_384  # above the 10,000 issuers the mirror is measured with (docs/benchmarks.md)

DiscoveryKey = tuple[str, str | None, str]


def discovery_key(issuer: IssuerSettings) -> DiscoveryKey:
    return (issuer.name, issuer.issuer, issuer.discovery_document_url)


def max_age_s(cache_control: str | None, age: str | None = None) -> float | None:
    """How long a response may be reused (RFC 9111: ``max-age`` less ``Age``, at most
    ``MAX_TTL_S``); None when it must not be kept at all."""
    seconds = freshness_lifetime_s(cache_control, age)
    return min(seconds, MAX_TTL_S) if seconds else None


class DiscoveryCache:
    """Resolved ``jwks_uri`` per issuer, each kept for its document's own lifetime."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, maxsize: int = MAX_ENTRIES
    ) -> None:
        self._entries: TLRUCache[DiscoveryKey, tuple[str, float]] = TLRUCache(
            maxsize=maxsize, ttu=_expiry, timer=clock
        )

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: DiscoveryKey) -> str | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None else None

    def put(self, key: DiscoveryKey, jwks_uri: str, ttl_s: float | None) -> None:
        """Keep ``jwks_uri`` for ``ttl_s`` seconds; None (not cacheable) forgets the key."""
        if ttl_s is None:
            self.drop(key)
        else:
            self._entries[key] = (jwks_uri, ttl_s)

    def drop(self, key: DiscoveryKey) -> None:
        self._entries.pop(key, None)


def _expiry(key: DiscoveryKey, value: tuple[str, float], now: float) -> float:
    return now + value[1]


def jwks_uri_from(body: bytes, issuer: IssuerSettings) -> str:
    """The ``jwks_uri`` of a discovery document for ``issuer``, rebased onto
    ``discovery_url``'s origin when one is configured. Raises :class:`UpstreamError`
    (reason ``discovery``) for a document that is not for this issuer or names no keys."""
    assert issuer.issuer is not None
    try:
        document = parse_json(body)
    except KeySetRejected as exc:
        raise UpstreamError("discovery", f"discovery document: {exc}") from exc
    if not isinstance(document, dict):
        raise UpstreamError("discovery", "discovery document is not a JSON object")
    if document.get("issuer") != issuer.issuer:
        raise UpstreamError(
            "discovery",
            f"discovery document names issuer {str(document.get('issuer'))[:100]!r}, "
            f"expected {issuer.issuer!r}",
        )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
        raise UpstreamError("discovery", "discovery document has no http(s) jwks_uri")
    if issuer.discovery_url is not None:
        return rebase_origin(jwks_uri, old=issuer.issuer, new=issuer.discovery_url)
    return jwks_uri


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` with the scheme's default port filled in; None if unparsable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, parts.hostname.rstrip("."), port if port is not None else default


def rebase_origin(url: str, *, old: str, new: str) -> str:
    """``url`` moved to ``new``'s origin (scheme, host, port) if it is on ``old``'s; else as is.

    An issuer that names itself by a bare Service name (``http://auth:8080``) also names its
    ``jwks_uri`` that way, and that name only resolves in the issuer's own namespace; the
    document was fetched from ``discovery_url``, so its keys are fetched from the same place.
    A ``jwks_uri`` on any other origin was chosen by the issuer and is fetched as it says.
    """
    origin = _origin(url)
    if origin is None or origin != _origin(old):
        return url
    target = urlsplit(new)
    return urlunsplit(urlsplit(url)._replace(scheme=target.scheme, netloc=target.netloc))


