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

Pacing (``QuotaCounter``): each replica counts its own leases per (project,
model) and window and leases up to its share of a known limit: requests at
lease; input tokens reserved at lease from the edge's estimate
(``AcquireRequest.estimated_input_tokens``) and corrected at release from the
answer's usageMetadata.

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
from .models import LimitId, Outcome, Policy, Pool, QuotaLimit, QuotaViolation, Transport, UpstreamKey

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


_PER_DAY = frozenset(metric for metric in QuotaMetric if metric.per_day)
_TOKEN_METRICS = tuple(metric for metric in QuotaMetric if metric.tokens)
_REQUEST_METRICS = tuple(metric for metric in QuotaMetric if not metric.tokens)

# The metrics keyring paces before the 429: requests counted at lease time; input tokens reserved at lease
# time (the edge's estimate) and corrected at release (the answer's usageMetadata).
PACED = (QuotaMetric.REQUESTS_PER_DAY, QuotaMetric.REQUESTS_PER_MINUTE)
PACED_TOKENS = (QuotaMetric.INPUT_TOKENS_PER_DAY, QuotaMetric.INPUT_TOKENS_PER_MINUTE)
# A reservation whose release never came (an expired lease, a cancelled call) is forgotten after this long.
RESERVATION_S = 3600.0


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


def has_operator_limits(policy: Policy) -> bool:
    """Whether the pool's policy sets any limit itself (then pacing applies before anything is learnt)."""
    return any(getattr(policy, name) for name in _OPERATOR_FIELDS.values())


def effective_limit(record: QuotaLimit | None, policy: Policy, metric: QuotaMetric) -> tuple[int | None, str]:
    """The limit in force and where it comes from ("operator", "learnt"; None: unknown)."""
    if own := operator_limit(policy, metric):
        return own, "operator"
    if record is not None:
        return record.limit, "learnt"
    return None, ""


_pacific_day = (0.0, 0.0)  # the last Pacific day ``window`` computed: every lease asks for it, it changes daily


def window(metric: QuotaMetric, now: float) -> tuple[float, float]:
    """The window ``now`` falls in: (start, reset)."""
    global _pacific_day
    if metric in _PER_DAY:
        if not _pacific_day[0] <= now < _pacific_day[1]:
            local = dt.datetime.fromtimestamp(now, PACIFIC)
            midnight = dt.datetime.combine(local.date(), dt.time(0, 0), tzinfo=PACIFIC)
            following = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0, 0), tzinfo=PACIFIC)
            _pacific_day = (midnight.timestamp(), following.timestamp())
        return _pacific_day
    minute = math.floor(now / 60.0) * 60.0
    return minute, minute + 60.0


class QuotaCounter:
    """This replica's use of each (project, model) per window.

    Requests count at lease. Input tokens are reserved at lease (``reserve``:
    the edge's estimate of the call's input) and corrected at release
    (``settle``: the tokens the answer's usageMetadata counted, nothing for a
    refused call), in the windows the call was leased in: the upstream counts
    a call when it admits it.
    """

    def __init__(self) -> None:
        # (project, model, metric) -> (window start, amount)
        self._counts: dict[tuple[str, str, QuotaMetric], list[float]] = defaultdict(lambda: [0.0, 0.0])
        # lease id -> (project, model, leased at, input tokens reserved)
        self._reserved: dict[str, tuple[str, str, float, int]] = {}
        self._pruned_at = 0.0

    def reserve(self, lease_id: str, project: str, model: str, now: float, input_tokens: int = 0) -> None:
        """A granted call: one request, and its estimated input tokens until its release tells the real count."""
        self.add(project, model, now, requests=1, input_tokens=input_tokens)
        if not project or input_tokens <= 0:
            return
        self._reserved[lease_id] = (project, model, now, input_tokens)
        if now - self._pruned_at >= 60.0:
            self._pruned_at = now
            for old in [lease for lease, entry in self._reserved.items() if entry[2] + RESERVATION_S < now]:
                del self._reserved[old]

    def settle(self, lease_id: str, project: str, model: str, outcome: Outcome, now: float) -> None:
        """A released call's input tokens replace its reservation, in the windows it was leased in if still current.

        A success counts its usageMetadata's input tokens (the estimate stands
        when the answer told none, e.g. a compressed stream); a 429 was refused
        and consumed nothing; any other failure keeps the estimate (unknown).
        A call released without a reservation (no estimate was sent) counts
        its input tokens now.
        """
        reserved = self._reserved.pop(lease_id, None)
        ok = outcome.succeeded
        if reserved is None:
            if ok and outcome.input_tokens:
                self.add(project, model, now, input_tokens=outcome.input_tokens)
            return
        project, model, leased_at, estimate = reserved
        if ok:
            real = outcome.input_tokens or estimate
        else:
            real = 0 if outcome.http_status == 429 and outcome.transport is Transport.OK else estimate
        if real == estimate:
            return
        for metric in PACED_TOKENS:
            start = window(metric, now)[0]
            if window(metric, leased_at)[0] == start:
                entry = self._counts[(project, model, metric)]
                if entry[0] == start:
                    entry[1] = max(entry[1] + real - estimate, 0.0)

    def add(self, project: str, model: str, now: float, requests: int = 0, input_tokens: int = 0) -> None:
        if not project:
            return
        if requests:
            for metric in _REQUEST_METRICS:
                self._add(project, model, metric, now, requests)
        if input_tokens:
            for metric in _TOKEN_METRICS:
                self._add(project, model, metric, now, input_tokens)

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
        self,
        project: str,
        model: str,
        limits: Mapping[LimitId, QuotaLimit],
        policy: Policy,
        replicas: int,
        now: float,
        input_tokens: int = 0,
    ) -> float:
        """0 when the project may take one more request for ``model``; else when its spent window resets.

        Pacing before the 429: with a known requests-per-minute or per-day
        limit, this replica leases up to its share of it (``leasing.share``,
        split across the live replicas like every per-key budget). With a
        known input-tokens limit, a call of ``input_tokens`` (the edge's
        estimate) is leased while it fits in the share's rest; a window's first
        call always fits (a call larger than the share but not than the
        limit would otherwise never be served). A call larger than a known
        tokens-per-minute limit is not paced by it (see ``too_large``).
        """
        if not project:
            return 0.0
        for metric in PACED:
            limit, _ = effective_limit(limits.get(LimitId(project, model, metric.value)), policy, metric)
            if limit and self.used(project, model, metric, now) >= share(limit, replicas):
                return window(metric, now)[1]
        for metric in PACED_TOKENS:
            limit, _ = effective_limit(limits.get(LimitId(project, model, metric.value)), policy, metric)
            if not limit or (input_tokens > limit and not metric.per_day):
                continue
            used = self.used(project, model, metric, now)
            if used and used + max(input_tokens, 1) > share(limit, replicas):
                return window(metric, now)[1]
        return 0.0

    @staticmethod
    def too_large(project: str, model: str, limits: Mapping[LimitId, QuotaLimit], policy: Policy, tokens: int) -> bool:
        """Whether a call's estimated input alone exceeds the project's known tokens-per-minute limit.

        No window of that project will admit it: the allocator prefers another
        project, and leases such a project only when no other is left, so the
        upstream's answer blames the request (``answers.classify``:
        REQUEST_AT_FAULT, nothing cooled), as before pacing.
        """
        if not project or tokens <= 0:
            return False
        metric = QuotaMetric.INPUT_TOKENS_PER_MINUTE
        limit, _ = effective_limit(limits.get(LimitId(project, model, metric.value)), policy, metric)
        return limit is not None and 0 < limit < tokens

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
