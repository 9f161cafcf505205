"""Learned quota limits: what each 429 tells of a project's limits, and their windows.

Gemini's limits are per project, per model and per metric and published in
no API: the only live source is a 429's QuotaFailure violations, whose
``quotaValue`` is the limit (``answers.QuotaViolation``). Every violation with
a value is a ``QuotaLimit`` record (project, model, metric, limit, learnt
at): a decision like a cooldown (``domain/decisions.py``): applied to the view
at once, written behind, merged idempotently (the later learnt wins), shared
by every replica through the store.

An operator's value wins over a learnt one: the pool policy's
``quota_requests_per_minute`` / ``quota_requests_per_day`` /
``quota_input_tokens_per_minute`` (per project and model, 0: learn it).

Windows: per-minute limits count in fixed epoch minutes (Google's windows
are rolling; a fixed minute errs at most one window's worth), per-day limits
from Pacific midnight to Pacific midnight (when Gemini resets them).
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from .leasing import share
from .models import LimitId, Outcome, Policy, Pool, QuotaLimit, QuotaViolation, UpstreamKey

PACIFIC = ZoneInfo("America/Los_Angeles")
# A limit learnt again with the same value is rewritten only this long after it was last learnt.
RELEARN_S = 3600.0


class QuotaMetric(enum.StrEnum):
    REQUESTS_PER_MINUTE = "requests_per_minute"
    REQUESTS_PER_DAY = "requests_per_day"
    INPUT_TOKENS_PER_MINUTE = "input_tokens_per_minute"
    INPUT_TOKENS_PER_DAY = "input_tokens_per_day"

    @property
    def per_day(self) -> bool:
        return self in (QuotaMetric.REQUESTS_PER_DAY, QuotaMetric.INPUT_TOKENS_PER_DAY)

    @property
    def tokens(self) -> bool:
        return self in (QuotaMetric.INPUT_TOKENS_PER_MINUTE, QuotaMetric.INPUT_TOKENS_PER_DAY)


# The metrics keyring paces before the 429 (counted at lease time).
PACED = (QuotaMetric.REQUESTS_PER_DAY, QuotaMetric.REQUESTS_PER_MINUTE)


def metric_of(violation: QuotaViolation) -> QuotaMetric | None:
    """Which metric a violation's quotaId names (``GenerateRequestsPerMinutePerProjectPerModel-FreeTier``...)."""
    quota_id = violation.quota_id
    tokens = "Token" in quota_id
    if not tokens and "Request" not in quota_id:
        return None
    if "PerMinute" in quota_id:
        return QuotaMetric.INPUT_TOKENS_PER_MINUTE if tokens else QuotaMetric.REQUESTS_PER_MINUTE
    if "PerDay" in quota_id:
        return QuotaMetric.INPUT_TOKENS_PER_DAY if tokens else QuotaMetric.REQUESTS_PER_DAY
    return None


def learnt(
    outcome: Outcome, project: str, model: str, now: float, known: dict[LimitId, QuotaLimit]
) -> list[QuotaLimit]:
    """The limits an answer tells that the view does not know yet (or knew long ago); none without a project."""
    if not project or not outcome.violations:
        return []
    found: list[QuotaLimit] = []
    for violation in outcome.violations:
        metric, limit = metric_of(violation), violation.limit
        if metric is None or limit is None:
            continue
        limit_id = LimitId(project, violation.dimension("model") or model, metric.value)
        previous = known.get(limit_id)
        if previous is not None and previous.limit == limit and previous.learnt_at + RELEARN_S > now:
            continue
        found.append(QuotaLimit(limit_id, limit, learnt_at=now, quota_id=violation.quota_id))
    return found


_OPERATOR_FIELDS = {
    QuotaMetric.REQUESTS_PER_MINUTE: "quota_requests_per_minute",
    QuotaMetric.REQUESTS_PER_DAY: "quota_requests_per_day",
    QuotaMetric.INPUT_TOKENS_PER_MINUTE: "quota_input_tokens_per_minute",
}


def operator_limit(policy: Policy, metric: QuotaMetric) -> int:
    """The pool's value for a metric (0: none: the learnt one counts)."""
    name = _OPERATOR_FIELDS.get(metric)
    return int(getattr(policy, name)) if name else 0


def effective_limit(record: QuotaLimit | None, policy: Policy, metric: QuotaMetric) -> tuple[int | None, str]:
    """The limit in force and where it comes from ("operator", "learnt"; None: unknown)."""
    if own := operator_limit(policy, metric):
        return own, "operator"
    if record is not None:
        return record.limit, "learnt"
    return None, ""


