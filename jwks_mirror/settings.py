"""Configuration: YAML in, frozen and fully validated dataclasses out.

Everything an operator can get wrong is caught here, at load time, with the path of the
offending field (``issuers[2].tls.cert_file: no such file``), so ``check-config`` and a SIGHUP
reload can refuse a bad file before anything runs with it. Durations are parsed once into
seconds; the rest of the code only sees ``*_s`` floats. This module holds the typed settings
and walks the file section by section; ``configfields`` checks each value and ``tls`` loads the
certificate files the configuration names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from jwks_mirror import yamlsafe
from jwks_mirror.configfields import FieldReader, is_dns_label, load_yaml, oneline, parse_duration
from jwks_mirror.errors import ConfigError
from jwks_mirror.tls import (
    PeerTLSSettings,
    ServerTLSSettings,
    TLSSettings,
    build_server_ssl_context,
    build_ssl_context,
)

CONFIG_ENV = "JWKS_MIRROR_CONFIG"
MIN_REFRESH_INTERVAL_S = 10.0

# The per-issuer tunables: allowed under ``defaults:`` and in each issuer.
LIMIT_KEYS = (
    "refresh_interval",
    "min_refresh_interval",
    "timeout",
    "max_response_bytes",
    "max_keys",
    "max_stale",
    "retain_removed_keys",
)


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
class Listener:
    host: str
    port: int


@dataclass(frozen=True)
class PublicSettings(Listener):
    """The JWKS port istiod reaches: plain HTTP, or HTTPS only when ``tls`` is set."""

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
    public: PublicSettings = field(default_factory=lambda: PublicSettings("0.0.0.0", 8080))
    admin: AdminSettings = field(default_factory=AdminSettings)
    state_dir: Path | None = None
    # After SIGTERM: readiness is 503 at once, both ports keep answering this long (so
    # endpoints and load balancers drop the pod first), then in-flight requests drain.
    shutdown_delay_s: float = 5.0
    peers: PeersSettings = field(default_factory=PeersSettings)
    issuers: tuple[IssuerSettings, ...] = ()
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def issuer(self, name: str) -> IssuerSettings | None:
        return next((i for i in self.issuers if i.name == name), None)


def well_known_url(issuer: str) -> str:
    """OpenID Connect discovery document of ``issuer`` (OIDC Discovery 1.0, section 4)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def load_settings(path: str | os.PathLike[str], *, offline: bool = False) -> Settings:
    """Read and validate a configuration file; every problem is a :class:`ConfigError`.

    ``offline`` skips what only the pod has (the files and directories the config names), so
    a GitOps pipeline can validate everything else before the config ships."""
    path = Path(path)
    text = read_config_text(path)
    return parse_settings(text, source=str(path), base_dir=path.parent, offline=offline)


