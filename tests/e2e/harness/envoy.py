"""Envoy in the three roles of Istio's data path, as real processes on loopback.

- :func:`issuer_sidecar` — the issuer's istio-proxy with PeerAuthentication STRICT: inbound
  mTLS only, client certificate required and matched against allowed SPIFFE identities (an
  ``AuthorizationPolicy`` naming the mirror's service account), plain HTTP to the app, and
  ``x-forwarded-client-cert`` telling the app who called.
- :func:`mirror_sidecar` — the mirror's istio-proxy outbound path: plain HTTP in (the mirror
  reaches it through its ``proxy`` setting, so requests arrive in absolute form), mTLS out
  with the mirror's workload certificate, verifying each destination's SPIFFE identity.
- :func:`verifier` — a workload's istio-proxy enforcing a ``RequestAuthentication``: the
  ``jwt_authn`` filter with ``remote_jwks`` (standing in for istiod's fetch-and-push) in front
  of a route that answers 200.

Configs are plain dicts written as JSON (which Envoy reads as YAML), built here so the tests
can read what each proxy does in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import http
from .procs import Proc, wait_until

_TLS_SOCKET = "envoy.transport_sockets.tls"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_TYPES = "type.googleapis.com/envoy.extensions"
_HCM = f"{_TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {"name": "envoy.filters.http.router",
           "typed_config": {"@type": f"{_TYPES}.filters.http.router.v3.Router"}}
_ACCESS_LOG = [{
    "name": "envoy.access_loggers.stdout",
    "typed_config": {
        "@type": f"{_TYPES}.access_loggers.stream.v3.StdoutAccessLog",
        "log_format": {"text_format_source": {"inline_string": (
            "[access] %REQ(:METHOD)% %REQ(:AUTHORITY)%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% "
            "-> %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
            "upstream=%UPSTREAM_HOST% %UPSTREAM_TRANSPORT_FAILURE_REASON% "
            "peer=%DOWNSTREAM_PEER_URI_SAN% upstream_peer=%UPSTREAM_PEER_URI_SAN%\n"
        )}},
    },
}]


@dataclass(frozen=True)
class Identity:
    """A workload certificate: PEM files on disk and the SPIFFE ID in its URI SAN."""

    spiffe_id: str
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class MeshRoute:
    """A mesh destination as the mirror's sidecar knows it (what Istio derives from a Service)."""

    host: str          # the name the mirror asks for, e.g. keys.idp.svc.cluster.local
    port: int          # the destination sidecar's inbound (mTLS) port on 127.0.0.1
    spiffe_id: str     # the identity the destination must present


@dataclass(frozen=True)
class Replica:
    """One mirror replica behind a Service: its public port, and the admin port whose
    ``/readyz`` decides whether it gets traffic (the readiness probe)."""

    public_port: int
    admin_port: int


@dataclass(frozen=True)
class Provider:
    """One ``jwt_authn`` provider: tokens of ``issuer`` verified with keys from ``jwks_uri``.

    ``upstream_port`` is where Envoy's fetch goes (the cluster); ``tls_ca`` makes that fetch
    HTTPS without a client certificate, as istiod's would be, trusting only that CA
    (``tls_server_name``: the SNI sent and the DNS name the certificate must hold).
    ``replicas``, when given, replace ``upstream_port``: the cluster holds every replica and
    health-checks each on ``/readyz``, as a Service's endpoints follow readiness.
    """

    name: str
    issuer: str
    jwks_uri: str
    upstream_port: int
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    replicas: tuple[Replica, ...] = ()
    new_connection_per_fetch: bool = False  # every fetch a new connection (and handshake)


def _socket(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _tls_certificates(identity: Identity) -> list[dict[str, Any]]:
    return [{"certificate_chain": {"filename": str(identity.cert_file)},
             "private_key": {"filename": str(identity.key_file)}}]


def _validation(ca_file: Path, spiffe_ids: list[str]) -> dict[str, Any]:
    context: dict[str, Any] = {"trusted_ca": {"filename": str(ca_file)}}
    if spiffe_ids:
        context["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": spiffe_id}} for spiffe_id in spiffe_ids
        ]
    return context


def _cluster(name: str, port: int, *, transport_socket: dict[str, Any] | None = None,
             connect_timeout: str = "1s") -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(port)}}]}],
        },
    }
    if transport_socket is not None:
        cluster["transport_socket"] = transport_socket
    return cluster


