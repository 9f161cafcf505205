"""Keyring's records: immutable, and each remembers the store revision it was read at.

Times are float seconds on the wall clock (``time.time()``), because they are
shared between replicas through the store. The ``revision`` of a record is
the store's mod_revision of its last write (0 = not stored yet); the next
guarded write of that record expects it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from services.common.answers import AnswerKind, classify
from services.common.answers import QuotaViolation as QuotaViolation
from services.common.answers import Transport as Transport  # the one enum of how a call ended


class KeyState(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # a 403: out until state_until, then tried again
    INVALID = "invalid"  # API_KEY_INVALID / 401 / repeated 403: out until revived
    DISABLED = "disabled"  # by an operator


class Strategy(enum.StrEnum):
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    WEIGHTED = "weighted"
    LEAST_LOADED = "least_loaded"


class CooldownScope(enum.StrEnum):
    KEY = "key"
    PROJECT = "project"
    ACCOUNT = "account"  # a billing account: every project of it (issue 21)


class CooldownReason(enum.StrEnum):
    RATE_LIMIT = "rate_limit"
    DAILY_QUOTA = "daily_quota"
    SERVER_ERROR = "server_error"
    # A fact, not a backoff: the model is not on the project's tier (quotaValue "0"), until the daily reset.
    NOT_ON_TIER = "not_on_tier"
    # A billing tier's spend limit: the whole project (every model) for the limit's window.
    SPEND_LIMIT = "spend_limit"
    # A 402: the billing account's prepaid credits are spent; every project of it until topped up (issue 21).
    BILLING_DEPLETED = "billing_depleted"
    # A 404 "no longer available to new users": the retired model is not the project's (a fact, kept long).
    MODEL_GONE = "model_gone"


# The model of a project-wide cooldown (a spend limit): it keeps every model of the project.
ALL_MODELS = "*"
# Service tiers a request may name (``service_tier``): priority only on Tier 2/3 billing accounts.
SERVICE_TIERS = frozenset({"", "standard", "flex", "priority"})
PRIORITY_TIERS = frozenset({2, 3})
# What an Interactions agent is leased as (``agents/{id}``); the allow-list must name it (``Pool.allows``).
AGENT_PREFIX = "agents/"


@dataclass(frozen=True, slots=True)
class Policy:
    """Every number of the outcome policy; a pool overrides any of them."""

    rate_limit_cooldown_s: float = 60.0
    rate_limit_max_cooldown_s: float = 1800.0
    server_error_cooldown_s: float = 30.0
    server_error_max_cooldown_s: float = 300.0
    forbidden_threshold: int = 3
    max_in_flight: int = 0  # per key, all replicas together; 0 = no cap
    requests_per_minute: int = 0  # per key, all replicas together; 0 = no cap
    lease_ttl_s: float = 600.0
    suspend_s: float = 600.0
    # A cooldown's strike count is remembered this long after it ends, so a
    # key that keeps hitting 429 backs off 60 s, 120 s, 240 s...
    strike_memory_s: float = 3600.0
    # An operator's limits per project and model (domain/limits.py); 0: the limit learnt from 429s counts.
    quota_requests_per_minute: int = 0
    quota_requests_per_day: int = 0
    quota_input_tokens_per_minute: int = 0
    # Concurrent Live sessions (session leases held), all replicas together; 0 = no cap (allocator.py).
    live_sessions_per_project: int = 0
    live_sessions_per_key: int = 0
    live_sessions_per_token: int = 0

    def with_overrides(self, **overrides: float | int) -> Policy:
        """Return a copy where every truthy override replaces the default."""
        changes = {name: value for name, value in overrides.items() if value}
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    allowed_models: tuple[str, ...] = ()
    strategy: Strategy = Strategy.ROUND_ROBIN
    policy: Policy = field(default_factory=Policy)
    description: str = ""
    created_at: float = 0.0
    revision: int = 0

    def allows(self, model: str) -> bool:
        """An empty allow-list allows every model; model-less calls are always allowed.

        An agent (``agents/{id}``: an Interactions call that runs Google's agent, on any model it
        likes) needs its own entry: neither an empty list nor a model entry admits one.
        """
        if model.startswith(AGENT_PREFIX):
            return model in self.allowed_models
        return not self.allowed_models or not model or model in self.allowed_models


@dataclass(frozen=True, slots=True)
class LastError:
    http_status: int
    status: str
    reason: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class UpstreamKey:
    """One upstream Gemini key; the secret is kept sealed (encrypted) here."""

    key_id: str
    pool: str
    sealed_secret: str
    mask: str
    project: str = ""
    tier: int = 1
    weight: int = 1
    # The Google billing account the project belongs to (the operator's; "": unknown): quotas, tiers and spend
    # caps are the account's, so a 402 or a spend limit cools every key of it (issue 21).
    billing_account: str = ""
    # The billing account's Gemini tier (1, 2, 3; 0: unknown): a priority call needs 2 or 3 (issue 21).
    billing_tier: int = 0
    # The project number Google named for the key (ErrorInfo consumer "projects/<n>"; "": not told): learnt.
    project_number: str = ""
    tags: tuple[str, ...] = ()
    note: str = ""
    # "auth" (AQ.), "standard" (AIza) or "other": told from the secret when it is added (it is sealed after).
    kind: str = "standard"
    state: KeyState = KeyState.ACTIVE
    state_until: float = 0.0  # SUSPENDED: when it may be tried again
    consecutive_failures: int = 0
    forbidden_strikes: int = 0  # consecutive 403s
    last_error: LastError | None = None
    created_at: float = 0.0
    revision: int = 0
    # The health decision (``domain/decisions.py``) that last set the health fields above
    # (state, state_until, consecutive_failures, forbidden_strikes, last_error): its id and its time.
    health_id: str = ""
    health_at: float = 0.0

    def cooldown_subjects(self, model: str) -> tuple[CooldownId, ...]:
        """The cooldowns that keep this key from being leased for ``model``."""
        own = CooldownId(CooldownScope.KEY, self.key_id, model)
        account = (CooldownId(CooldownScope.ACCOUNT, self.billing_account, ALL_MODELS),) if self.billing_account else ()
        if self.project:
            return (
                own,
                CooldownId(CooldownScope.PROJECT, self.project, model),
                CooldownId(CooldownScope.PROJECT, self.project, ALL_MODELS),
                *account,
            )
        return (own, *account)

    def project_warning(self) -> str:
        """Why the learnt project number disagrees with the operator's project ("": it agrees or cannot tell)."""
        if self.project_number and self.project.isdigit() and self.project != self.project_number:
            return f"Google names this key's project {self.project_number}, not {self.project}: quotas are per project"
        return ""

    def takes_priority(self) -> bool:
        """Google opens the priority service tier to Tier 2 and 3 billing accounts only."""
        return self.billing_tier in PRIORITY_TIERS

    def billing_subject(self) -> CooldownId:
        """What a 402 or a spend limit cools: the billing account when known, else the project, else the key."""
        if self.billing_account:
            return CooldownId(CooldownScope.ACCOUNT, self.billing_account, ALL_MODELS)
        if self.project:
            return CooldownId(CooldownScope.PROJECT, self.project, ALL_MODELS)
        return CooldownId(CooldownScope.KEY, self.key_id, ALL_MODELS)

    def quota_subject(self, model: str) -> CooldownId:
        """Quotas are per project: a 429 cools the project's pair when the project is known."""
        if self.project:
            return CooldownId(CooldownScope.PROJECT, self.project, model)
        return CooldownId(CooldownScope.KEY, self.key_id, model)

    def leasable_state(self, now: float) -> bool:
        if self.state is KeyState.ACTIVE:
            return True
        return self.state is KeyState.SUSPENDED and self.state_until <= now


