"""Configuration: YAML in, frozen and fully validated dataclasses out.

Everything an operator can get wrong is caught here, at load time, with the path of the
offending field (``issuers[2].tls.cert_file: no such file``), so ``check-config`` and a SIGHUP
reload can refuse a bad file before anything runs with it. Durations are parsed once into
seconds; the rest of the code only sees ``*_s`` floats.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from jwks_mirror.errors import ConfigError

CONFIG_ENV = "JWKS_MIRROR_CONFIG"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the fetcher owns: letting config set them would break conditional requests,
# body limits or connection handling in ways that are hard to diagnose.
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "transfer-encoding",
        "accept-encoding",
        "te",
        "upgrade",
        "if-none-match",
        "if-modified-since",
        "proxy-authorization",
        "keep-alive",
    }
)

# The per-issuer tunables: allowed under ``defaults:`` and in each issuer.
LIMIT_KEYS = (
    "refresh_interval",
    "timeout",
    "max_response_bytes",
    "max_keys",
    "max_stale",
    "retain_removed_keys",
)


@dataclass(frozen=True)
class Limits:
    """Per-issuer tunables; ``defaults:`` fills them and each issuer may override any."""

    refresh_interval_s: float = 300.0
    timeout_s: float = 5.0
    max_response_bytes: int = 262_144
    max_keys: int = 100
    max_stale_s: float = 72 * 3600.0
    retain_removed_keys_s: float = 3600.0


@dataclass(frozen=True)
class TLSSettings:
    """Direct TLS to the upstream (no sidecar): private CA, client certificate, SNI name."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


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
class ServerTLSSettings:
    """HTTPS on the public port: a certificate chain and its key, re-read when they change."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class PublicSettings(Listener):
    """The JWKS port istiod reaches: plain HTTP, or HTTPS only when ``tls`` is set."""

    tls: ServerTLSSettings | None = None


@dataclass(frozen=True)
class PeersSettings:
    """Where a replica finds the other replicas, to fill a missing set while an upstream is
    down: every A record of a headless Service (``dns``) but this replica's own, on the admin
    ``port``; or a static list of admin URLs. Neither set: no peer traffic at all."""

    dns: str | None = None
    port: int = 9090
    urls: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.dns is not None or bool(self.urls)


@dataclass(frozen=True)
class AdminSettings:
    host: str = "0.0.0.0"
    port: int = 9090
    token_file: Path | None = None


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

    def issuer(self, name: str) -> IssuerSettings | None:
        return next((i for i in self.issuers if i.name == name), None)


def well_known_url(issuer: str) -> str:
    """OpenID Connect discovery document of ``issuer`` (OIDC Discovery 1.0, section 4)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def parse_duration(value: object, *, field: str) -> float:
    """Seconds from a number or a string such as ``500ms``, ``30s``, ``5m``, ``1h30m``, ``3d``."""
    if isinstance(value, bool):
        raise ConfigError("expected a duration such as 30s, 5m or 2h", field=field)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # YAML ints are unbounded; float() refuses huge ones
            raise ConfigError("duration is too large", field=field) from None
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for match in _DURATION_RE.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
            pos = match.end()
        if pos == 0 or pos != len(text):
            raise ConfigError(
                f"invalid duration {value!r} (use e.g. 500ms, 30s, 5m, 2h, 3d)", field=field
            )
    else:
        raise ConfigError("expected a duration such as 30s, 5m or 2h", field=field)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"invalid duration {value!r}", field=field)
    return seconds


