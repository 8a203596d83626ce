"""Configuration loading: every error names the field, every value is parsed as documented."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jwks_mirror.cli import main
from jwks_mirror.core.config.fields import parse_duration
from jwks_mirror.core.config.loader import load_settings, parse_settings
from jwks_mirror.core.config.model import (
    AdminSettings,
    Limits,
    PeersSettings,
    PublicSettings,
    ServerTLSSettings,
    Settings,
)
from jwks_mirror.core.errors import ConfigError

from ... import keyfactory as kf

UPSTREAM = "http://keys.myns.svc.cluster.local/jwks.json"
HTTPS_UPSTREAM = "https://keys.myns.svc.cluster.local/jwks.json"


def issuer(name: str = "keys-myns", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "jwks_uri": UPSTREAM}
    for key, value in fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def config(*issuers: dict[str, Any], **top: Any) -> str:
    # JSON is YAML, and a dict is easier to read (and vary) than indented text.
    return json.dumps({**top, "issuers": list(issuers)})


def error(text: str, base_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, base_dir=base_dir)
    return str(info.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, a.crt/a.key, b.crt/b.key (another key) and garbage, in one directory."""
    directory = tmp_path_factory.mktemp("pki")
    ca = kf.mesh_ca()
    ca.write_ca(directory)
    ca.issue(namespace="mirror", service_account="a").write(directory, "a")
    ca.issue(namespace="mirror", service_account="b").write(directory, "b")
    (directory / "garbage").write_text("not PEM at all\n")
    key = serialization.load_pem_private_key((directory / "a.key").read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (directory / "encrypted.key").write_bytes(encrypted)
    (directory / "token").write_text("s3cret\n")
    (directory / "empty").write_text("  \n")
    return directory


def tls_issuer(pki: Path, **tls: Any) -> dict[str, Any]:
    files = {"ca_file": "ca.crt", "cert_file": "a.crt", "key_file": "a.key"}
    files.update(tls)
    return issuer(jwks_uri=HTTPS_UPSTREAM, tls={k: v for k, v in files.items() if v is not None})


# -- defaults and the documented example ----------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "{}", "---\n", "issuers: []"])
def test_empty_file_gives_defaults(text: str) -> None:
    assert parse_settings(text) == Settings()


def test_defaults_are_the_documented_ones() -> None:
    assert Settings().public == PublicSettings("0.0.0.0", 8080)
    assert Settings().admin == AdminSettings("0.0.0.0", 9090, None)
    assert Limits() == Limits(
        refresh_interval_s=60.0,
        min_refresh_interval_s=10.0,
        timeout_s=5.0,
        max_response_bytes=262_144,
        max_keys=100,
        max_stale_s=72 * 3600.0,
        retain_removed_keys_s=3600.0,
    )


def test_design_example_parses(pki: Path) -> None:
    text = f"""
public:
  host: 0.0.0.0
  port: 8080
admin:
  host: 127.0.0.1
  port: 9090
  token_file: token
state_dir: .
defaults:
  refresh_interval: 1m
  min_refresh_interval: 10s
  timeout: 5s
  max_response_bytes: 262144
  max_keys: 100
  max_stale: 72h
  retain_removed_keys: 1h
issuers:
  - name: keys-myns
    jwks_uri: {UPSTREAM}
    issuer: exampleIssuer
    discovery: false
    proxy: null
    bearer_token_file: null
    headers: {{}}
  - name: direct
    jwks_uri: {HTTPS_UPSTREAM}
    tls:
      ca_file: {pki / "ca.crt"}
      cert_file: a.crt
      key_file: a.key
      server_name: keys.myns.svc.cluster.local
"""
    loaded = parse_settings(text, base_dir=pki)
    assert loaded.admin == AdminSettings("127.0.0.1", 9090, pki / "token")
    assert loaded.state_dir == pki / "."
    first, second = loaded.issuers
    assert (first.name, first.jwks_uri, first.issuer, first.discovery) == (
        "keys-myns",
        UPSTREAM,
        "exampleIssuer",
        False,
    )
    assert first.tls is None
    assert first.headers == ()
    assert first.limits == Limits()
    assert second.tls is not None
    assert second.tls.cert_file == pki / "a.crt"
    assert second.tls.server_name == "keys.myns.svc.cluster.local"
    assert loaded.issuer("direct") is second
    assert loaded.issuer("nope") is None


# -- unknown keys, names, structure ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("foo: 1", "foo"),
        ("Issuers: []", "Issuers"),
        ("public: {host: a, port: 1, tsl: x}", "public.tsl"),
        ("admin: {token: x}", "admin.token"),
        ("defaults: {refresh: 5m}", "defaults.refresh"),
        (config(issuer(jwksUri="x")), "issuers[0].jwksUri"),
        (config(issuer("a"), issuer("b", scopes=[])), "issuers[1].scopes"),
        (config(issuer("a"), issuer("b"), issuer("c", tls={"ca": "x"})), "issuers[2].tls.ca"),
    ],
)
def test_unknown_key_names_its_path(text: str, field: str) -> None:
    assert error(text).startswith(f"{field}: unknown key (expected one of: ")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('"a\\nb": 1', "'a\\nb'"),
        ('public: {"port\\r": 1}', "public.'port\\r'"),
        (
            "issuers: [{name: a, jwks_uri: 'http://h/', headers: {\"X\\nY\": 1}}]",
            "issuers[0].headers.'X\\nY'",
        ),
    ],
)
def test_field_path_with_a_line_break_stays_on_one_line(text: str, field: str) -> None:
    message = error(text)
    assert message.startswith(f"{field}: ")
    assert "\n" not in message
    assert "\r" not in message


