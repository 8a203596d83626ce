"""Finding the peers: ``peers.urls`` as given, or every address of the headless Service named
by ``peers.dns`` except this replica's own (the peer fill, peering.py, asks them).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence

from jwks_mirror.core.config.model import PeersSettings

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Every A/AAAA record of ``host`` (the resolver the pod has: kube-dns for a headless
    Service returns one record per pod)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _normalise(address: str) -> str | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0].strip()).compressed
    except ValueError:
        return None


def base_url(address: str, port: int, scheme: str = "http") -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


class PeerFinder:
    """Peer admin URLs: ``peers.urls`` as given, or every address of ``peers.dns`` except
    this replica's own.

    Own addresses come from ``POD_IP`` / ``POD_IPS`` (the downward API) when set, else from
    resolving this host's name (a pod's hostname resolves to its IP through /etc/hosts).
    """

    def __init__(
        self, *, resolver: Resolver = system_resolver, environ: Mapping[str, str] | None = None
    ) -> None:
        self._resolver = resolver
        env = os.environ if environ is None else environ
        declared = [part for name in ("POD_IP", "POD_IPS") for part in env.get(name, "").split(",")]
        own = {a for a in (_normalise(p) for p in declared if p.strip()) if a is not None}
        self._own: frozenset[str] | None = frozenset(own) if own else None

    async def own_addresses(self) -> frozenset[str]:
        if self._own is None:
            try:
                found = await self._resolver(socket.gethostname(), 0)
            except OSError:
                found = []
            self._own = frozenset(a for a in (_normalise(x) for x in found) if a is not None)
        return self._own

    async def urls(self, peers: PeersSettings) -> list[str]:
        """Raises OSError when the DNS name does not resolve."""
        if peers.dns is None:
            return list(peers.urls)
        own = await self.own_addresses()
        addresses = [_normalise(a) for a in await self._resolver(peers.dns, peers.port)]
        unique = sorted({a for a in addresses if a is not None and a not in own})
        scheme = "https" if peers.tls is not None else "http"
        return [base_url(a, peers.port, scheme) for a in unique]
