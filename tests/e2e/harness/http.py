"""A small synchronous HTTP client for assertions.

``http.client`` rather than ``urllib``: it never consults ``*_proxy`` environment variables,
never follows redirects and never raises on 4xx/5xx, so a test sees exactly what the server
sent. One connection per request (``Connection: close``) keeps Envoy's connection pools out
of the picture.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


def request(method: str, url: str, *, headers: dict[str, str] | None = None,
            body: bytes | None = None, timeout: float = 5.0) -> Response:
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers={"Connection": "close", **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def get(url: str, **kwargs: Any) -> Response:
    return request("GET", url, **kwargs)