def test_unknown_key_lists_the_allowed_ones() -> None:
    assert error("public: {hots: a}") == (
        "public.hots: unknown key (expected one of: host, max_connections, port, tls)"
    )


def test_connection_caps() -> None:
    """Each port caps its open connections (listening.py); the defaults are sized for the
    deploy's 256 Mi pod (docs/configuration.md)."""
    defaults = parse_settings("issuers: []")
    assert (defaults.public.max_connections, defaults.admin.max_connections) == (256, 64)
    text = "public: {max_connections: 10}\nadmin: {max_connections: 3}\nissuers: []"
    given = parse_settings(text)
    assert (given.public.max_connections, given.admin.max_connections) == (10, 3)
    assert (given.public.port, given.admin.port) == (8080, 9090)
    for port in ("public", "admin"):
        for bad in ("0", "-1", "65537", "true", "'8'", "1.5"):
            assert error(f"{port}: {{max_connections: {bad}}}\nissuers: []") == (
                f"{port}.max_connections: expected an integer from 1 to 65536"
            )


def test_duplicate_issuer_names() -> None:
    text = config(issuer("a"), issuer("b"), issuer("a"))
    assert error(text) == "issuers[2].name: duplicate name 'a' (also issuers[0])"


@pytest.mark.parametrize("name", ["Keys", "a_b", "-a", "a-", "a.b", "a" * 64, "keys/x", "ключи"])
def test_name_must_be_a_dns_label(name: str) -> None:
    assert error(config(issuer("ok"), issuer(name))) == (
        f"issuers[1].name: {name!r} is not a DNS label "
        "(lower-case letters, digits and '-', at most 63)"
    )


def test_longest_dns_label_is_accepted() -> None:
    assert parse_settings(config(issuer("a" * 63))).issuers[0].name == "a" * 63


@pytest.mark.parametrize("name", ["", "  ", 5, None, ["a"]])
def test_name_must_be_a_non_empty_string(name: Any) -> None:
    text = config(issuer() | {"name": name})
    assert error(text) == "issuers[0].name: expected a non-empty string"


def test_name_is_required() -> None:
    assert error(config({"jwks_uri": UPSTREAM})) == "issuers[0].name: required"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a mapping"),
        ("issuers: {}", "issuers: expected a list"),
        ("issuers: [keys]", "issuers[0]: expected a mapping"),
        ("public: 8080", "public: expected a mapping"),
        (
            "public: {port: 70000}",
            "public.port: expected a port number (0-65535; 0 picks a free port)",
        ),
        (
            "public: {port: '8080'}",
            "public.port: expected a port number (0-65535; 0 picks a free port)",
        ),
        (
            "public: {port: true}",
            "public.port: expected a port number (0-65535; 0 picks a free port)",
        ),
        ("admin: {port: 8080}", "admin.port: must differ from public.port"),
        ("public: {host: ''}", "public.host: expected a non-empty string"),
        ("state_dir: /nonexistent/state", "state_dir: no such directory"),
    ],
)
def test_structural_errors(text: str, message: str) -> None:
    assert error(text) == message


def test_same_port_on_different_hosts_and_port_zero_are_fine() -> None:
    loaded = parse_settings("public: {host: 127.0.0.1, port: 0}\nadmin: {port: 0}")
    assert (loaded.public.port, loaded.admin.port) == (0, 0)
    loaded = parse_settings("public: {host: 10.0.0.1, port: 9090}")
    assert loaded.public == PublicSettings("10.0.0.1", 9090)


# -- URLs, discovery, tls on http ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ftp://keys/jwks.json",
            "invalid URL 'ftp://keys/jwks.json' (expected http:// or https://host/...)",
        ),
        (
            "http:///jwks.json",
            "invalid URL 'http:///jwks.json' (expected http:// or https://host/...)",
        ),
        (
            "keys.svc/jwks.json",
            "invalid URL 'keys.svc/jwks.json' (expected http:// or https://host/...)",
        ),
        ("http://user:pw@keys/jwks.json", "credentials in URLs are not allowed; use headers"),
        ("http://token@keys/jwks.json", "credentials in URLs are not allowed; use headers"),
        ("http://keys/jwks.json#frag", "URL must not have a fragment"),
        ("http://keys/jw ks.json", "URL must not contain whitespace"),
        (
            "http://keys:99999/jwks.json",
            "invalid URL 'http://keys:99999/jwks.json': Port out of range 0-65535",
        ),
        ("http://[::1/jwks.json", "invalid URL 'http://[::1/jwks.json': Invalid IPv6 URL"),
        ("", "expected a non-empty string"),
    ],
)
def test_bad_jwks_uri(url: str, message: str) -> None:
    assert error(config(issuer(jwks_uri=url) | {"jwks_uri": url})) == (
        f"issuers[0].jwks_uri: {message}"
    )


