"""HTTPS on the public port: TLS 1.2+ only, a private CA, certificates rotated on disk.

The certificate directory is laid out as Kubernetes mounts a Secret (what cert-manager renews):
``tls.crt`` and ``tls.key`` are symlinks through ``..data``, which is swapped atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.config.model import Settings
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.demo.pki import Issued, MeshCA
from jwks_mirror.serving.counters import new_registry
from jwks_mirror.serving.mirror import Mirror
from jwks_mirror.serving.server import Running, start

from ...conftest import config_text, jwks, until

MIRROR_HOST = "jwks-mirror.jwks-mirror.svc.cluster.local"


class SecretVolume:
    """A directory as the kubelet projects a TLS Secret, updated as it does on renewal."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir()
        self.generation = 0
        for name in ("tls.crt", "tls.key"):
            (directory / name).symlink_to(f"..data/{name}")

    @property
    def cert_file(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key_file(self) -> Path:
        return self.directory / "tls.key"

    def publish(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.generation += 1
        target = self.directory / f"..gen{self.generation}"
        target.mkdir()
        (target / "tls.crt").write_bytes(cert_pem)
        (target / "tls.key").write_bytes(key_pem)
        link = self.directory / "..data_tmp"
        link.symlink_to(target.name)
        os.replace(link, self.directory / "..data")


def issue(ca: MeshCA) -> Issued:
    return ca.issue(namespace="jwks-mirror", service_account="jwks-mirror", dns_names=(MIRROR_HOST,))


def serial(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert_pem).serial_number


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    return SecretVolume(tmp_path / "serving-cert")


def tls_settings(upstream_url: str, volume: SecretVolume, *, extra: str = "") -> Settings:
    """One issuer at ``upstream_url``, the public port serving HTTPS from ``volume``."""
    return parse_settings(
        config_text(f"  - name: a\n    jwks_uri: {upstream_url}\n", extra=extra).replace(
            "public: {host: 127.0.0.1, port: 0}",
            f"public: {{host: 127.0.0.1, port: 0, tls: {{cert_file: {volume.cert_file}, "
            f"key_file: {volume.key_file}}}}}",
        )
    )


@pytest.fixture
async def tls_mirror(fake_issuer, mesh_ca: MeshCA, volume: SecretVolume, tmp_path: Path):
    """A mirror serving HTTPS from ``volume``; the files are polled every hour only, so a
    test decides when a rotation is noticed (``certificate.trigger()``, as SIGHUP does)."""
    first = issue(mesh_ca)
    volume.publish(first.cert_pem, first.key_pem)
    upstream = await fake_issuer(document=jwks("k1"))
    settings = tls_settings(upstream.url, volume, extra="shutdown_delay: 0\n")
    mirror = Mirror(settings, registry=new_registry())
    running = await start(settings, mirror=mirror, certificate_poll_s=3600)
    await running.mirror.refresh()
    yield running, first
    await running.stop()


def client_context(ca: MeshCA, tmp_path: Path) -> ssl.SSLContext:
    """Trusts only the private CA, as istiod does with jwksResolverExtraRootCA."""
    return ssl.create_default_context(cafile=str(ca.write_ca(tmp_path, f"ca-{id(ca)}")))


class TLSClient:
    """One keep-alive HTTPS connection to the public port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, running: Running, context: ssl.SSLContext, *, sni: str = MIRROR_HOST):
        host, port = running.public_url.removeprefix("https://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=context, server_hostname=sni
        )
        return cls(reader, writer)

    @property
    def serial(self) -> int:
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {MIRROR_HOST}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def scrape(running: Running, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    reader, writer = await asyncio.open_connection(*running.admin_url[7:].rsplit(":", 1))
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    text = (await reader.read()).split(b"\r\n\r\n", 1)[1].decode()
    writer.close()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_https_serves_the_set_to_a_client_trusting_only_the_private_ca(
    tls_mirror, mesh_ca, tmp_path
):
    running, first = tls_mirror
    assert running.public_url.startswith("https://")
    client = await TLSClient.connect(running, client_context(mesh_ca, tmp_path))
    status, body = await client.get("/a/jwks.json?v=1")
    assert status == 200 and [k["kid"] for k in json.loads(body)["keys"]] == ["k1"]
    assert client.serial == serial(first)
    await client.close()

    # Another CA's client refuses the certificate: the chain really is the private CA's.
    with pytest.raises(ssl.SSLCertVerificationError):
        await TLSClient.connect(running, client_context(MeshCA(), tmp_path))


async def test_clients_without_sni_get_the_certificate_too(tls_mirror, mesh_ca, tmp_path):
    running, first = tls_mirror
    context = client_context(mesh_ca, tmp_path)
    context.check_hostname = False  # no server name sent: the chain is still verified
    client = await TLSClient.connect(running, context, sni="")
    assert client.serial == serial(first)
    assert (await client.get("/a/jwks.json"))[0] == 200
    await client.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_below_1_2_is_refused(tls_mirror, mesh_ca, tmp_path):
    running, _ = tls_mirror
    context = client_context(mesh_ca, tmp_path)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
        await TLSClient.connect(running, context)
    # The client did offer TLS 1.1 (it did not give up on its own): the server refused it.
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value).upper(), refused.value
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    client = await TLSClient.connect(running, context)
    assert (await client.get("/a/jwks.json"))[0] == 200
    await client.close()


async def test_plain_http_on_the_tls_port_gets_no_key_set(tls_mirror):
    running, _ = tls_mirror
    host, port = running.public_url.removeprefix("https://").rsplit(":", 1)

    def plain_request() -> bytes:
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(b"GET /a/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    answer = await asyncio.to_thread(plain_request)
    assert b"HTTP/1.1" not in answer and b'"keys"' not in answer and b"kty" not in answer


async def _until_new_connections_see(running, context, wanted: int, *, timeout_s: float) -> None:
    async def new_connection_sees_it() -> bool:
        client = await TLSClient.connect(running, context)
        seen = client.serial
        await client.close()
        return seen == wanted

    await until(new_connection_sees_it, what=f"new connections to get serial {wanted:x}",
                timeout_s=timeout_s)


async def test_rotation_on_disk_reaches_new_connections_and_keeps_open_ones(
    tls_mirror, mesh_ca, volume, tmp_path
):
    running, first = tls_mirror
    context = client_context(mesh_ca, tmp_path)
    kept = await TLSClient.connect(running, context)
    assert (await kept.get("/a/jwks.json"))[0] == 200

    second = issue(mesh_ca)
    volume.publish(second.cert_pem, second.key_pem)
    running.certificate.trigger()  # what SIGHUP does; the hourly poll would get there too
    await _until_new_connections_see(running, context, serial(second), timeout_s=30)

    # The connection opened before the rotation was not dropped: it still gets answers.
    assert (await kept.get("/a/jwks.json"))[0] == 200
    assert kept.serial == serial(first)
    await kept.close()
    reloads = await scrape(running, "jwks_mirror_public_tls_reloads_total")
    assert reloads == {(("outcome", "success"),): 1.0}
    expiry = await scrape(running, "jwks_mirror_public_tls_not_after_timestamp_seconds")
    not_after = x509.load_pem_x509_certificate(second.cert_pem).not_valid_after_utc
    assert list(expiry.values()) == [pytest.approx(not_after.timestamp())]


async def test_rotation_is_noticed_by_polling_without_a_signal(
    fake_issuer, mesh_ca, volume, tmp_path
):
    first = issue(mesh_ca)
    volume.publish(first.cert_pem, first.key_pem)
    upstream = await fake_issuer()
    settings = tls_settings(upstream.url, volume)
    running = await start(settings, certificate_poll_s=0.2)
    try:
        second = issue(mesh_ca)
        volume.publish(second.cert_pem, second.key_pem)
        await _until_new_connections_see(
            running, client_context(mesh_ca, tmp_path), serial(second), timeout_s=30
        )
    finally:
        await running.stop()


@pytest.fixture
def mirror_log() -> list[logging.LogRecord]:
    """The service's log records (its logger may not propagate to pytest's)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("jwks_mirror")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield records
    logger.setLevel(previous)
    logger.removeHandler(handler)


async def test_a_bad_pair_at_run_time_keeps_the_old_one_and_is_counted(
    tls_mirror, mesh_ca, volume, tmp_path, mirror_log
):
    running, first = tls_mirror
    context = client_context(mesh_ca, tmp_path)
    other = issue(mesh_ca)
    volume.publish(other.cert_pem, first.key_pem)  # certificate and key do not match
    running.certificate.trigger()
    await until(lambda: scrape(running, "jwks_mirror_public_tls_reloads_total"),
                what="the bad pair to be looked at")
    assert await scrape(running, "jwks_mirror_public_tls_reloads_total") == {
        (("outcome", "failure"),): 1.0
    }
    client = await TLSClient.connect(running, context)
    assert client.serial == serial(first)
    assert (await client.get("/a/jwks.json"))[0] == 200
    await client.close()
    assert any(
        r.getMessage() == "public_tls_rejected" and "public.tls.key_file" in r.fields["error"]
        for r in mirror_log
    )

    volume.publish(b"-----BEGIN CERTIFICATE-----\ngarbage\n", b"not a key\n")
    running.certificate.trigger()

    async def two_failures() -> bool:
        reloads = await scrape(running, "jwks_mirror_public_tls_reloads_total")
        return reloads.get((("outcome", "failure"),)) == 2.0

    await until(two_failures, what="the garbage pair to be looked at")

    good = issue(mesh_ca)
    volume.publish(good.cert_pem, good.key_pem)
    running.certificate.trigger()
    await _until_new_connections_see(running, context, serial(good), timeout_s=30)


async def test_a_bad_file_at_start_is_a_clear_error(fake_issuer, mesh_ca, volume):
    first = issue(mesh_ca)
    volume.publish(first.cert_pem, first.key_pem)
    upstream = await fake_issuer()
    settings = tls_settings(upstream.url, volume)
    volume.publish(first.cert_pem, b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as raised:
        await start(settings)
    assert str(raised.value).startswith("public.tls.key_file: ")
    assert "\n" not in str(raised.value)