def http_connection_manager(stat_prefix: str, virtual_hosts: list[dict[str, Any]],
         http_filters: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": stat_prefix,
            "access_log": _ACCESS_LOG,
            "route_config": {"name": stat_prefix, "virtual_hosts": virtual_hosts},
            "http_filters": [*(http_filters or []), _ROUTER],
            **extra,
        },
    }


def bootstrap(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"address": _socket(0)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # A connection limit, as production sidecars have; it also keeps Envoy's startup
        # warning about its absence out of the logs a failing test prints.
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": f"{_TYPES}.resource_monitors.downstream_connections.v3."
                         "DownstreamConnectionsConfig",
                "max_active_downstream_connections": 1000,
            },
        }]},
    }


def issuer_sidecar(*, port: int, app_port: int, identity: Identity, ca_file: Path,
                   allowed: list[str]) -> dict[str, Any]:
    """STRICT inbound: mTLS required, only ``allowed`` SPIFFE IDs, plain HTTP to the app."""
    tls = {
        "name": _TLS_SOCKET,
        "typed_config": {
            "@type": f"{_TYPES}.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": _tls_certificates(identity),
                "validation_context": _validation(ca_file, allowed),
            },
        },
    }
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "inbound-app", "timeout": "10s"}}]
    listener = {
        "name": "inbound-strict",
        "address": _socket(port),
        "filter_chains": [{
            "transport_socket": tls,
            "filters": [http_connection_manager(
                "inbound", [{"name": "inbound", "domains": ["*"], "routes": routes}],
                forward_client_cert_details="SANITIZE_SET",
                set_current_client_cert_details={"uri": True},
            )],
        }],
    }
    return bootstrap([listener], [_cluster("inbound-app", app_port)])


def mirror_sidecar(*, port: int, identity: Identity, ca_file: Path,
                   routes: list[MeshRoute]) -> dict[str, Any]:
    """Outbound: plain HTTP proxy in, mTLS with ``identity`` out, per destination host."""
    virtual_hosts: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    for route in routes:
        cluster_name = f"outbound|80||{route.host}"
        virtual_hosts.append({
            "name": route.host,
            "domains": [route.host, f"{route.host}:80"],
            "routes": [{"match": {"prefix": "/"},
                        "route": {"cluster": cluster_name, "timeout": "10s"}}],
        })
        tls = {
            "name": _TLS_SOCKET,
            "typed_config": {
                "@type": f"{_TYPES}.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": route.host,
                "common_tls_context": {
                    "tls_certificates": _tls_certificates(identity),
                    "validation_context": _validation(ca_file, [route.spiffe_id]),
                },
            },
        }
        clusters.append(_cluster(cluster_name, route.port, transport_socket=tls))
    virtual_hosts.append({
        "name": "no-route",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "direct_response": {
            "status": 502, "body": {"inline_string": "no such host in the test mesh\n"}}}],
    })
    listener = {
        "name": "outbound",
        "address": _socket(port),
        "filter_chains": [{"filters": [http_connection_manager("outbound", virtual_hosts)]}],
    }
    return bootstrap([listener], clusters)


# Readiness as endpoints see it: a replica whose /readyz fails one check gets no new
# requests; the check runs on the plain admin port even when the cluster speaks TLS.
_HEALTH_CHECK = {
    "timeout": "1s",
    "interval": "0.25s",
    "no_traffic_interval": "0.25s",
    "unhealthy_threshold": 1,
    "healthy_threshold": 1,
    "http_health_check": {"path": "/readyz"},
    "transport_socket_match_criteria": {"probe": "plain"},
}
_PLAIN_PROBE_SOCKET = {
    "name": "plain-probe",
    "match": {"probe": "plain"},
    "transport_socket": {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {"@type": f"{_TYPES}.transport_sockets.raw_buffer.v3.RawBuffer"},
    },
}


def _replicated(cluster: dict[str, Any], replicas: tuple[Replica, ...]) -> dict[str, Any]:
    """``cluster`` over every replica, each health-checked on its admin port's /readyz. No
    panic routing: like a Service without ready endpoints, no replica ready means no fetch."""
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": _socket(r.public_port),
                      "health_check_config": {"port_value": r.admin_port}}}
        for r in replicas
    ]}]
    cluster["health_checks"] = [_HEALTH_CHECK]
    cluster["transport_socket_matches"] = [_PLAIN_PROBE_SOCKET]
    cluster["common_lb_config"] = {"healthy_panic_threshold": {"value": 0}}
    return cluster