def test_jwks_uri_with_query_and_port_is_kept_verbatim() -> None:
    url = "https://keys.myns.svc:8443/jwks.json?v=3"
    assert parse_settings(config(issuer(jwks_uri=url))).issuers[0].jwks_uri == url


def test_proxy_must_be_http() -> None:
    assert error(config(issuer(proxy="https://proxy:3128"))) == (
        "issuers[0].proxy: invalid URL 'https://proxy:3128' (expected http://host/...)"
    )
    assert parse_settings(config(issuer(proxy="http://proxy:3128"))).issuers[0].proxy == (
        "http://proxy:3128"
    )


def test_missing_jwks_uri() -> None:
    assert error(config(issuer(jwks_uri=None))) == (
        "issuers[0].jwks_uri: required (or set discovery: true)"
    )


def test_discovery_without_issuer() -> None:
    assert error(config(issuer(jwks_uri=None, discovery=True))) == (
        "issuers[0].issuer: required when discovery is true"
    )


def test_discovery_issuer_must_be_a_url() -> None:
    assert error(config(issuer(jwks_uri=None, discovery=True, issuer="exampleIssuer"))) == (
        "issuers[0].issuer: invalid URL 'exampleIssuer' (expected http:// or https://host/...)"
    )


def test_discovery_and_jwks_uri_together() -> None:
    assert error(config(issuer(discovery=True, issuer="https://idp.example"))) == (
        "issuers[0].jwks_uri: set either jwks_uri or discovery: true, not both"
    )


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_discovery_must_be_a_boolean(value: Any) -> None:
    text = config(issuer(jwks_uri=None) | {"discovery": value, "issuer": "https://idp"})
    assert error(text) == "issuers[0].discovery: expected true or false"


def test_discovery_upstream_is_the_openid_configuration() -> None:
    loaded = parse_settings(
        config(issuer(jwks_uri=None, discovery=True, issuer="https://idp.myns.svc/realms/x/"))
    )
    assert loaded.issuers[0].jwks_uri is None
    assert loaded.issuers[0].upstream == (
        "https://idp.myns.svc/realms/x/.well-known/openid-configuration"
    )


def test_tls_on_plain_http_upstream(pki: Path) -> None:
    item = tls_issuer(pki) | {"jwks_uri": UPSTREAM}
    assert error(config(item), pki) == (
        "issuers[0].tls: tls needs an https upstream; with a sidecar use http:// and no tls"
    )


def test_tls_on_plain_http_discovery(pki: Path) -> None:
    item = tls_issuer(pki, cert_file=None, key_file=None) | {
        "jwks_uri": None,
        "discovery": True,
        "issuer": "http://idp.myns.svc",
    }
    del item["jwks_uri"]
    assert error(config(item), pki).startswith("issuers[0].tls: tls needs an https upstream")


# -- TLS files -------------------------------------------------------------------------------


def test_tls_files_are_loaded(pki: Path) -> None:
    tls = parse_settings(config(tls_issuer(pki)), base_dir=pki).issuers[0].tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file) == (
        pki / "ca.crt",
        pki / "a.crt",
        pki / "a.key",
    )


def test_tls_with_only_a_ca_file(pki: Path) -> None:
    tls = parse_settings(config(tls_issuer(pki, cert_file=None, key_file=None)), base_dir=pki)
    assert tls.issuers[0].tls is not None
    assert tls.issuers[0].tls.cert_file is None


def test_cert_file_without_key_file(pki: Path) -> None:
    assert error(config(tls_issuer(pki, key_file=None)), pki) == (
        "issuers[0].tls.key_file: required with cert_file/key_file"
    )


def test_key_file_without_cert_file(pki: Path) -> None:
    assert error(config(tls_issuer(pki, cert_file=None)), pki) == (
        "issuers[0].tls.cert_file: required with cert_file/key_file"
    )


def test_missing_cert_file_exact_message(pki: Path) -> None:
    text = config(issuer("a"), issuer("b"), tls_issuer(pki, cert_file="missing.crt"))
    assert error(text, pki) == "issuers[2].tls.cert_file: no such file"


@pytest.mark.parametrize("member", ["ca_file", "key_file"])
def test_missing_tls_file(pki: Path, member: str) -> None:
    text = config(tls_issuer(pki, **{member: "nope.pem"}))
    assert error(text, pki) == f"issuers[0].tls.{member}: no such file"


