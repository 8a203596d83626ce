"""Scenario: keys of every shape real identity providers publish, through real Envoy.

1. Tokens signed by generated keys of every shape verify through the whole mesh (issuer behind
   its STRICT sidecar, the mirror, a verifier fed from the mirror): RSA 2048/3072/4096 under
   RS* and PS* (one key listed once per alg under one kid), P-256/384/521, Ed25519, a key with
   no ``alg``, a key with no ``kid``, and loosely encoded keys (standard base64 with padding, an
   RSA modulus with a leading zero byte, a one-byte-short P-521 coordinate).
2. Every published set of the real-provider corpus (``tests/fixtures/jwks``), as the mirror
   publishes it, is loaded by a real Envoy ``jwt_authn`` (``local_jwks``: Envoy refuses to
   start on a set it cannot load), and each published key is the one Envoy picks for a token
   naming its kid and alg.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk, jwt

from jwks_mirror.core.keysets import render, validate

from .harness import envoy as envoy_config
from .harness import http
from .harness.envoy import Envoy
from .harness.mesh import Mesh
from .harness.procs import free_port
from .harness.tokens import claims

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CORPUS = Path(__file__).parent.parent / "fixtures" / "jwks"
VERIFICATION_FAILS = "Jwt verification fails"
NO_MATCHING_KEY = "Jwks doesn't have key to match kid or alg from Jwt"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- 1. generated keys of every shape, end to end ------------------------------------------


@dataclass
class ShapedKey:
    """A private key and how its issuer publishes it: once per alg in ``published_algs``
    (None: an entry without ``alg``), under ``kid`` (None: without one), ``loose`` or not."""

    name: str
    private: Any
    kid: str | None
    published_algs: tuple[str | None, ...]
    token_algs: tuple[str, ...]
    loose: bool = False

    def private_jwk(self) -> jwk.JWK:
        return jwk.JWK.from_pyca(self.private)

    def entries(self) -> list[dict[str, Any]]:
        public: dict[str, Any] = json.loads(self.private_jwk().export_public())
        public.pop("kid", None)
        if self.kid is not None:
            public["kid"] = self.kid
        if self.loose:
            public = loosen(public)
        return [public | ({"alg": alg} if alg else {}) for alg in self.published_algs]

    def sign(self, alg: str, issuer: str) -> str:
        header = {"alg": alg, "typ": "JWT"} | ({"kid": self.kid} if self.kid else {})
        token = jwt.JWT(header=header, claims=claims(issuer, subject=f"{self.name}-{alg}"))
        token.make_signed_token(self.private_jwk())
        return str(token.serialize())


def loosen(public: dict[str, Any]) -> dict[str, Any]:
    """The same key as some providers spell it: standard base64 with padding, RSA moduli with
    a leading zero byte (Battle.net, PayPal), EC coordinates without leading zero bytes."""
    out = dict(public)
    for member in ("n", "e", "x", "y"):
        if member not in out:
            continue
        raw = b64url_decode(out[member])
        if member == "n":
            raw = b"\0" + raw
        elif member in ("x", "y") and out["kty"] == "EC":
            raw = raw.lstrip(b"\0")
        out[member] = base64.b64encode(raw).decode("ascii")
    return out


def p521_with_a_leading_zero() -> ec.EllipticCurvePrivateKey:
    """A P-521 key whose x coordinate starts with a zero byte (about half of them do), so its
    loose spelling is one byte short, as PingFederate publishes such keys."""
    for _ in range(64):
        key = ec.generate_private_key(ec.SECP521R1())
        if key.public_key().public_numbers().x.bit_length() <= 65 * 8:
            return key
    raise AssertionError("no P-521 key with a leading zero byte in 64 tries")


def rsa_key(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def shapes() -> list[ShapedKey]:
    loose_rsa = rsa_key(2048)
    return [
        ShapedKey("rsa2048", rsa_key(2048), "rsa-2048", ("RS256", "PS256"), ("RS256", "PS256")),
        ShapedKey("rsa3072", rsa_key(3072), "rsa-3072", ("RS384", "PS384"), ("RS384", "PS384")),
        ShapedKey("rsa4096", rsa_key(4096), "rsa/4096:gitlab=", ("RS512", "PS512"),
                  ("RS512", "PS512")),
        ShapedKey("p256", ec.generate_private_key(ec.SECP256R1()), "ec-256", ("ES256",),
                  ("ES256",)),
        ShapedKey("p384", ec.generate_private_key(ec.SECP384R1()), "ec-384", ("ES384",),
                  ("ES384",)),
        ShapedKey("p521", ec.generate_private_key(ec.SECP521R1()), "ec-521", ("ES512",),
                  ("ES512",)),
        ShapedKey("ed25519", ed25519.Ed25519PrivateKey.generate(), "ed", ("EdDSA",),
                  ("EdDSA",)),
        ShapedKey("no-alg", rsa_key(2048), "no-alg", (None,), ("RS256", "PS512")),
        ShapedKey("no-kid", ec.generate_private_key(ec.SECP256R1()), None, ("ES256",),
                  ("ES256",)),
        ShapedKey("loose-rsa", loose_rsa, "loose-rsa", ("RS256",), ("RS256",), loose=True),
        ShapedKey("loose-p521", p521_with_a_leading_zero(), "loose-p521", ("ES512",),
                  ("ES512",), loose=True),
    ]


@dataclass
class Entry:
    """One published JWK of a shaped key; the plain issuer publishes ``public`` of each."""

    public: dict[str, Any]
    kid: str | None


def test_tokens_of_every_key_shape_verify_through_the_mirror(mesh: Mesh) -> None:
    keys = shapes()
    idp = mesh.add_issuer("idp").app
    published = [Entry(e, k.kid) for k in keys for e in k.entries()]
    idp.keys = published  # type: ignore[assignment]  # it serves each one's ``public``
    upstream = idp.jwks()["keys"]
    assert any("=" in e["n"] for e in upstream if e["kty"] == "RSA")  # the loose forms
    assert any(len(b64url_decode_loose(e["x"])) == 65 for e in upstream if e.get("crv") == "P-521")

    mirror, verifier = mesh.mirrored(["idp"])
    served = mirror.jwks("idp").json()["keys"]
    assert len(served) == len(published)  # nothing dropped, each alg entry kept
    for entry in served:
        for member in ("n", "e", "x", "y"):
            if member in entry:
                assert "=" not in entry[member] and "+" not in entry[member], entry
    assert sorted(e.get("alg") or "" for e in served if e.get("kid") == "rsa-2048") == [
        "PS256", "RS256"]

    for key in keys:
        for alg in key.token_algs:
            token = key.sign(alg, idp.issuer_url)
            resp = verifier.call("idp", token)
            assert resp.status == 200, f"{key.name} {alg}: {resp.status} {resp.text}"

    # The control: tokens naming the same kids, signed by keys never published, are refused.
    impostors = [
        ShapedKey("rsa2048", rsa_key(2048), "rsa-2048", (), ("PS256",)),
        ShapedKey("p256", ec.generate_private_key(ec.SECP256R1()), "ec-256", (), ("ES256",)),
        ShapedKey("p521", ec.generate_private_key(ec.SECP521R1()), "ec-521", (), ("ES512",)),
        ShapedKey("ed25519", ed25519.Ed25519PrivateKey.generate(), "ed", (), ("EdDSA",)),
        ShapedKey("no-kid", ec.generate_private_key(ec.SECP256R1()), None, (), ("ES256",)),
    ]
    for key in impostors:
        resp = verifier.call("idp", key.sign(key.token_algs[0], idp.issuer_url))
        assert resp.status == 401 and VERIFICATION_FAILS in resp.text, (key.name, resp.text)


def b64url_decode_loose(text: str) -> bytes:
    """Either alphabet, padded or not."""
    return b64url_decode(text.rstrip("=").replace("+", "-").replace("/", "_"))


# -- 2. every published corpus set, loaded by Envoy ----------------------------------------


CORPUS_SETS = sorted(p.stem for p in CORPUS.glob("*.json"))


def published(name: str) -> bytes:
    body = (CORPUS / f"{name}.json").read_bytes()
    return render(validate(body, max_bytes=262144, max_keys=100).keys)


def issuer_of(name: str) -> str:
    return f"https://{name}.corpus.example.test"


def corpus_verifier_config(port: int) -> dict[str, Any]:
    providers = {
        name: {"issuer": issuer_of(name), "local_jwks": {"inline_string": published(name).decode()}}
        for name in CORPUS_SETS
    }
    rules = [{"match": {"prefix": f"/{n}/"}, "requires": {"provider_name": n}}
             for n in CORPUS_SETS]
    jwt_authn = {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3."
                     "JwtAuthentication",
            "providers": providers,
            "rules": rules,
        },
    }
    routes = [{"match": {"prefix": "/"},
               "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]
    virtual_hosts = [{"name": "corpus", "domains": ["*"], "routes": routes}]
    listener = {
        "name": "corpus",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [envoy_config.http_connection_manager("corpus", virtual_hosts, [jwt_authn])]}],
    }
    return envoy_config.bootstrap([listener], [])


@pytest.fixture(scope="module")
def corpus_envoy(tmp_path_factory: pytest.TempPathFactory, envoy_binary: str) -> Iterator[Envoy]:
    """One Envoy holding every published corpus set inline; it exits at start (and this
    fixture fails, naming the provider) if any set is one it cannot load."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("corpus-envoy")
    proxy = Envoy("corpus-verifier", corpus_verifier_config(port), port, workdir, envoy_binary)
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def probe(proxy: Envoy, name: str, *, kid: str | None, alg: str,
          signature_bytes: int) -> http.Response:
    """A token naming ``kid`` and ``alg`` with a random signature: Envoy answers "verification
    fails" only if it holds a key for that kid and alg and tried it."""
    header = {"alg": alg, "typ": "JWT"} | ({"kid": kid} if kid else {})
    body = {"iss": issuer_of(name), "sub": "probe", "exp": 4102444800}
    token = ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(body).encode()),
                      b64url(os.urandom(signature_bytes))])
    return http.get(f"{proxy.url}/{name}/api", headers={"Authorization": f"Bearer {token}"})


