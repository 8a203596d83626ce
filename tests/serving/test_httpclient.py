"""The HTTP client edge: the one table of client errors, each row met over a real loopback
socket where it is a network error, the size-capped read, and the sessions per TLS profile."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from jwks_mirror.core.errors import UpstreamError
from jwks_mirror.serving.httpclient import (
    CLIENT_ERRORS,
    ClientErrors,
    Sessions,
    client_error,
    new_session,
    read_body,
)
from tests.conftest import hang, reset, truncated

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Serve], Awaitable[str]]]:
    """A plain TCP server on 127.0.0.1:0 whose every connection runs ``serve``: for answers
    no HTTP server would give."""
    servers: list[asyncio.Server] = []

    async def start(serve: Serve) -> str:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/jwks.json"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def get(
    url: str,
    *,
    context: ssl.SSLContext | bool = True,
    timeout_s: float = 10.0,
    limit: int = 1 << 20,
    proxy: str | None = None,
    resolver: AbstractResolver | None = None,
) -> bytes:
    session = new_session(context, headers={}, resolver=resolver)
    try:
        with ClientErrors(url, timeout_s=timeout_s):
            async with session.get(
                url, timeout=aiohttp.ClientTimeout(total=timeout_s), proxy=proxy
            ) as response:
                return await read_body(response, limit)
    finally:
        await session.close()


async def reason_of(request: Awaitable[bytes]) -> tuple[str, UpstreamError]:
    with pytest.raises(UpstreamError) as info:
        await request
    return info.value.reason, info.value


def test_no_row_of_the_table_is_shadowed_by_an_earlier_one() -> None:
    """Most specific first: a row after one of its base classes would never be reached."""
    for index, (kind, _, _) in enumerate(CLIENT_ERRORS):
        earlier = [k for k, _, _ in CLIENT_ERRORS[:index]]
        assert not [k for k in earlier if issubclass(kind, k)], kind


async def test_refused_connection_is_connect(refused_url) -> None:
    reason, error = await reason_of(get(refused_url))
    assert reason == "connect" and "cannot connect" in str(error)
    assert str(error).startswith(refused_url)


async def test_a_hang_is_timeout_naming_the_deadline(fake_issuer) -> None:
    issuer = await fake_issuer()
    issuer.behaviour = hang(issuer)
    reason, error = await reason_of(get(issuer.url, timeout_s=0.3))
    assert reason == "timeout" and "no complete answer in 0.3s" in str(error)


async def test_a_reset_before_the_answer_is_connection(fake_issuer) -> None:
    issuer = await fake_issuer(behaviour=reset())
    reason, error = await reason_of(get(issuer.url))
    assert reason == "connection" and "connection lost" in str(error)
    assert isinstance(error.__cause__, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)


async def test_a_body_cut_short_is_connection(fake_issuer) -> None:
    issuer = await fake_issuer(behaviour=truncated())
    reason, error = await reason_of(get(issuer.url))
    assert reason == "connection"
    assert isinstance(error.__cause__, aiohttp.ClientPayloadError)


async def test_an_answer_that_is_not_http_is_protocol(raw_server) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    reason, error = await reason_of(get(await raw_server(serve)))
    assert reason == "protocol" and "bad HTTP answer" in str(error)
    assert isinstance(error.__cause__, aiohttp.ClientResponseError)


async def test_an_untrusted_certificate_is_tls(fake_issuer, pki) -> None:
    issuer = await fake_issuer(ssl_context=pki.server_context(require_client=False))
    reason, error = await reason_of(get(issuer.url))  # the system CAs do not know the mesh CA
    assert reason == "tls" and "certificate not accepted" in str(error)


async def test_tls_to_a_plain_port_is_tls(fake_issuer) -> None:
    issuer = await fake_issuer()
    url = issuer.url.replace("http://", "https://")
    reason, error = await reason_of(get(url))
    assert reason == "tls" and "TLS failed" in str(error)


async def test_an_unreachable_proxy_is_connect(fake_issuer, refused_url) -> None:
    issuer = await fake_issuer()
    proxy = refused_url.rsplit("/", 1)[0]
    reason, error = await reason_of(get(issuer.url, proxy=proxy))
    assert reason == "connect" and "cannot reach proxy" in str(error)


async def test_a_name_resolving_to_a_metadata_address_is_address() -> None:
    class Metadata(AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
            return [
                ResolveResult(
                    hostname=host, host="169.254.169.254", port=port, family=2, proto=0, flags=0
                )
            ]

        async def close(self) -> None:
            pass

    # new_session wraps every resolver in GuardedResolver: the refusal happens at connect time
    reason, error = await reason_of(get("http://idp.example:80/jwks.json", resolver=Metadata()))
    assert reason == "address" and "169.254.169.254" in str(error)


async def test_an_invalid_url_is_connect() -> None:
    reason, error = await reason_of(get("http:///jwks.json"))
    assert reason == "connect" and str(error).endswith("invalid URL")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ssl.SSLError(1, "bad record mac\nsecond line"), "tls"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection"),
        (TimeoutError(), "timeout"),
        (aiohttp.ClientError("something\n\nelse"), "connection"),
    ],
)
def test_errors_raised_outside_aiohttp_map_too(exc: BaseException, reason: str) -> None:
    mapped = client_error(exc, "http://idp/jwks.json", timeout_s=5)
    assert mapped is not None and mapped.reason == reason
    assert "\n" not in str(mapped) and str(mapped).startswith("http://idp/jwks.json: ")


def test_an_unmapped_error_passes_unchanged() -> None:
    assert client_error(KeyError("x"), "http://idp/", timeout_s=5) is None
    with pytest.raises(KeyError), ClientErrors("http://idp/", timeout_s=5):
        raise KeyError("x")
    own = UpstreamError("status", "http://idp/ answered 500")
    with pytest.raises(UpstreamError) as info, ClientErrors("http://idp/", timeout_s=5):
        raise own
    assert info.value is own


async def test_the_read_stops_at_the_cap(fake_issuer) -> None:
    issuer = await fake_issuer(document=b"x" * 5000)
    assert await get(issuer.url, limit=5000) == b"x" * 5000
    reason, error = await reason_of(get(issuer.url, limit=4999))
    assert reason == "too_large" and "4999" in str(error)


async def test_a_session_is_rebuilt_when_its_version_changes() -> None:
    sessions = Sessions(headers={"User-Agent": "t"})
    try:
        first = sessions.get("profile", 1, lambda: True)
        assert sessions.get("profile", 1, lambda: True) is first
        second = sessions.get("profile", 2, lambda: True)
        assert second is not first and not first.closed  # retired: in-flight requests finish
        other = sessions.get("other", 1, lambda: True)
        assert other is not second
    finally:
        await sessions.close()
    assert first.closed and second.closed and other.closed


async def test_a_tls_profile_that_cannot_load_is_tls(tmp_path) -> None:
    from jwks_mirror.core.config.model import TLSSettings
    from jwks_mirror.core.tls import build_ssl_context

    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    sessions = Sessions(headers={})
    try:
        with pytest.raises(UpstreamError) as info:
            sessions.get("p", 1, lambda: build_ssl_context(TLSSettings(ca_file=bad)))
        assert info.value.reason == "tls" and "cannot load TLS files" in str(info.value)
    finally:
        await sessions.close()