def test_tls_file_that_is_a_directory(pki: Path) -> None:
    assert error(config(tls_issuer(pki, ca_file=".")), pki) == (
        "issuers[0].tls.ca_file: not a regular file"
    )


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0,
    reason="root reads files whatever their mode; the directory case covers unreadable paths",
)
def test_unreadable_tls_file(pki: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked.pem"
    locked.write_bytes((pki / "ca.crt").read_bytes())
    locked.chmod(0)
    try:
        assert error(config(tls_issuer(pki, ca_file=str(locked))), pki) == (
            "issuers[0].tls.ca_file: cannot read: Permission denied"
        )
    finally:
        locked.chmod(0o600)


def test_mismatched_cert_and_key_blames_the_key(pki: Path) -> None:
    message = error(config(tls_issuer(pki, key_file="b.key")), pki)
    assert message.startswith("issuers[0].tls.key_file: certificate and key unusable: ")
    assert "KEY_VALUES_MISMATCH" in message


def test_garbage_key_file_blames_the_key(pki: Path) -> None:
    message = error(config(tls_issuer(pki, key_file="garbage")), pki)
    assert message.startswith("issuers[0].tls.key_file: not an unencrypted PEM private key: ")


def test_encrypted_key_file_is_refused_without_prompting(pki: Path) -> None:
    message = error(config(tls_issuer(pki, key_file="encrypted.key")), pki)
    assert message == (
        "issuers[0].tls.key_file: not an unencrypted PEM private key: "
        "Password was not given but private key is encrypted"
    )


def test_garbage_cert_file_blames_the_cert(pki: Path) -> None:
    message = error(config(tls_issuer(pki, cert_file="garbage")), pki)
    assert message.startswith("issuers[0].tls.cert_file: certificate and key unusable: ")


def test_key_given_as_cert_blames_the_cert(pki: Path) -> None:
    message = error(config(tls_issuer(pki, cert_file="a.key", key_file="a.key")), pki)
    assert message.startswith("issuers[0].tls.cert_file: ")


@pytest.mark.parametrize("ca_file", ["garbage", "a.key"])
def test_bad_ca_file(pki: Path, ca_file: str) -> None:
    message = error(config(tls_issuer(pki, ca_file=ca_file)), pki)
    assert message.startswith("issuers[0].tls.ca_file: not a PEM CA bundle: ")


@pytest.mark.parametrize("server_name", ["keys myns", "keys/x", "ключи", "a" * 254])
def test_bad_server_name(pki: Path, server_name: str) -> None:
    message = error(config(tls_issuer(pki) | {"tls": {"server_name": server_name}}), pki)
    assert message == f"issuers[0].tls.server_name: {server_name!r} is not a host name"


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("3d", 259_200.0),
        ("1h30m", 5400.0),
        ("1m30s500ms", 90.5),
        ("1.5s", 1.5),
        (" 5m ", 300.0),
        ("0s", 0.0),
        (90, 90.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_durations_parsed(value: Any, seconds: float) -> None:
    assert parse_duration(value, field="f") == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5x", "f: invalid duration '5x' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("-1s", "f: invalid duration '-1s' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("5", "f: invalid duration '5' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("", "f: invalid duration '' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("h", "f: invalid duration 'h' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("1h 30m", "f: invalid duration '1h 30m' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("5m1", "f: invalid duration '5m1' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("5M", "f: invalid duration '5M' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("1e3s", "f: invalid duration '1e3s' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        (-1, "f: invalid duration -1"),
        (float("inf"), "f: invalid duration inf"),
        (float("nan"), "f: invalid duration nan"),
        pytest.param(10**400, "f: duration is too large", id="huge-int"),
        ("9" * 400 + "s", "f: invalid duration '999"),
        (True, "f: expected a duration such as 30s, 5m or 2h"),
        ([1], "f: expected a duration such as 30s, 5m or 2h"),
        (None, "f: expected a duration such as 30s, 5m or 2h"),
        ({"s": 5}, "f: expected a duration such as 30s, 5m or 2h"),
    ],
)
def test_bad_durations(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(value, field="f")
    assert str(info.value).startswith(message)
    assert info.value.field == "f"


@pytest.mark.parametrize(
    ("yaml_value", "message"),
    [
        ("5x", "invalid duration '5x' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("-1s", "invalid duration '-1s' (use e.g. 500ms, 30s, 5m, 2h, 3d)"),
        ("true", "expected a duration such as 30s, 5m or 2h"),
        ("[1, 2]", "expected a duration such as 30s, 5m or 2h"),
        (".nan", "invalid duration nan"),
        ("-5", "invalid duration -5"),
        pytest.param("1" + "0" * 400, "duration is too large", id="huge-int"),
    ],
)
def test_bad_duration_in_config_names_the_field(yaml_value: str, message: str) -> None:
    text = f"issuers:\n  - name: a\n    jwks_uri: {UPSTREAM}\n    timeout: {yaml_value}\n"
    assert error(text).startswith(f"issuers[0].timeout: {message}")


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "field", "message"),
    [
        ({"max_response_bytes": 1023}, "max_response_bytes", "must be between 1024 and 67108864"),
        (
            {"max_response_bytes": (64 << 20) + 1},
            "max_response_bytes",
            "must be between 1024 and 67108864",
        ),
        ({"max_response_bytes": "1k"}, "max_response_bytes", "expected an integer"),
        ({"max_response_bytes": 2048.0}, "max_response_bytes", "expected an integer"),
        ({"max_keys": 0}, "max_keys", "must be between 1 and 10000"),
        ({"max_keys": 10_001}, "max_keys", "must be between 1 and 10000"),
        ({"max_keys": True}, "max_keys", "expected an integer"),
        ({"refresh_interval": "500ms"}, "refresh_interval", "must be at least 1s"),
        ({"timeout": "10ms"}, "timeout", "must be at least 0.05s"),
        ({"timeout": "301s"}, "timeout", "must be at most 5m"),
        ({"max_stale": "500ms"}, "max_stale", "must be at least 1s"),
        ({"retain_removed_keys": "-1s"}, "retain_removed_keys", "invalid duration '-1s'"),
        (
            {"refresh_interval": "10m", "max_stale": "5m"},
            "max_stale",
            "max_stale is shorter than refresh_interval: keys would go stale between refreshes",
        ),
        (
            {"refresh_interval": "73h"},
            "refresh_interval",
            "max_stale is shorter than refresh_interval: keys would go stale between refreshes",
        ),
    ],
)
@pytest.mark.parametrize("where", ["defaults", "issuers[0]"])
def test_limit_bounds(limits: dict[str, Any], field: str, message: str, where: str) -> None:
    text = config(issuer(), defaults=limits) if where == "defaults" else config(issuer(**limits))
    assert error(text).startswith(f"{where}.{field}: {message}")


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (
            {"max_response_bytes": 1024, "max_keys": 1, "timeout": "50ms", "refresh_interval": 1},
            {"max_response_bytes": 1024, "max_keys": 1, "timeout_s": 0.05, "refresh_interval_s": 1},
        ),
        (
            {"max_response_bytes": 64 << 20, "max_keys": 10_000, "timeout": "5m"},
            {"max_response_bytes": 64 << 20, "max_keys": 10_000, "timeout_s": 300.0},
        ),
        (
            {"refresh_interval": "10m", "max_stale": "10m", "retain_removed_keys": 0},
            {"refresh_interval_s": 600.0, "max_stale_s": 600.0, "retain_removed_keys_s": 0.0},
        ),
    ],
)
def test_limit_bounds_are_inclusive(limits: dict[str, Any], expected: dict[str, Any]) -> None:
    loaded = parse_settings(config(issuer(**limits))).issuers[0].limits
    assert {name: getattr(loaded, name) for name in expected} == expected


def test_issuer_refresh_interval_beyond_default_max_stale_names_the_issuer_field() -> None:
    text = config(issuer(refresh_interval="2h"), defaults={"max_stale": "1h"})
    assert error(text).startswith("issuers[0].refresh_interval: max_stale is shorter")


def test_defaults_inherited_and_overridden_per_issuer() -> None:
    text = config(
        issuer("plain"),
        issuer("tuned", timeout="2s", max_keys=5, max_stale="2h"),
        defaults={"refresh_interval": "1m", "timeout": "10s", "retain_removed_keys": "30m"},
    )
    plain, tuned = parse_settings(text).issuers
    assert plain.limits == Limits(
        refresh_interval_s=60.0,
        timeout_s=10.0,
        max_response_bytes=262_144,
        max_keys=100,
        max_stale_s=72 * 3600.0,
        retain_removed_keys_s=1800.0,
    )
    assert tuned.limits == Limits(
        refresh_interval_s=60.0,
        timeout_s=2.0,
        max_response_bytes=262_144,
        max_keys=5,
        max_stale_s=7200.0,
        retain_removed_keys_s=1800.0,
    )


# -- headers, token files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "field", "message"),
    [
        ({"Connection": "close"}, "Connection", "set by jwks-mirror itself; cannot be configured"),
        (
            {"if-none-match": "*"},
            "if-none-match",
            "set by jwks-mirror itself; cannot be configured",
        ),
        (
            {"Accept-Encoding": "br"},
            "Accept-Encoding",
            "set by jwks-mirror itself; cannot be configured",
        ),
        (
            {"Content-Length": "1"},
            "Content-Length",
            "set by jwks-mirror itself; cannot be configured",
        ),
        ({"X-A": "a\r\nInjected: 1"}, "X-A", "control characters are not allowed"),
        ({"X-A": "a\nb"}, "X-A", "control characters are not allowed"),
        ({"X-A": "a\rb"}, "X-A", "control characters are not allowed"),
        ({"X-A": "a\0b"}, "X-A", "control characters are not allowed"),
        ({"Bad Name": "x"}, "Bad Name", "invalid header name"),
        ({"X:A": "x"}, "X:A", "invalid header name"),
        ({"": "x"}, "", "invalid header name"),
        ({"X-A": ["a"]}, "X-A", "expected a string"),
        ({"X-A": True}, "X-A", "expected a string"),
        ({"X-A": None}, "X-A", "expected a string"),
    ],
)
def test_bad_headers(headers: dict[str, Any], field: str, message: str) -> None:
    assert error(config(issuer("a"), issuer("b", headers=headers))) == (
        f"issuers[1].headers.{field}: {message}"
    )


def test_headers_must_be_a_mapping() -> None:
    assert error(config(issuer(headers=["X-A: b"]))) == (
        "issuers[0].headers: expected a mapping of header names to values"
    )


def test_headers_kept_in_order_and_numbers_become_strings() -> None:
    loaded = parse_settings(config(issuer(headers={"X-Tenant": "t1", "X-Version": 2})))
    assert loaded.issuers[0].headers == (("X-Tenant", "t1"), ("X-Version", "2"))


def test_authorization_header_conflicts_with_bearer_token_file(pki: Path) -> None:
    text = config(issuer(bearer_token_file="token", headers={"Authorization": "Bearer x"}))
    assert error(text, pki) == "issuers[0].headers.Authorization: conflicts with bearer_token_file"
    loaded = parse_settings(config(issuer(headers={"Authorization": "Bearer x"})))
    assert loaded.issuers[0].headers == (("Authorization", "Bearer x"),)


def test_bearer_token_file_must_exist(pki: Path) -> None:
    assert error(config(issuer(bearer_token_file="nope")), pki) == (
        "issuers[0].bearer_token_file: no such file"
    )
    loaded = parse_settings(config(issuer(bearer_token_file="token")), base_dir=pki)
    assert loaded.issuers[0].bearer_token_file == pki / "token"


def test_admin_token_file(pki: Path) -> None:
    assert error("admin: {token_file: empty}", pki) == "admin.token_file: token file is empty"
    assert error("admin: {token_file: nope}", pki) == "admin.token_file: no such file"
    assert parse_settings("admin: {token_file: token}", base_dir=pki).admin.token_file == (
        pki / "token"
    )


# -- YAML itself -----------------------------------------------------------------------------


def test_yaml_syntax_error_is_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("public:\n  port: 8080\n  host: [unclosed\nadmin: {}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}:4:6: expected ',' or ']', but got ':'"
    assert info.value.field is None


def test_yaml_syntax_error_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("a: b\n  c: d: e\n", source="cfg.yaml")
    assert str(info.value) == "cfg.yaml:2:4: mapping values are not allowed here"


def test_tab_indentation_is_a_located_error() -> None:
    assert error("public:\n\tport: 1\n") == (
        "<config>:2:1: found character '\\t' that cannot start any token"
    )


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("public: {}\npublic: {}\n", "<config>:2:1"),
        (f"issuers:\n  - name: a\n    jwks_uri: {UPSTREAM}\n    name: b\n", "<config>:4:5"),
        ("defaults: {timeout: 1s, timeout: 2s}\n", "<config>:1:25"),
    ],
)
def test_duplicate_yaml_keys(text: str, location: str) -> None:
    message = error(text)
    assert message.startswith(f"{location}: found duplicate key ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("!!int", "invalid YAML (IndexError): string index out of range"),
        ("public: {port: !!float }", "invalid YAML (IndexError): string index out of range"),
        ("admin: {port: !!bool maybe}", "invalid YAML (KeyError): 'maybe'"),
    ],
)
def test_malformed_tagged_scalars_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, source="c.yaml")
    assert str(info.value) == f"c.yaml: {message}"


