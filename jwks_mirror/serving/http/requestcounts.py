"""Requests answered on the public port, by issuer and status code.

Plain ints (one event loop, no lock): the public server counts here on every request, in
place (``counts[name][code] += 1``: one dict lookup on the hot path), and the metrics read them
at scrape time through :meth:`RequestCounts.of`. Requests for names that are not configured
share one row (``None``), so hostile paths add no labels.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

_NONE: Mapping[int, int] = {}


class RequestCounts(dict[str | None, dict[int, int]]):
    """Issuer name (None: names not configured) -> status code -> requests answered.
    Indexing creates an issuer's row on first use."""

    __slots__ = ()

    def __missing__(self, name: str | None) -> dict[int, int]:
        counts: dict[int, int] = {}
        self[name] = counts
        return counts

    def of(self, name: str | None) -> Mapping[int, int]:
        """Read only, and creating nothing: the counts of ``name`` by status code."""
        return self.get(name, _NONE)

    def keep_only(self, names: Container[str]) -> None:
        """Forget the counts of issuers no longer configured (the unknown row stays)."""
        for name in [n for n in self if n is not None and n not in names]:
            del self[name]