@dataclass(frozen=True, slots=True)
class CooldownId:
    scope: CooldownScope
    subject: str  # key id or project
    model: str


@dataclass(frozen=True, slots=True)
class Cooldown:
    id: CooldownId
    reason: CooldownReason
    until: float
    strikes: int = 1
    revision: int = 0
    # The decision (``domain/decisions.py``) that last changed it: its id and its time.
    decision: str = ""
    decided_at: float = 0.0
    # The name the call asked for when another model answered it (``id.model`` is the served one; issue 21).
    asked: str = ""

    def active(self, now: float) -> bool:
        return self.until > now


@dataclass(frozen=True, slots=True)
class LimitId:
    project: str
    model: str
    metric: str  # limits.QuotaMetric's value


@dataclass(frozen=True, slots=True)
class QuotaLimit:
    """A limit a 429 told of (``domain/limits.py``): a decision like a cooldown, the later learnt wins."""

    id: LimitId
    limit: int
    learnt_at: float = 0.0
    quota_id: str = ""
    revision: int = 0
    decision: str = ""
    decided_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Affinity:
    """A resource created upstream under one key ("files/abc", "cachedContents/x"...), which lives in its project.

    Later calls naming it are leased that key or another key of ``project``
    (the key alone when it has no project), until ``expires_at``: the
    resource's lifetime upstream. Scoped to the pool whose lease created it.
    """

    name: str
    pool: str
    key_id: str
    project: str = ""
    expires_at: float = 0.0
    created_at: float = 0.0
    revision: int = 0
    token_id: str = ""  # the client token whose call bound it: its cap of bindings counts it ("": unknown)

    def active(self, now: float) -> bool:
        return self.expires_at > now