def test_duplicate_key_with_a_multi_line_value_is_one_line() -> None:
    assert error("a: |\n  x\n  y\na: 2\n") == (
        '<config>:4:1: found duplicate key "a" with value "2" (original value: "x y ")'
    )


def test_deep_yaml_is_refused_before_parsing_naming_the_source_and_the_bound() -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings("[" * 1000, source="deep.yaml")
    assert str(info.value) == "deep.yaml:1:101: nested deeper than 100 levels (max_depth)"


# -- files and relative paths ---------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(
    pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    (conf_dir / "certs").mkdir(parents=True)
    (conf_dir / "state").mkdir()
    for name in ("ca.crt", "a.crt", "a.key", "token"):
        (conf_dir / "certs" / name).write_bytes((pki / name).read_bytes())
    item = issuer(
        jwks_uri=HTTPS_UPSTREAM,
        bearer_token_file="certs/token",
        tls={"ca_file": "certs/ca.crt", "cert_file": "certs/a.crt", "key_file": "./certs/a.key"},
    )
    (conf_dir / "config.yaml").write_text(config(item, state_dir="state"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_settings(Path("..") / "etc" / "config.yaml")
    assert loaded.state_dir is not None
    assert loaded.state_dir.resolve() == conf_dir / "state"
    tls = loaded.issuers[0].tls
    assert tls is not None
    assert tls.cert_file is not None
    assert tls.key_file is not None
    assert tls.cert_file.resolve() == conf_dir / "certs" / "a.crt"
    assert tls.key_file.resolve() == conf_dir / "certs" / "a.key"
    assert loaded.issuers[0].bearer_token_file is not None
    assert loaded.issuers[0].bearer_token_file.resolve() == conf_dir / "certs" / "token"


def test_load_settings_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_load_settings_directory_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value) == f"{tmp_path}: not a regular file (a directory)"
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"issuers: []\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_settings(latin)
    assert str(info.value).startswith(f"{latin}: cannot read: 'utf-8' codec can't decode")


# -- check-config ----------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config(issuer("a"), issuer("b")))
    assert main(["check-config", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok (2 issuers: a, b)\n"
    assert err == ""


def test_check_config_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config(issuer("a"), issuer("b"), issuer("c", jwks_uri="ftp://x/")))
    assert main(["check-config", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "jwks-mirror: error: issuers[2].jwks_uri: invalid URL 'ftp://x/' "
        "(expected http:// or https://host/...)\n"
    )


def test_check_config_missing_file_and_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWKS_MIRROR_CONFIG", str(tmp_path / "from-env.yaml"))
    assert main(["check-config"]) == 2
    assert capsys.readouterr().err == (
        f"jwks-mirror: error: {tmp_path / 'from-env.yaml'}: no such file\n"
    )


def test_check_config_yaml_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("issuers:\n  - name: a\n   jwks_uri: x\n")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jwks-mirror: error: {path}:3:")
    assert err.count("\n") == 1


# -- property --------------------------------------------------------------------------------

YAML_WORDS = st.sampled_from(
    [
        "public",
        "admin",
        "host",
        "port",
        "state_dir",
        "defaults",
        "issuers",
        "name",
        "jwks_uri",
        "issuer",
        "discovery",
        "proxy",
        "headers",
        "tls",
        "ca_file",
        "cert_file",
        "key_file",
        "server_name",
        "refresh_interval",
        "timeout",
        "max_keys",
        "max_stale",
        "max_response_bytes",
        "retain_removed_keys",
        "bearer_token_file",
        "token_file",
        "5m",
        "1h30m",
        "-1",
        "1e999",
        "9" * 30,
        "0x1F",
        ".inf",
        ".nan",
        "null",
        "~",
        "true",
        "yes",
        "http://a/b",
        "https://a/b",
        "ftp://x",
        "2001-12-14",
        "12:30:00",
        "!!binary",
        "!!str",
        "!!int",
        "!!float",
        "!!python/object",
        "&a",
        "*a",
        "<<",
        "?",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "'",
        '"',
        "#",
        "|",
        ">",
        "\n",
        "\n  ",
        "\n    - ",
        "\t",
        "%",
        "@",
        "`",
        "!",
        "---",
        "...",
        "\\",
        "\ufeff",
        "\x00",
        "\x85",
    ]
)
YAMLISH = st.lists(YAML_WORDS | st.text(max_size=4), max_size=40).map("".join)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH | st.text(max_size=80))
def test_property_parse_settings_raises_only_config_error(text: str) -> None:
    try:
        loaded = parse_settings(text)
    except ConfigError as exc:
        assert str(exc)
        assert "\n" not in str(exc)  # check-config prints it as one line
    else:
        assert isinstance(loaded, Settings)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "refresh_interval",
                "timeout",
                "max_keys",
                "max_stale",
                "headers",
                "jwks_uri",
                "name",
                "discovery",
                "issuer",
                "proxy",
                "tls",
            ]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
    )
)
def test_property_issuer_fields_of_any_type(fields: dict[str, Any]) -> None:
    item = issuer() | fields
    text = json.dumps({"issuers": [item]}, allow_nan=True)
    try:
        loaded = parse_settings(text)
    except ConfigError as exc:
        assert str(exc).startswith("issuers[0]")
    else:
        assert loaded.issuers[0].name


