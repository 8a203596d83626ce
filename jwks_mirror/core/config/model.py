"""The configuration's model: frozen dataclasses, every default stated here and only here.

PURE data. ``settings`` (the loader) walks a file into these types, ``configfields`` checks
each value, and ``tls`` builds SSL contexts from the TLS types. Anything that needs a default
reads it from here (``PeersSettings.port``, ``Limits()``), never from a second literal.
Durations are seconds (``*_s`` floats), parsed once by the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The floor under a refresh an upstream's Cache-Control brings forward, when none is set.
MIN_REFRESH_INTERVAL_S = 10.0


@dataclass(frozen=True)
class TLSSettings:
    """Direct TLS to the upstream (no sidecar): private CA, client certificate, SNI name."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class PeerTLSSettings:
    """Direct TLS to the peers (no sidecar): the peer must present ``identity``, the mirror's
    own, as a SPIFFE URI SAN (``spiffe://...``) or a DNS SAN; ``ca_file`` (else the system
    CAs) verifies the chain; ``cert_file``/``key_file`` is this replica's client certificate."""

    identity: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class ServerTLSSettings:
    """HTTPS on the public port: a certificate chain and its key, re-read when they change."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Limits:
    """Per-issuer tunables; ``defaults:`` fills them and each issuer may override any."""

    # A minute: measured cheap at 10,000 issuers (docs/benchmarks.md, "Freshness").
    refresh_interval_s: float = 60.0
    # The floor under a refresh the upstream's Cache-Control brings forward (refreshing.py);
    # the default counts as refresh_interval where that is shorter, any other value longer
    # than refresh_interval is refused at load.
    min_refresh_interval_s: float = MIN_REFRESH_INTERVAL_S
    timeout_s: float = 5.0
    max_response_bytes: int = 262_144
    max_keys: int = 100
    max_stale_s: float = 72 * 3600.0
    retain_removed_keys_s: float = 3600.0

    @property
    def refresh_floor_s(self) -> float:
        """The soonest a refresh may come after a success (``min_refresh_interval``)."""
        return min(self.min_refresh_interval_s, self.refresh_interval_s)


@dataclass(frozen=True)
class IssuerSettings:
    """One mirrored upstream. ``jwks_uri`` is None only when ``discovery`` is on."""

    name: str
    jwks_uri: str | None
    issuer: str | None = None
    discovery: bool = False
    # Where the discovery document is fetched when the issuer's own host does not resolve from
    # the mirror's namespace (``http://auth:8080`` names itself by a bare Service name).
    discovery_url: str | None = None
    proxy: str | None = None
    bearer_token_file: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    tls: TLSSettings | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def upstream(self) -> str:
        """What this issuer fetches, for humans: the JWKS URI or the discovery document."""
        if self.jwks_uri is not None:
            return self.jwks_uri
        return self.discovery_document_url

    @property
    def discovery_document_url(self) -> str:
        """The OIDC discovery document to fetch: ``discovery_url``, or the issuer's own."""
        if self.discovery_url is not None:
            return self.discovery_url
        assert self.issuer is not None
        return well_known_url(self.issuer)


@dataclass(frozen=True)
class PublicSettings:
    """The JWKS port istiod reaches: plain HTTP, or HTTPS only when ``tls`` is set."""

    host: str = "0.0.0.0"
    port: int = 8080
    tls: ServerTLSSettings | None = None
    max_connections: int = 256  # sized for the 256 Mi pod: docs/configuration.md


@dataclass(frozen=True)
class PeersSettings:
    """Where a replica finds the other replicas, to fill a missing set while an upstream is
    down: every A record of a headless Service (``dns``) but this replica's own, on the admin
    ``port``; or a static list of admin URLs. Neither set: no peer traffic at all."""

    dns: str | None = None
    port: int = 9090
    urls: tuple[str, ...] = ()
    # Direct TLS to the peers (no sidecar): https, and the peer must present ``tls.identity``.
    tls: PeerTLSSettings | None = None

    @property
    def enabled(self) -> bool:
        return self.dns is not None or bool(self.urls)


@dataclass(frozen=True)
class AdminSettings:
    """The admin port: probes, /metrics, /status, the peers' /peer/{name}, operators."""

    host: str = "0.0.0.0"
    port: int = 9090
    token_file: Path | None = None
    max_connections: int = 64  # probes, scrapes, peers, operators: docs/configuration.md


@dataclass(frozen=True)
class MetricsSettings:
    """How much per-issuer detail a scrape carries (docs/metrics.md): ``compact`` keeps a
    healthy issuer to 3 series (5 during a rotation), ``full`` exports every series for
    every issuer."""

    per_issuer: str = "compact"


@dataclass(frozen=True)
class Settings:
    public: PublicSettings = field(default_factory=PublicSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    state_dir: Path | None = None
    # After SIGTERM: readiness is 503 at once, both ports keep answering this long (so
    # endpoints and load balancers drop the pod first), then in-flight requests drain.
    shutdown_delay_s: float = 5.0
    peers: PeersSettings = field(default_factory=PeersSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    issuers: tuple[IssuerSettings, ...] = ()

    def issuer(self, name: str) -> IssuerSettings | None:
        return next((i for i in self.issuers if i.name == name), None)


def well_known_url(issuer: str) -> str:
    """OpenID Connect discovery document of ``issuer`` (OIDC Discovery 1.0, section 4)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"
