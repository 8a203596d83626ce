"""The metric objects, on a registry the caller injects (every test builds its own), and
what counts.

Events (fetches, rejections, reloads) are counted as they happen: they are rare. Everything
that describes *state* (key counts, staleness, request counters) is read from the issuer
states at scrape time by the collectors of collectors.py, so the request path only bumps a
plain int and nothing is kept in two places.

Per-issuer event counters are kept by :class:`IssuerCounter`: plain numbers in a dict,
exported at scrape time, where a prometheus_client child per label set is an object with a
lock. The fetch duration histogram is one histogram for all issuers: per issuer it was
sixteen series, and with 10,000 issuers one scrape was 22 MB (docs/benchmarks.md). Nor are
``_created`` series exported for the per-issuer counters.

How much per-issuer detail a scrape carries is ``metrics.per_issuer`` (docs/metrics.md):
``compact`` sums the counters marked ``aggregate`` across issuers, ``full`` keeps them per
issuer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from jwks_mirror.serving.collectors import PREFIX, MonotonicSum, PerIssuer, StateCollector

if TYPE_CHECKING:  # mirror.py imports this module: the type only
    from jwks_mirror.serving.mirror import Issuer

__all__ = ["PREFIX", "IssuerCounter", "Metrics", "new_registry"]


class Metrics:
    """The event counters, plus the scrape-time collectors over the issuer states."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        issuers: Callable[[], Iterable[Issuer]],
        clock: Callable[[], float],
        per_issuer: PerIssuer = lambda: "compact",
    ) -> None:
        self.registry = registry
        # Requests answered by status code, per issuer (None: names not configured): the
        # public server's, which sets this to its own ``PublicServer.requests``.
        self.requests: Callable[[str | None], Mapping[int, int]] = lambda name: {}
        self.fetch_total = IssuerCounter(
            PREFIX + "fetch",
            "Upstream fetches by outcome (changed, unchanged, failed).",
            "outcome",
            aggregate=True,
        )
        self.fetch_errors_total = IssuerCounter(
            PREFIX + "fetch_errors", "Failed fetches by reason.", "reason"
        )
        self.fetch_duration_seconds = Histogram(
            PREFIX + "fetch_duration_seconds",
            "Duration of upstream fetches, all issuers together.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.keys_rejected_total = IssuerCounter(
            PREFIX + "keys_rejected",
            "Keys dropped, or whole sets rejected, by the validation policy, by reason.",
            "reason",
        )
        self.config_reloads_total = Counter(
            PREFIX + "config_reloads",
            "Configuration reloads by outcome (success, failure).",
            ["outcome"],
            registry=registry,
        )
        self.persist_errors_total = IssuerCounter(
            PREFIX + "persist_errors", "Failures writing the state directory."
        )
        self.state_ignored_total = IssuerCounter(
            PREFIX + "state_ignored",
            "State files refused at start or reload, by reason (symlink, not_regular_file, "
            "too_large, unreadable, not_json, format, other_upstream, invalid); the issuer "
            "then started as if there were no file.",
            "reason",
        )
        # Peer fill (peering.py): attempts by outcome, and peer answers ignored by reason.
        self.peer_fills_total = IssuerCounter(
            PREFIX + "peer_fills",
            "Peer-fill attempts by outcome (filled, no_set, rejected, unreachable, no_peers).",
            "outcome",
        )
        self.peer_errors_total = IssuerCounter(
            PREFIX + "peer_errors",
            "Peer answers ignored, by reason: an invalid set, another upstream, older than "
            "max_stale, malformed, too large, timeout, unreachable.",
            "reason",
        )
        self.public_tls_reloads_total = Counter(
            PREFIX + "public_tls_reloads",
            "Reloads of the public port's certificate and key after they changed on disk, by "
            "outcome (success, failure); a failure keeps the pair in use.",
            ["outcome"],
            registry=registry,
        )
        self.public_tls_not_after_timestamp_seconds = Gauge(
            PREFIX + "public_tls_not_after_timestamp_seconds",
            "Expiry of the certificate the public port serves (absent without public.tls).",
            ["cert_file"],
            registry=registry,
        )
        self.public_aborts_total = Counter(
            PREFIX + "public_aborts",
            "Public-port connections aborted (reset, unwritten answers dropped), by reason: "
            "stalled (answers not drained for the idle timeout), closing (still closing a "
            "sweep after it was closed), shutdown (still open when the drain timed out).",
            ["reason"],
            registry=registry,
        )
        # Both ports' accept loops (listening.py), labelled port="public"|"admin".
        self.open_connections = Gauge(
            PREFIX + "open_connections",
            "Connections open on a port, by port (public, admin), TLS handshakes included.",
            ["port"],
            registry=registry,
        )
        self.connections_rejected_total = Counter(
            PREFIX + "connections_rejected",
            "Connections closed at once because the port held max_connections, by port.",
            ["port"],
            registry=registry,
        )
        self.accept_errors_total = Counter(
            PREFIX + "accept_errors",
            "Failed accepts (out of file descriptors, say), by port; logged as accept_failed "
            "at most once a second.",
            ["port"],
            registry=registry,
        )
        self._counters = (
            self.fetch_total,
            self.fetch_errors_total,
            self.keys_rejected_total,
            self.persist_errors_total,
            self.state_ignored_total,
            self.peer_fills_total,
            self.peer_errors_total,
        )
        registry.register(
            StateCollector(issuers, lambda name: self.requests(name), clock, per_issuer)
        )
        registry.register(_CounterCollector(self._counters, per_issuer))

    def forget(self, issuer: str) -> None:
        """Drop the event series of an issuer removed from the configuration (the sums
        across issuers keep what it counted: a counter never goes down)."""
        for counter in self._counters:
            counter.forget(issuer)


