"""Per-(project, model) quotas enforced the way Google does: requests per minute, input tokens per
minute, requests per day, plus an optional spend limit per project.

Plain Python (no aiohttp) so tests drive it directly. Nothing is enforced until a rule is set.

Windows are **fixed**: a minute window starts at every multiple of `window_s` seconds since the
epoch (Google's per-minute quotas behave like per-minute buckets: a spent minute frees at once
when the next one starts), the day resets at midnight US Pacific, the spend window is a fixed
window of `spend_window_s` (10 minutes). A refused request consumes nothing. The clock is
`time.time()` plus an offset that `advance` moves, so tests cross windows without waiting.

Service classes (`service_tier`, December 2026 notes): each class of a (project, model) has its own
limits and counts. Priority's are `PRIORITY_SHARE` (0.3x) of the rule's and a priority call also
counts against standard; flex's are the rule's numbers, counted apart from standard. A refusal
names the class's quota (`-Priority`, `-Flex` quotaIds), so a 429 of one class is that class's only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

PER_MINUTE_QUOTA_ID: Final = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
PER_DAY_QUOTA_ID: Final = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
TOKENS_PER_MINUTE_QUOTA_ID: Final = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
REQUESTS_METRIC: Final = "generate_content_free_tier_requests"
INPUT_TOKENS_METRIC: Final = "generate_content_free_tier_input_token_count"
PACIFIC: Final = ZoneInfo("America/Los_Angeles")
#: Priority's own limits are this share of the standard ones (December 2026 notes).
PRIORITY_SHARE: Final = 0.3
#: The classes with their own limits and counts, and the quotaId suffix of their violations.
CLASS_QUOTA_SUFFIX: Final = {"priority": "-Priority", "flex": "-Flex"}


@dataclass(slots=True)
class QuotaRule:
    """Limits for a (project, model) scope; a None field inherits from a wider scope.

    `available=False` is a model the project's tier does not offer (every metric's limit is 0);
    `spend_budget_usd` (per project, per spend window) is spent at `usd_per_mtok` per million input tokens.
    """

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    retry_info: bool | None = None
    available: bool | None = None
    spend_budget_usd: float | None = None
    usd_per_mtok: float | None = None

    FIELDS = ("rpm", "tpm", "rpd", "retry_info", "available", "spend_budget_usd", "usd_per_mtok")

    def update(self, data: dict[str, Any]) -> None:
        """Set the given fields (null clears one: inherit again); type-checked."""
        for name in self.FIELDS:
            if name not in data:
                continue
            value = data[name]
            if value is not None:
                if name in ("rpm", "tpm", "rpd"):
                    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                        raise ValueError(f"{name!r} must be a non-negative integer or null")
                elif name in ("retry_info", "available"):
                    if not isinstance(value, bool):
                        raise ValueError(f"{name!r} must be a boolean or null")
                elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name!r} must be a non-negative number or null")
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True, slots=True)
class Violation:
    """One violated quota, as QuotaFailure lists it."""

    metric: str
    quota_id: str
    value: str


#: Names Google serves with another model (December 2026 notes): retired on 2026-12-01 by serving a newer model
#: under the old name (billed and limited as the new one), and the `-latest` aliases. Only `modelVersion` and a
#: QuotaFailure's `model` dimension tell. `SimulatorState.served_as` starts as this table.
SERVED_AS: Final[dict[str, str]] = {
    "gemini-2.5-pro": "gemini-3.8-flash",
    "gemini-2.5-flash": "gemini-3.5-flash-lite",
    "gemini-pro-latest": "gemini-3.1-pro-preview",
    "gemini-flash-latest": "gemini-3.8-flash",
    "gemini-flash-lite-latest": "gemini-3.5-flash-lite",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: quota violations, a spent budget (`spend`) or a depleted prepay (`depleted`)."""

    kind: Literal["quota", "spend", "depleted"]
    violations: list[Violation]
    #: Seconds until the violated windows free (None: no RetryInfo to send).
    retry_s: float | None


@dataclass(slots=True)
class _Usage:
    minute: int = -1
    minute_requests: int = 0
    minute_tokens: int = 0
    day: str = ""
    day_requests: int = 0