def verifier(*, port: int, providers: list[Provider], cache_duration: str = "1s",
             fetch_timeout: str = "1s") -> dict[str, Any]:
    """``jwt_authn`` in front of a 200 route; ``/<provider>/...`` requires that provider.

    ``cache_duration`` is short and fetching on demand (no ``async_fetch``), so once the cache
    expires every request that carries a token makes Envoy fetch the JWKS again: a verifier
    that keeps accepting tokens keeps proving its key source answers. No JWT cache either, so
    each request's signature is checked against the keys Envoy currently holds.
    """
    jwt_providers: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    for provider in providers:
        cluster_name = f"jwks-{provider.name}"
        transport_socket = None
        if provider.tls_ca is not None:
            validation = _validation(provider.tls_ca, [])
            tls_context: dict[str, Any] = {
                "@type": f"{_TYPES}.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"validation_context": validation},
            }
            if provider.tls_server_name:
                tls_context["sni"] = provider.tls_server_name
                validation["match_typed_subject_alt_names"] = [
                    {"san_type": "DNS", "matcher": {"exact": provider.tls_server_name}}]
            transport_socket = {"name": _TLS_SOCKET, "typed_config": tls_context}
        cluster = _cluster(cluster_name, provider.upstream_port, transport_socket=transport_socket)
        if provider.replicas:
            cluster = _replicated(cluster, provider.replicas)
        if provider.new_connection_per_fetch:
            cluster["typed_extension_protocol_options"] = {_HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                "common_http_protocol_options": {"max_requests_per_connection": 1},
                "explicit_http_config": {"http_protocol_options": {}},
            }}
        clusters.append(cluster)
        jwt_providers[provider.name] = {
            "issuer": provider.issuer,
            "remote_jwks": {
                "http_uri": {"uri": provider.jwks_uri, "cluster": cluster_name,
                             "timeout": fetch_timeout},
                "cache_duration": cache_duration,
            },
            "forward": True,
        }
        rules.append({"match": {"prefix": f"/{provider.name}/"},
                      "requires": {"provider_name": provider.name}})
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": f"{_TYPES}.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": jwt_providers,
            "rules": rules,
        },
    }
    routes = [{"match": {"prefix": "/"},
               "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]
    listener = {
        "name": "workload-inbound",
        "address": _socket(port),
        "filter_chains": [{"filters": [http_connection_manager(
            "workload", [{"name": "workload", "domains": ["*"], "routes": routes}], [jwt_authn],
        )]}],
    }
    return bootstrap([listener], clusters)


@dataclass
class Envoy:
    """An Envoy process running ``config``; ``port`` is its (only) listener's port."""

    name: str
    config: dict[str, Any]
    port: int
    workdir: Path
    binary: str
    proc: Proc = field(init=False)

    def __post_init__(self) -> None:
        self.config_path = self.workdir / f"{self.name}.envoy.json"
        self.admin_path = self.workdir / f"{self.name}.admin-address"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.proc = Proc(self.name, [
            self.binary, "-c", str(self.config_path),
            "--concurrency", "1", "--log-level", "warn", "--disable-hot-restart",
            "--admin-address-path", str(self.admin_path),
            # Access logs reach the file within 50 ms, so a failing test's report has them.
            "--file-flush-interval-msec", "50",
            "--service-cluster", self.name, "--service-node", self.name,
        ], log_path=self.workdir / f"{self.name}.log")

    def start(self, *, timeout: float = 15.0) -> Envoy:
        self.admin_path.unlink(missing_ok=True)
        self.proc.start()
        wait_until(self._ready, timeout=timeout, what=f"envoy {self.name} to be ready")
        return self

    def _ready(self) -> bool:
        self.proc.check_alive()
        if not self.admin_path.exists():
            return False
        address = self.admin_path.read_text().strip()
        if not address:
            return False
        return http.get(f"http://{address}/ready", timeout=1).status == 200

    @property
    def admin_url(self) -> str:
        return "http://" + self.admin_path.read_text().strip()

    def stats(self, prefix: str) -> dict[str, int]:
        """Counters and gauges whose name starts with ``prefix`` (from the admin API)."""
        resp = http.get(f"{self.admin_url}/stats?filter=^{prefix}", timeout=2)
        out: dict[str, int] = {}
        for line in resp.text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def stop(self) -> None:
        self.proc.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
