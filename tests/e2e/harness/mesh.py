"""The assembled data path: issuers behind STRICT sidecars, the mirror's sidecar, verifiers.

    token ──> verifier (jwt_authn) ──remote_jwks──> mirror public port (plain HTTP)
                                                          │ jwks-mirror serve
                           proxy mode: plain ──> mirror sidecar ──mTLS──┐
                           direct mode: mTLS with the mirror's cert ────┤
                                                                        v
                                               issuer sidecar (STRICT) ──> plain issuer

One :class:`Mesh` per test; ``close()`` stops everything it started, in reverse order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwks_mirror.demo.pki import MeshCA

from . import envoy, http
from .envoy import Envoy, Identity, MeshRoute, Provider, Replica
from .issuer import PlainIssuer
from .mirror import Mirror
from .procs import free_port

MIRROR_NS = MIRROR_SA = "jwks-mirror"


@dataclass
class IssuerWorkload:
    """An identity provider's pod: the plain app and its STRICT sidecar."""

    name: str
    app: PlainIssuer
    sidecar: Envoy
    identity: Identity

    @property
    def host(self) -> str:
        """The in-mesh name a RequestAuthentication's jwksUri would use."""
        return f"keys.{self.name}.svc.cluster.local"

    @property
    def strict_port(self) -> int:
        return self.sidecar.port

    def proxied_entry(self, proxy_url: str, **limits: Any) -> dict[str, Any]:
        """Mirror config for this issuer through the mirror's sidecar (``proxy``)."""
        return {"name": self.name, "jwks_uri": f"http://{self.host}/jwks.json",
                "issuer": self.app.issuer_url, "proxy": proxy_url, **limits}

    def direct_entry(self, mirror: Identity, ca_file: Path, **limits: Any) -> dict[str, Any]:
        """Mirror config for this issuer over direct mTLS with the mirror's certificate."""
        return {
            "name": self.name,
            "jwks_uri": f"https://127.0.0.1:{self.strict_port}/jwks.json",
            "issuer": self.app.issuer_url,
            "tls": {"ca_file": str(ca_file), "cert_file": str(mirror.cert_file),
                    "key_file": str(mirror.key_file), "server_name": self.host},
            **limits,
        }


