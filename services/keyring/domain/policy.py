"""The outcome policy: what one upstream answer means for the key that gave it.

What an answer *is* is decided by the shared classifier
(``services.common.answers.classify``, through ``Outcome.kind``); this module
decides only what each kind does to the key (see ``judge``). It is pure: it
takes the key, the cooldowns in force and a clock reading, and returns the
records to write; the caller persists them with guarded writes.

One quota event is one strike (issue 13). A 429 cools the quota subject's
pair (``UpstreamKey.quota_subject``), upstream trouble the (key, model) pair;
the pair's cooldown record carries a strike count, and a backoff without
RetryInfo is ``base * 2 ** (strikes - 1)``, capped, unless a quota violation
says when the quota frees: a per-minute one at the end of the fixed epoch
minute its call was sent in (``limits.window``), a per-day one at Pacific
midnight. An answer is dated by
when its call was sent, ``sent = now - outcome.latency_s`` (a 429 comes back
at once; a call timing out during an outage belongs to that outage). Against
the pair's record ``previous``:

- no record, or one that ended more than ``strike_memory_s`` before ``sent``:
  strike 1, the base backoff;
- ``sent < previous.until``: the call left before the pair's cooldown ended
  (the pair is cooling now, or the answer is a straggler of the event that
  started it): the same event. No strike (the key's failure count still
  counts the answer); ``until`` moves later only when the answer itself says
  so (its RetryInfo, or a per-day quota's next Pacific midnight), the strike
  count unchanged.
  The concurrent answers of one quota event therefore make one strike
  however many arrive, and a storm shorter than the base backoff cools the
  pair for one base backoff;
- otherwise (the call left after the cooldown had ended and failed again
  within ``strike_memory_s`` of its end): a new event on a pair that had
  recovered: one more strike, the backoff doubles. Except after a cooldown
  its per-minute window cut short: a per-minute 429 of a call sent in the
  minute that began as the pair's cooldown ended keeps the strike count (the
  pair never served that backoff; a storm crossing a minute boundary would
  otherwise double it: cooled to the minute's end, then twice the base).

A success decays: a 2xx to a call sent after a pair's cooldown ended halves
that record's strike count (one record per answer: the quota subject's first,
then the (key, model) pair's), so a recovered pair's next 429 starts again
from a short backoff. A success changes nothing about a record still in
force. ``is_routine_success`` stays a fast path: a success is routine when
the key's slate is clean and neither record of the pair holds a strike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from services.common.answers import PACIFIC as PACIFIC  # the quota day's zone, for callers of this module
from services.common.answers import AnswerKind, classify, pacific_day

from .limits import metric_of, window
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

# Kinds that leave the key as it is: busy for everyone, the caller's own fault, the caller gone, a model or
# feature the key's project lacks (billing, an API: the client chose it; another project may serve it).
_NO_PENALTY = frozenset(
    {AnswerKind.MODEL_OVERLOADED, AnswerKind.REQUEST_AT_FAULT, AnswerKind.CANCELLED, AnswerKind.NOT_FOR_PROJECT}
)
_QUOTA = frozenset({AnswerKind.RATE_LIMITED, AnswerKind.DAILY_QUOTA})
# A billing tier's spend limit is evaluated over a rolling 10-minute window.
SPEND_WINDOW_S = 600.0
# A depleted prepay (402) is not retryable until topped up: the account is tried again after this (an operator's
# revive of one of its keys clears it sooner).
BILLING_DEPLETED_S = 3600.0
# A retired model refused to a project ("no longer available to new users") stays refused: tried again after a day.
MODEL_GONE_S = 86400.0
_TROUBLE = frozenset({AnswerKind.UPSTREAM_TROUBLE, AnswerKind.TRANSPORT_FAILURE})
_NO_COOLDOWNS: Mapping[CooldownId, Cooldown] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Verdict:
    """Records to write: a new or longer cooldown, a changed key, or nothing."""

    cooldown: Cooldown | None = None
    key: UpstreamKey | None = None


def next_pacific_midnight(now: float) -> float:
    """When Gemini's per-day quotas reset: the next midnight US Pacific time (``answers.pacific_day``)."""
    return pacific_day(now)[1]


