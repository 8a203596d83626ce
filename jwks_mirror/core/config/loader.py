"""The loader: a configuration file's YAML in, the frozen model (``model``) out.

Everything an operator can get wrong is caught at load time with the path of the offending
field (``issuers[2].tls.cert_file: no such file``), so ``check-config`` and a SIGHUP reload
refuse a bad file before anything runs with it. This module walks the file section by
section; ``fields`` checks each value (durations become ``*_s`` seconds once) and
``core.tls`` loads the certificate files the configuration names.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from jwks_mirror.core import yamlsafe
from jwks_mirror.core.config.fields import FieldReader, is_dns_label, load_yaml
from jwks_mirror.core.config.model import (
    MIN_REFRESH_INTERVAL_S,
    AdminSettings,
    IssuerSettings,
    Limits,
    MetricsSettings,
    PeersSettings,
    PeerTLSSettings,
    PublicSettings,
    ServerTLSSettings,
    Settings,
    TLSSettings,
)
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.core.text import one_line
from jwks_mirror.core.tls import build_server_ssl_context, build_ssl_context

CONFIG_ENV = "JWKS_MIRROR_CONFIG"

# The per-issuer tunables: allowed under ``defaults:`` and in each issuer.
LIMIT_KEYS = (
    "refresh_interval", "min_refresh_interval", "timeout", "max_response_bytes", "max_keys",
    "max_stale", "retain_removed_keys",
)
# An issuer's own keys, besides the LIMIT_KEYS.
ISSUER_KEYS = frozenset({
    "name", "jwks_uri", "issuer", "discovery", "discovery_url", "proxy", "bearer_token_file",
    "headers", "tls",
})
_5M = (300.0, "5m")


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
        raise ConfigError(f"{path}: cannot read: {one_line(exc)}") from exc


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
        shutdown_delay_s = Settings.shutdown_delay_s
        if root.get("shutdown_delay") is not None:
            shutdown_delay_s = self.duration(root["shutdown_delay"], "shutdown_delay", 0.0, _5M)
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

    def _listener(self, m: dict[str, object], where: str, host: str, port: int) -> tuple[str, int]:
        """(host, port) of a port's section; ``host`` and ``port`` are the model's defaults."""
        return (
            self.listen_host(m.get("host", host), f"{where}.host"),
            self.port(m.get("port", port), f"{where}.port"),
        )

    def _public(self, data: object) -> PublicSettings:
        if data is None:
            return PublicSettings()
        m = self.mapping(data, "public", {"host", "port", "tls", "max_connections"})
        host, port = self._listener(m, "public", PublicSettings.host, PublicSettings.port)
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
        cap = self.max_connections(
            m.get("max_connections", PublicSettings.max_connections), "public.max_connections"
        )
        return PublicSettings(host, port, tls, max_connections=cap)

    def _peers(self, data: object) -> PeersSettings:
        if data is None:
            return PeersSettings()
        m = self.mapping(data, "peers", {"dns", "port", "urls", "tls"})
        dns = None
        if m.get("dns") is not None:
            dns = self.host_name(m["dns"], "peers.dns")
        port = self.port(m.get("port", PeersSettings.port), "peers.port")
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
        identity = self.peer_identity(m["identity"], f"{where}.identity")
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
        host, port = self._listener(m, "admin", AdminSettings.host, AdminSettings.port)
        token_file = None
        if m.get("token_file") is not None:
            token_file = self.readable_file(m["token_file"], "admin.token_file")
            text = "" if self.offline else token_file.read_text(encoding="utf-8", errors="replace")
            if not self.offline and not text.strip():
                raise ConfigError("token file is empty", field="admin.token_file")
        cap = self.max_connections(
            m.get("max_connections", AdminSettings.max_connections), "admin.max_connections"
        )
        return AdminSettings(host=host, port=port, token_file=token_file, max_connections=cap)

    def _limits(
        self, data: object, where: str, base: Limits, extra: set[str] | None = None
    ) -> Limits:
        keys = set(LIMIT_KEYS)
        if data is None:
            return base
        m = self.mapping(data, where, keys | (extra or set()))

        def dur(key: str, current: float, minimum: float) -> float:
            return self.duration(m[key], f"{where}.{key}", minimum) if key in m else current

        def count(key: str, current: int, low: int, high: int) -> int:
            return self.integer(m[key], f"{where}.{key}", low, high) if key in m else current

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
        if limits.timeout_s > _5M[0]:
            raise ConfigError(f"must be at most {_5M[1]}", field=f"{where}.timeout")
        if limits.max_stale_s < limits.refresh_interval_s:
            field_name = "max_stale" if "max_stale" in m else "refresh_interval"
            raise ConfigError(
                "max_stale is shorter than refresh_interval: keys would go stale between refreshes",
                field=f"{where}.{field_name}",
            )
        return limits

    def _issuer(self, data: object, where: str, defaults: Limits) -> IssuerSettings:
        m = self.mapping(data, where, ISSUER_KEYS | set(LIMIT_KEYS))
        if "name" not in m:
            raise ConfigError("required", field=f"{where}.name")
        name = self.string(m["name"], f"{where}.name")
        if not is_dns_label(name):
            raise ConfigError(
                f"{name!r} is not a DNS label (lower-case letters, digits and '-', at most 63)",
                field=f"{where}.name",
            )
        jwks_uri, issuer, discovery, discovery_url = self._upstream(m, where)
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

    def _upstream(
        self, m: dict[str, object], where: str
    ) -> tuple[str | None, str | None, bool, str | None]:
        """(jwks_uri, issuer, discovery, discovery_url): a JWKS URI, or discovery from the
        issuer's document (at ``discovery_url`` when set)."""
        discovery = self.boolean(m.get("discovery", IssuerSettings.discovery), f"{where}.discovery")
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
        return jwks_uri, issuer, discovery, discovery_url

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
            server_name = self.server_name(m["server_name"], f"{where}.server_name")
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
