"""``jwks-mirror serve``: both ports, signals, config watching, and orderly shutdown.

Shutdown order (SIGTERM or SIGINT), written down here because it matters:
  1. readiness goes 503 (``mirror.draining``) so endpoints and load balancers drop the pod;
  2. both ports keep answering for ``shutdown_delay`` (routing lags readiness: requests
     still arrive for a while), cut short by a second SIGTERM/SIGINT;
  3. the public port stops accepting and waits for in-flight requests to finish (at most
     ``DRAIN_TIMEOUT_S``);
  4. the refreshers stop and pending state writes complete;
  5. the admin port closes last, so probes see the drain until the end.
Kubernetes' ``terminationGracePeriodSeconds`` must cover ``shutdown_delay`` plus the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from jwks_mirror.core import yamlsafe
from jwks_mirror.core.config.loader import load_settings
from jwks_mirror.core.config.model import Settings
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.core.logs import configure, event
from jwks_mirror.serving.counters import new_registry
from jwks_mirror.serving.http import public as public_port
from jwks_mirror.serving.http import publictls
from jwks_mirror.serving.http.admin import create_admin_app
from jwks_mirror.serving.http.listening import Listener, PortSpec
from jwks_mirror.serving.http.public import PublicServer
from jwks_mirror.serving.http.publictls import ServingCertificate
from jwks_mirror.serving.http.sockets import ADMIN_SEND_BUFFER_BYTES
from jwks_mirror.serving.mirror import Mirror

SHUTDOWN_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = SHUTDOWN_TIMEOUT_S  # in-flight public requests, after shutdown_delay
CONFIG_POLL_S = 5.0
# A bounded config (jwks_mirror.core.yamlsafe.CONFIG) loads in about a second at most; this only
# ends the wait for a parse that should never take this long.
RELOAD_PARSE_TIMEOUT_S = 30.0
CERTIFICATE_POLL_S = publictls.POLL_S


@dataclass
class Running:
    """A started mirror: what tests and the demo need to talk to it and stop it."""

    mirror: Mirror
    public_url: str
    admin_url: str
    public: PublicServer  # the public port: its connections and request counts
    _admin: web.BaseRunner
    admin_listener: Listener  # the admin port's listening sockets and connection cap
    certificate: ServingCertificate | None = None
    _certificate_watch: asyncio.Task[None] | None = None
    _hurry: asyncio.Event = field(default_factory=asyncio.Event)

    async def stop(self, *, delay_s: float = 0.0) -> None:
        """Shut down in the order the module docstring gives; ``delay_s`` is step 2."""
        self.mirror.draining = True
        if delay_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), timeout=delay_s)
        if self._certificate_watch is not None:
            self._certificate_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._certificate_watch
        await self.public.close(timeout_s=DRAIN_TIMEOUT_S)
        await self.mirror.stop()
        self.admin_listener.close()
        await self.admin_listener.wait_closed()
        await self._admin.cleanup()

    def hurry(self) -> None:
        """End the shutdown delay now (a second SIGTERM)."""
        self._hurry.set()


async def start(
    settings: Settings,
    *,
    mirror: Mirror | None = None,
    keepalive_timeout_s: float | None = None,
    certificate_poll_s: float = CERTIFICATE_POLL_S,
) -> Running:
    """Start the mirror and bind both ports (port 0 picks a free one).

    Raises :class:`ConfigError` when ``public.tls`` cannot be loaded, OSError when a port
    cannot be bound.
    """
    mirror = mirror or Mirror(settings, registry=new_registry())
    tls = settings.public.tls
    certificate = ServingCertificate(tls, metrics=mirror.metrics) if tls is not None else None
    await mirror.start()
    # Both ports close connections that have sent no complete request for this long: the
    # idle timeout and the header timeout against slow clients (aiohttp arms its keep-alive
    # timer at connect and after each response, so it does both on the admin port).
    keepalive_s = public_port.KEEPALIVE_S if keepalive_timeout_s is None else keepalive_timeout_s
    public = PublicServer(
        mirror, keepalive_s=keepalive_s, max_connections=settings.public.max_connections
    )
    admin = web.AppRunner(
        create_admin_app(mirror),
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log=None,
        keepalive_timeout=keepalive_s,
    )
    admin_listener = await _bind(settings, mirror, public, admin, certificate)
    watch = (
        asyncio.get_running_loop().create_task(
            certificate.watch(certificate_poll_s), name="public:certificate"
        )
        if certificate is not None
        else None
    )
    return Running(
        mirror=mirror,
        public_url=_url(public, scheme="https" if certificate is not None else "http"),
        admin_url=_url(admin_listener),
        public=public,
        _admin=admin,
        admin_listener=admin_listener,
        certificate=certificate,
        _certificate_watch=watch,
    )


async def _bind(
    settings: Settings,
    mirror: Mirror,
    public: PublicServer,
    admin: web.AppRunner,
    certificate: ServingCertificate | None,
) -> Listener:
    """Bind the public port, then the admin port; on OSError, undo all of it (and stop the
    started mirror) before raising, so a failed start leaves nothing running."""
    admin_listener: Listener | None = None
    try:
        await public.start(
            settings.public.host,
            settings.public.port,
            ssl=certificate.listener_context if certificate is not None else None,
        )
        await admin.setup()
        admin_listener = _admin_listener(admin, mirror, settings.admin.max_connections)
        await admin_listener.start(
            settings.admin.host,
            settings.admin.port,
            backlog=128,
            send_bytes=ADMIN_SEND_BUFFER_BYTES,
        )
    except OSError:
        await public.close(timeout_s=0)
        if admin_listener is not None:
            admin_listener.close()
        await admin.cleanup()
        await mirror.stop()
        raise
    return admin_listener


def _admin_listener(runner: web.AppRunner, mirror: Mirror, max_connections: int) -> Listener:
    """aiohttp's request handler behind this package's accept loop (listening.py), in place
    of a ``web.TCPSite`` and asyncio's accept loop: the same connection cap, socket buffers
    and accept-error logging as the public port."""
    server = runner.server
    assert server is not None  # after setup()
    metrics = mirror.metrics
    listener = Listener(
        PortSpec(
            "admin",
            server,
            open_connections=lambda: len(server.connections),
            max_connections=max_connections,
            rejected=metrics.connections_rejected_total,
            errors=metrics.accept_errors_total,
        )
    )
    metrics.open_connections.labels("admin").set_function(lambda: listener.open_connections)
    return listener


def _url(runner: Listener | PublicServer, *, scheme: str = "http") -> str:
    host, port = runner.addresses[0][:2]
    host = "127.0.0.1" if host == "0.0.0.0" else host
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def run(settings: Settings, *, config_path: str | None = None) -> int:
    """Serve until SIGTERM/SIGINT; exit code 0 after a clean drain."""
    configure()
    _raise_open_files_limit()
    _tune_gc()
    # The loop is chosen first and run after, never inside the probe's ``except`` block:
    # there, every exception raised while serving would get the ImportError as its context.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve(settings, config_path=config_path))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The loop ``serve`` runs on, and so the image and every test suite: uvloop, a runtime
    dependency chosen on the new-connection benchmark (docs/benchmarks.md); asyncio's own only
    where uvloop does not install (Windows, PyPy). Chosen before the loop runs, so no except
    block is ever around it (an exception's context would leak into every callback's)."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _tune_gc() -> None:
    """Collect the youngest generation every 10,000 allocations instead of 700. Each issuer
    keeps a few hundred long-lived objects, and a refresh of 10,000 issuers allocates
    hundreds of thousands of short-lived ones; with the default thresholds the collector
    took 2.2 of the 4.7 CPU-s of such a cycle, with these 0.6 (docs/benchmarks.md)."""
    import gc

    gc.set_threshold(10_000, 10, 100)


def _raise_open_files_limit() -> None:
    """Use the hard limit on open files: each client connection holds one descriptor."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(
    settings: Settings, *, config_path: str | None = None, poll_s: float = CONFIG_POLL_S
) -> int:
    try:
        running = await start(settings)
    except OSError as exc:
        raise ConfigError(f"cannot listen: {exc.strerror or exc}") from exc
    event(
        "listening",
        public=running.public_url,
        admin=running.admin_url,
        issuers=[i.name for i in settings.issuers],
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    watcher = ConfigWatcher(running.mirror, config_path) if config_path else None

    def on_stop_signal() -> None:
        if stop.is_set():
            running.hurry()  # a second signal: skip the rest of shutdown_delay
        stop.set()

    def on_hangup() -> None:
        if watcher is not None:
            watcher.trigger(forced=True)
        if running.certificate is not None:
            running.certificate.trigger()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    watch_task = loop.create_task(watcher.run(poll_s)) if watcher else None
    try:
        await stop.wait()
    finally:
        running.mirror.draining = True  # readiness 503 before anything else happens
        delay_s = running.mirror.settings.shutdown_delay_s  # a reload may have changed it
        event("shutting_down", delay_s=delay_s)
        if watch_task is not None:
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
        await running.stop(delay_s=delay_s)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    event("stopped")
    return 0


class ConfigWatcher:
    """Reloads on SIGHUP, and when the file's content changes (a ConfigMap update swaps a
    symlink, so the content is compared, not the mtime). A bad file is reported once and the
    running configuration stays."""

    def __init__(self, mirror: Mirror, path: str) -> None:
        self._mirror = mirror
        self._path = Path(path)
        self._digest = self._read_digest()
        self._wake = asyncio.Event()
        self._forced = False

    def _read_digest(self) -> str | None:
        """The file's fingerprint, read as the loader reads it (a regular file, within the
        size bound, never blocking), or None while it is missing (a ConfigMap swap). A file
        the reader refuses gets a fingerprint of the refusal, so the reload reports it."""
        try:
            data = yamlsafe.read_bounded(
                self._path, max_bytes=yamlsafe.CONFIG.max_bytes, error=ConfigError
            )
        except ConfigError as exc:
            return None if not os.path.lexists(self._path) else f"refused: {exc}"
        return hashlib.sha256(data).hexdigest()

    def trigger(self, *, forced: bool) -> None:
        self._forced = self._forced or forced
        self._wake.set()

    async def run(self, poll_s: float) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=poll_s)
            self._wake.clear()
            forced, self._forced = self._forced, False
            digest = await asyncio.to_thread(self._read_digest)
            if digest is None or (digest == self._digest and not forced):
                continue
            self._digest = digest
            await self.reload()

    async def reload(self) -> None:
        """Parse the file off the event loop, within the loader's bounds and a time limit;
        a refused file is logged (``config_rejected``) and counted, and the running
        configuration stays. Both ports keep answering meanwhile."""
        counter = self._mirror.metrics.config_reloads_total
        try:
            settings = await asyncio.wait_for(
                asyncio.to_thread(load_settings, self._path), timeout=RELOAD_PARSE_TIMEOUT_S
            )
        except (ConfigError, TimeoutError) as exc:
            error = str(exc) or f"{self._path}: not loaded within {RELOAD_PARSE_TIMEOUT_S:g} s"
            counter.labels("failure").inc()
            event("config_rejected", error=error, level=logging.ERROR)
            return
        summary = await self._mirror.reload(settings)
        counter.labels("success").inc()
        event(
            "config_reloaded",
            added=list(summary.added),
            removed=list(summary.removed),
            changed=list(summary.changed),
            unchanged=len(summary.unchanged),
        )
        if summary.restart_needed:
            event(
                "config_restart_needed",
                listeners=list(summary.restart_needed),
                level=logging.WARNING,
            )
