"""TLS loading: the certificate files the configuration names, made into SSL contexts.

Client contexts for direct TLS to an upstream (a private CA, a client certificate) or to the
peers (the same, and the peer's identity checked in the handshake), and the server context of
the public port. The configuration loader builds each context once to check
the files; the fetcher and the public port build them again whenever the files rotate on disk.
Every failure is a :class:`ConfigError` whose ``field`` names the bad file (``ca_file``,
``cert_file`` or ``key_file``); callers prefix the section's path.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from jwks_mirror.core.config.model import PeerTLSSettings, ServerTLSSettings, TLSSettings
from jwks_mirror.core.errors import ConfigError
from jwks_mirror.core.text import one_line


def build_ssl_context(tls: TLSSettings | None) -> ssl.SSLContext:
    """A verifying client context: the system CAs, or only ``ca_file``; plus the client
    certificate. Used at load (to check the files) and at every rebuild after the files
    rotate on disk. Raises :class:`ConfigError` whose ``field`` names the bad file."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.ca_file) if tls and tls.ca_file else None
        )
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise ConfigError(f"not a PEM CA bundle: {one_line(exc)}", field="ca_file") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls and tls.cert_file and tls.key_file:
        load_cert_chain(context, cert_file=tls.cert_file, key_file=tls.key_file)
    return context


def build_peer_ssl_context(tls: PeerTLSSettings) -> ssl.SSLContext:
    """A client context that completes a handshake only with a peer whose verified
    certificate names ``tls.identity``. Raises :class:`ConfigError` as
    :func:`build_ssl_context` does.

    Peers are reached by pod address, so the host name check cannot apply; the identity is
    checked instead, inside the handshake (:func:`_identity_checked`), so no byte of the
    request is sent to, and no byte of an answer read from, any other certificate holder.
    """
    context = build_ssl_context(
        TLSSettings(ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file)
    )
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.sslobject_class = _identity_checked(tls.identity)
    return context


def presents(certificate: object, identity: str) -> bool:
    """True if a verified certificate (``SSLObject.getpeercert()``) names ``identity``: a
    ``spiffe://`` URI SAN exactly, or a DNS SAN (exactly, case-insensitive, no wildcard)."""
    if not isinstance(certificate, dict):
        return False
    names = certificate.get("subjectAltName", ())
    if identity.startswith("spiffe://"):
        return ("URI", identity) in names
    wanted = identity.lower()
    return any(kind == "DNS" and str(value).lower() == wanted for kind, value in names)


def _identity_checked(identity: str) -> type[ssl.SSLObject]:
    class IdentityChecked(ssl.SSLObject):
        """asyncio (and uvloop) make the connection's SSLObject through
        ``context.wrap_bio``, which instantiates ``context.sslobject_class``."""

        def do_handshake(self) -> None:
            super().do_handshake()  # raises SSLWantReadError until the handshake is done
            if not presents(self.getpeercert(), identity):
                raise ssl.SSLCertVerificationError(
                    f"the peer's certificate does not name {identity}"
                )

    return IdentityChecked


def build_server_ssl_context(tls: ServerTLSSettings) -> ssl.SSLContext:
    """The public port's server context: TLS 1.2 or newer, the configured chain and key.
    Raises :class:`ConfigError` whose ``field`` names the bad file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(context, cert_file=tls.cert_file, key_file=tls.key_file)
    return context


def load_cert_chain(context: ssl.SSLContext, *, cert_file: Path, key_file: Path) -> None:
    """Load a certificate chain and its key into ``context`` (new handshakes use them).
    Raises :class:`ConfigError` whose ``field`` is ``cert_file`` or ``key_file``."""
    # Parse the key first: OpenSSL reports an unparsable key as a bare "PEM lib" error
    # that cannot be told apart from a bad certificate, and for an encrypted key it
    # would prompt for a passphrase on the terminal (or block a headless process).
    try:
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, OSError) as exc:
        raise ConfigError(
            f"not an unencrypted PEM private key: {one_line(exc)}", field="key_file"
        ) from exc
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as exc:
        bad = "key_file" if "KEY_VALUES_MISMATCH" in str(exc) else "cert_file"
        raise ConfigError(f"certificate and key unusable: {one_line(exc)}", field=bad) from exc
