"""``jwks-mirror demo``: the whole product in one process, no cluster needed.

It plays the mesh: a throwaway CA issues SPIFFE certificates, an issuer serves its JWKS only
over mutual TLS to the mirror's identity (as a STRICT sidecar would), plain and
certificate-less fetches fail (as istiod's do), and the mirror fetches with the client
certificate and republishes on plain HTTP, where a token signed by the issuer verifies.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from jwcrypto import jwk, jws, jwt

from jwks_mirror.core.config.loader import parse_settings
from jwks_mirror.core.keysets import PRIVATE_MEMBERS
from jwks_mirror.demo.pki import MeshCA
from jwks_mirror.serving.server import Running, start

ISSUER_HOST = "keys.demo.svc.cluster.local"
ISSUER = f"https://{ISSUER_HOST}"
AUDIENCE = "demo-api"


class Demo:
    """The demo's moving parts, built in a temporary directory that is removed at the end."""

    def __init__(self, workdir: Path, say: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.say = say
        self.ca = MeshCA()
        self.signing_key = jwk.JWK.generate(kty="RSA", size=2048, kid="demo-2026", alg="RS256")
        self.mirror_identity = self.ca.spiffe_id("jwks-mirror", "jwks-mirror")
        self.failures: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        self.say(f"  {'ok  ' if ok else 'FAIL'} {message}")
        if not ok:
            self.failures.append(message)

    # -- the issuer: mTLS only, and only for the mirror's identity ---------------------------

    def issuer_ssl(self) -> ssl.SSLContext:
        cert, key = self.ca.issue(
            namespace="demo", service_account="keys", dns_names=(ISSUER_HOST,)
        ).write(self.workdir, "issuer")
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca.write_ca(self.workdir))
        )
        context.load_cert_chain(cert, key)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def start_issuer(self) -> tuple[web.AppRunner, int]:
        public_jwks = {"keys": [json.loads(self.signing_key.export_public())]}

        async def jwks(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            uris = [v for k, v in (peer or {}).get("subjectAltName", ()) if k == "URI"]
            if self.mirror_identity not in uris:
                return web.Response(status=403, text="RBAC: access denied\n")
            return web.json_response(public_jwks)

        app = web.Application()
        app.router.add_get("/jwks.json", jwks)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.issuer_ssl())
        await site.start()
        port = runner.addresses[0][1]
        return runner, port

    # -- the checks -------------------------------------------------------------------------

    async def show_the_problem(self, port: int) -> None:
        self.say("\nThe problem: istiod has no mesh certificate, so it cannot fetch the issuer.")
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                async with session.get(f"http://127.0.0.1:{port}/jwks.json") as response:
                    plain = f"answered {response.status}"
            except aiohttp.ClientError as exc:
                plain = f"failed ({type(exc).__name__})"
            self.check(not plain.startswith("answered 200"), f"plain http fetch {plain}")
            context = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
            try:
                async with session.get(
                    f"https://127.0.0.1:{port}/jwks.json", ssl=context, server_hostname=ISSUER_HOST
                ) as response:
                    bare = f"answered {response.status}"
            except aiohttp.ClientError as exc:
                bare = f"failed ({type(exc).__name__})"
            self.check(
                not bare.startswith("answered 200"), f"https without a client certificate {bare}"
            )

    async def start_mirror(self, port: int) -> Running:
        cert, key = self.ca.issue(namespace="jwks-mirror", service_account="jwks-mirror").write(
            self.workdir, "mirror"
        )
        config = f"""
public: {{host: 127.0.0.1, port: 0}}
admin: {{host: 127.0.0.1, port: 0}}
defaults: {{refresh_interval: 30s, timeout: 5s}}
issuers:
  - name: demo
    issuer: {ISSUER}
    jwks_uri: https://127.0.0.1:{port}/jwks.json
    tls:
      ca_file: {self.workdir / "ca.crt"}
      cert_file: {cert}
      key_file: {key}
      server_name: {ISSUER_HOST}
"""
        (self.workdir / "config.yaml").write_text(config)
        settings = parse_settings(config, source="demo config")
        return await start(settings)

    async def check_the_mirror(self, running: Running) -> str:
        self.say("\nThe mirror fetches over mTLS as its own SPIFFE identity and republishes:")
        # Joins the fetch the mirror started on its own, so this waits for the first set.
        (outcome,) = await running.mirror.refresh(["demo"])
        self.check(
            outcome.outcome != "failed" and not running.mirror.not_servable(),
            f"the mirror is ready (key set fetched over mTLS){_why(outcome.error)}",
        )
        url = f"{running.public_url}/demo/jwks.json"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(url) as response:
                body = await response.read()
                status, etag = response.status, response.headers.get("ETag")
            async with session.get(url + "?v=new", headers={"If-None-Match": etag or ""}) as again:
                revalidated = again.status
        self.check(status == 200, f"plain GET {url} answered {status}, as istiod would fetch it")
        self.check(revalidated == 304, "a versioned URI (?v=...) with If-None-Match answers 304")
        keys = json.loads(body).get("keys", []) if status == 200 else []
        leaked = [m for k in keys for m in PRIVATE_MEMBERS if m in k]
        self.check(bool(keys) and not leaked, f"{len(keys)} public key(s), no private members")
        token = jwt.JWT(
            header={"alg": "RS256", "kid": self.signing_key.key_id},
            claims={
                "iss": ISSUER,
                "sub": "demo-user",
                "aud": AUDIENCE,
                "iat": int(time.time()),
                "exp": int(time.time()) + 3600,
            },
        )
        token.make_signed_token(self.signing_key)
        serialized = token.serialize()
        try:
            verified = jwt.JWT(jwt=serialized, key=jwk.JWKSet.from_json(body), expected_type="JWS")
            ok = json.loads(verified.claims)["sub"] == "demo-user"
        except (jws.InvalidJWSSignature, jwt.JWTExpired, ValueError) as exc:
            ok = False
            self.say(f"       verification error: {exc}")
        self.check(ok, "a token signed by the issuer verifies against the mirrored keys")
        return str(serialized)


