"""The public port: ``GET|HEAD /{name}/jwks.json`` and nothing else, over plain HTTP or, with
``public.tls``, HTTPS only (the TLS layer wraps the listener; see ``publictls``).

This is the port istiod reaches, on the path of every push, so it must be cheap and boring.
It is a bare :class:`asyncio.Protocol`, not an aiohttp server: the port answers a handful of
byte strings that change a few times a second at most, and profiling aiohttp's low-level
server under load showed most of the time in its per-request machinery (request and response
objects, a coroutine per request, header serialisation), not in our handler. Here a request
costs one head parse, one dict lookup and one ``transport.write`` of pre-built bytes.

* Responses are built once per issuer, published set, ``max-age`` second and ``Date`` second
  (``Cache-Control: max-age`` counts down to the next refresh, so it cannot be fixed forever).
* Query strings are ignored on purpose: istiod caches by the exact URI, so ``?v=<version>`` is
  how an operator makes every istiod fetch at once. The raw target is matched, never decoded,
  so nothing encoded becomes a name by accident.
* Requests are counted in plain ints by issuer and status code
  (``requestcounts.RequestCounts``, one event loop, no lock); the metrics
  read them at scrape time through :meth:`PublicServer.requests`.

The HTTP/1.1 parsing lives in ``http1``; this module decides the answers and
owns the listening socket and the orderly shutdown. The open connections and the sweeper that
applies the idle/header timeout (no complete request for 15 s: closed) are a
:class:`~jwks_mirror.serving.http.connections.Connections` the server owns.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from ssl import SSLContext

from jwks_mirror.serving.http.connections import Connections
from jwks_mirror.serving.http.http1 import Connection
from jwks_mirror.serving.http.listening import Listener, NativeListener, PortSpec, native_accept
from jwks_mirror.serving.http.requestcounts import RequestCounts
from jwks_mirror.serving.http.responses import (
    REASONS,
    SERVER_LINE,
    DateClock,
    Responses,
    etag_matches,
    with_connection,
)
from jwks_mirror.serving.mirror import Mirror
from jwks_mirror.serving.state import IssuerState, Published

_SUFFIX = b"/jwks.json"
# A connection with no complete request for this long is closed: the idle keep-alive
# timeout, and the header timeout that stops slow clients (slowloris) holding connections.
KEEPALIVE_S = 15.0


class PublicServer:
    """The listening socket, the answers, and the orderly shutdown; the open connections and
    their sweeper are a :class:`~jwks_mirror.serving.http.connections.Connections`."""

    def __init__(
        self, mirror: Mirror, *, keepalive_s: float | None = None, max_connections: int = 256
    ) -> None:
        self.mirror = mirror
        self.max_connections = max_connections
        self.keepalive_s = KEEPALIVE_S if keepalive_s is None else keepalive_s
        self.issuers = mirror.issuers
        self.counts = RequestCounts()
        mirror.metrics.requests = self.requests
        self.issuers = mirror.issuers  # the schedule (Retry-After, max-age) is the refresher's
        self.clock = DateClock(mirror.clock)
        self.cache: dict[str, Responses] = {}
        aborts = mirror.metrics.public_aborts_total
        self.connections = Connections(
            keepalive_s=self.keepalive_s, aborted=lambda reason: aborts.labels(reason).inc()
        )
        self._listener: Listener | NativeListener | None = None

    def requests(self, name: str | None) -> Mapping[int, int]:
        """Requests answered for issuer ``name`` (None: names not configured), by status code.
        Read only; for the metrics, at scrape time."""
        return self.counts.of(name)

    async def start(
        self, host: str, port: int, *, backlog: int = 1024, ssl: SSLContext | None = None
    ) -> None:
        """Listen; with ``ssl`` the port speaks TLS only (a plain request fails the handshake
        and gets no answer). A handshake gets the idle/header timeout too, and counts against
        ``max_connections``. Without TLS on uvloop the loop's own accept loop serves the port,
        else this package's (see :mod:`jwks_mirror.serving.http.listening`)."""
        loop = asyncio.get_running_loop()
        metrics = self.mirror.metrics
        spec = PortSpec(
            "public",
            lambda: Connection(self),
            open_connections=self.connections.__len__,
            max_connections=self.max_connections,
            rejected=metrics.connections_rejected_total,
            errors=metrics.accept_errors_total,
        )
        listener: Listener | NativeListener
        if ssl is None and native_accept(loop):
            listener = NativeListener(spec)
        else:
            listener = Listener(
                spec,
                ssl_context=ssl,
                ssl_handshake_timeout=self.keepalive_s,
                tells_made=True,  # join()
                reserve=True,
                serve_queued=ssl is None,  # a handshake in progress at shutdown is dropped
            )
        await listener.start(host, port, backlog=backlog)
        self._listener = listener
        metrics.open_connections.labels("public").set_function(lambda: listener.open_connections)
        self.connections.start_sweeping("public")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        assert self._listener is not None
        return self._listener.addresses

    async def close(self, *, timeout_s: float) -> None:
        """Stop accepting; answer requests already received; close every connection (idle
        ones at once, busy ones after their answer); abort what is left after ``timeout_s``."""
        self.connections.draining = True  # before the listener closes: no keep-alive promised
        if self._listener is not None:
            self._listener.close()  # the kernel's queue is taken first, not reset
            await self._listener.wait_closed()  # those connections are made, and drained next
        await self.connections.close(timeout_s=timeout_s)

    def join(self, connection: Connection, transport: asyncio.BaseTransport) -> bool:
        """A connection is made (over TLS: its handshake is over). Without TLS the cap is
        enforced here: False when the connection was refused (and closed)."""
        listener = self._listener
        if isinstance(listener, NativeListener):
            if not listener.admit(transport):
                return False
        elif listener is not None:
            listener.made(connection)
        self.connections.add(connection)
        return True

    def forget(self, connection: Connection) -> None:
        """A connection is gone."""
        self.connections.discard(connection)

    # -- answers ----------------------------------------------------------------------------

    def answer(
        self, method: bytes, target: bytes, inm: bytes | None, keep_alive: bool, http11: bool
    ) -> bytes:
        """The complete response for one request, ``Connection`` field included: ``close``
        when the connection closes after it, ``keep-alive`` when HTTP/1.0 asked to keep it."""
        path = target.partition(b"?")[0]
        if path[:1] != b"/" and (path.startswith((b"http://", b"https://"))):
            # absolute-form (RFC 9112 3.2.2): the path starts after the authority
            slash = path.find(b"/", path.find(b"//") + 2)
            path = path[slash:] if slash >= 0 else b"/"
        issuer = None
        if path.endswith(_SUFFIX) and path[:1] == b"/":
            issuer = self.issuers.get(path[1 : -len(_SUFFIX)].decode("latin-1"))
        if issuer is None:
            unknown = self.counts[None]
            unknown[404] = unknown.get(404, 0) + 1
            return self.simple(
                404, b"not found\n", keep_alive=keep_alive, method=method, http11=http11
            )
        state = issuer.state
        counts = self.counts[state.name]
        if method != b"GET" and method != b"HEAD":
            counts[405] = counts.get(405, 0) + 1
            extra = b"Allow: GET, HEAD\r\n"
            body = b"method not allowed\n"
            return self.simple(
                405, body, extra, keep_alive=keep_alive, method=method, http11=http11
            )
        now = self.clock.now()
        published = state.published
        if published is None or now > state.stale_deadline():
            counts[503] = counts.get(503, 0) + 1
            retry = max(1, math.ceil(issuer.health.next_refresh - now))
            extra = f"Retry-After: {retry}\r\nCache-Control: no-store\r\n".encode()
            body = b"no servable key set\n"
            return self.simple(
                503, body, extra, keep_alive=keep_alive, method=method, http11=http11
            )
        responses = self._responses(state, published, now)
        if inm is not None and (
            inm == responses.etag or etag_matches(inm.decode("latin-1"), published.etag)
        ):
            counts[304] = counts.get(304, 0) + 1
            answer = responses.not_modified
        else:
            counts[200] = counts.get(200, 0) + 1
            answer = responses.full if method == b"GET" else responses.head
        if not keep_alive or self.connections.draining:
            answer = with_connection(answer, b"close")
        elif not http11:
            answer = with_connection(answer, b"keep-alive")
        return answer

    def _responses(self, state: IssuerState, published: Published, now: float) -> Responses:
        max_age = max(0, int(self.issuers[state.name].health.next_refresh - now))
        date = self.clock.date(now)
        cached = self.cache.get(state.name)
        if (
            cached is None
            or cached.published is not published
            or cached.max_age != max_age
            or cached.date != date
        ):
            cached = Responses(published, max_age, date, self.clock.line)
            self.cache[state.name] = cached
            if len(self.cache) > 2 * len(self.issuers) + 16:  # issuers removed by a reload
                for name in [n for n in self.cache if n not in self.issuers]:
                    del self.cache[name]
                self.counts.keep_only(self.issuers)
        return cached

    def refusal(self, status: int) -> bytes:
        """The answer to a refused request (400, 431, 500); the connection closes after it."""
        body = REASONS[status].lower().encode() + b"\n"
        return self.simple(status, body, keep_alive=False)

    def simple(
        self,
        status: int,
        body: bytes,
        extra: bytes = b"",
        *,
        keep_alive: bool,
        method: bytes = b"GET",
        http11: bool = True,
    ) -> bytes:
        """A small plain-text answer (errors: not the hot path, built each time)."""
        self.clock.date(self.clock.now())
        head = (
            (
                f"HTTP/1.1 {status} {REASONS[status]}\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            ).encode()
            + extra
            + self.clock.line
            + SERVER_LINE
        )
        if not keep_alive or self.connections.draining:
            head += b"Connection: close\r\n"
        elif not http11:
            head += b"Connection: keep-alive\r\n"
        return head + b"\r\n" + (b"" if method == b"HEAD" else body)
