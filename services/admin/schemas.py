"""Request bodies (validated whole, before any call to keyring) and JSON views of keyring's messages.

Request models are strict (no type coercion) and refuse unknown fields;
their JSON Schemas go into the OpenAPI document unchanged, so the spec and
the validation cannot drift apart. Integers are bounded to what the proto
fields hold; the domain's own limits (tier 1-100, weight 1-1000...) are
keyring's to enforce and come back per item or as 400.

Times in answers are RFC 3339 UTC strings; durations are seconds.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, TypeVar

import orjson
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .bodies import EMPTY, LOGIN, ROUTE, BodyLimit, large_limit, read_body
from .errors import JSON, ApiError, bad_request

INT32_MAX: Final = 2**31 - 1
# Policy durations: seconds in the API, milliseconds in the proto; ten years is plenty.
MAX_DURATION_S: Final = 10 * 365 * 24 * 3600
MAX_KEY_IDS: Final = 1000
MAX_TEXT: Final = 10_000

def _whole_number(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer; so do we (but not "5" or true)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value



# Python's whitespace (str.isspace), spelled out: regex dialects disagree on what \\s means.
SPACE: Final = (
    "\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680"
    "\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
)

# The domain's limits, mirrored so that the spec says exactly what keyring accepts.
POOL_NAME: Final = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# A model id, or an Interactions agent (agents/{id}): an agent is allowed only by an entry of its own.
MODEL_NAME: Final = r"^(models/|agents/)?[A-Za-z0-9._-]{1,100}$"
PoolName = Annotated[str, Field(pattern=POOL_NAME)]
ModelName = Annotated[str, Field(pattern=MODEL_NAME)]
Description = Annotated[str, Field(max_length=500)]
Note = Annotated[str, Field(max_length=500)]
Project = Annotated[str, Field(max_length=128)]
# The Google billing account of the key's project ("": unknown); keyring checks its shape.
BillingAccount = Annotated[str, Field(max_length=64, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")]
# The billing account's Gemini tier (1-3; 0: unknown): priority calls go only to Tier 2/3 keys.
BillingTier = Annotated[int, Field(ge=0, le=3), BeforeValidator(_whole_number)]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=f"[^{SPACE}]")]
Tags = Annotated[list[Tag], Field(max_length=32)]
Tier = Annotated[
    int,
    Field(ge=0, le=100, description="1 = first choice, higher = fallback; 0 means 1"),
    BeforeValidator(_whole_number),
]
Weight = Annotated[int, Field(ge=0, le=1000, description="0 means 1"), BeforeValidator(_whole_number)]
Seconds = Annotated[float, Field(ge=0, le=MAX_DURATION_S)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX), BeforeValidator(_whole_number)]
# Pasted text must hold at least one character that is not a separator.
PastedText = Annotated[str, Field(max_length=16 * 1024 * 1024, pattern=f"[^{SPACE},;\\[\\]\"']")]


class Strategy(StrEnum):
    round_robin = "round_robin"
    random = "random"
    weighted = "weighted"
    least_loaded = "least_loaded"


class KeyStateName(StrEnum):
    active = "active"
    suspended = "suspended"
    invalid = "invalid"
    disabled = "disabled"


class BulkAction(StrEnum):
    enable = "enable"
    disable = "disable"
    delete = "delete"
    verify = "verify"
    revive = "revive"


_STRATEGY_TO_PB: Final = {
    Strategy.round_robin: pb.ROUND_ROBIN,
    Strategy.random: pb.RANDOM,
    Strategy.weighted: pb.WEIGHTED,
    Strategy.least_loaded: pb.LEAST_LOADED,
}
_STRATEGY_FROM_PB: Final = {value: key.value for key, value in _STRATEGY_TO_PB.items()} | {
    pb.STRATEGY_UNSPECIFIED: "round_robin"
}
STATE_TO_PB: Final = {
    KeyStateName.active: pb.ACTIVE,
    KeyStateName.suspended: pb.SUSPENDED,
    KeyStateName.invalid: pb.INVALID,
    KeyStateName.disabled: pb.DISABLED,
}
_STATE_FROM_PB: Final = {value: key.value for key, value in STATE_TO_PB.items()} | {pb.KEY_STATE_UNSPECIFIED: "unknown"}
_ADD_STATUS: Final = {
    pb.AddKeyResult.ADDED: "added",
    pb.AddKeyResult.DUPLICATE: "duplicate",
    pb.AddKeyResult.MALFORMED: "malformed",
    pb.AddKeyResult.STATUS_UNSPECIFIED: "unknown",
}


class _Body(BaseModel):
    """Strict, closed objects; ``null`` is refused (leave a field out instead)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    # What its request body may cost (``bodies``); None: the settings' limit for the routes carrying many keys.
    body_limit: ClassVar[BodyLimit | None] = ROUTE

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(str(name) for name, value in data.items() if value is None)
            if nulls:
                raise ValueError(f"null is not allowed (leave the field out): {', '.join(nulls)}")
        return data


