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
(``AcquireRequest.estimated_input_tokens``, clamped by keyring: an edge is
trusted as far as a lease) and settled at release to what the answer counted
(``settled_input``: nothing for a refused or cancelled call), so requests
the upstream refuses cannot pace a project's other tenants out. Counters
exist only for models the upstream served and only while a window of theirs
is current (``QuotaCounter``): client-chosen model ids leave no trace.

Windows: per-minute limits count in fixed epoch minutes (Google's windows
are rolling; a fixed minute errs at most one window's worth), per-day limits
from Pacific midnight to Pacific midnight (when Gemini resets them).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.common.answers import pacific_day

from .leasing import credit_room, share
from .models import LimitId, Outcome, Policy, Pool, QuotaLimit, QuotaViolation, Transport, UpstreamKey
from .tiers import FLEX, PRIORITY, STANDARD, class_model, service_class, split

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
    """Which metric a violation's quotaId names (read by ``answers.QuotaViolation``: one reading of a quotaId)."""
    tokens = violation.counts_tokens
    if not tokens and not violation.counts_requests:
        return None
    if violation.per_minute:
        return QuotaMetric.INPUT_TOKENS_PER_MINUTE if tokens else QuotaMetric.REQUESTS_PER_MINUTE
    if violation.per_day:
        return QuotaMetric.INPUT_TOKENS_PER_DAY if tokens else QuotaMetric.REQUESTS_PER_DAY
    return None


def learnt(
    outcome: Outcome, project: str, model: str, now: float, known: dict[LimitId, QuotaLimit], service_tier: str = ""
) -> list[QuotaLimit]:
    """The limits an answer tells that the view does not know yet (or knew long ago); none without a project.

    A flex or priority call's 429 tells its class's limits (``tiers.class_model``), never standard's.
    """
    if not project or not outcome.violations:
        return []
    found: list[QuotaLimit] = []
    for violation in outcome.violations:
        metric, limit = metric_of(violation), violation.limit
        if metric is None or limit is None:
            continue
        limit_id = LimitId(project, class_model(violation.dimension("model") or model, service_tier), metric.value)
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


# Google's priority tier has its own limit, this share of the standard one (and counts against standard too).
PRIORITY_SHARE = 0.3
_PRIORITY_LEASE = "#priority"
_NO_OPERATOR_LIMITS = {name: 0 for name in _OPERATOR_FIELDS.values()}


def priority_model(model: str) -> str:
    """What priority calls of ``model`` are counted under (their own limit; rows show it as such)."""
    return class_model(model, PRIORITY)


def priority_limits(
    project: str, model: str, limits: Mapping[LimitId, QuotaLimit], policy: Policy
) -> tuple[dict[LimitId, QuotaLimit], Policy]:
    """Priority's limits for (project, model): a limit a priority 429 told (learnt under ``priority_model``) for
    a metric, else ``PRIORITY_SHARE`` of the standard one, learnt or the operator's."""
    own_model = priority_model(model)
    told: dict[LimitId, QuotaLimit] = {}
    scaled: dict[LimitId, QuotaLimit] = {}
    operator: dict[str, int] = {}
    for metric in QuotaMetric:
        own_id = LimitId(project, own_model, metric.value)
        if (record := limits.get(own_id)) is not None:
            told[own_id] = record
        elif (record := limits.get(LimitId(project, model, metric.value))) is not None and record.limit > 0:
            scaled[own_id] = dataclasses.replace(record, limit=max(int(record.limit * PRIORITY_SHARE), 1))
        if name := _OPERATOR_FIELDS.get(metric):
            value = getattr(policy, name)
            operator[name] = max(int(value * PRIORITY_SHARE), 1) if value and own_id not in told else 0
    return {**scaled, **told}, dataclasses.replace(policy, **operator)


def class_limits(
    project: str, name: str, limits: Mapping[LimitId, QuotaLimit], policy: Policy
) -> tuple[Mapping[LimitId, QuotaLimit], Policy]:
    """The limits in force for a class model (``tiers.class_model``): standard's are the view's and the pool's;
    priority's ``priority_limits``; flex's only what flex 429s told (the pool's quota_* are standard's)."""
    model, tier = split(name)
    if tier == PRIORITY:
        return priority_limits(project, model, limits, policy)
    if tier == FLEX:
        return limits, dataclasses.replace(policy, **_NO_OPERATOR_LIMITS)
    return limits, policy


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
            _pacific_day = pacific_day(now)
        return _pacific_day
    minute = math.floor(now / 60.0) * 60.0
    return minute, minute + 60.0


@dataclass(slots=True)
class _Reservation:
    project: str
    model: str
    leased_at: float
    input_tokens: int  # the edge's estimate, reserved in the windows of ``leased_at``


# The outcome of a credit no call used (``QuotaCounter.refund``): nothing consumed upstream.
_NO_CALL = Outcome(0, Transport.UNUSED)


@dataclass(slots=True)
class _Use:
    """One (project, model)'s counts on this replica."""

    windows: dict[QuotaMetric, list[float]] = field(default_factory=dict)  # metric -> [window start, amount]
    served: bool = False  # the upstream answered for the model (a 2xx or a 429): a quota row, kept until pruned
    in_flight: int = 0  # reservations not settled yet

    def ended(self, now: float) -> bool:
        """Every window it counted in has ended."""
        return all(entry[0] != window(metric, now)[0] for metric, entry in self.windows.items())


def _correct(use: _Use, reserved: _Reservation, metrics: Iterable[QuotaMetric], delta: float, now: float) -> None:
    """Add ``delta`` to ``metrics`` in the windows ``reserved`` was counted in, those still current (never below 0)."""
    for metric in metrics:
        start = window(metric, now)[0]
        entry = use.windows.get(metric)
        if entry is not None and entry[0] == start and window(metric, reserved.leased_at)[0] == start:
            entry[1] = max(entry[1] + delta, 0.0)


def settled_input(outcome: Outcome, estimate: int) -> int:
    """The input tokens a released call consumed upstream, as far as its answer tells.

    A 2xx: its usageMetadata's count (the estimate when it told none, e.g. a
    compressed stream). Any other answer (a 429 included) and a cancel
    (the client gone): what the answer counted, nothing when it counted
    nothing; so requests the upstream refuses cost no other tenant of the
    project anything. A timeout or a broken connection: unknown, the
    estimate stands (the upstream may have admitted the call).
    """
    if outcome.succeeded:
        return outcome.input_tokens or estimate
    if outcome.transport in (Transport.OK, Transport.CANCELLED, Transport.UNUSED):
        return outcome.input_tokens
    return estimate


def upstream_served(outcome: Outcome) -> bool:
    """Whether the upstream answered for the model (a 2xx, or a 429: a quota it counts); a 404 for a
    client-chosen id is not, so that id never becomes a quota row or a metric series."""
    return outcome.transport is Transport.OK and (outcome.succeeded or outcome.http_status == 429)


class QuotaCounter:
    """This replica's use of each (project, model) per window.

    Requests count at lease. Input tokens are reserved at lease (``reserve``:
    the edge's estimate of the call's input) and settled at release
    (``settle``: to ``settled_input``), in the windows the call was leased
    in: the upstream counts a call when it admits it.

    Bounded by what the upstream served: a (project, model) counts from its
    first lease, but is shown (``projects``, the quota rows and metrics) only
    once the upstream answered for it (``upstream_served``); one it never
    served is forgotten when its last lease ends, and every one when all its
    windows have ended (``prune``, at most once a minute).
    """

    def __init__(self) -> None:
        self._uses: dict[tuple[str, str], _Use] = {}
        self._reserved: dict[str, _Reservation] = {}  # lease id -> its reservation (leases with a project)
        self._pruned_at = 0.0

    def __len__(self) -> int:
        """The (project, model) pairs counted (shown or not)."""
        return len(self._uses)

    def reserve(
        self, lease_id: str, project: str, model: str, now: float, input_tokens: int = 0, service_tier: str = ""
    ) -> None:
        """A granted call: one request, and its estimated input tokens until its release tells the real count.

        Counted in its class (``tiers.class_model``): a priority call twice, against the standard limit and
        against priority's own (``priority_model``); a flex call against flex's only.
        """
        if not project:
            return
        tier = service_class(service_tier)
        if tier == PRIORITY:
            self.reserve(lease_id + _PRIORITY_LEASE, project, priority_model(model), now, input_tokens)
        elif tier == FLEX:
            model = class_model(model, FLEX)
        self.prune(now)
        use = self._uses.get((project, model))
        if use is None:
            use = self._uses[(project, model)] = _Use()
        use.in_flight += 1
        self._count(use, now, requests=1, input_tokens=input_tokens)
        self._reserved[lease_id] = _Reservation(project, model, now, input_tokens)

    def settle(self, lease_id: str, project: str, model: str, outcome: Outcome, now: float) -> None:
        """A released call's input tokens replace its reservation (``settled_input``), in the windows it was
        leased in if still current. A call released without a reservation (its lease expired first) counts
        a success's input tokens now."""
        reserved = self._reserved.pop(lease_id, None)
        if reserved is None:
            if outcome.succeeded and outcome.input_tokens:
                self.add(project, model, now, input_tokens=outcome.input_tokens)
            return
        self._settle(reserved, outcome, now)
        if (linked := self._reserved.pop(lease_id + _PRIORITY_LEASE, None)) is not None:
            self._settle(linked, outcome, now)

    def _settle(self, reserved: _Reservation, outcome: Outcome, now: float) -> None:
        use = self._uses.get((reserved.project, reserved.model))
        if use is None:
            return
        use.served = use.served or upstream_served(outcome)
        real, estimate = settled_input(outcome, reserved.input_tokens), reserved.input_tokens
        if real != estimate:
            _correct(use, reserved, PACED_TOKENS, real - estimate, now)
        self._ended(reserved, use)

    def refund(self, lease_id: str, now: float) -> None:
        """A credit released unused: settled as a call that consumed nothing (its reserved input tokens taken
        back), and its request taken back too, in the windows it was leased in if still current."""
        for key in (lease_id, lease_id + _PRIORITY_LEASE):
            reserved = self._reserved.pop(key, None)
            if reserved is None:
                continue
            if (use := self._uses.get((reserved.project, reserved.model))) is not None:
                _correct(use, reserved, PACED, -1, now)
            self._settle(reserved, _NO_CALL, now)

    def expired(self, lease_id: str) -> None:
        """A lease reclaimed unreleased: its estimate stands (the upstream may have counted it), its
        reservation is forgotten."""
        for key in (lease_id, lease_id + _PRIORITY_LEASE):
            reserved = self._reserved.pop(key, None)
            if reserved is not None and (use := self._uses.get((reserved.project, reserved.model))) is not None:
                self._ended(reserved, use)

    def _ended(self, reserved: _Reservation, use: _Use) -> None:
        use.in_flight -= 1
        if not use.served and use.in_flight <= 0:
            del self._uses[(reserved.project, reserved.model)]

    def prune(self, now: float) -> None:
        """Forget (at most once a minute) the pairs whose windows all ended and that no lease holds, and
        reservations older than ``RESERVATION_S`` (a release that never came)."""
        if now - self._pruned_at < 60.0:
            return
        self._pruned_at = now
        for old in [lease for lease, entry in self._reserved.items() if entry.leased_at + RESERVATION_S < now]:
            self.expired(old)
        for pair in [pair for pair, use in self._uses.items() if not use.in_flight and use.ended(now)]:
            del self._uses[pair]

    def add(self, project: str, model: str, now: float, requests: int = 0, input_tokens: int = 0) -> None:
        """Count what the upstream served for a (project, model), with no lease to settle."""
        if not project:
            return
        use = self._uses.get((project, model))
        if use is None:
            use = self._uses[(project, model)] = _Use()
        use.served = True
        self._count(use, now, requests, input_tokens)

    @staticmethod
    def _count(use: _Use, now: float, requests: int, input_tokens: int) -> None:
        for metrics, amount in ((_REQUEST_METRICS, requests), (_TOKEN_METRICS, input_tokens)):
            if not amount:
                continue
            for metric in metrics:
                start, _ = window(metric, now)
                entry = use.windows.get(metric)
                if entry is None:
                    entry = use.windows[metric] = [start, 0.0]
                if entry[0] != start:
                    entry[0], entry[1] = start, 0.0
                entry[1] += amount

    def used(self, project: str, model: str, metric: QuotaMetric, now: float) -> int:
        use = self._uses.get((project, model))
        entry = use.windows.get(metric) if use is not None else None
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
        credit: bool = False,
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

        ``credit`` (a lease asked ahead of need, issue 23): a per-minute share
        counts as its first half (``leasing.credit_room``), with no first-call
        or too-large exception: near the limit, calls are leased for themselves.
        """
        if not project:
            return 0.0
        for metric in PACED:
            limit, _ = effective_limit(limits.get(LimitId(project, model, metric.value)), policy, metric)
            if not limit:
                continue
            room = share(limit, replicas)
            if credit and not metric.per_day:
                room = credit_room(room)
            if self.used(project, model, metric, now) >= room:
                return window(metric, now)[1]
        for metric in PACED_TOKENS:
            limit, _ = effective_limit(limits.get(LimitId(project, model, metric.value)), policy, metric)
            halved = credit and not metric.per_day
            if not limit or (input_tokens > limit and not metric.per_day and not halved):
                continue
            used, room = self.used(project, model, metric, now), share(limit, replicas)
            if halved:
                room = credit_room(room)
            if (used or halved) and used + max(input_tokens, 1) > room:
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
        """The (project, model) pairs the upstream served (those with quota rows)."""
        return [pair for pair, use in self._uses.items() if use.served]


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
    service_tier: str = STANDARD  # the class whose own limit this is (``model`` is then "<model>@<tier>")

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
    """Every known limit of the projects of each pool's keys (learnt, or an operator's for a model the upstream
    served in a current window: ``QuotaCounter.projects``)."""
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
                asked, tier = split(model)
                if not record_pool.allows(asked):
                    continue
                in_force, policy = class_limits(name, model, limits, record_pool.policy)
                for metric in QuotaMetric:
                    record = in_force.get(LimitId(name, model, metric.value))
                    limit, source = effective_limit(record, policy, metric)
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
                            tier,
                        )
                    )
    return rows
