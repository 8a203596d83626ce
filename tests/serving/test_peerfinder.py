"""peerfinder: the peer URLs, from ``peers.urls`` or every DNS record but this replica's own
(the peer fill over DNS, end to end, is in test_peering.py)."""

from __future__ import annotations

import socket

from jwks_mirror.core.config.model import PeersSettings, PeerTLSSettings
from jwks_mirror.serving.peerfinder import PeerFinder


def resolver(records: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in records:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return records[host]

    return resolve


async def test_dns_peers_are_every_record_but_this_replicas_own():
    finder = PeerFinder(
        resolver=resolver({"peers.ns": ["10.0.0.5", "10.0.0.6", "fd00::7", "10.0.0.6"]}),
        environ={"POD_IP": "10.0.0.5"},
    )
    urls = await finder.urls(PeersSettings(dns="peers.ns", port=9090))
    assert urls == ["http://10.0.0.6:9090", "http://[fd00::7]:9090"]


async def test_without_pod_ip_own_addresses_come_from_the_host_name():
    finder = PeerFinder(
        resolver=resolver(
            {"peers.ns": ["10.0.0.5", "10.0.0.6"], socket.gethostname(): ["10.0.0.6"]}
        ),
        environ={},
    )
    assert await finder.urls(PeersSettings(dns="peers.ns", port=9090)) == ["http://10.0.0.5:9090"]


async def test_pod_ips_dual_stack_excludes_both_families():
    finder = PeerFinder(
        resolver=resolver({"peers.ns": ["10.0.0.5", "fd00::5", "fd00::6"]}),
        environ={"POD_IPS": "10.0.0.5,fd00:0::5"},
    )
    assert await finder.urls(PeersSettings(dns="peers.ns", port=1)) == ["http://[fd00::6]:1"]


async def test_static_urls_are_used_as_given():
    finder = PeerFinder(resolver=resolver({}), environ={})
    peers = PeersSettings(urls=("http://10.0.0.1:9090", "http://10.0.0.2:9090"))
    assert await finder.urls(peers) == list(peers.urls)



async def test_dns_peers_with_tls_are_asked_over_https():
    finder = PeerFinder(resolver=resolver({"peers": ["10.0.0.7"]}), environ={"POD_IP": "10.0.0.9"})
    tls = PeersSettings(dns="peers", tls=PeerTLSSettings(identity="mirror.ns.svc"))
    assert await finder.urls(tls) == ["https://10.0.0.7:9090"]