# -- request bodies -------------------------------------------------------


class LoginRequest(_Body):
    """An admin token; the answer sets the console's session cookies."""

    body_limit: ClassVar[BodyLimit | None] = LOGIN
    token: Annotated[str, Field(min_length=1, max_length=1000)]
    # Optional: the token must then be this name's, and failures count against the name too.
    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class PolicyInput(_Body):
    """Policy overrides; 0 or absent keeps the current value (on creation: the default)."""

    rate_limit_cooldown_s: Seconds | None = None
    rate_limit_max_cooldown_s: Seconds | None = None
    server_error_cooldown_s: Seconds | None = None
    server_error_max_cooldown_s: Seconds | None = None
    forbidden_threshold: Count | None = None
    max_in_flight: Count | None = None
    requests_per_minute: Count | None = None
    lease_ttl_s: Seconds | None = None
    suspend_s: Seconds | None = None
    # An operator's quota limits per project and model; they win over those learnt from 429s (0: learn them).
    quota_requests_per_minute: Count | None = None
    quota_requests_per_day: Count | None = None
    quota_input_tokens_per_minute: Count | None = None
    # Concurrent Live API sessions, all edges and replicas together (0: no cap); Google caps them per project.
    live_sessions_per_project: Count | None = None
    live_sessions_per_key: Count | None = None
    live_sessions_per_token: Count | None = None


class PoolCreate(_Body):
    name: PoolName
    description: Description = ""
    allowed_models: Annotated[list[ModelName], Field(max_length=1000)] = []
    strategy: Strategy = Strategy.round_robin
    policy: PolicyInput | None = None