def read_config_text(path: Path) -> str:
    """The config file's text: a regular file (links followed, as a ConfigMap mount needs),
    read without blocking and within the config's size bound; anything else is a
    :class:`ConfigError` naming the path."""
    data = yamlsafe.read_bounded(path, max_bytes=yamlsafe.CONFIG.max_bytes, error=ConfigError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: {oneline(exc)}") from exc


def parse_settings(
    text: str, *, source: str = "<config>", base_dir: Path | None = None, offline: bool = False
) -> Settings:
    """Validate configuration text. Relative file paths resolve against ``base_dir``; with
    ``offline`` the files and directories named are not looked at."""
    data = load_yaml(text, source=source)
    if data is None:
        data = {}
    return _Loader(base_dir or Path.cwd(), offline=offline).settings(data)


class _Loader(FieldReader):
    """Walks the parsed YAML section by section, naming each field's path."""

    def settings(self, data: object) -> Settings:
        root = self.mapping(
            data,
            "",
            {
                "public", "admin", "state_dir", "shutdown_delay", "peers", "defaults",
                "issuers", "metrics",
            },
        )
        public = self._public(root.get("public"))
        admin = self._admin(root.get("admin"))
        if public.port != 0 and public.port == admin.port and public.host == admin.host:
            raise ConfigError("must differ from public.port", field="admin.port")
        state_dir = None
        if root.get("state_dir") is not None:
            state_dir = self.path(root["state_dir"], "state_dir")
            if not self.offline and not state_dir.is_dir():
                raise ConfigError("no such directory", field="state_dir")
        shutdown_delay_s = 5.0
        if root.get("shutdown_delay") is not None:
            shutdown_delay_s = parse_duration(root["shutdown_delay"], field="shutdown_delay")
            if shutdown_delay_s > 300:
                raise ConfigError("must be at most 5m", field="shutdown_delay")
        peers = self._peers(root.get("peers"))
        defaults = self._limits(root.get("defaults"), "defaults", Limits())
        issuers_raw = root.get("issuers")
        if issuers_raw is None:
            issuers_raw = []
        if not isinstance(issuers_raw, list):
            raise ConfigError("expected a list", field="issuers")
        issuers: list[IssuerSettings] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(issuers_raw):
            issuer = self._issuer(item, f"issuers[{index}]", defaults)
            if issuer.name in seen:
                raise ConfigError(
                    f"duplicate name {issuer.name!r} (also issuers[{seen[issuer.name]}])",
                    field=f"issuers[{index}].name",
                )
            seen[issuer.name] = index
            issuers.append(issuer)
        return Settings(
            public=public,
            admin=admin,
            state_dir=state_dir,
            shutdown_delay_s=shutdown_delay_s,
            peers=peers,
            issuers=tuple(issuers),
            metrics=self._metrics(root.get("metrics")),
        )

    # -- sections ---------------------------------------------------------------------------

    def _metrics(self, data: object) -> MetricsSettings:
        if data is None:
            return MetricsSettings()
        m = self.mapping(data, "metrics", {"per_issuer"})
        mode = self.string(m.get("per_issuer", MetricsSettings.per_issuer), "metrics.per_issuer")
        if mode not in ("compact", "full"):
            raise ConfigError("expected compact or full", field="metrics.per_issuer")
        return MetricsSettings(per_issuer=mode)

    def _listener(self, data: object, where: str, default: Listener) -> Listener:
        if data is None:
            return default
        m = self.mapping(data, where, {"host", "port"})
        host = self.string(m.get("host", default.host), f"{where}.host")
        if not re.fullmatch(r"[A-Za-z0-9.:_\[\]-]{1,253}", host):
            raise ConfigError(f"{host!r} is not a host name or address", field=f"{where}.host")
        port = self.port(m.get("port", default.port), f"{where}.port")
        return Listener(host, port)

    def _public(self, data: object) -> PublicSettings:
        if data is None:
            return PublicSettings("0.0.0.0", 8080)
        m = self.mapping(data, "public", {"host", "port", "tls", "max_connections"})
        listener = self._listener(
            {k: m[k] for k in ("host", "port") if k in m}, "public", Listener("0.0.0.0", 8080)
        )
        tls = None
        if m.get("tls") is not None:
            t = self.mapping(m["tls"], "public.tls", {"cert_file", "key_file"})
            for key in ("cert_file", "key_file"):
                if t.get(key) is None:
                    raise ConfigError("required", field=f"public.tls.{key}")
            tls = ServerTLSSettings(
                cert_file=self.readable_file(t["cert_file"], "public.tls.cert_file"),
                key_file=self.readable_file(t["key_file"], "public.tls.key_file"),
            )
            try:
                if not self.offline:
                    build_server_ssl_context(tls)
            except ConfigError as exc:
                raise ConfigError(exc.detail, field=f"public.tls.{exc.field}") from exc
        cap = m.get("max_connections", PublicSettings.max_connections)
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 65536:
            raise ConfigError("expected an integer from 1 to 65536", field="public.max_connections")
        return PublicSettings(listener.host, listener.port, tls, max_connections=cap)

    def _peers(self, data: object) -> PeersSettings:
        if data is None:
            return PeersSettings()
        m = self.mapping(data, "peers", {"dns", "port", "urls", "tls"})
        dns = None
        if m.get("dns") is not None:
            dns = self.string(m["dns"], "peers.dns")
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", dns):
                raise ConfigError(f"{dns!r} is not a host name", field="peers.dns")
        port = self.port(m.get("port", 9090), "peers.port")
        if port == 0:
            raise ConfigError("expected a port number (1-65535)", field="peers.port")
        urls_raw = m.get("urls")
        if urls_raw is None:
            urls_raw = []
        if not isinstance(urls_raw, list):
            raise ConfigError("expected a list of admin URLs", field="peers.urls")
        urls: list[str] = []
        for index, item in enumerate(urls_raw):
            url = self.url(item, f"peers.urls[{index}]", {"http", "https"}).rstrip("/")
            if urlsplit(url).path or urlsplit(url).query:
                raise ConfigError(
                    "expected an admin base URL such as http://10.0.0.7:9090",
                    field=f"peers.urls[{index}]",
                )
            if url in urls:
                raise ConfigError("duplicate peer URL", field=f"peers.urls[{index}]")
            urls.append(url)
        if dns is not None and urls:
            raise ConfigError("set either peers.dns or peers.urls, not both", field="peers.urls")
        tls = None
        if m.get("tls") is not None:
            tls = self._peer_tls(m["tls"])
            for index, url in enumerate(urls):
                if not url.startswith("https://"):
                    raise ConfigError(
                        "peers.tls is set: peer URLs must be https", field=f"peers.urls[{index}]"
                    )
        return PeersSettings(dns=dns, port=port, urls=tuple(urls), tls=tls)

    def _peer_tls(self, data: object) -> PeerTLSSettings:
        where = "peers.tls"
        m = self.mapping(data, where, {"ca_file", "cert_file", "key_file", "identity"})
        if m.get("identity") is None:
            raise ConfigError(
                "required: the mirror's own identity, a spiffe:// URI or a DNS name",
                field=f"{where}.identity",
            )
        identity = self.string(m["identity"], f"{where}.identity")
        if not (
            re.fullmatch(r"spiffe://[A-Za-z0-9._-]+(/[A-Za-z0-9._~%!$&'()*+,;=:@-]+)+", identity)
            or re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", identity)
        ):
            raise ConfigError(
                f"{identity!r} is neither a spiffe:// URI with a path nor a DNS name",
                field=f"{where}.identity",
            )
        base = self._tls({k: v for k, v in m.items() if k != "identity"}, where)
        return PeerTLSSettings(
            identity=identity,
            ca_file=base.ca_file,
            cert_file=base.cert_file,
            key_file=base.key_file,
        )

    def _admin(self, data: object) -> AdminSettings:
        if data is None:
            return AdminSettings()
        m = self.mapping(data, "admin", {"host", "port", "token_file", "max_connections"})
        listener = self._listener(
            {k: m[k] for k in ("host", "port") if k in m}, "admin", Listener("0.0.0.0", 9090)
        )
        token_file = None
        if m.get("token_file") is not None:
            token_file = self.readable_file(m["token_file"], "admin.token_file")
            text = "" if self.offline else token_file.read_text(encoding="utf-8", errors="replace")
            if not self.offline and not text.strip():
                raise ConfigError("token file is empty", field="admin.token_file")
        cap = m.get("max_connections", AdminSettings.max_connections)
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 65536:
            raise ConfigError("expected an integer from 1 to 65536", field="admin.max_connections")
        return AdminSettings(
            host=listener.host,
            port=listener.port,
            token_file=token_file,
            max_connections=cap,
        )

    def _limits(
        self, data: object, where: str, base: Limits, extra: set[str] | None = None
    ) -> Limits:
        keys = set(LIMIT_KEYS)
        if data is None:
            return base
        m = self.mapping(data, where, keys | (extra or set()))

        def dur(key: str, current: float, minimum: float) -> float:
            if key not in m:
                return current
            value = parse_duration(m[key], field=f"{where}.{key}")
            if value < minimum:
                raise ConfigError(f"must be at least {minimum:g}s", field=f"{where}.{key}")
            return value

        def count(key: str, current: int, low: int, high: int) -> int:
            if key not in m:
                return current
            value = m[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError("expected an integer", field=f"{where}.{key}")
            if not low <= value <= high:
                raise ConfigError(f"must be between {low} and {high}", field=f"{where}.{key}")
            return value

        limits = Limits(
            refresh_interval_s=dur("refresh_interval", base.refresh_interval_s, 1.0),
            min_refresh_interval_s=dur("min_refresh_interval", base.min_refresh_interval_s, 1.0),
            timeout_s=dur("timeout", base.timeout_s, 0.05),
            max_response_bytes=count("max_response_bytes", base.max_response_bytes, 1024, 64 << 20),
            max_keys=count("max_keys", base.max_keys, 1, 10_000),
            max_stale_s=dur("max_stale", base.max_stale_s, 1.0),
            retain_removed_keys_s=dur("retain_removed_keys", base.retain_removed_keys_s, 0.0),
        )
        floor = limits.min_refresh_interval_s
        if floor > limits.refresh_interval_s and floor != MIN_REFRESH_INTERVAL_S:
            own = "min_refresh_interval" if "min_refresh_interval" in m else "refresh_interval"
            raise ConfigError(
                f"min_refresh_interval ({floor:g}s) is longer than refresh_interval "
                f"({limits.refresh_interval_s:g}s)",
                field=f"{where}.{own}",
            )
        if limits.timeout_s > 300:
            raise ConfigError("must be at most 5m", field=f"{where}.timeout")
        if limits.max_stale_s < limits.refresh_interval_s:
            field_name = "max_stale" if "max_stale" in m else "refresh_interval"
            raise ConfigError(
                "max_stale is shorter than refresh_interval: keys would go stale between refreshes",
                field=f"{where}.{field_name}",
            )
        return limits

    def _issuer(self, data: object, where: str, defaults: Limits) -> IssuerSettings:
        own = {
            "name",
            "jwks_uri",
            "issuer",
            "discovery",
            "discovery_url",
            "proxy",
            "bearer_token_file",
            "headers",
            "tls",
        }
        m = self.mapping(data, where, own | set(LIMIT_KEYS))
        if "name" not in m:
            raise ConfigError("required", field=f"{where}.name")
        name = self.string(m["name"], f"{where}.name")
        if not is_dns_label(name):
            raise ConfigError(
                f"{name!r} is not a DNS label (lower-case letters, digits and '-', at most 63)",
                field=f"{where}.name",
            )
        discovery = m.get("discovery", False)
        if not isinstance(discovery, bool):
            raise ConfigError("expected true or false", field=f"{where}.discovery")
        issuer = None
        if m.get("issuer") is not None:
            issuer = self.string(m["issuer"], f"{where}.issuer")
        jwks_uri = None
        if m.get("jwks_uri") is not None:
            jwks_uri = self.url(
                m["jwks_uri"], f"{where}.jwks_uri", {"http", "https"}, upstream=True
            )
        if discovery:
            if issuer is None:
                raise ConfigError("required when discovery is true", field=f"{where}.issuer")
            self.url(issuer, f"{where}.issuer", {"http", "https"}, upstream=True)
            if jwks_uri is not None:
                raise ConfigError(
                    "set either jwks_uri or discovery: true, not both", field=f"{where}.jwks_uri"
                )
        elif jwks_uri is None:
            raise ConfigError("required (or set discovery: true)", field=f"{where}.jwks_uri")
        discovery_url = None
        if m.get("discovery_url") is not None:
            if not discovery:
                raise ConfigError("only with discovery: true", field=f"{where}.discovery_url")
            discovery_url = self.url(
                m["discovery_url"], f"{where}.discovery_url", {"http", "https"}, upstream=True
            )
        proxy = None
        if m.get("proxy") is not None:
            proxy = self.url(m["proxy"], f"{where}.proxy", {"http"})
        bearer = None
        if m.get("bearer_token_file") is not None:
            bearer = self.readable_file(m["bearer_token_file"], f"{where}.bearer_token_file")
        headers = self.headers(m.get("headers"), f"{where}.headers", has_bearer=bearer is not None)
        tls = None
        if m.get("tls") is not None:
            tls = self._tls(m["tls"], f"{where}.tls")
            scheme = urlsplit(jwks_uri or discovery_url or issuer or "").scheme
            if scheme != "https":
                raise ConfigError(
                    "tls needs an https upstream; with a sidecar use http:// and no tls",
                    field=f"{where}.tls",
                )
        limits = self._limits({k: m[k] for k in LIMIT_KEYS if k in m}, where, defaults)
        return IssuerSettings(
            name=name,
            jwks_uri=jwks_uri,
            issuer=issuer,
            discovery=discovery,
            discovery_url=discovery_url,
            proxy=proxy,
            bearer_token_file=bearer,
            headers=headers,
            tls=tls,
            limits=limits,
        )

    def _tls(self, data: object, where: str) -> TLSSettings:
        m = self.mapping(data, where, {"ca_file", "cert_file", "key_file", "server_name"})
        files = {
            key: self.readable_file(m[key], f"{where}.{key}")
            for key in ("ca_file", "cert_file", "key_file")
            if m.get(key) is not None
        }
        if ("cert_file" in files) != ("key_file" in files):
            missing = "key_file" if "cert_file" in files else "cert_file"
            raise ConfigError("required with cert_file/key_file", field=f"{where}.{missing}")
        server_name = None
        if m.get("server_name") is not None:
            server_name = self.string(m["server_name"], f"{where}.server_name")
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", server_name):
                raise ConfigError(
                    f"{server_name!r} is not a host name", field=f"{where}.server_name"
                )
        tls = TLSSettings(
            ca_file=files.get("ca_file"),
            cert_file=files.get("cert_file"),
            key_file=files.get("key_file"),
            server_name=server_name,
        )
        try:
            if not self.offline:
                build_ssl_context(tls)
        except ConfigError as exc:
            raise ConfigError(exc.detail, field=f"{where}.{exc.field}") from exc
        return tls