def window(metric: QuotaMetric, now: float) -> tuple[float, float]:
    """The window ``now`` falls in: (start, reset)."""
    if metric.per_day:
        local = dt.datetime.fromtimestamp(now, PACIFIC)
        midnight = dt.datetime.combine(local.date(), dt.time(0, 0), tzinfo=PACIFIC)
        next_midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0, 0), tzinfo=PACIFIC)
        return midnight.timestamp(), next_midnight.timestamp()
    minute = math.floor(now / 60.0) * 60.0
    return minute, minute + 60.0


class QuotaCounter:
    """This replica's use of each (project, model) per window: requests at lease, input tokens at release."""

    def __init__(self) -> None:
        # (project, model, metric) -> (window start, amount)
        self._counts: dict[tuple[str, str, QuotaMetric], list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(self, project: str, model: str, now: float, requests: int = 0, input_tokens: int = 0) -> None:
        if not project:
            return
        for metric in QuotaMetric:
            amount = input_tokens if metric.tokens else requests
            if amount:
                self._add(project, model, metric, now, amount)

    def _add(self, project: str, model: str, metric: QuotaMetric, now: float, amount: float) -> None:
        start, _ = window(metric, now)
        entry = self._counts[(project, model, metric)]
        if entry[0] != start:
            entry[0], entry[1] = start, 0.0
        entry[1] += amount

    def used(self, project: str, model: str, metric: QuotaMetric, now: float) -> int:
        entry = self._counts.get((project, model, metric))
        if entry is None or entry[0] != window(metric, now)[0]:
            return 0
        return int(entry[1])

    def spent_until(
        self, project: str, model: str, limits: Mapping[LimitId, QuotaLimit], policy: Policy, replicas: int, now: float
    ) -> float:
        """0 when the project may take one more request for ``model``; else when its spent window resets.

        Pacing before the 429: with a known requests-per-minute or per-day
        limit, this replica leases up to its share of it (``leasing.share``,
        split across the live replicas like every per-key budget).
        """
        if not project:
            return 0.0
        for metric in PACED:
            limit, _ = effective_limit(limits.get(LimitId(project, model, metric.value)), policy, metric)
            if limit and self.used(project, model, metric, now) >= share(limit, replicas):
                return window(metric, now)[1]
        return 0.0

    def projects(self) -> Iterable[tuple[str, str]]:
        return {(project, model) for project, model, _ in self._counts}


@dataclass(frozen=True, slots=True)
class QuotaRow:
    """One (pool, project, model, metric) as the admin API and the metrics show it."""

    pool: str
    project: str
    model: str
    metric: QuotaMetric
    limit: int
    source: str  # "learnt" or "operator"
    learnt_at: float
    used: int  # this replica's use in the current window
    share: int  # this replica's part of the limit (split across live replicas)
    resets_at: float

    @property
    def remaining(self) -> int:
        return max(self.share - self.used, 0)


def quota_rows(
    pools: Mapping[str, Pool],
    keys: Iterable[UpstreamKey],
    limits: Mapping[LimitId, QuotaLimit],
    counter: QuotaCounter,
    replicas: int,
    now: float,
    pool: str = "",
    project: str = "",
) -> list[QuotaRow]:
    """Every known limit of the projects of each pool's keys (learnt, or an operator's for a model in use)."""
    projects_by_pool: dict[str, set[str]] = defaultdict(set)
    for key in keys:
        if key.project and (not pool or key.pool == pool) and (not project or key.project == project):
            projects_by_pool[key.pool].add(key.project)
    learnt_models: dict[str, set[str]] = defaultdict(set)
    for limit_id in limits:
        learnt_models[limit_id.project].add(limit_id.model)
    for used_project, used_model in counter.projects():
        learnt_models[used_project].add(used_model)
    rows: list[QuotaRow] = []
    for pool_name in sorted(projects_by_pool):
        record_pool = pools.get(pool_name)
        if record_pool is None:
            continue
        for name in sorted(projects_by_pool[pool_name]):
            for model in sorted(learnt_models.get(name, ())):
                if not record_pool.allows(model):
                    continue
                for metric in QuotaMetric:
                    record = limits.get(LimitId(name, model, metric.value))
                    limit, source = effective_limit(record, record_pool.policy, metric)
                    if limit is None:
                        continue
                    rows.append(
                        QuotaRow(
                            pool_name,
                            name,
                            model,
                            metric,
                            limit,
                            source,
                            record.learnt_at if record is not None else 0.0,
                            counter.used(name, model, metric, now),
                            share(limit, replicas),
                            window(metric, now)[1],
                        )
                    )
    return rows
