"""A value for istiod's ``BLOCKED_CIDRS_IN_JWKS_URIS`` that keeps some addresses reachable.

PURE: networks and addresses in, networks out. istiod refuses to fetch a ``jwksUri`` whose
host resolves into any listed range; blocking the private ranges also blocks the mirror's
ClusterIP. :func:`blocked_except` returns the smallest list of CIDRs that covers every
blocked address except the allowed ones: what is left of each range once the allowed
addresses are cut out, merged back wherever two halves are both still blocked.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["DEFAULT_BLOCKED", "IPAddress", "IPNetwork", "blocked_except", "parse_cidr"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 1918, loopback, link-local, CGNAT (RFC 6598), and IPv6 loopback, ULA and link-local.
DEFAULT_BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(text)
    for text in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
        "100.64.0.0/10", "::1/128", "fc00::/7", "fe80::/10",
    )
)


def parse_cidr(text: str) -> IPNetwork:
    """``text`` as a network, host bits allowed (``10.0.0.1/8`` is ``10.0.0.0/8``), as Go's
    ``net.ParseCIDR`` reads istiod's list; a bare address is not a CIDR. ValueError if not."""
    if "/" not in text:
        raise ValueError(f"not a CIDR (no /prefix): {text!r}")
    return ipaddress.ip_network(text.strip(), strict=False)


def blocked_except(
    blocked: Iterable[IPNetwork], allowed: Iterable[IPAddress]
) -> list[IPNetwork]:
    """The minimal CIDR list covering every address of ``blocked`` but none of ``allowed``.

    IPv4 first, then IPv6, each in address order. Minimal: no entry lies inside another and no
    two entries are the halves of one larger block, which for a set of addresses is the one
    smallest decomposition into CIDR blocks.
    """
    nets = _collapse(list(blocked))
    for address in allowed:
        nets = [part for net in nets for part in _without(net, address)]
    return _collapse(nets)


def _without(net: IPNetwork, address: IPAddress) -> list[IPNetwork]:
    """``net`` minus ``address``: the CIDR blocks around it, or ``net`` if it is outside."""
    if address not in net:
        return [net]
    if isinstance(net, ipaddress.IPv4Network) and isinstance(address, ipaddress.IPv4Address):
        return list(net.address_exclude(ipaddress.IPv4Network(address)))
    if isinstance(net, ipaddress.IPv6Network) and isinstance(address, ipaddress.IPv6Address):
        return list(net.address_exclude(ipaddress.IPv6Network(address)))
    return [net]


def _collapse(nets: list[IPNetwork]) -> list[IPNetwork]:
    """IPv4 then IPv6, merged into the fewest CIDR blocks, in address order."""
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]
