"""The outcome policy: what one upstream answer means for the key that gave it.

What an answer *is* is decided by the shared classifier
(``services.common.answers.classify``, through ``Outcome.kind``); this module
decides only what each kind does to the key (see ``judge``). It is pure: it
takes the key, the cooldowns in force and a clock reading, and returns the
records to write; the caller persists them with guarded writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.common.answers import AnswerKind, classify

from .models import (
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    LastError,
    Outcome,
    Policy,
    UpstreamKey,
)

PACIFIC = ZoneInfo("America/Los_Angeles")
# Kinds that leave the key as it is: busy for everyone, the caller's own fault, the caller gone.
_NO_PENALTY = frozenset({AnswerKind.MODEL_OVERLOADED, AnswerKind.REQUEST_AT_FAULT, AnswerKind.CANCELLED})
# MODEL_NOT_ON_TIER is treated like any 429 for now (a later issue gives it its own row).
_QUOTA = frozenset({AnswerKind.RATE_LIMITED, AnswerKind.DAILY_QUOTA, AnswerKind.MODEL_NOT_ON_TIER})
_TROUBLE = frozenset({AnswerKind.UPSTREAM_TROUBLE, AnswerKind.TRANSPORT_FAILURE})


@dataclass(frozen=True, slots=True)
class Verdict:
    """Records to write: a new or longer cooldown, a changed key, or nothing."""

    cooldown: Cooldown | None = None
    key: UpstreamKey | None = None


def next_pacific_midnight(now: float) -> float:
    """When Gemini's per-day quotas reset: midnight US Pacific time (DST-aware)."""
    local = dt.datetime.fromtimestamp(now, PACIFIC)
    tomorrow = (local + dt.timedelta(days=1)).date()
    midnight = dt.datetime.combine(tomorrow, dt.time(0, 0), tzinfo=PACIFIC)
    return midnight.timestamp()


def _clean_slate(key: UpstreamKey) -> bool:
    return key.consecutive_failures == 0 and key.forbidden_strikes == 0 and key.state is KeyState.ACTIVE


def is_routine_success(outcome: Outcome, key: UpstreamKey) -> bool:
    """A success from a key with a clean slate: nothing to learn, nothing to write (most answers)."""
    return classify(outcome.http_status, outcome.transport) is AnswerKind.OK and _clean_slate(key)


def judge(
    outcome: Outcome,
    key: UpstreamKey,
    model: str,
    policy: Policy,
    now: float,
    cooldowns: Mapping[CooldownId, Cooldown],
) -> Verdict:
    """What one answer, of the kind the shared classifier names, does to the key."""
    kind = outcome.kind
    if kind in _NO_PENALTY:
        return Verdict()
    if kind is AnswerKind.OK:
        return _success(key)
    if kind in _TROUBLE:
        return _server_trouble(outcome, key, model, policy, now, cooldowns)
    if kind in _QUOTA:
        return _rate_limited(outcome, kind, key, model, policy, now, cooldowns)
    if kind is AnswerKind.KEY_INVALID:
        return Verdict(key=_failed(key, outcome, now, state=KeyState.INVALID))
    if kind is AnswerKind.KEY_FORBIDDEN:
        return Verdict(key=_forbidden(key, outcome, policy, now))
    raise ValueError(f"the outcome policy has no row for {kind!r}")


def _success(key: UpstreamKey) -> Verdict:
    if _clean_slate(key):
        return Verdict()
    # A suspended key that answers again (its trial after state_until) is healthy.
    state = KeyState.ACTIVE if key.state is KeyState.SUSPENDED else key.state
    return Verdict(
        key=dataclasses.replace(key, consecutive_failures=0, forbidden_strikes=0, state=state, state_until=0.0)
    )


def _rate_limited(
    outcome: Outcome,
    kind: AnswerKind,
    key: UpstreamKey,
    model: str,
    policy: Policy,
    now: float,
    cooldowns: Mapping[CooldownId, Cooldown],
) -> Verdict:
    subject = key.quota_subject(model)
    strikes = _next_strike(cooldowns.get(subject), policy, now)
    if kind is AnswerKind.DAILY_QUOTA:
        reason, until = CooldownReason.DAILY_QUOTA, next_pacific_midnight(now)
    elif outcome.retry_delay_s > 0:
        reason, until = CooldownReason.RATE_LIMIT, now + outcome.retry_delay_s
    else:
        delay = _backoff(policy.rate_limit_cooldown_s, policy.rate_limit_max_cooldown_s, strikes)
        reason, until = CooldownReason.RATE_LIMIT, now + delay
    return Verdict(
        cooldown=_cooldown(subject, reason, until, strikes, cooldowns),
        key=_failed(key, outcome, now),
    )


def _server_trouble(
    outcome: Outcome,
    key: UpstreamKey,
    model: str,
    policy: Policy,
    now: float,
    cooldowns: Mapping[CooldownId, Cooldown],
) -> Verdict:
    """Upstream trouble, not the key's fault: a short cooldown of the (key, model) pair."""
    subject = CooldownId(CooldownScope.KEY, key.key_id, model)
    strikes = _next_strike(cooldowns.get(subject), policy, now)
    delay = _backoff(policy.server_error_cooldown_s, policy.server_error_max_cooldown_s, strikes)
    return Verdict(
        cooldown=_cooldown(subject, CooldownReason.SERVER_ERROR, now + delay, strikes, cooldowns),
        key=_failed(key, outcome, now),
    )


def _forbidden(key: UpstreamKey, outcome: Outcome, policy: Policy, now: float) -> UpstreamKey:
    """403: suspend; after ``forbidden_threshold`` in a row, the key is invalid."""
    strikes = key.forbidden_strikes + 1
    if strikes >= policy.forbidden_threshold:
        return dataclasses.replace(_failed(key, outcome, now, state=KeyState.INVALID), forbidden_strikes=strikes)
    suspended = _failed(key, outcome, now, state=KeyState.SUSPENDED)
    return dataclasses.replace(suspended, forbidden_strikes=strikes, state_until=now + policy.suspend_s)


def _failed(key: UpstreamKey, outcome: Outcome, now: float, state: KeyState | None = None) -> UpstreamKey:
    error = LastError(
        http_status=outcome.http_status,
        status=outcome.error_status or outcome.transport.name,
        reason=outcome.error_reason,
        message=outcome.error_message[:500],
        at=now,
    )
    return dataclasses.replace(
        key,
        consecutive_failures=key.consecutive_failures + 1,
        last_error=error,
        state=state if state is not None and key.state is not KeyState.DISABLED else key.state,
    )


def _next_strike(previous: Cooldown | None, policy: Policy, now: float) -> int:
    """Repeats within the memory window double the backoff; older ones are forgotten."""
    if previous is None or previous.until + policy.strike_memory_s < now:
        return 1
    return previous.strikes + 1


def _backoff(base_s: float, cap_s: float, strikes: int) -> float:
    return min(base_s * 2.0 ** min(strikes - 1, 30), cap_s)


def _cooldown(
    subject: CooldownId,
    reason: CooldownReason,
    until: float,
    strikes: int,
    cooldowns: Mapping[CooldownId, Cooldown],
) -> Cooldown | None:
    """A new cooldown, or None when one already in force lasts at least as long."""
    previous = cooldowns.get(subject)
    if previous is not None and previous.until >= until:
        return None
    return Cooldown(subject, reason, until, strikes, revision=previous.revision if previous else 0)