def load_settings(path: str | os.PathLike[str], *, offline: bool = False) -> Settings:
    """Read and validate a configuration file; every problem is a :class:`ConfigError`.

    ``offline`` skips what only the pod has (the files and directories the config names), so
    a GitOps pipeline can validate everything else before the config ships."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {_oneline(exc)}") from exc
    return parse_settings(text, source=str(path), base_dir=path.parent, offline=offline)


def parse_settings(
    text: str, *, source: str = "<config>", base_dir: Path | None = None, offline: bool = False
) -> Settings:
    """Validate configuration text. Relative file paths resolve against ``base_dir``; with
    ``offline`` the files and directories named are not looked at."""
    try:
        data = _load_yaml(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        # Squashed to one line: ruamel quotes values in some problems ("duplicate key ...").
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigError(f"{where}: {problem}") from exc
    except (YAMLError, RecursionError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid YAML: {_oneline(exc)}") from exc
    except Exception as exc:
        # ruamel's constructors fail on some malformed tagged scalars with internal errors
        # ("!!int" alone: IndexError, "!!bool maybe": KeyError); an operator's typo must still
        # be a one-line ConfigError, never a traceback from check-config or a reload.
        raise ConfigError(
            f"{source}: invalid YAML ({type(exc).__name__}): {_oneline(exc)}"
        ) from exc
    if data is None:
        data = {}
    return _Loader(base_dir or Path.cwd(), offline=offline).settings(data)


def _load_yaml(text: str) -> object:
    """libyaml's parser (ruamel.yaml.clib) when installed: a 10,000-issuer file parses in
    0.5 s instead of 2.2 s, with the same constructor (so the same duplicate-key check). A
    file it refuses is parsed again by the pure parser, whose messages are more precise
    ("expected ',' or ']', but got ':'") and are the ones reported."""
    try:
        return YAML(typ="safe").load(text)
    except Exception:
        return YAML(typ="safe", pure=True).load(text)


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


class _Loader:
    """Walks the parsed YAML, checking types and values and naming each field's path."""

    def __init__(self, base_dir: Path, *, offline: bool = False) -> None:
        self.base_dir = base_dir
        self.offline = offline

    def settings(self, data: object) -> Settings:
        root = self._mapping(
            data,
            "",
            {"public", "admin", "state_dir", "shutdown_delay", "peers", "defaults", "issuers"},
        )
        public = self._public(root.get("public"))
        admin = self._admin(root.get("admin"))
        if public.port != 0 and public.port == admin.port and public.host == admin.host:
            raise ConfigError("must differ from public.port", field="admin.port")
        state_dir = None
        if root.get("state_dir") is not None:
            state_dir = self._path(root["state_dir"], "state_dir")
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
        )

    # -- sections ---------------------------------------------------------------------------

    def _listener(self, data: object, where: str, default: Listener) -> Listener:
        if data is None:
            return default
        m = self._mapping(data, where, {"host", "port"})
        host = self._str(m.get("host", default.host), f"{where}.host")
        if not re.fullmatch(r"[A-Za-z0-9.:_\[\]-]{1,253}", host):
            raise ConfigError(f"{host!r} is not a host name or address", field=f"{where}.host")
        port = self._port(m.get("port", default.port), f"{where}.port")
        return Listener(host, port)

    def _public(self, data: object) -> PublicSettings:
        if data is None:
            return PublicSettings("0.0.0.0", 8080)
        m = self._mapping(data, "public", {"host", "port", "tls"})
        listener = self._listener(
            {k: v for k, v in m.items() if k != "tls"}, "public", Listener("0.0.0.0", 8080)
        )
        tls = None
        if m.get("tls") is not None:
            t = self._mapping(m["tls"], "public.tls", {"cert_file", "key_file"})
            for key in ("cert_file", "key_file"):
                if t.get(key) is None:
                    raise ConfigError("required", field=f"public.tls.{key}")
            tls = ServerTLSSettings(
                cert_file=self._readable_file(t["cert_file"], "public.tls.cert_file"),
                key_file=self._readable_file(t["key_file"], "public.tls.key_file"),
            )
            try:
                if not self.offline:
                    build_server_ssl_context(tls)
            except ConfigError as exc:
                raise ConfigError(exc.detail, field=f"public.tls.{exc.field}") from exc
        return PublicSettings(listener.host, listener.port, tls)

    def _peers(self, data: object) -> PeersSettings:
        if data is None:
            return PeersSettings()
        m = self._mapping(data, "peers", {"dns", "port", "urls"})
        dns = None
        if m.get("dns") is not None:
            dns = self._str(m["dns"], "peers.dns")
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", dns):
                raise ConfigError(f"{dns!r} is not a host name", field="peers.dns")
        port = self._port(m.get("port", 9090), "peers.port")
        if port == 0:
            raise ConfigError("expected a port number (1-65535)", field="peers.port")
        urls_raw = m.get("urls")
        if urls_raw is None:
            urls_raw = []
        if not isinstance(urls_raw, list):
            raise ConfigError("expected a list of admin URLs", field="peers.urls")
        urls: list[str] = []
        for index, item in enumerate(urls_raw):
            url = self._url(item, f"peers.urls[{index}]", {"http", "https"}).rstrip("/")
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
        return PeersSettings(dns=dns, port=port, urls=tuple(urls))

    def _admin(self, data: object) -> AdminSettings:
        if data is None:
            return AdminSettings()
        m = self._mapping(data, "admin", {"host", "port", "token_file"})
        listener = self._listener(
            {k: v for k, v in m.items() if k != "token_file"}, "admin", Listener("0.0.0.0", 9090)
        )
        token_file = None
        if m.get("token_file") is not None:
            token_file = self._readable_file(m["token_file"], "admin.token_file")
            text = "" if self.offline else token_file.read_text(encoding="utf-8", errors="replace")
            if not self.offline and not text.strip():
                raise ConfigError("token file is empty", field="admin.token_file")
        return AdminSettings(host=listener.host, port=listener.port, token_file=token_file)

    def _limits(
        self, data: object, where: str, base: Limits, extra: set[str] | None = None
    ) -> Limits:
        keys = set(LIMIT_KEYS)
        if data is None:
            return base
        m = self._mapping(data, where, keys | (extra or set()))

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
            timeout_s=dur("timeout", base.timeout_s, 0.05),
            max_response_bytes=count("max_response_bytes", base.max_response_bytes, 1024, 64 << 20),
            max_keys=count("max_keys", base.max_keys, 1, 10_000),
            max_stale_s=dur("max_stale", base.max_stale_s, 1.0),
            retain_removed_keys_s=dur("retain_removed_keys", base.retain_removed_keys_s, 0.0),
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
        m = self._mapping(data, where, own | set(LIMIT_KEYS))
        if "name" not in m:
            raise ConfigError("required", field=f"{where}.name")
        name = self._str(m["name"], f"{where}.name")
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"{name!r} is not a DNS label (lower-case letters, digits and '-', at most 63)",
                field=f"{where}.name",
            )
        discovery = m.get("discovery", False)
        if not isinstance(discovery, bool):
            raise ConfigError("expected true or false", field=f"{where}.discovery")
        issuer = None
        if m.get("issuer") is not None:
            issuer = self._str(m["issuer"], f"{where}.issuer")
        jwks_uri = None
        if m.get("jwks_uri") is not None:
            jwks_uri = self._url(m["jwks_uri"], f"{where}.jwks_uri", {"http", "https"})
        if discovery:
            if issuer is None:
                raise ConfigError("required when discovery is true", field=f"{where}.issuer")
            self._url(issuer, f"{where}.issuer", {"http", "https"})
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
            discovery_url = self._url(
                m["discovery_url"], f"{where}.discovery_url", {"http", "https"}
            )
        proxy = None
        if m.get("proxy") is not None:
            proxy = self._url(m["proxy"], f"{where}.proxy", {"http"})
        bearer = None
        if m.get("bearer_token_file") is not None:
            bearer = self._readable_file(m["bearer_token_file"], f"{where}.bearer_token_file")
        headers = self._headers(m.get("headers"), f"{where}.headers", has_bearer=bearer is not None)
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
        m = self._mapping(data, where, {"ca_file", "cert_file", "key_file", "server_name"})
        files = {
            key: self._readable_file(m[key], f"{where}.{key}")
            for key in ("ca_file", "cert_file", "key_file")
            if m.get(key) is not None
        }
        if ("cert_file" in files) != ("key_file" in files):
            missing = "key_file" if "cert_file" in files else "cert_file"
            raise ConfigError("required with cert_file/key_file", field=f"{where}.{missing}")
        server_name = None
        if m.get("server_name") is not None:
            server_name = self._str(m["server_name"], f"{where}.server_name")
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

    def _headers(
        self, data: object, where: str, *, has_bearer: bool
    ) -> tuple[tuple[str, str], ...]:
        if data is None:
            return ()
        if not isinstance(data, Mapping):
            raise ConfigError("expected a mapping of header names to values", field=where)
        out: list[tuple[str, str]] = []
        for key, value in data.items():
            if not isinstance(key, str) or not _HEADER_NAME_RE.match(key):
                raise ConfigError("invalid header name", field=f"{where}.{_key_text(key)}")
            if key.lower() in _RESERVED_HEADERS:
                raise ConfigError(
                    "set by jwks-mirror itself; cannot be configured", field=f"{where}.{key}"
                )
            if key.lower() == "authorization" and has_bearer:
                raise ConfigError("conflicts with bearer_token_file", field=f"{where}.{key}")
            if any(k.lower() == key.lower() for k, _ in out):
                raise ConfigError(
                    "duplicate header name (names are case-insensitive)", field=f"{where}.{key}"
                )
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise ConfigError("expected a string", field=f"{where}.{key}")
            text = str(value)
            if any(c in text for c in "\r\n\0"):
                raise ConfigError("control characters are not allowed", field=f"{where}.{key}")
            out.append((key, text))
        return tuple(out)

    # -- scalars ----------------------------------------------------------------------------

    def _mapping(self, data: object, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise ConfigError("expected a mapping", field=where or None)
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                path = f"{where}.{_key_text(key)}" if where else _key_text(key)
                raise ConfigError(
                    f"unknown key (expected one of: {', '.join(sorted(allowed))})", field=path
                )
        return dict(data)

    def _str(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError("expected a non-empty string", field=where)
        return value.strip()

    def _port(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError("expected a port number (0-65535; 0 picks a free port)", field=where)
        return value

    def _path(self, value: object, where: str) -> Path:
        path = Path(self._str(value, where))
        return path if path.is_absolute() else self.base_dir / path

    def _readable_file(self, value: object, where: str) -> Path:
        path = self._path(value, where)
        if self.offline:
            return path
        if not path.exists():
            raise ConfigError("no such file", field=where)
        if not path.is_file():
            raise ConfigError("not a regular file", field=where)
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", field=where) from exc
        return path

    def _url(self, value: object, where: str, schemes: set[str]) -> str:
        text = self._str(value, where)
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(f"invalid URL {text!r}: {exc}", field=where) from exc
        if parts.scheme not in schemes or not parts.hostname:
            wanted = " or ".join(f"{s}://" for s in sorted(schemes))
            raise ConfigError(f"invalid URL {text!r} (expected {wanted}host/...)", field=where)
        if parts.username is not None or parts.password is not None:
            raise ConfigError("credentials in URLs are not allowed; use headers", field=where)
        if parts.fragment:
            raise ConfigError("URL must not have a fragment", field=where)
        if any(c.isspace() for c in text):
            raise ConfigError("URL must not contain whitespace", field=where)
        return text


def _key_text(key: object) -> str:
    """A mapping key for an error's field path, quoted when it would break the line."""
    text = str(key)
    return text if text.isprintable() else repr(text)


def build_ssl_context(tls: TLSSettings | None) -> ssl.SSLContext:
    """A verifying client context: the system CAs, or only ``ca_file``; plus the client
    certificate. Used at load (to check the files) and at every rebuild after the files
    rotate on disk. Raises :class:`ConfigError` whose ``field`` names the bad file."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls and tls.ca_file else None
        )
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise ConfigError(f"not a PEM CA bundle: {_oneline(exc)}", field="ca_file") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls and tls.cert_file and tls.key_file:
        load_cert_chain(context, cert_file=tls.cert_file, key_file=tls.key_file)
    return context


def build_server_ssl_context(tls: ServerTLSSettings) -> ssl.SSLContext:
    """The public port's server context: TLS 1.2 or newer, the configured chain and key.
    Raises :class:`ConfigError` whose ``field`` names the bad file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(context, cert_file=tls.cert_file, key_file=tls.key_file)
    return context


def load_cert_chain(context: ssl.SSLContext, *, cert_file: Path, key_file: Path) -> None:
    """Load a certificate chain and its key into ``context`` (new handshakes use them).
    Raises :class:`ConfigError` whose ``field`` is ``cert_file`` or ``key_file``."""
    # Parse the key first: OpenSSL reports an unparsable key as a bare "PEM lib" error
    # that cannot be told apart from a bad certificate, and for an encrypted key it
    # would prompt for a passphrase on the terminal (or block a headless process).
    try:
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, OSError) as exc:
        raise ConfigError(
            f"not an unencrypted PEM private key: {_oneline(exc)}", field="key_file"
        ) from exc
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as exc:
        bad = "key_file" if "KEY_VALUES_MISMATCH" in str(exc) else "cert_file"
        raise ConfigError(f"certificate and key unusable: {_oneline(exc)}", field=bad) from exc
