"""configfields: the checks of single configuration values, each error naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from jwks_mirror.core.config.fields import (
    FieldReader,
    forbidden_address,
    is_dns_label,
    parse_duration,
)
from jwks_mirror.core.errors import ConfigError

READER = FieldReader(Path("/etc/jwks-mirror"), offline=True)


def refused(call, *args) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(*args)
    return info.value


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("1h30m", 5400), (7, 7)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, field="f") == seconds


def test_duration_bounds() -> None:
    assert READER.duration("5m", "shutdown_delay", 0.0, (300.0, "5m")) == 300
    error = refused(READER.duration, "6m", "shutdown_delay", 0.0, (300.0, "5m"))
    assert error.field == "shutdown_delay" and "at most 5m" in str(error)
    error = refused(READER.duration, "10ms", "defaults.timeout", 0.05)
    assert error.field == "defaults.timeout" and "at least 0.05s" in str(error)


@pytest.mark.parametrize("value", [True, "3", 1.5, None])
def test_integer_refuses_what_is_not_one(value: object) -> None:
    assert "expected an integer" in str(refused(READER.integer, value, "defaults.max_keys", 1, 9))


def test_integer_range() -> None:
    assert READER.integer(9, "x", 1, 9) == 9
    assert "between 1 and 9" in str(refused(READER.integer, 10, "x", 1, 9))


@pytest.mark.parametrize("value", [0, 65537, True, "64"])
def test_max_connections(value: object) -> None:
    error = refused(READER.max_connections, value, "public.max_connections")
    assert "from 1 to 65536" in str(error) and error.field == "public.max_connections"
    assert READER.max_connections(65536, "x") == 65536


def test_boolean() -> None:
    assert READER.boolean(False, "x") is False
    assert "true or false" in str(refused(READER.boolean, "yes", "issuers[0].discovery"))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::1]", "mirror.ns.svc"])
def test_listen_hosts(host: str) -> None:
    assert READER.listen_host(host, "public.host") == host


@pytest.mark.parametrize("host", ["a b", "x/y", "h" * 254])
def test_bad_listen_hosts(host: str) -> None:
    assert "not a host name or address" in str(refused(READER.listen_host, host, "public.host"))


def test_host_names_and_server_names() -> None:
    assert READER.host_name("mirror.ns.svc", "peers.dns") == "mirror.ns.svc"
    assert "not a host name" in str(refused(READER.host_name, "-bad-", "peers.dns"))
    assert READER.server_name("idp.example", "tls.server_name") == "idp.example"
    assert "not a host name" in str(refused(READER.server_name, "idp_example", "tls.server_name"))


@pytest.mark.parametrize(
    "identity", ["spiffe://cluster.local/ns/jwks-mirror/sa/jwks-mirror", "mirror.ns.svc"]
)
def test_peer_identities(identity: str) -> None:
    assert READER.peer_identity(identity, "peers.tls.identity") == identity


@pytest.mark.parametrize("identity", ["spiffe://cluster.local", "http://x/y", "a b"])
def test_bad_peer_identities(identity: str) -> None:
    assert "neither a spiffe:// URI" in str(refused(READER.peer_identity, identity, "i"))


def test_upstream_urls_refuse_metadata_addresses() -> None:
    assert forbidden_address("169.254.169.254") is not None
    assert forbidden_address("::ffff:169.254.169.254") is not None
    assert forbidden_address("idp.example") is None
    with pytest.raises(ConfigError, match="refused"):
        READER.url("http://169.254.169.254/x", "issuers[0].jwks_uri", {"http"}, upstream=True)


def test_dns_labels() -> None:
    assert is_dns_label("idp-1") and not is_dns_label("Idp") and not is_dns_label("a" * 64)


def test_mapping_names_the_unknown_key() -> None:
    error = refused(READER.mapping, {"prot": 1}, "public", {"port"})
    assert error.field == "public.prot" and "expected one of: port" in str(error)
