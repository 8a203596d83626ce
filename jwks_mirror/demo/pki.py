"""A throwaway mesh CA and SPIFFE workload certificates, made in memory.

Used by ``jwks-mirror demo`` and by the tests; never by ``serve``. Certificates look like
Istio's: a self-signed root, leaf certificates with a ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``
URI SAN, plus DNS SANs so a client can verify a mesh host name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (mode 0600) and return their paths."""
        cert_path = directory / f"{stem}.crt"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


class MeshCA:
    """A root CA that issues SPIFFE workload certificates."""

    def __init__(
        self, trust_domain: str = "cluster.local", *, name: str = "jwks-mirror test CA"
    ) -> None:
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
        now = _now()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def spiffe_id(self, namespace: str, service_account: str) -> str:
        return f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}"

    def issue(
        self,
        *,
        namespace: str,
        service_account: str,
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = ("127.0.0.1",),
        valid_for: dt.timedelta = dt.timedelta(days=1),
        not_before: dt.datetime | None = None,
    ) -> Issued:
        """A workload certificate for ``spiffe://<td>/ns/<namespace>/sa/<service_account>``.

        The certificate serves as both TLS server and client, as Istio's do. ``not_before`` and
        ``valid_for`` let tests make expired or not-yet-valid certificates.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - dt.timedelta(minutes=5)
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(self.spiffe_id(namespace, service_account))
        ]
        sans += [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + valid_for)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Issued(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    def write_ca(self, directory: Path, stem: str = "ca") -> Path:
        path = directory / f"{stem}.crt"
        path.write_bytes(self.cert_pem)
        return path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
