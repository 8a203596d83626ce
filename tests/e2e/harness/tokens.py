"""Signing keys and JWTs, made with jwcrypto the way an identity provider would."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from jwcrypto import jwk, jwt

_serial = itertools.count(1)


class SigningKey:
    """An RS256 key pair with a ``kid``; ``public`` is what a JWKS publishes."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or f"k{next(_serial)}-{int(time.time())}"
        self.jwk = jwk.JWK.generate(kty="RSA", size=2048, kid=self.kid)

    @property
    def public(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.jwk.export_public())
        data.update(use="sig", alg="RS256")
        return data

    @property
    def private(self) -> dict[str, Any]:
        """The full private JWK: what a broken issuer must never get republished."""
        data: dict[str, Any] = json.loads(self.jwk.export_private())
        data.update(use="sig", alg="RS256")
        return data

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": kid or self.kid}
        token = jwt.JWT(header=header, claims=claims)
        token.make_signed_token(self.jwk)
        return str(token.serialize())


def claims(issuer: str, *, subject: str = "alice", lifetime: float = 600,
           issued_ago: float = 5) -> dict[str, Any]:
    """Claims of a token issued ``issued_ago`` seconds ago, expiring ``lifetime`` s later.

    A negative remaining lifetime makes an expired token; keep it well past Envoy's default
    60 s clock skew allowance so the rejection is about expiry, not timing.
    """
    now = int(time.time())
    iat = now - int(issued_ago)
    return {"iss": issuer, "sub": subject, "iat": iat, "nbf": iat, "exp": iat + int(lifetime)}


def hs256_token(secret: bytes, claims: dict[str, Any], *, kid: str) -> str:
    """A token signed with a shared secret: valid only if a verifier trusts that ``oct`` key."""
    key = jwk.JWK(kty="oct", k=jwk.base64url_encode(secret), kid=kid)
    token = jwt.JWT(header={"alg": "HS256", "typ": "JWT", "kid": kid}, claims=claims)
    token.make_signed_token(key)
    return str(token.serialize())
