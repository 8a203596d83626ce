"""``blocked-cidrs``: property tests of the minimal blocked list with ``ipaddress`` as the oracle.

For any blocked ranges and allowed addresses: no allowed address is covered; every other
blocked address is; nothing outside the blocked ranges is; and the list is minimal (no entry
inside another, no two entries the halves of one block). Then the command itself.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from jwks_mirror.gitops.cidrs import DEFAULT_BLOCKED, IPAddress, IPNetwork, blocked_except

# Small prefixes near a few bases, so ranges overlap, nest and sit side by side often.
BASES4 = [int(ipaddress.IPv4Address(a)) for a in ("10.0.0.0", "10.96.0.0", "172.16.0.0", "192.168.1.0")]
BASES6 = [int(ipaddress.IPv6Address(a)) for a in ("fc00::", "fd00::", "fe80::")]


@st.composite
def network4(draw: st.DrawFn) -> IPNetwork:
    prefix = draw(st.integers(min_value=23, max_value=32))
    base = draw(st.sampled_from(BASES4)) + draw(st.integers(min_value=0, max_value=1 << 13))
    return ipaddress.IPv4Network((base, prefix), strict=False)


@st.composite
def network6(draw: st.DrawFn) -> IPNetwork:
    prefix = draw(st.integers(min_value=119, max_value=128))
    base = draw(st.sampled_from(BASES6)) + draw(st.integers(min_value=0, max_value=1 << 13))
    return ipaddress.IPv6Network((base, prefix), strict=False)


@st.composite
def address_in(draw: st.DrawFn, nets: list[IPNetwork]) -> IPAddress:
    net = draw(st.sampled_from(nets))
    return net[draw(st.integers(min_value=0, max_value=net.num_addresses - 1))]


@st.composite
def problem(draw: st.DrawFn) -> tuple[list[IPNetwork], list[IPAddress]]:
    blocked = draw(st.lists(st.one_of(network4(), network6()), min_size=1, max_size=6))
    allowed = draw(st.lists(address_in(blocked), min_size=1, max_size=5))
    # and sometimes an address in no blocked range
    allowed += draw(st.lists(st.sampled_from([ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("2001:db8::1")]), max_size=1))
    return blocked, allowed


def covered(nets: list[IPNetwork], address: IPAddress) -> bool:
    return any(address in n for n in nets)


@settings(max_examples=200, deadline=None)
@given(problem())
def test_exactly_the_blocked_addresses_but_the_allowed_are_covered(case: tuple[list[IPNetwork], list[IPAddress]]) -> None:
    blocked, allowed = case
    result = blocked_except(blocked, allowed)
    for address in allowed:
        assert not covered(result, address), (address, result)
    # Every address of the blocked ranges (they are small) is covered unless it is allowed.
    for net in blocked:
        for address in net:
            assert covered(result, address) == (address not in allowed), address
    # Nothing outside the blocked ranges is: check each result block's ends and a middle.
    for net in result:
        for address in (net[0], net[-1], net[net.num_addresses // 2]):
            assert covered(blocked, address), (net, address)


@settings(max_examples=200, deadline=None)
@given(problem())
def test_the_list_is_minimal(case: tuple[list[IPNetwork], list[IPAddress]]) -> None:
    result = blocked_except(*case)
    assert len(set(result)) == len(result)
    for i, a in enumerate(result):
        for b in result[i + 1 :]:
            if a.version != b.version:
                continue
            assert not a.overlaps(b), (a, b)  # none redundant
            if a.prefixlen == b.prefixlen and a.prefixlen > 0:
                # two halves of one block would merge into their supernet
                assert a.supernet() != b.supernet(), (a, b)
    # and in the order the value is printed: IPv4 first, each family ascending
    assert result == sorted(result, key=lambda n: (n.version, n.network_address))


def test_no_allowed_address_changes_nothing_but_merging() -> None:
    halves = [ipaddress.ip_network("10.0.0.0/9"), ipaddress.ip_network("10.128.0.0/9"), ipaddress.ip_network("10.1.0.0/16")]
    assert blocked_except(halves, []) == [ipaddress.ip_network("10.0.0.0/8")]


def test_one_address_out_of_a_slash_8_takes_24_blocks() -> None:
    result = blocked_except([ipaddress.ip_network("10.0.0.0/8")], [ipaddress.ip_address("10.96.0.10")])
    assert len(result) == 24  # one block per bit of the host part: the least possible
    assert sum(n.num_addresses for n in result) == (1 << 24) - 1


def test_command_prints_the_default_ranges_without_the_allowed_address() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "blocked-cidrs", "--allow", "10.96.0.10", "--allow", "fd00::a"],
        capture_output=True, text=True, check=True,
    )
    nets = [ipaddress.ip_network(n) for n in result.stdout.strip().split(",")]
    assert not covered(nets, ipaddress.ip_address("10.96.0.10"))
    assert not covered(nets, ipaddress.ip_address("fd00::a"))
    for default in DEFAULT_BLOCKED:
        for address in (default[0], default[-1]):
            assert covered(nets, address) == (address not in {ipaddress.ip_address("10.96.0.10")}), address
    assert ipaddress.ip_network("169.254.0.0/16") in nets and ipaddress.ip_network("::1/128") in nets
    assert result.stderr == ""


def test_command_notes_an_address_outside_every_range() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jwks_mirror", "blocked-cidrs", "--allow", "8.8.8.8", "--block", "10.0.0.0/8"],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout == "10.0.0.0/8\n"
    assert "8.8.8.8 is in no blocked range" in result.stderr