@dataclass(slots=True)
class QuotaBook:
    """Rules per (project|None, model|None) scope and usage per (project, model)."""

    window_s: float = 60.0
    spend_window_s: float = 600.0
    offset_s: float = 0.0
    rules: dict[tuple[str | None, str | None], QuotaRule] = field(default_factory=dict)
    usage: dict[tuple[str, str], _Usage] = field(default_factory=dict)
    spend: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: project -> billing account (Google's: tiers, spend caps and prepay are the account's); absent: its own.
    accounts: dict[str, str] = field(default_factory=dict)
    #: billing accounts whose prepaid credits are spent: every generation of every project of them answers 402.
    depleted: set[str] = field(default_factory=set)
    #: payer (billing account, else project) -> its Gemini tier (1 when absent): priority is Tier 2/3's only.
    tiers: dict[str, int] = field(default_factory=dict)
    #: Whether Google has priority capacity now; False: every priority call is served (downgraded) as standard.
    priority_capacity: bool = True
    #: (project, model) pairs refused as "no longer available to new users" (a retired model the project never used).
    gone: set[tuple[str, str]] = field(default_factory=set)

    def served_tier(self, project: str, asked: str) -> str:
        """The tier a call asking ``asked`` is served at ("" when it asked none): priority only on a Tier 2/3
        account with capacity, else standard (``x-gemini-service-tier`` says so)."""
        if asked == "priority":
            return "priority" if self.tiers.get(self.payer(project), 1) >= 2 and self.priority_capacity else "standard"
        return asked

    def payer(self, project: str) -> str:
        """Who pays for `project`: its billing account, else the project alone (spend windows are the payer's)."""
        return self.accounts.get(project, project)

    # -- time --------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        """Move the simulator's quota clock forward (or back)."""
        self.offset_s += seconds

    def _minute(self, now: float) -> int:
        return math.floor(now / self.window_s)

    def _minute_left(self, now: float) -> float:
        return (self._minute(now) + 1) * self.window_s - now

    @staticmethod
    def _day(now: float) -> str:
        return datetime.fromtimestamp(now, PACIFIC).date().isoformat()

    @staticmethod
    def _day_left(now: float) -> float:
        local = datetime.fromtimestamp(now, PACIFIC)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), PACIFIC)
        return midnight.timestamp() - now

    # -- rules -------------------------------------------------------------

    def set_rule(self, project: str | None, model: str | None, data: dict[str, Any]) -> QuotaRule:
        rule = self.rules.get((project, model)) or QuotaRule()
        rule.update(data)
        self.rules[(project, model)] = rule
        return rule

    def effective(self, project: str, model: str | None) -> QuotaRule:
        """Each field from the most specific scope that sets it: (p, m), (p, *), (*, m), (*, *)."""
        out = QuotaRule()
        for scope in ((project, model), (project, None), (None, model), (None, None)):
            rule = self.rules.get(scope)
            if rule is None:
                continue
            for f in fields(QuotaRule):
                if getattr(out, f.name) is None:
                    setattr(out, f.name, getattr(rule, f.name))
        return out

    def clear(self) -> None:
        """Forget rules and usage (window sizes and the clock stay)."""
        self.rules.clear()
        self.usage.clear()
        self.spend.clear()
        self.accounts.clear()
        self.depleted.clear()
        self.tiers.clear()
        self.priority_capacity = True
        self.gone.clear()

    # -- enforcement -------------------------------------------------------

    def _current(self, project: str, model: str, now: float) -> _Usage:
        usage = self.usage.setdefault((project, model), _Usage())
        minute, day = self._minute(now), self._day(now)
        if usage.minute != minute:
            usage.minute, usage.minute_requests, usage.minute_tokens = minute, 0, 0
        if usage.day != day:
            usage.day, usage.day_requests = day, 0
        return usage

    def _spent(self, project: str, now: float) -> float:
        window = math.floor(now / self.spend_window_s)
        spent_window, spent = self.spend.get(project, (window, 0.0))
        return spent if spent_window == window else 0.0

    def admit(self, project: str, model: str | None, tokens: int, tier: str = "") -> Refusal | None:
        """Count a generation request of `tokens` input tokens, or say why it is refused (then nothing counts).

        `tier`: the class the call is served at ("", "standard", "flex", "priority"): flex and priority are
        limited and counted in their own class (module docstring), priority against standard too.
        """
        if model is not None and self.payer(project) in self.depleted:
            return Refusal("depleted", [], None)
        if not self.rules or model is None:
            return None
        now = self.now()
        rule = self.effective(project, model)
        retry = rule.retry_info is not False
        minute_left = self._minute_left(now)
        if rule.available is False:
            zero = [
                Violation(REQUESTS_METRIC, PER_DAY_QUOTA_ID, "0"),
                Violation(REQUESTS_METRIC, PER_MINUTE_QUOTA_ID, "0"),
                Violation(INPUT_TOKENS_METRIC, TOKENS_PER_MINUTE_QUOTA_ID, "0"),
            ]
            return Refusal("quota", zero, minute_left if retry else None)
        suffix = CLASS_QUOTA_SUFFIX.get(tier)
        counted: list[_Usage] = []
        if suffix is not None:  # the class's own limits first: its refusal is the class's
            limits = _class_rule(rule, tier)
            own = self._current(project, f"{model}@{tier}", now)
            refusal = self._refusal(limits, own, tokens, now, retry, suffix)
            if refusal is not None:
                return refusal
            counted.append(own)
        if tier != "flex":
            usage = self._current(project, model, now)
            refusal = self._refusal(rule, usage, tokens, now, retry, "")  # standard's own quota
            if refusal is not None:
                return refusal
            counted.append(usage)
        cost = 0.0
        if rule.spend_budget_usd is not None:
            price = 1.0 if rule.usd_per_mtok is None else rule.usd_per_mtok
            cost = tokens * price / 1_000_000
            if self._spent(self.payer(project), now) + cost > rule.spend_budget_usd:
                left = (math.floor(now / self.spend_window_s) + 1) * self.spend_window_s - now
                return Refusal("spend", [], left if retry else None)
        for usage in counted:
            usage.minute_requests += 1
            usage.minute_tokens += tokens
            usage.day_requests += 1
        if cost:
            payer = self.payer(project)
            self.spend[payer] = (math.floor(now / self.spend_window_s), self._spent(payer, now) + cost)
        return None

    def _refusal(
        self, rule: QuotaRule, usage: _Usage, tokens: int, now: float, retry: bool, suffix: str
    ) -> Refusal | None:
        """The violations one more request of `tokens` would make of `rule` in `usage`'s windows (None: fits).

        `suffix`: the class's quotaId suffix ("" for standard), named by the violations a class call makes.
        """
        violations: list[Violation] = []
        frees: list[float] = []
        minute_left = self._minute_left(now)
        if rule.rpd is not None and usage.day_requests + 1 > rule.rpd:
            violations.append(Violation(REQUESTS_METRIC, _classed(PER_DAY_QUOTA_ID, suffix), str(rule.rpd)))
            frees.append(self._day_left(now))
        if rule.rpm is not None and usage.minute_requests + 1 > rule.rpm:
            violations.append(Violation(REQUESTS_METRIC, _classed(PER_MINUTE_QUOTA_ID, suffix), str(rule.rpm)))
            frees.append(minute_left)
        if rule.tpm is not None and usage.minute_tokens + tokens > rule.tpm:
            quota_id = _classed(TOKENS_PER_MINUTE_QUOTA_ID, suffix)
            violations.append(Violation(INPUT_TOKENS_METRIC, quota_id, str(rule.tpm)))
            frees.append(minute_left)
        if violations:
            return Refusal("quota", violations, max(frees) if retry else None)
        return None

    # -- reporting ---------------------------------------------------------

    def snapshot(self, project: str | None = None) -> dict[str, Any]:
        """Rules, settings and current usage (of one project, or all), for the control API."""
        now = self.now()
        used: dict[str, dict[str, Any]] = {}
        for p, m in list(self.usage):
            if project is not None and p != project:
                continue
            u = self._current(p, m, now)
            rule = self.effective(p, m)
            used.setdefault(p, {})[m] = {
                "minute": {
                    "requests": u.minute_requests,
                    "tokens": u.minute_tokens,
                    "resets_in_s": round(self._minute_left(now), 3),
                },
                "day": {"requests": u.day_requests, "date": u.day, "resets_in_s": round(self._day_left(now), 3)},
                "limits": rule.to_dict(),
            }
        spend = {p: round(self._spent(p, now), 9) for p in self.spend if project is None or p == project}
        return {
            "now": now,
            "window_s": self.window_s,
            "spend_window_s": self.spend_window_s,
            "rules": [
                {"project": p, "model": m, **r.to_dict()}
                for (p, m), r in self.rules.items()
                if project is None or p in (None, project)
            ],
            "usage": used,
            "spend_usd": spend,
            "accounts": dict(self.accounts),
            "depleted": sorted(self.depleted),
            "tiers": dict(self.tiers),
            "priority_capacity": self.priority_capacity,
            "gone": [{"project": p, "model": m} for p, m in sorted(self.gone)],
        }


def _class_rule(rule: QuotaRule, tier: str) -> QuotaRule:
    """A class's own limits: priority's `PRIORITY_SHARE` of the rule's (at least 1 where the rule allows any),
    flex's the rule's numbers (its own counts)."""
    if tier != "priority":
        return rule

    def share(value: int | None) -> int | None:
        return max(int(value * PRIORITY_SHARE), 1) if value else value

    return dataclasses.replace(rule, rpm=share(rule.rpm), tpm=share(rule.tpm), rpd=share(rule.rpd))


def _classed(quota_id: str, suffix: str) -> str:
    """A class's quotaId: the standard one with the class's suffix in place of the tier's ("-FreeTier")."""
    return quota_id.replace("-FreeTier", suffix) if suffix else quota_id