class Mesh:
    """Certificates and processes for one test, all under ``workdir``."""

    def __init__(self, workdir: Path, *, envoy_binary: str) -> None:
        self.workdir = workdir
        self.envoy_binary = envoy_binary
        self.ca = MeshCA()
        self.ca_file = self.ca.write_ca(workdir)
        self.mirror_identity = self.identity(MIRROR_NS, MIRROR_SA)
        self.issuers: dict[str, IssuerWorkload] = {}
        self._cleanups: list[Callable[[], object]] = []

    def identity(self, namespace: str, service_account: str, *,
                 dns_names: tuple[str, ...] = ()) -> Identity:
        issued = self.ca.issue(namespace=namespace, service_account=service_account,
                               dns_names=dns_names)
        cert, key = issued.write(self.workdir, f"{namespace}.{service_account}")
        return Identity(self.ca.spiffe_id(namespace, service_account), cert, key)

    def envoy(self, name: str, config_for: Callable[[int], dict[str, Any]],
              port: int | None = None) -> Envoy:
        """Start an Envoy named ``name`` whose config is built for its listener port."""
        port = port or free_port()
        proxy = Envoy(name, config_for(port), port, self.workdir, self.envoy_binary)
        self._cleanups.append(proxy.stop)
        return proxy.start()

    # -- the pieces ---------------------------------------------------------------------------

    def add_issuer(self, name: str, *, allowed: list[str] | None = None) -> IssuerWorkload:
        """An issuer app and its STRICT sidecar admitting only the mirror (or ``allowed``)."""
        app = PlainIssuer(name)
        self._cleanups.append(app.close)
        app.start()
        identity = self.identity(name, "keys", dns_names=(f"keys.{name}.svc.cluster.local",))
        allowed = allowed if allowed is not None else [self.mirror_identity.spiffe_id]
        sidecar = self.envoy(f"{name}-sidecar", lambda port: envoy.issuer_sidecar(
            port=port, app_port=app.port, identity=identity, ca_file=self.ca_file,
            allowed=allowed))
        workload = IssuerWorkload(name, app, sidecar, identity)
        self.issuers[name] = workload
        return workload

    def mirror_sidecar(self, *, identity: Identity | None = None,
                       name: str = "mirror-sidecar") -> Envoy:
        """The mirror's outbound istio-proxy, routing to every issuer added so far."""
        routes = [MeshRoute(w.host, w.strict_port, w.identity.spiffe_id)
                  for w in self.issuers.values()]
        return self.envoy(name, lambda port: envoy.mirror_sidecar(
            port=port, identity=identity or self.mirror_identity, ca_file=self.ca_file,
            routes=routes))

    def mirror(self, issuers: list[dict[str, Any]], *, defaults: dict[str, Any] | None = None,
               state_dir: Path | None = None, start: bool = True, name: str = "mirror",
               peers: dict[str, Any] | None = None, **options: Any) -> Mirror:
        """A ``jwks-mirror serve`` process; give each replica of one test its own ``name``.
        ``options`` go to :class:`Mirror` (``shutdown_delay``, ``public_tls``)."""
        mirror = Mirror(self.workdir, issuers=issuers, defaults=defaults, state_dir=state_dir,
                        name=name, peers=peers, **options)
        self._cleanups.append(mirror.stop)
        if start:
            mirror.start()
        return mirror

    def verifier(self, providers: list[Provider], *, name: str = "verifier",
                 cache_duration: str = "1s") -> Verifier:
        proxy = self.envoy(name, lambda port: envoy.verifier(
            port=port, providers=providers, cache_duration=cache_duration))
        return Verifier(proxy)

    def verifier_for(self, mirror: Mirror, names: list[str], **kwargs: Any) -> Verifier:
        """A verifier whose providers take their keys from ``mirror`` (as istiod would)."""
        providers = [
            Provider(name, self.issuers[name].app.issuer_url, mirror.jwks_url(name),
                     mirror.public_port)
            for name in names
        ]
        return self.verifier(providers, **kwargs)

    def mirrored(self, names: list[str], *, direct: tuple[str, ...] = (),
                 defaults: dict[str, Any] | None = None, state_dir: Path | None = None,
                 limits: dict[str, dict[str, Any]] | None = None,
                 ) -> tuple[Mirror, Verifier]:
        """The whole path for ``names``: issuers, the mirror's sidecar, mirror, verifier.

        Issuers in ``direct`` are fetched over direct mTLS with the mirror's certificate;
        the others through the mirror's sidecar (``proxy``). ``limits`` holds per-issuer
        overrides (``{"beta": {"timeout": "5s"}}``).
        """
        limits = limits or {}
        for name in names:
            if name not in self.issuers:
                self.add_issuer(name)
        proxy_url = self.mirror_sidecar().url if set(names) - set(direct) else ""
        entries = [
            self.issuers[n].direct_entry(self.mirror_identity, self.ca_file, **limits.get(n, {}))
            if n in direct else self.issuers[n].proxied_entry(proxy_url, **limits.get(n, {}))
            for n in names
        ]
        mirror = self.mirror(entries, defaults=defaults, state_dir=state_dir)
        return mirror, self.verifier_for(mirror, names)

    def on_close(self, cleanup: Callable[[], object]) -> None:
        """Run ``cleanup`` when the mesh closes (for pieces a test starts itself)."""
        self._cleanups.append(cleanup)

    def replicas(self, names: list[str], *, count: int = 2,
                 defaults: dict[str, Any] | None = None, start: bool = True,
                 **options: Any) -> list[Mirror]:
        """``count`` replicas of one configuration (a Deployment's pods): each a process
        with its own ports, all fetching ``names`` through the mirror's sidecar."""
        for name in names:
            if name not in self.issuers:
                self.add_issuer(name)
        proxy_url = self.mirror_sidecar().url
        entries = [self.issuers[n].proxied_entry(proxy_url) for n in names]
        return [self.mirror(entries, defaults=defaults, name=f"replica-{i + 1}", start=start,
                            **options)
                for i in range(count)]

    def verifier_for_replicas(self, replicas: list[Mirror], names: list[str], *,
                              service: str = "http://jwks-mirror.jwks-mirror.svc:8080",
                              tls_ca: Path | None = None, tls_server_name: str | None = None,
                              new_connection_per_fetch: bool = False,
                              **kwargs: Any) -> Verifier:
        """A verifier whose JWKS cluster is the Service over ``replicas``: every replica an
        endpoint, health-checked on ``/readyz``, as istiod reaches the mirror."""
        endpoints = tuple(Replica(m.public_port, m.admin_port) for m in replicas)
        providers = [
            Provider(name, self.issuers[name].app.issuer_url, f"{service}/{name}/jwks.json",
                     replicas[0].public_port, tls_ca=tls_ca, tls_server_name=tls_server_name,
                     replicas=endpoints, new_connection_per_fetch=new_connection_per_fetch)
            for name in names
        ]
        return self.verifier(providers, **kwargs)

    def close(self) -> None:
        errors: list[BaseException] = []
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep stopping the rest; report the first
                errors.append(exc)
        self._cleanups.clear()
        if errors:
            raise errors[0]


@dataclass
class Verifier:
    """A workload's istio-proxy with ``jwt_authn``; ``/<provider>/...`` needs that provider."""

    proxy: Envoy

    def call(self, provider: str, token: str | None) -> http.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return http.get(f"{self.proxy.url}/{provider}/api", headers=headers)

    def status(self, provider: str, token: str | None) -> int:
        return self.call(provider, token).status

    def accepts(self, provider: str, token: str | None) -> bool:
        return self.status(provider, token) == 200

    def jwks_fetches(self) -> dict[str, int]:
        """Envoy's own counters of JWKS fetches (``jwks_fetch_success``/``_failed``)."""
        with contextlib.suppress(Exception):
            return self.proxy.stats("http.workload.jwt_authn")
        return {}
