"""Keyring's Prometheus metrics, in a registry of their own (one per replica).

Labels are bounded: pools, states, reasons and operations; key ids (never
secrets) only while per-key labels are switched on, which very large pools
can turn off (KEYRING_METRICS_PER_KEY=false).
"""

from __future__ import annotations

import bisect
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .cache import StateCache
from .core import Keyring
from .desk import LeaseDesk, Observer
from .domain.models import CooldownScope, KeyState
from .domain.tiers import split
from .domain.view import KeyringView

LEASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
ETCD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class KeyringMetrics(Observer):
    """prometheus-client metrics, except on the lease path: there, counting is a dict
    increment (prometheus-client takes a lock per increment) and ``LeaseCollector``
    turns the counts into series at scrape time."""

    def __init__(self, per_key_labels: bool = True) -> None:
        self.registry = CollectorRegistry()
        self._per_key = per_key_labels
        r = self.registry
        self.denied = Counter(
            "keyring_leases_denied_total",
            "Lease requests refused, by pool (when known) and reason.",
            ["pool", "reason"],
            registry=r,
        )
        self.expired = Counter(
            "keyring_leases_expired_total", "Leases reclaimed after their TTL (never released).", ["pool"], registry=r
        )
        self.releases_refused = Counter(
            "keyring_releases_refused_total",
            "Releases of a lease no replica vouches for (unknown, forged or long expired): nothing changed.",
            registry=r,
        )
        self.estimates_clamped = Counter(
            "keyring_input_estimates_clamped_total",
            "Acquires whose input-token estimate exceeded KEYRING_MAX_INPUT_ESTIMATE (clamped to it): an edge "
            "sending these is broken or compromised.",
            registry=r,
        )
        self.blames_accepted = Counter(
            "keyring_key_blames_accepted_total",
            "Outcomes blaming a key (strike, cooldown, invalid, forbidden) judged, by caller identity.",
            ["identity"],
            registry=r,
        )
        self.blames_refused = Counter(
            "keyring_key_blames_refused_total",
            "Outcomes blaming a key past the caller identity's KEYRING_KEY_BLAMES_PER_MINUTE: not judged (the key "
            "left as it is); an edge sending many is broken or compromised.",
            ["identity"],
            registry=r,
        )
        self.cooldowns = Counter(
            "keyring_cooldowns_started_total", "Cooldowns started, by reason.", ["reason"], registry=r
        )
        self.etcd_latency = Histogram(
            "keyring_etcd_operation_duration_seconds",
            "etcd call latency.",
            ["operation"],
            buckets=ETCD_BUCKETS,
            registry=r,
        )
        self.etcd_errors = Counter("keyring_etcd_errors_total", "etcd calls that failed.", ["operation"], registry=r)
        self.granted: dict[str, int] = defaultdict(int)
        self.credits_unused: dict[str, int] = defaultdict(int)
        self.key_requests: dict[tuple[str, str], int] = defaultdict(int)
        self.key_errors: dict[tuple[str, str], int] = defaultdict(int)
        self.held: dict[str, _Buckets] = {}
        r.register(LeaseCollector(self))

    def observe(self, keyring: Keyring) -> None:
        """Report the replica's view (keys by state, cooling pairs, replicas) at each scrape."""
        keyring.desk.observer = self
        self.registry.register(ViewCollector(keyring.cache, keyring.desk))

    # Observer
    def lease_granted(self, pool: str) -> None:
        self.granted[pool] += 1

    def lease_denied(self, pool: str, reason: str) -> None:
        self.denied.labels(pool, reason).inc()

    def lease_released(self, pool: str, key_id: str, held_s: float, failed: bool) -> None:
        subject = (pool, key_id if self._per_key else "")
        self.key_requests[subject] += 1
        if failed:
            self.key_errors[subject] += 1
        buckets = self.held.get(pool)
        if buckets is None:
            buckets = self.held[pool] = _Buckets(LEASE_BUCKETS)
        buckets.observe(held_s)

    def lease_expired(self, pool: str) -> None:
        self.expired.labels(pool).inc()

    def credit_unused(self, pool: str) -> None:
        self.credits_unused[pool] += 1

    def release_refused(self) -> None:
        self.releases_refused.inc()

    def estimate_clamped(self) -> None:
        self.estimates_clamped.inc()

    def cooldown_started(self, reason: str) -> None:
        self.cooldowns.labels(reason).inc()

    def key_blamed(self, identity: str, accepted: bool) -> None:
        (self.blames_accepted if accepted else self.blames_refused).labels(identity or "unknown").inc()

    # EtcdStore callback
    def etcd_operation(self, name: str, seconds: float, ok: bool) -> None:
        self.etcd_latency.labels(name).observe(seconds)
        if not ok:
            self.etcd_errors.labels(name).inc()