DEFAULT_ALG = {"RSA": "RS256", "P-256": "ES256", "P-384": "ES384", "P-521": "ES512",
               "Ed25519": "EdDSA"}
SIGNATURE_BYTES = {"ES256": 64, "ES384": 96, "ES512": 132, "EdDSA": 64}


@pytest.mark.parametrize("name", CORPUS_SETS)
def test_envoy_loads_the_published_corpus_set_and_finds_each_key(
    corpus_envoy: Envoy, name: str
) -> None:
    keys = json.loads(published(name))["keys"]
    assert keys
    for key in keys:
        alg = key.get("alg") or DEFAULT_ALG[key.get("crv", key["kty"])]
        size = SIGNATURE_BYTES.get(alg) or len(b64url_decode(key["n"]))
        resp = probe(corpus_envoy, name, kid=key.get("kid"), alg=alg, signature_bytes=size)
        assert resp.status == 401 and VERIFICATION_FAILS in resp.text, (key.get("kid"), resp.text)
    # The control: a kid the set does not hold is answered differently, so the answers above
    # come from keys Envoy loaded from this set.
    resp = probe(corpus_envoy, name, kid="no-such-kid", alg="RS256", signature_bytes=256)
    assert resp.status == 401 and NO_MATCHING_KEY in resp.text, resp.text


