"""Checks for one configuration value each, naming the field's path in every error.

The building blocks of the configuration loader (``settings``): parsing the YAML text into
plain data, durations, strings, ports, URLs, files, request headers, and the DNS-label rule
that issuer names and the GitOps tooling's generated names share. Every problem is a
:class:`ConfigError` whose ``field`` is the dotted path (``issuers[2].tls.cert_file``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml.error import MarkedYAMLError, YAMLError

from jwks_mirror.core import yamlsafe
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.core.text import one_line

# RFC 1123 label, lower case: an issuer's name is a URL path segment and often a Service name.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

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


# -- upstream addresses ------------------------------------------------------------------------
#
# An upstream URL names what the mirror fetches with its own mesh identity, and a manifest's
# author can reach the config (rewrite --config-out). Link-local and cloud metadata addresses
# are refused, as istiod refuses them for a jwksUri; loopback and private ranges stay allowed
# (tests, the demo and in-mesh upstreams use them). The list, and why each is on it:
#   169.254.0.0/16   IPv4 link-local: AWS, GCP, Azure, OpenStack, Oracle and DigitalOcean
#                    instance metadata (169.254.169.254), ECS/EKS task and pod identity
#                    endpoints (169.254.170.2, 169.254.170.23), link-local DNS caches
#   fe80::/10        IPv6 link-local
#   fd00:ec2::254    AWS instance metadata over IPv6 (fd00:ec2::23: EKS pod identity)
#   100.100.100.200  Alibaba Cloud instance metadata
#   168.63.129.16    Azure's platform address (WireServer, the IMDS sibling)
#   192.0.0.192      Oracle Cloud's legacy metadata address
#   metadata.google.internal, metadata.goog, instance-data.ec2.internal
#                    the metadata services' host names, refused by name as well
# An IPv4 address written as IPv4-mapped IPv6 (::ffff:169.254.169.254) is judged as IPv4.
# The fetcher applies the same rule to what a host name resolves to (fetching.py).

_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "fd00:ec2::23/128",
        "100.100.100.200/32", "168.63.129.16/32", "192.0.0.192/32",
    )
)
_FORBIDDEN_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "instance-data.ec2.internal"}
)


_LISTEN_HOST_RE = re.compile(r"[A-Za-z0-9.:_\[\]-]{1,253}")
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SPIFFE_RE = re.compile(r"spiffe://[A-Za-z0-9._-]+(/[A-Za-z0-9._~%!$&'()*+,;=:@-]+)+")


def forbidden_address(host: str) -> str | None:
    """Why the mirror must not fetch from ``host`` (a name or an IP address, brackets and a
    trailing dot allowed), or None when it may."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _FORBIDDEN_NAMES:
        return f"{name} is a cloud metadata service"
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for network in _FORBIDDEN_NETWORKS:
        if address in network:
            return f"{address} is a link-local or cloud metadata address"
    return None


def is_dns_label(text: str) -> bool:
    """True for a lower-case DNS label of at most 63 characters."""
    return DNS_LABEL.fullmatch(text) is not None


