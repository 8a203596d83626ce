"""Prometheus metrics, on a registry the caller injects (every test builds its own).

Events (fetches, rejections, reloads) are counted as they happen: they are rare. Everything
that describes *state* (key counts, staleness, request counters) is read from the issuer
states at scrape time by :class:`StateCollector`, so the request path only bumps a plain int
and nothing is kept in two places.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jwks_mirror.state import IssuerState

PREFIX = "jwks_mirror_"
UNKNOWN_ISSUER = "_unknown"  # requests for names not configured, so hostile paths add no labels


class Metrics:
    """The event counters, plus the scrape-time collector over the issuer states."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        states: Callable[[], Iterable[IssuerState]],
        unknown_requests: Mapping[int, int],
        clock: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.fetch_total = Counter(
            PREFIX + "fetch",
            "Upstream fetches by outcome (changed, unchanged, failed).",
            ["issuer", "outcome"],
            registry=registry,
        )
        self.fetch_errors_total = Counter(
            PREFIX + "fetch_errors",
            "Failed fetches by reason.",
            ["issuer", "reason"],
            registry=registry,
        )
        self.fetch_duration_seconds = Histogram(
            PREFIX + "fetch_duration_seconds",
            "Duration of upstream fetches.",
            ["issuer"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.keys_rejected_total = Counter(
            PREFIX + "keys_rejected",
            "Keys dropped, or whole sets rejected, by the validation policy, by reason.",
            ["issuer", "reason"],
            registry=registry,
        )
        self.config_reloads_total = Counter(
            PREFIX + "config_reloads",
            "Configuration reloads by outcome (success, failure).",
            ["outcome"],
            registry=registry,
        )
        self.persist_errors_total = Counter(
            PREFIX + "persist_errors",
            "Failures writing the state directory.",
            ["issuer"],
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
        registry.register(StateCollector(states, unknown_requests, clock))

    def forget(self, issuer: str) -> None:
        """Drop the event series of an issuer removed from the configuration."""
        for metric in (
            self.fetch_total,
            self.fetch_errors_total,
            self.keys_rejected_total,
        ):
            for labels in [k for k in metric._metrics if k[0] == issuer]:
                metric.remove(*labels)
        for labels in [k for k in self.fetch_duration_seconds._metrics if k[0] == issuer]:
            self.fetch_duration_seconds.remove(*labels)


class StateCollector(Collector):
    """Gauges and request counters computed from the live issuer states at scrape time."""

    def __init__(
        self,
        states: Callable[[], Iterable[IssuerState]],
        unknown_requests: Mapping[int, int],
        clock: Callable[[], float],
    ) -> None:
        self._states = states
        self._unknown = unknown_requests
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        keys = GaugeMetricFamily(
            PREFIX + "keys", "Keys the upstream currently serves.", labels=["issuer"]
        )
        retained = GaugeMetricFamily(
            PREFIX + "retained_keys",
            "Keys removed upstream but still published.",
            labels=["issuer"],
        )
        last_success = GaugeMetricFamily(
            PREFIX + "last_success_timestamp_seconds",
            "Time of the last successful fetch.",
            labels=["issuer"],
        )
        stale = GaugeMetricFamily(
            PREFIX + "stale",
            "1 when the upstream did not confirm the served set at the last attempt, or "
            "there is no servable set; the last good set is still served until max_stale.",
            labels=["issuer"],
        )
        servable = GaugeMetricFamily(
            PREFIX + "servable",
            "1 when a key set is served; 0 when the public endpoint answers 503 (none yet, "
            "or older than max_stale: fail closed).",
            labels=["issuer"],
        )
        failures = GaugeMetricFamily(
            PREFIX + "consecutive_failures",
            "Failed fetches since the last success.",
            labels=["issuer"],
        )
        next_refresh = GaugeMetricFamily(
            PREFIX + "next_refresh_timestamp_seconds",
            "When the next fetch is scheduled.",
            labels=["issuer"],
        )
        info = GaugeMetricFamily(
            PREFIX + "key_set_info",
            "The published key set's ETag (always 1).",
            labels=["issuer", "etag"],
        )
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "Public endpoint requests by status code.",
            labels=["issuer", "code"],
        )
        for state in self._states():
            name = state.name
            keys.add_metric([name], len(state.current))
            retained.add_metric([name], len(state.retained))
            if state.last_success is not None:
                last_success.add_metric([name], state.last_success)
            stale.add_metric([name], 1.0 if state.is_stale(now) else 0.0)
            servable.add_metric([name], 1.0 if state.servable(now) else 0.0)
            failures.add_metric([name], state.consecutive_failures)
            next_refresh.add_metric([name], state.next_refresh)
            if state.published is not None:
                info.add_metric([name, state.published.etag], 1.0)
            for code, count in sorted(state.requests.items()):
                requests.add_metric([name, str(code)], count)
        for code, count in sorted(self._unknown.items()):
            requests.add_metric([UNKNOWN_ISSUER, str(code)], count)
        yield from (
            keys,
            retained,
            last_success,
            stale,
            servable,
            failures,
            next_refresh,
            info,
            requests,
        )


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
