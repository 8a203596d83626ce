"""One upstream fetch: HTTP(S) with the issuer's TLS profile, limits and conditional request.

This module is the only place aiohttp client and ssl errors are seen; each leaves as an
:class:`UpstreamError` with a stable ``reason``:

    timeout     connect or total deadline passed (a hang or a slow drip)
    connect     no TCP connection (refused, DNS, unreachable)
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

Bodies are read in chunks and decompressed here, never by aiohttp, so the size cap applies to
the decompressed bytes and a compression bomb stops at ``max_response_bytes``.

Fetches are admitted through :class:`Admission`: at most ``STARTING`` fetches are in their
first ``SLOT_S`` seconds at any time. Without it, 10,000 issuers starting (or refreshed)
together put 10,000 requests on one event loop at once; each then takes longer than its own
timeout, fails, and retries a second later with the others: the mirror never settles. A slot
is held until the fetch finishes or for ``SLOT_S`` at most, so an upstream that hangs delays
the others by ``SLOT_S / STARTING`` (2.5 ms), never by its timeout; and a fetch's timeout
starts once it is admitted, so waiting for a slot never fails it.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from jwks_mirror import __version__
from jwks_mirror.configfields import forbidden_address
from jwks_mirror.discovery import DiscoveryCache, discovery_key, jwks_uri_from, max_age_s
from jwks_mirror.errors import ConfigError, UpstreamError
from jwks_mirror.settings import IssuerSettings
from jwks_mirror.tls import TLSSettings, build_ssl_context

USER_AGENT = f"jwks-mirror/{__version__}"
_EXCERPT_BYTES = 200  # enough to recognise an error page; never log a whole upstream body
_CHUNK = 16384
_RETIRE_AFTER_S = 330.0  # longer than the largest allowed timeout (300 s)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
STARTING = 100
SLOT_S = 0.25


class Admission:
    """At most ``limit`` fetches in their first ``slot_s`` seconds; first come, first served.

    A plain FIFO of futures rather than ``asyncio.Semaphore``, whose waiters remove
    themselves from a deque and re-scan it: with 10,000 fetches queued that was 4 % of the
    CPU of a refresh cycle (py-spy)."""

    def __init__(self, limit: int = STARTING, slot_s: float = SLOT_S) -> None:
        self._free = limit
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._slot_s = slot_s

    async def enter(self) -> Callable[[], None]:
        """Wait for a slot; the returned function gives it back (at most once, early or not:
        the slot also comes back by itself after ``slot_s``)."""
        loop = asyncio.get_running_loop()
        if self._free > 0 and not self._queue:
            self._free -= 1
        else:
            waiter = loop.create_future()
            self._queue.append(waiter)
            try:
                await waiter  # resolved by _hand_over: the slot is ours
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._hand_over()  # handed a slot just as we were cancelled: pass it on
                raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                handle.cancel()
                self._hand_over()

        handle = loop.call_later(self._slot_s, release)
        return release

    def _hand_over(self) -> None:
        """A slot came back: give it to the oldest waiter still waiting, or keep it."""
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():  # a waiter cancelled while queued is skipped
                waiter.set_result(None)
                return
        self._free += 1


class _ForbiddenAddress(OSError):
    """A host resolved to an address :func:`forbidden_address` refuses."""


class GuardedResolver(AbstractResolver):
    """The connector's resolver, refusing a name that resolves to a link-local or cloud
    metadata address: the one place the address rule meets DNS, at fetch time (a name that
    was harmless when ``check-config`` ran can point elsewhere later). Literal addresses never
    reach a resolver; :meth:`Fetcher._get` checks those."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            why = forbidden_address(result["host"])
            if why is not None:
                raise _ForbiddenAddress(f"{host} resolves to {result['host']}: {why}")
        return results

    async def close(self) -> None:
        await self._inner.close()


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
        # Each session's resolver, wrapped in GuardedResolver; tests give one that maps a
        # name to a metadata address, which no real resolver here would.
        self._resolver = resolver
        self._discovery = DiscoveryCache(clock=clock)
        self._sessions: dict[tuple[object, ...], aiohttp.ClientSession] = {}
        self._retired: dict[aiohttp.ClientSession, asyncio.TimerHandle] = {}
        self._closing_tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Close every session now, retired ones included."""
        sessions = [*self._sessions.values(), *self._retired]
        for handle in self._retired.values():
            handle.cancel()
        self._sessions, self._retired = {}, {}
        for session in sessions:
            await session.close()
        await asyncio.gather(*self._closing_tasks, return_exceptions=True)

    def _session(self, tls: TLSSettings | None) -> aiohttp.ClientSession:
        key = _profile_key(tls)
        session = self._sessions.get(key)
        if session is None:
            for old_key in [k for k in self._sessions if k[0] == key[0]]:
                self._retire(self._sessions.pop(old_key))
            try:
                context = build_ssl_context(tls)
            except ConfigError as exc:
                raise UpstreamError("tls", f"cannot load TLS files: {exc}") from exc
            inner = self._resolver() if self._resolver is not None else None
            connector = aiohttp.TCPConnector(
                ssl=context, limit=0, ttl_dns_cache=30, resolver=GuardedResolver(inner)
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._sessions[key] = session
        return session

    def _retire(self, session: aiohttp.ClientSession) -> None:
        """Close a superseded session once its in-flight fetches have surely timed out."""
        loop = asyncio.get_running_loop()

        def close() -> None:
            self._retired.pop(session, None)
            task = loop.create_task(session.close())
            self._closing_tasks.add(task)
            task.add_done_callback(self._closing_tasks.discard)

        self._retired[session] = loop.call_later(_RETIRE_AFTER_S, close)

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
        why = _url_refused(url)
        if why is not None:  # a literal address (a discovered jwks_uri, say): never asked
            raise UpstreamError("address", f"{url}: refused: {why}")
        try:
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
                body = await _read_body(response, limits.max_response_bytes)
                return FetchResult(
                    url=url,
                    body=body,
                    etag=response.headers.get("ETag"),
                    last_modified=response.headers.get("Last-Modified"),
                    cache_control=_joined(response, "Cache-Control"),
                    age=_joined(response, "Age"),
                )
        except UpstreamError:
            raise
        except TimeoutError as exc:
            raise UpstreamError(
                "timeout", f"{url}: no complete answer in {limits.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, _ForbiddenAddress):
                raise UpstreamError("address", f"{url}: refused: {exc.os_error}") from exc
            raise UpstreamError(
                "connect", f"{url}: cannot connect: {_oneline(exc.os_error)}"
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise UpstreamError(
                "tls", f"{url}: certificate not accepted: {_oneline(exc.certificate_error)}"
            ) from exc
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise UpstreamError("tls", f"{url}: TLS failed: {_oneline(exc)}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(
                "connect", f"{url}: cannot connect: {_oneline(exc.os_error)}"
            ) from exc
        except aiohttp.ClientProxyConnectionError as exc:
            raise UpstreamError("connect", f"{url}: cannot reach proxy: {_oneline(exc)}") from exc
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
        ) as exc:
            raise UpstreamError("connection", f"{url}: connection lost: {_oneline(exc)}") from exc
        except aiohttp.ClientResponseError as exc:
            raise UpstreamError("protocol", f"{url}: bad HTTP answer: {_oneline(exc)}") from exc
        except aiohttp.InvalidURL as exc:
            raise UpstreamError("connect", f"{url}: invalid URL") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection", f"{url}: {_oneline(exc)}") from exc


def _joined(response: aiohttp.ClientResponse, name: str) -> str | None:
    """A header's lines as one comma-separated value (RFC 9110 section 5.3); None if absent.
    Two ``Age`` lines so become an invalid ``Age``, which is ignored (cachecontrol.py)."""
    values = response.headers.getall(name, ())
    return ", ".join(values) if values else None


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read at most ``limit`` decompressed bytes; more is an error, not a truncation."""
    declared = response.content_length
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        decompressor = None
        if declared is not None and declared > limit:
            raise UpstreamError("too_large", f"Content-Length {declared} exceeds {limit} bytes")
    elif encoding in ("gzip", "x-gzip"):
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        decompressor = zlib.decompressobj()
    else:
        raise UpstreamError("encoding", f"unrequested Content-Encoding {encoding[:40]!r}")
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_chunked(_CHUNK):
            data = chunk if decompressor is None else _inflate(decompressor, chunk, limit - size)
            size += len(data)
            if size > limit:
                raise UpstreamError("too_large", f"body exceeds {limit} bytes")
            parts.append(data)
        if decompressor is not None and not decompressor.eof:
            raise UpstreamError("encoding", f"truncated {encoding} body")
    except zlib.error as exc:
        raise UpstreamError("encoding", f"corrupt {encoding} body: {_oneline(exc)}") from exc
    return b"".join(parts)


def _inflate(decompressor: zlib._Decompress, chunk: bytes, room: int) -> bytes:
    """Decompress ``chunk`` but stop one byte past ``room``: a bomb never fully expands."""
    out: list[bytes] = []
    produced = 0
    pending = chunk
    while pending:
        piece = decompressor.decompress(pending, room - produced + 1)
        out.append(piece)
        produced += len(piece)
        if produced > room:
            break
        pending = decompressor.unconsumed_tail
    return b"".join(out)


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


def _profile_key(tls: TLSSettings | None) -> tuple[object, ...]:
    if tls is None:
        return (None,)
    files = (tls.ca_file, tls.cert_file, tls.key_file)
    stamps = []
    for path in files:
        try:
            stat = path.stat() if path else None
        except OSError:
            stat = None
        stamps.append((stat.st_mtime_ns, stat.st_size) if stat else None)
    return (files, *stamps)


def _oneline(exc: object) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