def test_envoy_refuses_a_set_the_mirror_would_have_republished_raw(
    tmp_path: Path, envoy_binary: str
) -> None:
    """Battle.net's own set (standard base64 with padding) is one Envoy cannot load, and the
    mirror's canonical form of it is one Envoy can: the rewrite is what makes its tokens
    verifiable at all. ``--mode validate`` builds the filters without serving."""
    raw = (CORPUS / "battle-net.json").read_text()
    config = corpus_verifier_config(free_port())
    jwt_authn = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    providers = jwt_authn["typed_config"]["http_filters"][0]["typed_config"]["providers"]
    assert providers["battle-net"]["local_jwks"]["inline_string"] == published("battle-net").decode()
    accepted = validate_config(envoy_binary, tmp_path / "published.json", config)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    providers["battle-net"]["local_jwks"]["inline_string"] = raw
    refused = validate_config(envoy_binary, tmp_path / "raw.json", config)
    assert refused.returncode != 0
    assert "'battle-net' in jwt_authn config has invalid local jwks" in refused.stdout + refused.stderr


def validate_config(envoy_binary: str, path: Path, config: dict[str, Any]) -> Any:
    path.write_text(json.dumps(config))
    return subprocess.run(
        [envoy_binary, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True, text=True, timeout=120, check=False,
    )