class _Buckets:
    """A histogram's counts, without locks (one event loop thread writes them)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running, pairs = 0.0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs


class LeaseCollector(Collector):
    def __init__(self, metrics: KeyringMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        m = self._metrics
        granted = CounterMetricFamily("keyring_leases_granted", "Leases granted.", labels=["pool"])
        for pool, count in sorted(m.granted.items()):
            granted.add_metric([pool], count)
        yield granted
        # Granted minus these: the leases that made a call (a credit unused is refunded, every count taken back).
        unused = CounterMetricFamily(
            "keyring_credits_unused",
            "Credits (leases granted ahead of need, EDGE_KEYRING_CREDITS) an edge gave back unused: refunded.",
            labels=["pool"],
        )
        for pool in sorted(m.granted.keys() | m.credits_unused.keys()):  # 0 where leases but no credit went back
            unused.add_metric([pool], m.credits_unused.get(pool, 0))
        yield unused
        for name, help_text, counts in (
            ("keyring_key_requests", "Calls per upstream key.", m.key_requests),
            ("keyring_key_errors", "Failed calls per upstream key.", m.key_errors),
        ):
            family = CounterMetricFamily(name, help_text, labels=["pool", "key_id"])
            for labels, count in sorted(counts.items()):
                family.add_metric(list(labels), count)
            yield family
        held = HistogramMetricFamily("keyring_lease_duration_seconds", "Time from grant to release.", labels=["pool"])
        for pool, buckets in sorted(m.held.items()):
            held.add_metric([pool], buckets.cumulative(), sum_value=buckets.total)
        yield held


MAX_QUOTA_SERIES = 1000  # rows of the quota gauges at most (label cardinality)


class ViewCollector(Collector):
    def __init__(self, cache: StateCache, desk: LeaseDesk) -> None:
        self._cache = cache
        self._desk = desk

    def collect(self) -> Iterator[GaugeMetricFamily]:
        view = self._cache.view
        now = time.time()
        keys = GaugeMetricFamily("keyring_keys", "Upstream keys by pool and state.", labels=["pool", "state"])
        states = Tally((key.pool, key.state.value) for key in view.keys.values())
        for pool in view.pools:
            for state in KeyState:
                keys.add_metric([pool, state.value], states.get((pool, state.value), 0))
        yield keys
        cooling = GaugeMetricFamily(
            "keyring_cooling_pairs", "Running cooldowns by scope and reason.", labels=["scope", "reason"]
        )
        running = Tally((c.id.scope.value, c.reason.value) for c in view.cooldowns.values() if c.active(now))
        for (scope, reason), count in sorted(running.items()):
            cooling.add_metric([scope, reason], count)
        yield cooling
        affinity = GaugeMetricFamily(
            "keyring_affinity_records",
            "Project-bound resources (files, caches, batches...) whose owner key is recorded, by pool.",
            labels=["pool"],
        )
        bound = Tally(record.pool for record in view.affinity.values() if record.active(now))
        for pool in view.pools:
            affinity.add_metric([pool], bound.get(pool, 0))
        yield affinity
        yield _billing_accounts(view, now)
        yield from self._quotas()
        yield GaugeMetricFamily(
            "keyring_live_replicas", "Keyring replicas registered in etcd.", value=len(view.members)
        )
        yield GaugeMetricFamily(
            "keyring_leases_in_flight",
            "Leases granted by this replica and not yet released.",
            value=self._desk.leases_in_flight,
        )
        yield GaugeMetricFamily(
            "keyring_view_revision", "The etcd revision this replica's view has reached.", value=view.revision
        )
        yield GaugeMetricFamily(
            "keyring_watch_lag_revisions",
            "Revisions the watch trails the newest one this replica has seen (its own writes included).",
            value=self._cache.watch_lag,
        )

    def _quotas(self) -> Iterator[GaugeMetricFamily]:
        """keyring_quota_limit / keyring_quota_used per (pool, project, model, metric, service_tier).

        Bounded: a row exists only for a model the pool allows that a 429
        named or the upstream served in a current window (domain/limits.quota_rows:
        not a client-chosen id the upstream answered 404), and at most
        ``MAX_QUOTA_SERIES`` rows are exported.
        """
        labels = ["pool", "project", "model", "metric", "service_tier"]
        limit = GaugeMetricFamily(
            "keyring_quota_limit",
            "Quota limits per project, model and metric (learnt from 429s or the pool's).",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "keyring_quota_used",
            "This replica's use of each quota in its current window (a per-day one: since Pacific midnight).",
            labels=labels,
        )
        ratio = GaugeMetricFamily(
            "keyring_quota_used_ratio",
            "This replica's use of each quota over its share of the limit (1: spent until the window resets).",
            labels=labels,
        )
        for row in self._desk.quota_rows()[:MAX_QUOTA_SERIES]:
            # A class's own limit (issue 21) is the model's, labelled with its class ("" for standard).
            values = [row.pool, row.project, split(row.model)[0], row.metric.value, row.service_tier or "standard"]
            limit.add_metric(values, row.limit)
            used.add_metric(values, row.used)
            ratio.add_metric(values, row.used / row.share if row.share else 0.0)
        yield limit
        yield used
        yield ratio


def _billing_accounts(view: KeyringView, now: float) -> GaugeMetricFamily:
    """keyring_billing_account_cooling{pool, account, cause}: seconds left of a billing account's cooldown (a 402
    or a spend limit cools every project of it; issue 21), per pool holding its keys; absent while it serves."""
    family = GaugeMetricFamily(
        "keyring_billing_account_cooling",
        "Seconds left of a billing account's cooldown (a 402: prepaid credits spent; a spend limit), every project "
        "of it kept out, by pool, account and cause; no series while the account serves.",
        labels=["pool", "account", "cause"],
    )
    cooling = {
        c.id.subject: c for c in view.cooldowns.values() if c.id.scope is CooldownScope.ACCOUNT and c.active(now)
    }
    if cooling:
        held = sorted({(key.pool, key.billing_account) for key in view.keys.values() if key.billing_account in cooling})
        for pool, account in held:
            family.add_metric([pool, account, cooling[account].reason.value], cooling[account].until - now)
    return family