def _why(error: str | None) -> str:
    return f": {error}" if error else ""


def run_demo(*, once: bool) -> int:
    """Run the demo; with ``once`` exit after the checks (0 if all held)."""
    return asyncio.run(_run(once=once))


async def _run(*, once: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="jwks-mirror-demo-") as tmp:
        demo = Demo(Path(tmp), say=lambda line: print(line, flush=True))
        demo.say("jwks-mirror demo: an issuer behind STRICT mutual TLS, mirrored for istiod.")
        issuer_runner, port = await demo.start_issuer()
        running = None
        try:
            demo.say(
                f"Issuer {ISSUER} listens on https://127.0.0.1:{port} (client certificate required)"
            )
            await demo.show_the_problem(port)
            running = await demo.start_mirror(port)
            token = await demo.check_the_mirror(running)
            url = f"{running.public_url}/demo/jwks.json"
            demo.say(f"\nMirrored JWKS:  {url}")
            demo.say(f"Try it:         curl -s {url}")
            demo.say(f"Status:         curl -s {running.admin_url}/status")
            demo.say(f"Refresh:        jwks-mirror refresh --admin {running.admin_url}")
            demo.say(f"Explain token:  jwks-mirror explain TOKEN --admin {running.admin_url}")
            demo.say(f"Sample token (iss {ISSUER}, aud {AUDIENCE}):\n{token}")
            if demo.failures:
                demo.say(f"\n{len(demo.failures)} check(s) failed.")
                return 1
            demo.say("\nAll checks passed.")
            if not once:
                demo.say("Serving until Ctrl-C.")
                await _wait_for_signal()
            return 0
        finally:
            if running is not None:
                await running.stop()
            await issuer_runner.cleanup()


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