class IssuerCounter:
    """A counter family labelled by issuer (and optionally one more label), kept as plain
    numbers and exported at scrape time. ``labels(issuer, ...).inc(n)`` as in
    prometheus_client, without a child object and lock per label set. With ``aggregate``,
    the compact scrape sums it across issuers by its other label."""

    __slots__ = ("_sum", "aggregate", "documentation", "extra_label", "name", "values")

    def __init__(
        self,
        name: str,
        documentation: str,
        extra_label: str | None = None,
        *,
        aggregate: bool = False,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.extra_label = extra_label
        self.aggregate = aggregate and extra_label is not None
        self.values: dict[tuple[str, ...], float] = {}
        self._sum = MonotonicSum()

    def labels(self, *values: str) -> _Series:
        if len(values) != (2 if self.extra_label else 1):
            raise ValueError(f"{self.name}: wrong number of label values {values!r}")
        return _Series(self.values, values)

    def forget(self, issuer: str) -> None:
        for key in [k for k in self.values if k[0] == issuer]:
            del self.values[key]

    def collect(self, per_issuer: str = "full") -> CounterMetricFamily:
        if self.aggregate and per_issuer == "compact" and self.extra_label is not None:
            family = CounterMetricFamily(self.name, self.documentation, labels=[self.extra_label])
            for label, total in sorted(self._sum.update(self.values).items()):
                family.add_metric([label], total)
            return family
        labels = ["issuer", self.extra_label] if self.extra_label else ["issuer"]
        family = CounterMetricFamily(self.name, self.documentation, labels=labels)
        for key, value in self.values.items():
            family.add_metric(list(key), value)
        return family


class _Series:
    __slots__ = ("_key", "_values")

    def __init__(self, values: dict[tuple[str, ...], float], key: tuple[str, ...]) -> None:
        self._values = values
        self._key = key

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self._values[self._key] = self._values.get(self._key, 0) + amount


class _CounterCollector(Collector):
    def __init__(self, counters: Iterable[IssuerCounter], per_issuer: PerIssuer) -> None:
        self._counters: Final = tuple(counters)
        self._per_issuer = per_issuer

    def collect(self) -> Iterator[Metric]:
        mode = self._per_issuer()
        for counter in self._counters:
            yield counter.collect(mode)


def new_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors (no global state)."""
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