@dataclass(frozen=True, slots=True)
class TokenBudget:
    """What one client token may spend, all replicas together (0 = no limit of that kind).

    ``model == ""``: every call of the token counts; otherwise only calls for
    that model. Minutes and days are fixed windows (the epoch minute, the UTC
    day): a spent budget frees at the window's end. Tokens are the outcomes'
    input + output tokens, counted after the call: a request is admitted
    while the budget is not yet spent, so the last one may overshoot by its own size.
    """

    model: str = ""
    requests_per_minute: int = 0
    requests_per_day: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0


@dataclass(frozen=True, slots=True)
class ClientToken:
    """A client token as stored: a keyed hash of its SHA-256, never the token.

    ``token_hash`` is HMAC-SHA256 of the SHA-256 the edge sends, under the
    token key of the KEK ``hash_key`` names (identity.TokenHasher); that
    SHA-256 is kept only sealed (``sealed_hash``), so a KEK rotation can key
    the token again. ``hash_key == ""``: a record from before keyed hashes,
    whose ``token_hash`` is the bare SHA-256 (the reseal command keys it).
    """

    token_id: str
    token_hash: str
    pool: str
    name: str = ""
    created_at: float = 0.0
    expires_at: float = 0.0  # 0 = never
    revoked: bool = False
    requests_per_minute: int = 0  # 0 = unlimited
    prefix: str = ""
    hash_key: str = ""  # the id of the KEK whose token key made token_hash; "" = unkeyed (legacy)
    sealed_hash: str = ""  # the presented SHA-256, sealed under a KEK
    revision: int = 0
    budgets: tuple[TokenBudget, ...] = ()  # at most one per model ("" = all models)

    @property
    def keyed(self) -> bool:
        return bool(self.hash_key)

    def usable(self, now: float) -> bool:
        return not self.revoked and (not self.expires_at or self.expires_at > now)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the upstream answered to one leased call."""

    http_status: int = 200
    transport: Transport = Transport.OK
    error_status: str = ""
    error_reason: str = ""
    retry_delay_s: float = 0.0
    violations: tuple[QuotaViolation, ...] = ()
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    error_message: str = ""
    estimated_input_tokens: int = 0  # the edge's estimate of the request's input (0: unknown)
    consumer_project: str = ""  # ErrorInfo consumer "projects/<number>": the key's project number ("": not told)
    served_model: str = ""  # the answer's modelVersion when it differs from the name asked ("": the same)
    service_tier: str = ""  # the call's service_tier ("", "standard", "flex", "priority"): its class (tiers.py)

    @property
    def succeeded(self) -> bool:
        """A 2xx answer arrived (what usage counts as a success, and what consumed the input it was sent)."""
        return self.transport is Transport.OK and 200 <= self.http_status < 300

    @property
    def kind(self) -> AnswerKind:
        """What the answer means (services.common.answers decides, nobody else)."""
        reasons = (self.error_reason,) if self.error_reason else ()
        return classify(
            self.http_status, self.transport, reasons, self.violations, self.estimated_input_tokens, self.error_message
        )

    def quota_model(self) -> str:
        """The first model a QuotaFailure violation names in its quotaDimensions, or ""."""
        if not self.violations:  # every success, most errors: asked at each release
            return ""
        return next((model for v in self.violations if (model := v.dimension("model"))), "")
