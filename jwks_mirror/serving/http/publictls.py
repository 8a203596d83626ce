"""HTTPS on the public port: the listener's SSL context, and certificates rotated on disk.

cert-manager renews a certificate in place (the Secret volume swaps both files at once), so
the pair is re-read while serving, without a restart and without touching open connections:

* The listener is created once with a *base* context whose ``sni_callback`` hands each new
  handshake the *current* context. A rotation builds a complete new context from the files
  and swaps one reference, so a handshake sees the old pair or the new one, never half of
  each (loading a new pair into a live context would replace the certificate and the key in
  two steps). The callback runs for every ClientHello, with or without SNI.
* A bad pair at run time (a half-written file, a key that does not match) keeps the pair in
  use; it is logged once per distinct content and counted in
  ``jwks_mirror_public_tls_reloads_total{outcome="failure"}``.
* The files are compared by content every ``poll_s`` (symlink swaps keep mtimes unreliable)
  and on SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl

from cryptography import x509

from jwks_mirror.core.config.model import ServerTLSSettings
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.core.logs import event
from jwks_mirror.core.tls import build_server_ssl_context
from jwks_mirror.serving.counters import Metrics

POLL_S = 2.0  # rotation reaches new connections within this (well inside 10 s)


class ServingCertificate:
    """The public port's TLS: ``listener_context`` goes to ``create_server(ssl=...)``.

    Raises :class:`ConfigError` naming the bad file when the pair cannot be loaded at start.
    """

    def __init__(self, tls: ServerTLSSettings, *, metrics: Metrics) -> None:
        self.tls = tls
        self._metrics = metrics
        digest = self._digest()
        try:
            self.current = build_server_ssl_context(tls)
            self.listener_context = build_server_ssl_context(tls)
        except ConfigError as exc:
            raise ConfigError(exc.detail, field=f"public.tls.{exc.field}") from exc
        self.listener_context.sni_callback = self._select
        self._loaded = digest
        self._failed: str | None = None  # the content that failed last: reported once
        self._wake = asyncio.Event()
        self._record_expiry()

    def _select(self, connection: ssl.SSLObject, server_name: str | None, _: object) -> None:
        connection.context = self.current
        return None

    def _digest(self) -> str | None:
        """Both files' content, or None while either is unreadable."""
        try:
            data = self.tls.cert_file.read_bytes() + b"\0" + self.tls.key_file.read_bytes()
        except OSError:
            return None
        return hashlib.sha256(data).hexdigest()

    def trigger(self) -> None:
        """Check the files now (SIGHUP)."""
        self._wake.set()

    async def watch(self, poll_s: float = POLL_S) -> None:
        """Reload when the files change, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=poll_s)
            self._wake.clear()
            self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Swap in the pair on disk if it changed and loads; True when it was swapped."""
        before = self._digest()
        if before is None or before in (self._loaded, self._failed):
            return False
        try:
            context = build_server_ssl_context(self.tls)
        except ConfigError as exc:
            self._reject(before, str(exc))
            return False
        if self._digest() != before:
            return False  # changed while loading: the next check loads the newer pair
        self.current = context
        self._loaded, self._failed = before, None
        self._metrics.public_tls_reloads_total.labels("success").inc()
        event(
            "public_tls_reloaded", cert_file=str(self.tls.cert_file), certificate=self._describe()
        )
        self._record_expiry()
        return True

    def _reject(self, digest: str, error: str) -> None:
        self._failed = digest
        self._metrics.public_tls_reloads_total.labels("failure").inc()
        event(
            "public_tls_rejected",
            error=f"public.tls.{error}",
            kept="the certificate in use",
            level=logging.ERROR,
        )

    def _certificate(self) -> x509.Certificate | None:
        with contextlib.suppress(OSError, ValueError):
            return x509.load_pem_x509_certificate(self.tls.cert_file.read_bytes())
        return None

    def _describe(self) -> dict[str, str]:
        cert = self._certificate()
        if cert is None:
            return {}
        return {
            "serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat(),
        }

    def _record_expiry(self) -> None:
        cert = self._certificate()
        if cert is not None:
            gauge = self._metrics.public_tls_not_after_timestamp_seconds
            gauge.labels(str(self.tls.cert_file)).set(cert.not_valid_after_utc.timestamp())
