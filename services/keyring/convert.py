"""Domain records <-> protobuf messages. Times: float seconds <-> int milliseconds."""

from __future__ import annotations

from collections.abc import Iterable

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .administration.inputs import AddResult, KeyFilter, KeyInput, PoolChanges
from .domain.limits import QuotaRow
from .domain.models import (
    ClientToken,
    Cooldown,
    KeyState,
    Outcome,
    Policy,
    Pool,
    QuotaViolation,
    Strategy,
    TokenBudget,
    Transport,
    UpstreamKey,
)
from .domain.usage import Figures

_STRATEGIES: dict[pb.Strategy, Strategy] = {
    pb.ROUND_ROBIN: Strategy.ROUND_ROBIN,
    pb.RANDOM: Strategy.RANDOM,
    pb.WEIGHTED: Strategy.WEIGHTED,
    pb.LEAST_LOADED: Strategy.LEAST_LOADED,
}
_STRATEGY_TO_PB: dict[Strategy, pb.Strategy] = {value: key for key, value in _STRATEGIES.items()}
_STATES: dict[pb.KeyState, KeyState] = {
    pb.ACTIVE: KeyState.ACTIVE,
    pb.SUSPENDED: KeyState.SUSPENDED,
    pb.INVALID: KeyState.INVALID,
    pb.DISABLED: KeyState.DISABLED,
}
_STATE_TO_PB: dict[KeyState, pb.KeyState] = {value: key for key, value in _STATES.items()}
_TRANSPORTS: dict[int, Transport] = {transport.value: transport for transport in Transport}
_ADD_STATUS = {
    "added": pb.AddKeyResult.ADDED,
    "duplicate": pb.AddKeyResult.DUPLICATE,
    "malformed": pb.AddKeyResult.MALFORMED,
}
# Policy fields: proto name (milliseconds or counts) -> domain name (seconds or counts).
_POLICY_FIELDS = {
    "rate_limit_cooldown_ms": "rate_limit_cooldown_s",
    "rate_limit_max_cooldown_ms": "rate_limit_max_cooldown_s",
    "server_error_cooldown_ms": "server_error_cooldown_s",
    "server_error_max_cooldown_ms": "server_error_max_cooldown_s",
    "forbidden_threshold": "forbidden_threshold",
    "max_in_flight": "max_in_flight",
    "requests_per_minute": "requests_per_minute",
    "lease_ttl_ms": "lease_ttl_s",
    "suspend_ms": "suspend_s",
    "quota_requests_per_minute": "quota_requests_per_minute",
    "quota_requests_per_day": "quota_requests_per_day",
    "quota_input_tokens_per_minute": "quota_input_tokens_per_minute",
    "live_sessions_per_project": "live_sessions_per_project",
    "live_sessions_per_key": "live_sessions_per_key",
    "live_sessions_per_token": "live_sessions_per_token",
}


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def policy_overrides(message: pb.Policy) -> dict[str, float | int]:
    """Only the fields the caller set (non-zero) become overrides."""
    overrides: dict[str, float | int] = {}
    for proto_name, domain_name in _POLICY_FIELDS.items():
        value = getattr(message, proto_name)
        if value:
            overrides[domain_name] = value / 1000 if proto_name.endswith("_ms") else value
    return overrides


def policy_to_pb(policy: Policy) -> pb.Policy:
    values = {}
    for proto_name, domain_name in _POLICY_FIELDS.items():
        value = getattr(policy, domain_name)
        values[proto_name] = ms(value) if proto_name.endswith("_ms") else int(value)
    return pb.Policy(**values)


def strategy_from_pb(value: pb.Strategy) -> Strategy:
    return _STRATEGIES.get(value, Strategy.ROUND_ROBIN)


def pool_from_pb(message: pb.Pool) -> Pool:
    return Pool(
        name=message.name,
        allowed_models=tuple(message.allowed_models),
        strategy=strategy_from_pb(message.strategy),
        policy=Policy().with_overrides(**policy_overrides(message.policy)),
        description=message.description,
    )


def pool_changes_from_pb(message: pb.UpdatePoolRequest) -> PoolChanges:
    fields = set(message.update_fields) or {"allowed_models", "strategy", "policy", "description"}
    pool = message.pool
    return PoolChanges(
        allowed_models=list(pool.allowed_models) if "allowed_models" in fields else None,
        strategy=strategy_from_pb(pool.strategy) if "strategy" in fields else None,
        policy=policy_overrides(pool.policy) if "policy" in fields else None,
        description=pool.description if "description" in fields else None,
    )


def pool_to_pb(pool: Pool) -> pb.Pool:
    return pb.Pool(
        name=pool.name,
        allowed_models=list(pool.allowed_models),
        strategy=_STRATEGY_TO_PB[pool.strategy],
        policy=policy_to_pb(pool.policy),
        description=pool.description,
        created_at_ms=ms(pool.created_at),
    )


def key_input_from_pb(message: pb.KeyInput) -> KeyInput:
    return KeyInput(
        secret=message.secret,
        project=message.project,
        tier=message.tier,
        weight=message.weight,
        tags=tuple(message.tags),
        note=message.note,
        billing_account=message.billing_account,
        billing_tier=message.billing_tier,
    )


def key_filter_from_pb(message: pb.KeyFilter) -> KeyFilter:
    return KeyFilter(
        pool=message.pool,
        state=_STATES.get(message.state),
        cooling_model=message.cooling_model,
        project=message.project,
        tier=message.tier,
        tag=message.tag,
        text=message.text,
        page_size=message.page_size,
        page_token=message.page_token,
    )