def load_yaml(text: str, *, source: str) -> object:
    """The one YAML document in ``text`` as plain data, within the config bounds
    (:data:`jwks_mirror.core.yamlsafe.CONFIG`); a :class:`ConfigError` naming ``source:line:col``
    when it is not valid YAML, or the bound it passes."""
    try:
        return yamlsafe.load_safe(text, yamlsafe.CONFIG, source=source, error=ConfigError)
    except ConfigError:
        raise
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        # Squashed to one line: ruamel quotes values in some problems ("duplicate key ...").
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ConfigError(f"{where}: {problem}") from exc
    except (YAMLError, RecursionError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid YAML: {one_line(exc)}") from exc
    except Exception as exc:
        # ruamel's constructors fail on some malformed tagged scalars with internal errors
        # ("!!int" alone: IndexError, "!!bool maybe": KeyError); an operator's typo must still
        # be a one-line ConfigError, never a traceback from check-config or a reload.
        raise ConfigError(
            f"{source}: invalid YAML ({type(exc).__name__}): {one_line(exc)}"
        ) from exc



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


def key_text(key: object) -> str:
    """A mapping key for an error's field path, quoted when it would break the line."""
    text = str(key)
    return text if text.isprintable() else repr(text)


class FieldReader:
    """Reads typed values out of parsed YAML. Relative paths resolve against ``base_dir``;
    with ``offline`` the files named are not looked at (``check-config --offline``)."""

    def __init__(self, base_dir: Path, *, offline: bool = False) -> None:
        self.base_dir = base_dir
        self.offline = offline

    def mapping(self, data: object, where: str, allowed: Set[str]) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise ConfigError("expected a mapping", field=where or None)
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                path = f"{where}.{key_text(key)}" if where else key_text(key)
                raise ConfigError(
                    f"unknown key (expected one of: {', '.join(sorted(allowed))})", field=path
                )
        return dict(data)

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError("expected a non-empty string", field=where)
        return value.strip()

    def port(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise ConfigError("expected a port number (0-65535; 0 picks a free port)", field=where)
        return value

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise ConfigError("expected true or false", field=where)
        return value

    def integer(self, value: object, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("expected an integer", field=where)
        if not low <= value <= high:
            raise ConfigError(f"must be between {low} and {high}", field=where)
        return value

    def duration(
        self, value: object, where: str, minimum: float, maximum: tuple[float, str] | None = None
    ) -> float:
        """Seconds (:func:`parse_duration`), at least ``minimum``; at most ``maximum``
        (seconds, and how the error spells it) when given."""
        seconds = parse_duration(value, field=where)
        if seconds < minimum:
            raise ConfigError(f"must be at least {minimum:g}s", field=where)
        if maximum is not None and seconds > maximum[0]:
            raise ConfigError(f"must be at most {maximum[1]}", field=where)
        return seconds

    def max_connections(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
            raise ConfigError("expected an integer from 1 to 65536", field=where)
        return value

    def listen_host(self, value: object, where: str) -> str:
        """A host name or address to bind (``0.0.0.0``, ``::``, ``[::1]``)."""
        host = self.string(value, where)
        if not _LISTEN_HOST_RE.fullmatch(host):
            raise ConfigError(f"{host!r} is not a host name or address", field=where)
        return host

    def host_name(self, value: object, where: str) -> str:
        """A DNS name (``peers.dns``, a peer identity)."""
        name = self.string(value, where)
        if not _HOST_NAME_RE.fullmatch(name):
            raise ConfigError(f"{name!r} is not a host name", field=where)
        return name

    def server_name(self, value: object, where: str) -> str:
        """A TLS server name (SNI) to send and verify."""
        name = self.string(value, where)
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name):
            raise ConfigError(f"{name!r} is not a host name", field=where)
        return name

    def peer_identity(self, value: object, where: str) -> str:
        """A spiffe:// URI with a path, or a DNS name: what a peer's certificate must name."""
        identity = self.string(value, where)
        if not (_SPIFFE_RE.fullmatch(identity) or _HOST_NAME_RE.fullmatch(identity)):
            raise ConfigError(
                f"{identity!r} is neither a spiffe:// URI with a path nor a DNS name", field=where
            )
        return identity

    def path(self, value: object, where: str) -> Path:
        path = Path(self.string(value, where))
        return path if path.is_absolute() else self.base_dir / path

    def readable_file(self, value: object, where: str) -> Path:
        path = self.path(value, where)
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

    def url(
        self, value: object, where: str, schemes: set[str], *, upstream: bool = False
    ) -> str:
        """A URL with one of ``schemes``; ``upstream`` (something the mirror fetches) also
        refuses a link-local or cloud metadata host (:func:`forbidden_address`)."""
        text = self.string(value, where)
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
        why = forbidden_address(parts.hostname) if upstream else None
        if why is not None:
            raise ConfigError(f"refused: {why} (the mirror never fetches from one)", field=where)
        return text

    def headers(
        self, data: object, where: str, *, has_bearer: bool
    ) -> tuple[tuple[str, str], ...]:
        if data is None:
            return ()
        if not isinstance(data, Mapping):
            raise ConfigError("expected a mapping of header names to values", field=where)
        out: list[tuple[str, str]] = []
        for key, value in data.items():
            if not isinstance(key, str) or not _HEADER_NAME_RE.match(key):
                raise ConfigError("invalid header name", field=f"{where}.{key_text(key)}")
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