def _clean_slate(key: UpstreamKey) -> bool:
    return key.consecutive_failures == 0 and key.forbidden_strikes == 0 and key.state is KeyState.ACTIVE


def is_routine_success(
    outcome: Outcome,
    key: UpstreamKey,
    model: str = "",
    cooldowns: Mapping[CooldownId, Cooldown] = _NO_COOLDOWNS,
) -> bool:
    """A success from a key with a clean slate whose pair holds no strike: nothing to learn (most answers).

    ``judge`` writes nothing for such an answer; with no cooldown record of the
    pair this costs one or two dict lookups, never a judgement.
    """
    if classify(outcome.http_status, outcome.transport) is not AnswerKind.OK or not _clean_slate(key):
        return False
    if not cooldowns:
        return True
    for subject in key.cooldown_subjects(model):
        record = cooldowns.get(subject)
        if record is not None and record.strikes > 0:
            return False
    return True


def blames_key(outcome: Outcome) -> bool:
    """Whether ``judge`` may hold the answer against the key (a strike, a cooldown, a state): not a success
    and not a kind that leaves the key as it is. Such outcomes are judged within a budget per caller
    (``blames.BlameBudget``)."""
    kind = outcome.kind
    return kind is not AnswerKind.OK and kind not in _NO_PENALTY


def judge(
    outcome: Outcome,
    key: UpstreamKey,
    model: str,
    policy: Policy,
    now: float,
    cooldowns: Mapping[CooldownId, Cooldown],
) -> Verdict:
    """What one answer, of the kind the shared classifier names, does to the key; and the key's project number
    when the answer names it (ErrorInfo ``consumer``) and it is news."""
    verdict = _judge(outcome, key, model, policy, now, cooldowns)
    number = outcome.consumer_project
    if not number or number == key.project_number:
        return verdict
    return dataclasses.replace(verdict, key=dataclasses.replace(verdict.key or key, project_number=number))


def _judge(
    outcome: Outcome,
    key: UpstreamKey,
    model: str,
    policy: Policy,
    now: float,
    cooldowns: Mapping[CooldownId, Cooldown],
) -> Verdict:
    kind = outcome.kind
    if kind in _NO_PENALTY:
        return Verdict()
    if kind is AnswerKind.OK:
        return _success(outcome, key, model, now, cooldowns)
    if kind in _TROUBLE:
        return _server_trouble(outcome, key, model, policy, now, cooldowns)
    if kind is AnswerKind.MODEL_NOT_ON_TIER:
        return _not_on_tier(key, model, now, cooldowns)
    if kind is AnswerKind.BILLING_DEPLETED:
        return _billing_depleted(outcome, key, now, cooldowns)
    if kind is AnswerKind.MODEL_GONE_FOR_PROJECT:
        subject = key.quota_subject(model)
        return Verdict(cooldown=_cooldown(subject, CooldownReason.MODEL_GONE, now + MODEL_GONE_S, 0, cooldowns))
    if kind in _QUOTA and _spend_limit(outcome) and (key.project or key.billing_account):
        return _spend_limited(outcome, key, now, cooldowns)
    if kind in _QUOTA:
        return _rate_limited(outcome, kind, key, model, policy, now, cooldowns)
    if kind is AnswerKind.KEY_INVALID:
        return Verdict(key=_failed(key, outcome, now, state=KeyState.INVALID))
    if kind is AnswerKind.KEY_FORBIDDEN:
        return Verdict(key=_forbidden(key, outcome, policy, now))
    if kind is AnswerKind.KEY_MISCONFIGURED:
        return Verdict(key=_misconfigured(key, outcome, policy, now))
    raise ValueError(f"the outcome policy has no row for {kind!r}")


