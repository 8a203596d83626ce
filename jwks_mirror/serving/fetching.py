"""One upstream fetch: HTTP(S) with the issuer's TLS profile, limits and conditional request.

Every failure leaves as an :class:`UpstreamError` with a stable ``reason``; aiohttp, ssl and
OS errors are mapped by the one table of :mod:`jwks_mirror.serving.httpclient` (which also holds the
sessions and the size-capped read this module shares with the peer fill):

    timeout     connect or total deadline passed (a hang or a slow drip)
    connect     no TCP connection (refused, DNS, unreachable, the proxy)
    tls         handshake or certificate verification failed
    connection  the peer reset or closed the connection mid-request
    protocol    the response was not valid HTTP
    status      a status other than 200 (or 304 to a conditional request)
    redirect    a 3xx: never followed, an upstream moving its keys is an operator decision
    too_large   the body (after decompression) exceeds max_response_bytes
    encoding    a Content-Encoding we did not ask for, or a corrupt compressed body
    discovery   the OpenID discovery document is unusable (discovery.py checks it)
    address     the host is, or resolves to, a link-local or cloud metadata address
                (configfields.forbidden_address): never connected to

Fetches are admitted through :class:`jwks_mirror.serving.admission.Admission`, so 10,000 issuers
refreshed together never put 10,000 requests on the loop at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from jwks_mirror import __version__
from jwks_mirror.core.config.fields import forbidden_address
from jwks_mirror.core.config.model import IssuerSettings, TLSSettings
from jwks_mirror.core.errors import UpstreamError
from jwks_mirror.core.tls import build_ssl_context
from jwks_mirror.serving.admission import Admission
from jwks_mirror.serving.discovery import DiscoveryCache, discovery_key, jwks_uri_from, max_age_s
from jwks_mirror.serving.httpclient import ClientErrors, Sessions, file_stamps, read_body

__all__ = ["FetchResult", "Fetcher"]

USER_AGENT = f"jwks-mirror/{__version__}"
_EXCERPT_BYTES = 200  # enough to recognise an error page; never log a whole upstream body
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Validators:
    """What makes the next fetch conditional: the ``ETag`` and ``Last-Modified`` of the last
    set this replica fetched itself (never a peer's), and the SHA-256 of that body (identical
    bytes are not validated again). The refresher keeps them; the state file saves them."""

    etag: str | None = None
    last_modified: str | None = None
    digest: str | None = None


NO_VALIDATORS = Validators()


@dataclass(frozen=True)
class FetchResult:
    """A 200 (``body`` set) or a 304 to our conditional request (``body`` None)."""

    url: str
    body: bytes | None
    etag: str | None = None
    last_modified: str | None = None
    cache_control: str | None = None
    age: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.body is None


class Fetcher:
    """Owns the client sessions: one per TLS profile, rebuilt when its files change.

    Mesh certificates rotate (Istio's every 24 h), so a profile is keyed by its files' paths
    *and* their modification times; the previous session of a rotated profile is closed
    once a newer one exists and it has had time to finish in-flight requests.
    """

    def __init__(
        self,
        *,
        admission: Admission | None = None,
        clock: Callable[[], float] = time.monotonic,
        resolver: Callable[[], AbstractResolver] | None = None,
    ) -> None:
        self._admission = admission or Admission()
        self._discovery = DiscoveryCache(clock=clock)
        self._sessions = Sessions(
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"}, resolver=resolver
        )

    async def close(self) -> None:
        """Close every session now, retired ones included."""
        await self._sessions.close()

    def _session(self, tls: TLSSettings | None) -> aiohttp.ClientSession:
        files = (tls.ca_file, tls.cert_file, tls.key_file) if tls is not None else None
        version = file_stamps(files) if files is not None else ()
        return self._sessions.get(files, version, lambda: build_ssl_context(tls))

    async def fetch(
        self,
        issuer: IssuerSettings,
        *,
        validators: Validators = NO_VALIDATORS,
    ) -> FetchResult:
        """Fetch the issuer's JWKS once (after discovery, when configured), conditionally
        when ``validators`` name an ETag or a Last-Modified time."""
        etag, last_modified = validators.etag, validators.last_modified
        release = await self._admission.enter()
        try:
            session = self._session(issuer.tls)
            url = issuer.jwks_uri
            if url is None:
                url = await self._discover(issuer, session)
            headers = dict(self._headers(issuer))
            if etag:
                headers["If-None-Match"] = etag
            if last_modified:
                headers["If-Modified-Since"] = last_modified
            try:
                return await self._get(
                    issuer, session, url, headers, conditional=bool(etag or last_modified)
                )
            except UpstreamError:
                # The IdP may have moved its keys: the next attempt reads the document again.
                if issuer.jwks_uri is None:
                    self._discovery.drop(discovery_key(issuer))
                raise
        finally:
            release()

    async def _discover(self, issuer: IssuerSettings, session: aiohttp.ClientSession) -> str:
        """The JWKS URI the issuer's discovery document names: from the cache while the
        document's ``Cache-Control`` allows, else fetched and checked."""
        key = discovery_key(issuer)
        cached = self._discovery.get(key)
        if cached is not None:
            return cached
        result = await self._get(
            issuer, session, issuer.discovery_document_url, dict(self._headers(issuer)),
            conditional=False,
        )
        assert result.body is not None
        jwks_uri = jwks_uri_from(result.body, issuer)
        why = _url_refused(jwks_uri)
        if why is not None:  # a literal address in the document: never asked, never cached
            raise UpstreamError("address", f"{jwks_uri}: refused: {why}")
        self._discovery.put(key, jwks_uri, max_age_s(result.cache_control, result.age))
        return jwks_uri

    def _headers(self, issuer: IssuerSettings) -> Mapping[str, str]:
        headers = dict(issuer.headers)
        headers["Accept-Encoding"] = "gzip, deflate"
        if issuer.bearer_token_file is not None:
            # Re-read every time: projected service-account tokens rotate on disk.
            token = _read_token(issuer.bearer_token_file)
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _get(
        self,
        issuer: IssuerSettings,
        session: aiohttp.ClientSession,
        url: str,
        headers: dict[str, str],
        *,
        conditional: bool,
    ) -> FetchResult:
        limits = issuer.limits
        timeout = aiohttp.ClientTimeout(total=limits.timeout_s, sock_connect=limits.timeout_s)
        server_name = issuer.tls.server_name if issuer.tls else None
        # A literal link-local or metadata host is refused before this: a configured URL when
        # the config is loaded (fields.url), a discovered one when discovered (_discover); a
        # name that resolves to one, by the sessions' resolver (httpclient.GuardedResolver).
        with ClientErrors(url, timeout_s=limits.timeout_s):
            async with session.get(
                url,
                headers=headers,
                allow_redirects=False,
                proxy=issuer.proxy,
                timeout=timeout,
                server_hostname=server_name,
            ) as response:
                if response.status == 304 and conditional:
                    # A 304 carries the Cache-Control a 200 would (RFC 9110 section 15.4.5).
                    return FetchResult(
                        url=url,
                        body=None,
                        cache_control=_joined(response, "Cache-Control"),
                        age=_joined(response, "Age"),
                    )
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location", "")[:200]
                    raise UpstreamError(
                        "redirect",
                        f"{url} answered {response.status} to {location!r}; redirects are not "
                        "followed",
                    )
                if response.status != 200:
                    excerpt = await _excerpt(response)
                    raise UpstreamError("status", f"{url} answered {response.status}{excerpt}")
                body = await read_body(response, limits.max_response_bytes)
                return FetchResult(
                    url=url,
                    body=body,
                    etag=response.headers.get("ETag"),
                    last_modified=response.headers.get("Last-Modified"),
                    cache_control=_joined(response, "Cache-Control"),
                    age=_joined(response, "Age"),
                )


def _joined(response: aiohttp.ClientResponse, name: str) -> str | None:
    """A header's lines as one comma-separated value (RFC 9110 section 5.3); None if absent.
    Two ``Age`` lines so become an invalid ``Age``, which is ignored (cachecontrol.py)."""
    values = response.headers.getall(name, ())
    return ", ".join(values) if values else None


async def _excerpt(response: aiohttp.ClientResponse) -> str:
    """A short, printable excerpt of an error body, for the log and /status."""
    try:
        raw = await asyncio.wait_for(response.content.read(_EXCERPT_BYTES), timeout=1.0)
    except (TimeoutError, aiohttp.ClientError):
        return ""
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return ""
    text = "".join(c if c.isprintable() else " " for c in raw.decode("utf-8", "replace"))
    text = " ".join(text.split())
    return f": {text[:_EXCERPT_BYTES]!r}" if text else ""


def _url_refused(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None  # aiohttp refuses it as an invalid URL
    return forbidden_address(host) if host else None


def _read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UpstreamError("credentials", f"bearer_token_file {path}: {exc.strerror}") from exc
    if not token or any(c in token for c in "\r\n"):
        raise UpstreamError("credentials", f"bearer_token_file {path} holds no usable token")
    return token