class PoolUpdate(_Body):
    """Fields to change; absent fields stay as they are (at least one is needed)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    description: Description | None = None
    allowed_models: Annotated[list[ModelName], Field(max_length=1000)] | None = None
    strategy: Strategy | None = None
    policy: PolicyInput | None = None


class KeyItem(_Body):
    """One key; a malformed secret is reported per item (status ``malformed``), not refused."""

    secret: Annotated[
        str,
        Field(
            max_length=1000,
            description="an auth key (AQ. and 20-200 of A-Z a-z 0-9 - _) or a standard key (AIza and 35 of them); "
            "anything else is reported malformed for this item",
        ),
    ]
    project: Project = ""
    tier: Tier = 0
    weight: Weight = 0
    tags: Tags = []
    note: Note = ""
    billing_account: BillingAccount = ""
    billing_tier: BillingTier = 0


class KeysAdd(_Body):
    """Either ``text`` (pasted: one key per line, or comma/space separated, or a JSON list of strings)
    or ``keys`` (items with their attributes): exactly one of them."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["keys"]}]})
    body_limit: ClassVar[BodyLimit | None] = None

    text: PastedText | None = None
    keys: Annotated[list[KeyItem], Field(min_length=1, max_length=5000)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> KeysAdd:
        if (self.text is None) == (self.keys is None):
            raise ValueError("give exactly one of 'text' or 'keys'")
        return self


class KeyUpdate(_Body):
    """Fields to change; absent fields stay as they are (at least one is needed)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    project: Project | None = None
    tier: Tier | None = None
    weight: Weight | None = None
    tags: Tags | None = None
    note: Note | None = None
    billing_account: BillingAccount | None = None
    billing_tier: BillingTier | None = None


KeyId = Annotated[str, Field(min_length=1, max_length=200)]


class BulkRequest(_Body):
    """Every id must exist, or nothing is done (404 naming the unknown ones)."""

    action: BulkAction
    key_ids: Annotated[list[KeyId], Field(min_length=1, max_length=MAX_KEY_IDS)]


class VerifyUnhealthyRequest(_Body):
    """Re-check every invalid or suspended key, of one pool when ``pool`` is given."""

    pool: PoolName | None = None


def _rfc3339_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("expires_at must be an RFC 3339 date-time string with a time zone")
    return value


BigCount = Annotated[int, Field(ge=0, le=2**53), BeforeValidator(_whole_number)]


class TokenBudget(_Body):
    """What a token may spend, all replicas together (0 = no limit of that kind); ``model`` "" = every model.

    Minutes and days are fixed windows (epoch minute, UTC day). Tokens are input + output tokens, counted after the
    call: a call is admitted while the budget is not spent yet, so the last one may overshoot it by its own size.
    """

    model: Annotated[str, Field(max_length=200)] = ""
    requests_per_minute: BigCount = 0
    requests_per_day: BigCount = 0
    tokens_per_minute: BigCount = 0
    tokens_per_day: BigCount = 0


TokenBudgets = Annotated[list[TokenBudget], Field(max_length=64)]


class TokenCreate(_Body):
    """A client token for ``pool``; ``expires_at`` (RFC 3339, in the future), a rate limit and budgets are optional."""

    pool: PoolName
    name: Annotated[str, Field(max_length=100)] = ""
    expires_at: Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_rfc3339_text)] | None = None
    requests_per_minute: Count | None = None
    budgets: TokenBudgets = []


class TokenUpdate(_Body):
    """What is given changes; ``budgets`` replaces all of the token's budgets (``[]`` removes them)."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Annotated[str, Field(max_length=100)] | None = None
    requests_per_minute: Count | None = None
    budgets: TokenBudgets | None = None


def budgets_pb(budgets: list[TokenBudget]) -> list[pb.TokenBudget]:
    return [pb.TokenBudget(**budget.model_dump()) for budget in budgets]


def budget_json(budget: pb.TokenBudget) -> dict[str, Any]:
    return {
        "model": budget.model,
        "requests_per_minute": budget.requests_per_minute,
        "requests_per_day": budget.requests_per_day,
        "tokens_per_minute": budget.tokens_per_minute,
        "tokens_per_day": budget.tokens_per_day,
    }


REQUEST_MODELS: Final[tuple[type[BaseModel], ...]] = (
    LoginRequest,
    PoolCreate,
    PoolUpdate,
    KeysAdd,
    KeyUpdate,
    BulkRequest,
    VerifyUnhealthyRequest,
    TokenCreate,
    TokenUpdate,
)

Model = TypeVar("Model", bound=_Body)


async def read_json_bytes(request: web.Request, limit: BodyLimit = ROUTE) -> bytes:
    """The body within ``limit`` (``bodies``), checked to be JSON; 415 for another content type."""
    if request.content_type != JSON:
        raise ApiError(415, f"send the body as {JSON}", "UNSUPPORTED_MEDIA_TYPE")
    raw = await read_body(request, limit)
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"the body is not valid JSON: {error.msg} (position {error.pos})") from None
    return raw


async def parse_body(request: web.Request, model: type[Model]) -> Model:
    """The body as ``model``, read within the model's ``body_limit`` (None: the routes carrying many keys)."""
    raw = await read_json_bytes(request, model.body_limit or large_limit(request))
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise bad_request(describe(error)) from None


def describe(error: ValidationError, limit: int = 5) -> str:
    """``body.keys[0].weight: Input should be a valid integer; ...`` without echoing values."""
    parts = []
    for item in error.errors(include_url=False, include_input=False)[:limit]:
        where = "body"
        for step in item["loc"]:
            where += f"[{step}]" if isinstance(step, int) else f".{step}"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where != "body" else message)
    more = error.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def empty_body(request: web.Request) -> None:
    """Action routes take no body; an empty JSON object is tolerated, anything else is refused."""
    if not request.can_read_body:
        return
    raw = await read_body(request, EMPTY)
    if raw.strip() and raw.strip() != b"{}":
        raise bad_request("this route takes no request body")