def test_header_names_are_case_insensitive_duplicates():
    text = "issuers:\n  - name: a\n    jwks_uri: http://k.ns.svc/\n    headers: {X-A: one, x-a: two}\n"
    with pytest.raises(ConfigError, match=r"^issuers\[0\]\.headers\.x-a: duplicate header name"):
        parse_settings(text)


@pytest.mark.parametrize("host", ["a b", "host\nname", "evil/host"])
def test_listener_host_must_look_like_a_host(host):
    with pytest.raises(ConfigError, match=r"^public\.host: .* is not a host name or address"):
        parse_settings(f"public: {{host: {json.dumps(host)}, port: 8080}}\n")


# -- public.tls, shutdown_delay, peers, discovery_url --------------------------------------


def test_new_top_level_defaults() -> None:
    loaded = parse_settings("{}")
    assert loaded.public.tls is None
    assert loaded.shutdown_delay_s == 5.0
    assert loaded.peers == PeersSettings(dns=None, port=9090, urls=())
    assert not loaded.peers.enabled


def test_public_tls_files_are_loaded(pki: Path) -> None:
    loaded = parse_settings(
        config(public={"port": 8443, "tls": {"cert_file": "a.crt", "key_file": "a.key"}}),
        base_dir=pki,
    )
    assert loaded.public == PublicSettings(
        "0.0.0.0", 8443, ServerTLSSettings(pki / "a.crt", pki / "a.key")
    )


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"cert_file": "a.crt"}, "public.tls.key_file: required"),
        ({"key_file": "a.key"}, "public.tls.cert_file: required"),
        ({"cert_file": "nope.crt", "key_file": "a.key"}, "public.tls.cert_file: no such file"),
        ({"cert_file": "a.crt", "key_file": "b.key"}, "public.tls.key_file: certificate and key"),
        ({"cert_file": "a.crt", "key_file": "garbage"}, "public.tls.key_file: not an unencrypted"),
        (
            {"cert_file": "a.crt", "key_file": "encrypted.key"},
            "public.tls.key_file: not an unencrypted",
        ),
        ({"cert_file": "garbage", "key_file": "a.key"}, "public.tls.cert_file: certificate and"),
        ({"cert_file": "a.crt", "key_file": "a.key", "ca_file": "ca.crt"}, "public.tls.ca_file"),
        ("yes", "public.tls: expected a mapping"),
    ],
)
def test_bad_public_tls(pki: Path, tls: Any, message: str) -> None:
    assert error(config(public={"tls": tls}), base_dir=pki).startswith(message)


