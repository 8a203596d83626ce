"""The CLI side of the admin port: a small synchronous client and the status table."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from jwks_mirror.errors import AdminError, UsageError

REFRESH_TIMEOUT_S = 120.0


class AdminClient:
    """Talks to ``--admin URL``. Every failure is an :class:`AdminError` with one line."""

    def __init__(self, base_url: str, *, token: str | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--admin: not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token = token

    def status(self) -> dict[str, Any]:
        status, document = self._call("GET", "/status", timeout=10.0)
        if status != 200 or not isinstance(document, dict):
            raise AdminError(f"{self.base_url}/status answered {status}")
        return document

    def detail(self, name: str) -> dict[str, Any]:
        """One issuer's detail (``/status/{name}``): summary, published set, key history."""
        path = f"/status/{urllib.parse.quote(name, safe='')}"
        status, document = self._call("GET", path, timeout=10.0)
        if status != 200 or not isinstance(document, dict):
            raise AdminError(f"{self.base_url}{path} answered {status}")
        return document

    def refresh(
        self, names: Iterable[str], *, purge_retained: bool = False
    ) -> list[dict[str, Any]]:
        """Refresh the named issuers (all when empty). 200 and 502 both carry results."""
        names = list(names)
        query = "?purge_retained=1" if purge_retained else ""
        if not names:
            return self._refresh_results(f"/refresh{query}")
        results: list[dict[str, Any]] = []
        for name in names:
            results += self._refresh_results(f"/refresh/{urllib.parse.quote(name, safe='')}{query}")
        return results

    def _refresh_results(self, path: str) -> list[dict[str, Any]]:
        status, document = self._call("POST", path, timeout=REFRESH_TIMEOUT_S)
        if status in (200, 502) and isinstance(document, dict):
            results = document.get("results")
            if isinstance(results, list):
                return results
        error = document.get("error") if isinstance(document, dict) else None
        raise AdminError(
            f"{self.base_url}{path} answered {status}" + (f": {error}" if error else "")
        )

    def _call(self, method: str, path: str, *, timeout: float) -> tuple[int, Any]:
        request = urllib.request.Request(self.base_url + path, method=method)  # noqa: S310
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _decode(exc.read())
        except urllib.error.URLError as exc:
            raise AdminError(f"cannot reach the mirror at {self.base_url}: {exc.reason}") from exc
        except (TimeoutError, OSError) as exc:
            raise AdminError(f"cannot reach the mirror at {self.base_url}: {exc}") from exc


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def format_status(status: dict[str, Any], *, now: float | None = None) -> str:
    """A table a human can read at a glance."""
    now = time.time() if now is None else now
    header = ("ISSUER", "STATE", "KIDS", "RETAINED", "LAST SUCCESS", "FAILURES", "NEXT", "ERROR")
    rows = [header]
    for item in status.get("issuers", []):
        state = _state_label(item)
        rows.append(
            (
                str(item.get("name")),
                state,
                ",".join(item.get("kids") or []) or "-",
                ",".join(item.get("retained_kids") or []) or "-",
                _ago(item.get("last_success"), now),
                str(item.get("consecutive_failures", 0)),
                _until(item.get("next_refresh"), now),
                (item.get("last_error") or "-")[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _state_label(item: dict[str, Any]) -> str:
    if not item.get("servable"):
        return "expired" if item.get("last_success") else "no keys"
    if item.get("source") == "peer":
        return "stale (peer copy)"  # the upstream is failing; a peer's set is served
    return "stale" if item.get("stale") else "ok"


def _ago(ts: object, now: float) -> str:
    if not isinstance(ts, int | float):
        return "never"
    return f"{human_duration(now - ts)} ago"


def _until(ts: object, now: float) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return "now" if ts <= now else f"in {human_duration(ts - now)}"


def human_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3.5h``, ``2.0d``: a span at a glance."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