# -- query strings ----------------------------------------------------------


class Query:
    """Strict reading of a query string: unknown parameters and repeated ones are refused."""

    def __init__(self, request: web.Request, allowed: set[str]) -> None:
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            raise bad_request(f"unknown query parameters: {', '.join(unknown)}")
        repeated = sorted({name for name in request.query if len(request.query.getall(name)) > 1})
        if repeated:
            raise bad_request(f"repeated query parameters: {', '.join(repeated)}")
        self._query = request.query

    def text(self, name: str, max_length: int = 200) -> str:
        value = self._query.get(name, "")
        if len(value) > max_length:
            raise bad_request(f"{name} is longer than {max_length} characters")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._query.get(name)
        if value is None or value == "":
            return default
        if not re.fullmatch(r"[0-9]{1,10}", value) or not low <= int(value) <= high:
            raise bad_request(f"{name} must be an integer from {low} to {high}")
        return int(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str = "") -> str:
        value = self._query.get(name, default)
        if value not in choices and not (value == "" and default == ""):
            raise bad_request(f"{name} must be one of: {', '.join(choice for choice in choices)}")
        return value

    def boolean(self, name: str) -> bool:
        return self.choice(name, ("true", "false"), "false") == "true"


# -- pasted keys --------------------------------------------------------------


