"""The members of one JWK, read leniently and written canonically: half of the keysets policy.

Pure, like :mod:`jwks_mirror.core.keysets`, which calls it for each key: one validator of key
members per key type (the ``MEMBERS_BY_KTY`` table), the lenient base64 reading and canonical
writing, and the ``x5c`` chain and thumbprints, kept only when they describe the key itself.
Each validator returns the canonical members or raises :class:`KeyDropped`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from jwks_mirror.core.errors import KeyDropped

EC_COORDINATE_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66}
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384
# \Z, not $: "$" also matches before a trailing newline, which would let "abc\n" through.
_B64_RE = re.compile(r"^[A-Za-z0-9_+/-]*\Z")
_URL_ONLY = frozenset("-_")
_STANDARD_ONLY = frozenset("+/")
_TO_URLSAFE = str.maketrans("+/", "-_")
# x5t is SHA-1 and x5t#S256 SHA-256 of the DER of x5c's first certificate (RFC 7517 4.8-4.9).
_THUMBPRINTS = {"x5t": hashlib.sha1, "x5t#S256": hashlib.sha256}
_THUMBPRINT_BYTES = {"x5t": 20, "x5t#S256": 32}
_MAX_X5C_CERTS = 10


def _b64url(value: object, member: str) -> bytes:
    """Decode base64 leniently: either alphabet (not both), padding optional but correct."""
    if not isinstance(value, str) or not value:
        raise KeyDropped("malformed", f"{member!r} is not base64")
    digits = value.rstrip("=")
    padding = len(value) - len(digits)
    chars = set(digits)
    if (
        not _B64_RE.match(digits)
        or len(digits) % 4 == 1
        or (padding and (padding > 2 or len(value) % 4))
        or (chars & _URL_ONLY and chars & _STANDARD_ONLY)
    ):
        raise KeyDropped("malformed", f"{member!r} is not base64")
    try:
        return base64.urlsafe_b64decode(digits.translate(_TO_URLSAFE) + "=" * (-len(digits) % 4))
    except (binascii.Error, ValueError) as exc:
        raise KeyDropped("malformed", f"{member!r} is not base64") from exc


def _coordinate(value: object, member: str, size: int) -> bytes:
    """An EC coordinate as exactly ``size`` bytes: a big-endian number, as Envoy reads it."""
    number = int.from_bytes(_b64url(value, member), "big")
    if number.bit_length() > size * 8:
        raise KeyDropped("malformed", f"{member!r} does not fit in {size} bytes")
    return number.to_bytes(size, "big")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _rsa_members(raw: Mapping[str, Any]) -> dict[str, Any]:
    modulus = int.from_bytes(_b64url(raw.get("n"), "n"), "big")
    exponent = int.from_bytes(_b64url(raw.get("e"), "e"), "big")
    bits = modulus.bit_length()
    if bits < MIN_RSA_BITS:
        raise KeyDropped("weak_key", f"RSA modulus of {bits} bits (minimum {MIN_RSA_BITS})")
    if bits > MAX_RSA_BITS:
        raise KeyDropped("malformed", f"RSA modulus of {bits} bits is implausible")
    if exponent < 3 or exponent % 2 == 0 or exponent >= modulus:
        raise KeyDropped("invalid_key", "RSA public exponent is invalid")
    return {
        "n": b64url_encode(modulus.to_bytes((bits + 7) // 8, "big")),
        "e": b64url_encode(exponent.to_bytes((exponent.bit_length() + 7) // 8, "big")),
    }


def _ec_members(raw: Mapping[str, Any]) -> dict[str, Any]:
    crv = raw.get("crv")
    if not isinstance(crv, str) or crv not in EC_COORDINATE_BYTES:  # a list is unhashable
        raise KeyDropped("unsupported_curve", f"EC curve {crv!r} is not P-256/384/521")
    size = EC_COORDINATE_BYTES[crv]
    x, y = (b64url_encode(_coordinate(raw.get(m), m, size)) for m in ("x", "y"))
    return {"crv": crv, "x": x, "y": y}


def _okp_members(raw: Mapping[str, Any]) -> dict[str, Any]:
    crv = raw.get("crv")
    if crv != "Ed25519":
        raise KeyDropped("unsupported_curve", f"OKP curve {crv!r} (Envoy verifies Ed25519 only)")
    # An Ed25519 public key is a byte string, not a number: exactly 32 bytes, no padding.
    x = _b64url(raw.get("x"), "x")
    if len(x) != 32:
        raise KeyDropped("malformed", f"'x' is {len(x)} bytes, expected 32")
    return {"crv": crv, "x": b64url_encode(x)}


# The key types Envoy verifies with, each with the validator of its key members: it returns
# them canonically or raises KeyDropped. Any other kty is dropped as unsupported.
MEMBERS_BY_KTY: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "RSA": _rsa_members,
    "EC": _ec_members,
    "OKP": _okp_members,
}


def add_certificate(
    raw: Mapping[str, Any], out: dict[str, Any], public_key: Any
) -> tuple[str, ...]:
    """Copy ``x5c`` and its thumbprints into ``out`` when they describe ``public_key``; the
    names of what was removed instead (``x5c_removed``, ``x5t_removed``)."""
    removed: list[str] = []
    thumbprints = {m: _digest(raw[m], m) for m in _THUMBPRINTS if m in raw}
    if "x5c" in raw:
        chain = _x5c_matching(raw["x5c"], public_key)
        if chain is None:
            removed.append("x5c_removed")
            thumbprints.clear()  # they describe a certificate that is not published
        else:
            out["x5c"] = chain
            leaf = base64.b64decode(chain[0])
            for member, digest in thumbprints.items():
                if digest is not None and _THUMBPRINTS[member](leaf).digest() != digest:
                    thumbprints[member] = None
    if None in thumbprints.values():
        removed.append("x5t_removed")
    out.update((m, b64url_encode(d)) for m, d in thumbprints.items() if d is not None)
    return tuple(removed)


def _digest(value: object, member: str) -> bytes | None:
    """A thumbprint's digest, or None when it is not one (wrong encoding or size)."""
    try:
        digest = _b64url(value, member)
    except KeyDropped:
        return None
    return digest if len(digest) == _THUMBPRINT_BYTES[member] else None


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _x5c_matching(value: object, public_key: Any) -> list[str] | None:
    """The ``x5c`` chain when its first certificate holds ``public_key``, else None."""
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_X5C_CERTS:
        return None
    if not all(isinstance(item, str) and len(item) <= 16384 for item in value):
        return None
    try:
        der = base64.b64decode(value[0], validate=True)
        cert = x509.load_der_x509_certificate(der)
        if _spki(cert.public_key()) != _spki(public_key):
            return None
        for item in value[1:]:
            base64.b64decode(item, validate=True)
    except (ValueError, binascii.Error, TypeError, UnsupportedAlgorithm, x509.InvalidVersion):
        # UnsupportedAlgorithm: a certificate whose key algorithm cryptography does not know;
        # InvalidVersion (not a ValueError): a version field other than v1/v3.
        return None
    return list(value)
