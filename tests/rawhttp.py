"""Raw-socket HTTP/1.1 helpers for the public-port tests: read one answer exactly as sent, and
tell whether the server closed. Nothing here is lenient: an answer that is not HTTP/1.1, has a
header twice, or lacks its ``Content-Length`` fails the test."""

from __future__ import annotations

import asyncio

BOUND_S = 30  # only a bound on a hang; never a speed check


async def read_response(
    reader: asyncio.StreamReader, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """One answer: status, lower-cased headers, body (none for HEAD and 304)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), lines[0]
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate header {name}"
            headers[name.lower()] = value.strip()
    body = b""
    if not head_only and status != 304:
        length = int(headers["content-length"])
        body = await asyncio.wait_for(reader.readexactly(length), BOUND_S)
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """The server closed (EOF or reset) and sent nothing more."""
    try:
        return await asyncio.wait_for(reader.read(1), BOUND_S) == b""
    except (BrokenPipeError, ConnectionResetError):
        return True