@pytest.mark.parametrize(("value", "seconds"), [(0, 0.0), ("0s", 0.0), ("15s", 15.0), ("5m", 300.0)])
def test_shutdown_delay(value: Any, seconds: float) -> None:
    assert parse_settings(config(shutdown_delay=value)).shutdown_delay_s == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("6m", "shutdown_delay: must be at most 5m"),
        ("soon", "shutdown_delay: invalid duration"),
        (-1, "shutdown_delay: invalid duration"),
    ],
)
def test_bad_shutdown_delay(value: Any, message: str) -> None:
    assert error(config(shutdown_delay=value)).startswith(message)


def test_peers_by_dns_and_by_urls() -> None:
    by_dns = parse_settings(config(peers={"dns": "jwks-mirror-peers.mirror.svc.cluster.local"}))
    assert by_dns.peers == PeersSettings("jwks-mirror-peers.mirror.svc.cluster.local", 9090, ())
    assert by_dns.peers.enabled
    by_urls = parse_settings(
        config(peers={"urls": ["http://127.0.0.1:9091/", "https://[::1]:9092"]})
    )
    assert by_urls.peers.urls == ("http://127.0.0.1:9091", "https://[::1]:9092")
    assert by_urls.peers.enabled


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        ({"dns": "bad name"}, "peers.dns: 'bad name' is not a host name"),
        ({"dns": "x", "port": 0}, "peers.port: expected a port number (1-65535)"),
        ({"dns": "x", "port": "9090"}, "peers.port: expected a port number"),
        ({"urls": "http://a:9090"}, "peers.urls: expected a list"),
        ({"urls": ["ftp://a:9090"]}, "peers.urls[0]: invalid URL"),
        ({"urls": ["http://a:9090/status"]}, "peers.urls[0]: expected an admin base URL"),
        ({"urls": ["http://a:9090", "http://a:9090/"]}, "peers.urls[1]: duplicate peer URL"),
        ({"dns": "x", "urls": ["http://a:9090"]}, "peers.urls: set either peers.dns or"),
        ({"hosts": []}, "peers.hosts: unknown key"),
    ],
)
def test_bad_peers(peers: dict[str, Any], message: str) -> None:
    assert error(config(peers=peers)).startswith(message)


def test_discovery_url_overrides_the_well_known_document() -> None:
    loaded = parse_settings(
        config(
            issuer(
                jwks_uri=None,
                issuer="http://auth:8080",
                discovery=True,
                discovery_url="http://auth.billing.svc.cluster.local:8080",
            )
        )
    )
    only = loaded.issuers[0]
    assert only.discovery_url == "http://auth.billing.svc.cluster.local:8080"
    assert only.discovery_document_url == "http://auth.billing.svc.cluster.local:8080"
    assert only.upstream == only.discovery_document_url
    without = parse_settings(config(issuer(jwks_uri=None, issuer="http://auth:8080", discovery=True)))
    assert without.issuers[0].discovery_document_url == (
        "http://auth:8080/.well-known/openid-configuration"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"discovery_url": "http://auth:8080"}, "issuers[0].discovery_url: only with discovery"),
        (
            {"jwks_uri": None, "issuer": "http://auth", "discovery": True, "discovery_url": "x"},
            "issuers[0].discovery_url: invalid URL",
        ),
    ],
)
def test_bad_discovery_url(fields: dict[str, Any], message: str) -> None:
    assert error(config(issuer(**fields))).startswith(message)