def split_pasted(text: str) -> list[str]:
    """Key strings from pasted text: a JSON list of strings, or anything split on lines, commas, spaces."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            items = None
        if isinstance(items, list) and all(isinstance(item, str) for item in items):
            found = [item.strip() for item in items if item.strip()]
            if found:
                return found
    return [part for part in re.split(r"[\s,;\[\]\"']+", stripped) if part]


# -- answers: keyring's messages as JSON ----------------------------------------


def iso_utc(ms: int) -> str | None:
    """RFC 3339 in UTC with milliseconds; None for 0 (unset)."""
    if not ms:
        return None
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def now_ms() -> int:
    return int(time.time() * 1000)


def policy_json(policy: pb.Policy) -> dict[str, Any]:
    return {
        "rate_limit_cooldown_s": policy.rate_limit_cooldown_ms / 1000,
        "rate_limit_max_cooldown_s": policy.rate_limit_max_cooldown_ms / 1000,
        "server_error_cooldown_s": policy.server_error_cooldown_ms / 1000,
        "server_error_max_cooldown_s": policy.server_error_max_cooldown_ms / 1000,
        "forbidden_threshold": policy.forbidden_threshold,
        "max_in_flight": policy.max_in_flight,
        "requests_per_minute": policy.requests_per_minute,
        "lease_ttl_s": policy.lease_ttl_ms / 1000,
        "suspend_s": policy.suspend_ms / 1000,
        "quota_requests_per_minute": policy.quota_requests_per_minute,
        "quota_requests_per_day": policy.quota_requests_per_day,
        "quota_input_tokens_per_minute": policy.quota_input_tokens_per_minute,
        "live_sessions_per_project": policy.live_sessions_per_project,
        "live_sessions_per_key": policy.live_sessions_per_key,
        "live_sessions_per_token": policy.live_sessions_per_token,
    }


def policy_pb(policy: PolicyInput | None) -> pb.Policy:
    if policy is None:
        return pb.Policy()
    values: dict[str, int] = {}
    for name, value in policy.model_dump(exclude_none=True).items():
        if name.endswith("_s"):
            values[name[:-2] + "_ms"] = round(value * 1000)
        else:
            values[name] = value
    return pb.Policy(**values)


def strategy_pb(strategy: Strategy) -> pb.Strategy:
    return _STRATEGY_TO_PB[strategy]


def pool_json(pool: pb.Pool) -> dict[str, Any]:
    return {
        "name": pool.name,
        "description": pool.description,
        "allowed_models": list(pool.allowed_models),
        "strategy": _STRATEGY_FROM_PB.get(pool.strategy, "round_robin"),
        "policy": policy_json(pool.policy),
        "created_at": iso_utc(pool.created_at_ms),
    }


def key_json(key: pb.KeyInfo, now: int) -> dict[str, Any]:
    """A key's attributes and health; its secret is not in keyring's message to begin with."""
    last_error = None
    if key.HasField("last_error"):
        error = key.last_error
        last_error = {
            "http_status": error.http_status,
            "status": error.status,
            "reason": error.reason,
            "message": error.message,
            "at": iso_utc(error.at_ms),
        }
    return {
        "key_id": key.key_id,
        "mask": key.mask,
        "kind": key.kind or "standard",
        "pool": key.pool,
        "project": key.project,
        "tier": key.tier,
        "weight": key.weight,
        "tags": list(key.tags),
        "note": key.note,
        "billing_account": key.billing_account,
        "billing_tier": key.billing_tier,
        "project_number": key.project_number,
        "project_warning": key.project_warning,
        "state": _STATE_FROM_PB.get(key.state, "unknown"),
        "state_until": iso_utc(key.state_until_ms),
        "cooldowns": [
            {
                "model": cooldown.model,
                "scope": cooldown.scope,
                "reason": cooldown.reason,
                "until": iso_utc(cooldown.until_ms),
                "seconds_left": round(max(0, cooldown.until_ms - now) / 1000, 1),
                "strikes": cooldown.strikes,
                "asked_model": cooldown.asked_model,
            }
            for cooldown in key.cooldowns
        ],
        "consecutive_failures": key.consecutive_failures,
        "last_error": last_error,
        "created_at": iso_utc(key.created_at_ms),
        "last_used": iso_utc(key.last_used_ms),
    }


def add_result_json(result: pb.AddKeyResult) -> dict[str, Any]:
    return {
        "index": result.index,
        "status": _ADD_STATUS.get(result.status, "unknown"),
        "key_id": result.key_id or None,
        "mask": result.mask,
        "message": result.message,
    }


def token_json(token: pb.TokenInfo) -> dict[str, Any]:
    return {
        "token_id": token.token_id,
        "name": token.name,
        "pool": token.pool,
        "prefix": token.prefix,
        "created_at": iso_utc(token.created_at_ms),
        "expires_at": iso_utc(token.expires_at_ms),
        "last_used": iso_utc(token.last_used_ms),
        "revoked": token.revoked,
        "requests_per_minute": token.requests_per_minute,
        "budgets": [budget_json(budget) for budget in token.budgets],
    }


def verify_result_json(result: pb.VerifyResult) -> dict[str, Any]:
    return {
        "key_id": result.key_id,
        "ok": result.ok,
        "http_status": result.http_status,
        "error_status": result.error_status,
        "error_reason": result.error_reason,
        "state": _STATE_FROM_PB.get(result.state, "unknown"),
    }


def quota_rows_json(rows: Any) -> list[dict[str, Any]]:
    """ListQuotas rows: per project, model and metric its limit, use in the window, what remains, next reset."""
    return [
        {
            "pool": row.pool,
            "project": row.project,
            "model": row.model,
            "metric": row.metric,
            "limit": row.limit,
            "source": row.source,
            "learnt_at": iso_utc(row.learnt_at_ms),
            "used": row.used,
            "replica_share": row.replica_share,
            "remaining": row.remaining,
            "resets_at": iso_utc(row.resets_at_ms),
            "service_tier": row.service_tier or "standard",
        }
        for row in rows
    ]


def usage_rows_json(rows: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": row.id,
            "pool": row.pool,
            "requests": row.figures.requests,
            "errors": row.figures.errors,
            "input_tokens": row.figures.input_tokens,
            "output_tokens": row.figures.output_tokens,
            "unknown": row.figures.unknown,  # calls whose lease was reclaimed unreleased (in requests too)
        }
        for row in rows
    ]


def audit_json(entry: pb.AuditEntry) -> dict[str, Any]:
    return {
        "at": iso_utc(entry.at_ms),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    }


def expires_ms(value: datetime | None) -> int:
    if value is None:
        return 0
    ms = round(value.timestamp() * 1000)
    if ms <= 0:
        raise bad_request("expires_at must lie after 1970")
    return ms
