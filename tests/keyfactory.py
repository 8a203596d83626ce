"""JWKs for tests, generated at test time and cached for the session (no key files in git).

``jwk("rsa2048")`` is a public JWK as an upstream would serve it; ``private=True`` adds the
private members. ``index`` gives distinct keys of one kind (``index=1`` is another RSA key).
``x5c_key()`` is an EC P-256 key with a real certificate chain from :class:`MeshCA`.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519
from jwcrypto import jwk as jwcrypto_jwk

from jwks_mirror.demo.pki import MeshCA

KINDS = (
    "rsa2048",
    "rsa1024",
    "p256",
    "p384",
    "p521",
    "secp256k1",
    "ed25519",
    "x25519",
    "ed448",
    "oct",
)
_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
    "secp256k1": ec.SECP256K1(),
}


@functools.cache
def private_key(kind: str, index: int = 0) -> Any:
    """A cryptography private key (or raw bytes for ``oct``), one per (kind, index)."""
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind])
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "x25519":
        return x25519.X25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if kind == "oct":
        return bytes(range(index, index + 32))
    raise ValueError(f"unknown kind {kind!r}")


@functools.cache
def _exported(kind: str, index: int, private: bool) -> str:
    key = private_key(kind, index)
    if kind == "oct":
        return json.dumps({"kty": "oct", "k": b64url(key)})
    made = jwcrypto_jwk.JWK.from_pyca(key)
    return str(made.export_private() if private else made.export_public())


def jwk(
    kind: str, *, kid: str | None = None, private: bool = False, index: int = 0, **members: Any
) -> dict[str, Any]:
    """A fresh dict (callers may mutate it). ``members`` are added or override; None removes."""
    out: dict[str, Any] = json.loads(_exported(kind, index, private))
    out.pop("kid", None)
    if kid is not None:
        out["kid"] = kid
    for name, value in members.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def body(*keys: Any, **top: Any) -> bytes:
    """A JWKS document as bytes."""
    return json.dumps({"keys": list(keys), **top}).encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.cache
def mesh_ca() -> MeshCA:
    return MeshCA()


@functools.cache
def _x5c_material(index: int) -> tuple[str, tuple[str, ...]]:
    ca = mesh_ca()
    issued = ca.issue(namespace="keys", service_account=f"signer-{index}")
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    public = jwcrypto_jwk.JWK.from_pyca(key).export_public()
    leaf = x509.load_pem_x509_certificate(issued.cert_pem)
    chain = tuple(
        base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
        for cert in (leaf, ca.cert)
    )
    return public, chain


def x5c_key(*, kid: str = "x5c", index: int = 0) -> dict[str, Any]:
    """An EC P-256 public JWK whose ``x5c`` (leaf, root) holds that very key."""
    public, chain = _x5c_material(index)
    out: dict[str, Any] = json.loads(public)
    out.pop("kid", None)
    out["kid"] = kid
    out["x5c"] = list(chain)
    return out


def x5c_chain(index: int = 0) -> list[str]:
    """The certificate chain of ``x5c_key(index=index)``, to attach to some other key."""
    return list(_x5c_material(index)[1])