def _success(
    outcome: Outcome, key: UpstreamKey, model: str, now: float, cooldowns: Mapping[CooldownId, Cooldown]
) -> Verdict:
    decayed = _decayed(outcome, key, model, now, cooldowns)
    if _clean_slate(key):
        return Verdict(cooldown=decayed)
    # A suspended key that answers again (its trial after state_until) is healthy.
    state = KeyState.ACTIVE if key.state is KeyState.SUSPENDED else key.state
    return Verdict(
        cooldown=decayed,
        key=dataclasses.replace(key, consecutive_failures=0, forbidden_strikes=0, state=state, state_until=0.0),
    )


def _decayed(
    outcome: Outcome, key: UpstreamKey, model: str, now: float, cooldowns: Mapping[CooldownId, Cooldown]
) -> Cooldown | None:
    """The first record of the pair that this success halves the strikes of, if any (its cooldown over)."""
    if not cooldowns:
        return None
    sent = _sent_at(outcome, now)
    for subject in (key.quota_subject(model), CooldownId(CooldownScope.KEY, key.key_id, model)):
        record = cooldowns.get(subject)
        if record is not None and record.strikes > 0 and record.until <= sent:
            return dataclasses.replace(record, strikes=record.strikes // 2)
    return None


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
    previous = cooldowns.get(subject)
    sent = _sent_at(outcome, now)
    # What the answer itself says about the end (0: nothing); without RetryInfo, when its per-minute window ends.
    window_start = window_end = 0.0
    if kind is AnswerKind.DAILY_QUOTA:
        reason, told = CooldownReason.DAILY_QUOTA, next_pacific_midnight(now)
    elif outcome.retry_delay_s > 0:
        reason, told = CooldownReason.RATE_LIMIT, now + outcome.retry_delay_s
    else:
        reason, told = CooldownReason.RATE_LIMIT, 0.0
        window_start, window_end = _minute_window(outcome, sent)
        if window_end and window_end <= now:  # a per-minute window that has ended since the call left
            return Verdict(key=_failed(key, outcome, now))
    if previous is not None and sent < previous.until:  # an answer of the event already cooling
        return Verdict(cooldown=_extended(previous, reason, told), key=_failed(key, outcome, now))
    strikes = _next_strike(previous, policy, sent)
    if window_end and previous is not None and previous.reason is reason and previous.until == window_start:
        # The pair's last cooldown ended when this call's minute began: its window, not its backoff, ended it
        # (a window cuts the backoff, below). The pair never served that backoff: no doubling.
        strikes = max(previous.strikes, 1)
    backoff_end = now + _backoff(policy.rate_limit_cooldown_s, policy.rate_limit_max_cooldown_s, strikes)
    # A window frees the quota at its end, but never later than the pool's backoff would: a storm of 429s
    # naming a per-minute quota (an overloaded upstream) must not keep every project out until the minute ends.
    until = told or (min(window_end, backoff_end) if window_end else backoff_end)
    return Verdict(
        cooldown=_cooldown(subject, reason, until, strikes, cooldowns),
        key=_failed(key, outcome, now),
    )


def _minute_window(outcome: Outcome, sent: float) -> tuple[float, float]:
    """A 429 without RetryInfo naming a per-minute quota: the fixed minute the call was sent in ((0, 0): none).

    The limit frees when its window does (``limits.window``: fixed epoch
    minutes), not after the generic backoff (60 s doubling), which would
    keep the project out for a window or more it could be served in; the
    backoff still caps it (``_rate_limited``), so a pool whose base backoff
    is shorter than a minute recovers from a storm as fast as it says.
    """
    for violation in outcome.violations:
        metric = metric_of(violation)
        if metric is not None and not metric.per_day:
            return window(metric, sent)
    return 0.0, 0.0


def _not_on_tier(key: UpstreamKey, model: str, now: float, cooldowns: Mapping[CooldownId, Cooldown]) -> Verdict:
    """quotaValue "0": a fact about (project, model), not a backoff: unavailable until the daily reset.

    No strike and no failure of the key: the next call is the one after
    Pacific midnight (an operator's revive of a key of the project clears it
    sooner), so the pair costs at most one upstream call a day.
    """
    subject = key.quota_subject(model)
    previous = cooldowns.get(subject)
    until = next_pacific_midnight(now)
    if previous is not None and previous.reason is CooldownReason.NOT_ON_TIER and previous.until >= until:
        return Verdict()
    revision = previous.revision if previous else 0
    strikes = previous.strikes if previous else 0
    return Verdict(
        cooldown=Cooldown(
            subject,
            CooldownReason.NOT_ON_TIER,
            max(until, previous.until if previous else 0.0),
            strikes,
            revision=revision,
        )
    )


def _spend_limited(outcome: Outcome, key: UpstreamKey, now: float, cooldowns: Mapping[CooldownId, Cooldown]) -> Verdict:
    """A spend limit: the whole billing account (else project), every model, for the limit's window (its
    RetryInfo when longer): spend caps are the account's, every project of it is refused alike."""
    until = now + max(outcome.retry_delay_s, SPEND_WINDOW_S)
    return Verdict(cooldown=_cooldown(key.billing_subject(), CooldownReason.SPEND_LIMIT, until, 1, cooldowns))


def _spend_limit(outcome: Outcome) -> bool:
    """A spend limit: a violation naming spend, or Google's words for it when the 429 carries no QuotaFailure
    ("...exceeded its spend-based rate limit for the current 10-minute window...")."""
    return any(v.spend_limit for v in outcome.violations) or "spend-based rate limit" in outcome.error_message


def _billing_depleted(
    outcome: Outcome, key: UpstreamKey, now: float, cooldowns: Mapping[CooldownId, Cooldown]
) -> Verdict:
    """A 402: the account's prepay is spent: every project of it (else the project, else the key), every model,
    for ``BILLING_DEPLETED_S``. No strike and no failure of the key: the key is fine, the account is not."""
    until = now + max(outcome.retry_delay_s, BILLING_DEPLETED_S)
    return Verdict(cooldown=_cooldown(key.billing_subject(), CooldownReason.BILLING_DEPLETED, until, 1, cooldowns))


# What the console shows for a key whose restrictions refuse the pool's calls (its last error's message).
MISCONFIGURED_MESSAGE = (
    "the key's restrictions (API, IP address, referrer or app) refuse the pool's calls: allow the Generative "
    "Language API and the pool's egress address for this key in Google Cloud, then revive it. Google said: "
)


def _misconfigured(key: UpstreamKey, outcome: Outcome, policy: Policy, now: float) -> UpstreamKey:
    """A key configured wrongly (``KEY_CONFIG_REASONS``): out for ``suspend_s`` with a message saying what to fix,
    then tried again; never a strike towards invalid (the operator's fix, not the key's death)."""
    message = MISCONFIGURED_MESSAGE + outcome.error_message
    told = dataclasses.replace(outcome, error_message=message)
    suspended = _failed(key, told, now, state=KeyState.SUSPENDED)
    return dataclasses.replace(suspended, state_until=now + policy.suspend_s)


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
    previous = cooldowns.get(subject)
    if previous is not None and _sent_at(outcome, now) < previous.until:
        told = now + outcome.retry_delay_s if outcome.retry_delay_s > 0 else 0.0
        return Verdict(cooldown=_extended(previous, CooldownReason.SERVER_ERROR, told), key=_failed(key, outcome, now))
    strikes = _next_strike(previous, policy, _sent_at(outcome, now))
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


def _sent_at(outcome: Outcome, now: float) -> float:
    """When the answered call left: an answer belongs to the moment its call was sent."""
    return now - max(outcome.latency_s, 0.0)


def _next_strike(previous: Cooldown | None, policy: Policy, sent: float) -> int:
    """A failure of a call sent after the pair's cooldown ended, within the memory window: one more strike.

    Only called when ``sent`` is at or after ``previous.until`` (an earlier call
    belongs to the event that made ``previous``); older strikes are forgotten.
    """
    if previous is None or previous.until + policy.strike_memory_s < sent:
        return 1
    return previous.strikes + 1


def _extended(previous: Cooldown, reason: CooldownReason, told: float) -> Cooldown | None:
    """An answer of an event already cooling: later only when the answer itself names a later end."""
    if told <= previous.until:
        return None
    return dataclasses.replace(previous, reason=reason, until=told)


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