def cooldown_to_pb(cooldown: Cooldown) -> pb.Cooldown:
    return pb.Cooldown(
        model=cooldown.id.model,
        scope=cooldown.id.scope.value,
        reason=cooldown.reason.value,
        until_ms=ms(cooldown.until),
        strikes=cooldown.strikes,
        asked_model=cooldown.asked,
    )


def key_to_pb(key: UpstreamKey, cooldowns: list[Cooldown], last_used: float = 0.0) -> pb.KeyInfo:
    """Everything about a key except its secret: the mask and the id stand in for it."""
    info = pb.KeyInfo(
        key_id=key.key_id,
        mask=key.mask,
        kind=key.kind,
        pool=key.pool,
        project=key.project,
        tier=key.tier,
        weight=key.weight,
        tags=list(key.tags),
        note=key.note,
        billing_account=key.billing_account,
        billing_tier=key.billing_tier,
        project_number=key.project_number,
        project_warning=key.project_warning(),
        state=_STATE_TO_PB[key.state],
        cooldowns=[cooldown_to_pb(cooldown) for cooldown in cooldowns],
        consecutive_failures=key.consecutive_failures,
        created_at_ms=ms(key.created_at),
        state_until_ms=ms(key.state_until),
        last_used_ms=ms(last_used),
    )
    if key.last_error is not None:
        error = key.last_error
        info.last_error.CopyFrom(
            pb.LastError(
                http_status=error.http_status,
                status=error.status,
                reason=error.reason,
                message=error.message,
                at_ms=ms(error.at),
            )
        )
    return info


def add_result_to_pb(result: AddResult) -> pb.AddKeyResult:
    return pb.AddKeyResult(
        index=result.index,
        key_id=result.key_id,
        mask=result.mask,
        status=_ADD_STATUS[result.status],
        message=result.message,
    )


def token_to_pb(token: ClientToken, last_used: float = 0.0) -> pb.TokenInfo:
    return pb.TokenInfo(
        token_id=token.token_id,
        name=token.name,
        pool=token.pool,
        created_at_ms=ms(token.created_at),
        expires_at_ms=ms(token.expires_at),
        revoked=token.revoked,
        requests_per_minute=token.requests_per_minute,
        prefix=token.prefix,
        last_used_ms=ms(last_used),
        budgets=[budget_to_pb(budget) for budget in token.budgets],
    )


def budget_to_pb(budget: TokenBudget) -> pb.TokenBudget:
    return pb.TokenBudget(
        model=budget.model,
        requests_per_minute=budget.requests_per_minute,
        requests_per_day=budget.requests_per_day,
        tokens_per_minute=budget.tokens_per_minute,
        tokens_per_day=budget.tokens_per_day,
    )


def budgets_from_pb(messages: Iterable[pb.TokenBudget]) -> tuple[TokenBudget, ...]:
    return tuple(
        TokenBudget(
            model=message.model,
            requests_per_minute=message.requests_per_minute,
            requests_per_day=message.requests_per_day,
            tokens_per_minute=message.tokens_per_minute,
            tokens_per_day=message.tokens_per_day,
        )
        for message in messages
    )


def quota_row_to_pb(row: QuotaRow) -> pb.QuotaRow:
    return pb.QuotaRow(
        pool=row.pool,
        project=row.project,
        model=row.model,
        metric=row.metric.value,
        limit=row.limit,
        source=row.source,
        learnt_at_ms=ms(row.learnt_at),
        used=row.used,
        replica_share=row.share,
        remaining=row.remaining,
        resets_at_ms=ms(row.resets_at),
        service_tier=row.service_tier,
    )


def outcome_from_pb(message: pb.Outcome) -> Outcome:
    return Outcome(
        http_status=message.http_status,
        transport=_TRANSPORTS.get(message.transport, Transport.OK),
        error_status=message.error_status,
        error_reason=message.error_reason,
        retry_delay_s=message.retry_delay_ms / 1000,
        violations=tuple(
            QuotaViolation(
                v.quota_id, v.quota_metric, tuple(sorted(v.dimensions.items())), v.quota_value, v.future_quota_value
            )
            for v in message.quota_violations
        ),
        latency_s=message.latency_ms / 1000,
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        error_message=message.error_message,
        estimated_input_tokens=message.estimated_input_tokens,
        consumer_project=message.consumer_project,
        served_model=message.served_model,
        service_tier=message.service_tier,
    )


def state_to_pb(state: KeyState) -> pb.KeyState:
    return _STATE_TO_PB[state]


def usage_row(subject: str, pool: str, figures: Figures) -> pb.UsageRow:
    return pb.UsageRow(id=subject, pool=pool, figures=usage_figures(figures))


def usage_point(
    start_s: int,
    pool: str,
    figures: Figures,
    errors_by_kind: dict[str, int] | None = None,
    requests_by_tier: dict[str, int] | None = None,
) -> pb.UsagePoint:
    return pb.UsagePoint(
        start_ms=start_s * 1000,
        pool=pool,
        figures=usage_figures(figures),
        errors_by_kind=errors_by_kind or {},
        requests_by_tier=requests_by_tier or {},
    )


def usage_figures(figures: Figures) -> pb.UsageFigures:
    return pb.UsageFigures(
        requests=figures.requests,
        errors=figures.errors,
        input_tokens=figures.input_tokens,
        output_tokens=figures.output_tokens,
        unknown=figures.unknown,
    )
