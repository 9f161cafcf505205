"""What an upstream answer means: one parser of Gemini errors, one classifier.

Every place that must understand an answer of Google's asks this module and
nothing else: the edge (whether to fail over, the failover metric's cause),
keyring's outcome policy (``judge``) and keyring's key checker. Pure Python:
no aiohttp, grpc or etcd, so it is tested alone (tests/unit/test_answers.py).

``parse_error`` reads an error body of either dialect (the native
``{"error": {...}}`` and the OpenAI-compatible endpoint's
``[{"error": {...}}]``) into an ``UpstreamError``. ``classify`` turns an
HTTP status, a transport result, ErrorInfo reasons and QuotaFailure
violations into one ``AnswerKind``, row by row of the brief's table.

A key is blamed only for what the upstream attributes to the key: a 400, 401
or 403 is ``KEY_INVALID`` or ``KEY_FORBIDDEN`` only when an ErrorInfo reason
names the key or its project (``KEY_INVALID_REASONS``,
``KEY_FORBIDDEN_REASONS``; together ``KEY_REASONS``). A 403 naming
``BILLING_DISABLED`` or ``SERVICE_DISABLED`` (``PROJECT_FEATURE_REASONS``) is
about what the request asked of the key's project (a model or feature that
needs billing, or another API), not about the key: ``NOT_FOR_PROJECT``,
another key (another project) is tried and the key is not penalised, so a
client cannot strike keys by asking for a paid feature (issue 18). Any other 401/403 is the
request's own fault (a credential or header the client slipped in, a
resource it may not touch): ``REQUEST_AT_FAULT``, answered to the client with
no failover and no penalty. The one reasonless answer that does blame the key,
Google's 403 "Your API key was reported as leaked", gets the synthesized
reason ``LEAKED_KEY_REASON`` from ``parse_error`` so that everyone downstream
(keyring's policy, the checker) sees it the same way.

Issue 21 (Google's December 2026 details, read whole): a key restricted by
IP, referrer, app or service (``KEY_CONFIG_REASONS``: e.g. an IP-restricted
key behind the pool's egress proxy) is ``KEY_MISCONFIGURED``, the operator's
to fix, never struck to death; ``MODEL_CAPACITY_EXHAUSTED`` is Google's
capacity (``MODEL_OVERLOADED``, whatever the status), never the key's quota; a
402 is a depleted prepay of the key's billing account (``BILLING_DEPLETED``);
ErrorInfo ``consumer: projects/<number>`` gives the key's project number
(``UpstreamError.consumer_project``); QuotaFailure ``futureQuotaValue`` is
kept; ``retryDelay`` is a Duration parsed at full precision.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

__all__ = [
    "CAPACITY_REASONS",
    "GOOGLE_STATUS",
    "KEY_CONFIG_REASONS",
    "KEY_FORBIDDEN_REASONS",
    "KEY_INVALID_REASONS",
    "KEY_REASONS",
    "LEAKED_KEY_REASON",
    "PROJECT_FEATURE_REASONS",
    "AnswerKind",
    "QuotaViolation",
    "Transport",
    "UpstreamError",
    "classify",
    "duration_s",
    "google_status",
    "parse_error",
]


class Transport(enum.IntEnum):
    """How the upstream call ended before any HTTP status is looked at."""

    OK = 0  # an HTTP answer arrived
    TIMEOUT = 1  # connect or read timeout
    CONNECTION = 2  # refused, reset, dropped mid-answer
    CANCELLED = 3  # the client went away: says nothing of the key
    UNUSED = 4  # a credit (a lease asked ahead of need) the edge never used: no call at all, its grant refunded


class AnswerKind(enum.StrEnum):
    """The closed set of meanings; values double as metric label values."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"  # 429: per-minute limits, spend limits, anything not below
    DAILY_QUOTA = "daily_quota"  # 429 whose QuotaFailure names a per-day quota
    MODEL_NOT_ON_TIER = "model_not_on_tier"  # 429 whose QuotaFailure says quotaValue "0"
    KEY_INVALID = "key_invalid"  # the key itself is bad
    KEY_FORBIDDEN = "key_forbidden"  # 403: the key or its project is refused
    KEY_MISCONFIGURED = "key_misconfigured"  # 403 naming an IP/referrer/app/service restriction of the key
    BILLING_DEPLETED = "billing_depleted"  # 402: the billing account's prepaid credits are spent
    # 404 "no longer available to new users": a retired model the key's project never used; another may serve it.
    MODEL_GONE_FOR_PROJECT = "model_gone_for_project"
    NOT_FOR_PROJECT = "not_for_project"  # 403 BILLING_DISABLED/SERVICE_DISABLED: not on this project; key fine
    REQUEST_AT_FAULT = "request_at_fault"  # the client's request is wrong: no other key helps
    UPSTREAM_TROUBLE = "upstream_trouble"  # 5xx but 503, and 408: trouble upstream, not the key
    MODEL_OVERLOADED = "model_overloaded"  # 503, or MODEL_CAPACITY_EXHAUSTED: busy for everyone
    TRANSPORT_FAILURE = "transport_failure"  # timeout or broken connection
    CANCELLED = "cancelled"  # the client went away first

    @property
    def tries_another_key(self) -> bool:
        """Whether another key may answer better (the edge fails over on these)."""
        return self not in (AnswerKind.OK, AnswerKind.REQUEST_AT_FAULT, AnswerKind.CANCELLED)


# Not Google's: what parse_error names a reasonless 403 "Your API key was reported as leaked".
LEAKED_KEY_REASON: Final = "API_KEY_REPORTED_LEAKED"
_LEAKED_MESSAGE: Final = "Your API key was reported as leaked"

# ErrorInfo reasons (google.api.ErrorReason) that say the key itself is bad: never leased again until revived.
# An expired key is API_KEY_INVALID too ("API key expired. Please renew the API key.").
KEY_INVALID_REASONS: Final = frozenset({"API_KEY_INVALID", "ACCESS_TOKEN_TYPE_UNSUPPORTED", LEAKED_KEY_REASON})
# Reasons that say the key or its project is refused (suspended): suspended, then invalid after repeated
# strikes (keyring's policy).
KEY_FORBIDDEN_REASONS: Final = frozenset({"CONSUMER_SUSPENDED", "CONSUMER_INVALID"})
# Reasons that say the key is configured wrongly (its restrictions by service, referrer, app or IP, which only
# what the edge sends could meet: it sends no Referer or app headers, and an IP-restricted key behind the pool's
# egress proxy fails this way): the key's fault, but the operator's to fix, not a strike towards "invalid".
KEY_CONFIG_REASONS: Final = frozenset(
    {
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
    }
)
# Google's own capacity for the model, not the key's or project's quota: another key may serve, no one is cooled.
CAPACITY_REASONS: Final = frozenset({"MODEL_CAPACITY_EXHAUSTED"})
# Reasons that say the key's project lacks what this request needs (billing for a paid model or feature, an
# API it has not enabled): the request may succeed on another project; the key is not broken. A client chooses
# the model and the features, so these must never strike a key (issue 18).
PROJECT_FEATURE_REASONS: Final = frozenset({"BILLING_DISABLED", "SERVICE_DISABLED"})
# Every reason that blames the key: the one set the classifier looks at for 400/401/403.
KEY_REASONS: Final = KEY_INVALID_REASONS | KEY_FORBIDDEN_REASONS | KEY_CONFIG_REASONS
_KEY_STATUSES: Final = frozenset({400, 401, 403})

# HTTP status -> Google's canonical status name, for answers that carry none.
GOOGLE_STATUS: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_QUOTA_FAILURE: Final = "type.googleapis.com/google.rpc.QuotaFailure"
_DURATION: Final = re.compile(r"^\s*(?=\.?\d)(\d*)(?:\.(\d{0,9}))?s\s*$")
_CONSUMER: Final = re.compile(r"^projects/(\d+)$")


def google_status(http_status: int) -> str:
    return GOOGLE_STATUS.get(http_status, "UNKNOWN")


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One ``QuotaFailure.violations[]`` entry, as Google sent it."""

    quota_id: str = ""
    quota_metric: str = ""
    dimensions: tuple[tuple[str, str], ...] = ()
    quota_value: str = ""  # the limit as a decimal string; "" when absent
    future_quota_value: str = ""  # futureQuotaValue: a limit being rolled out; "" when absent

    # What the quotaId names (``GenerateRequestsPerMinutePerProjectPerModel-FreeTier``,
    # ``GenerateContentInputTokensPerModelPerMinute-FreeTier``...): read here and nowhere else.

    @property
    def per_day(self) -> bool:
        return "PerDay" in self.quota_id

    @property
    def per_minute(self) -> bool:
        return "PerMinute" in self.quota_id

    @property
    def counts_tokens(self) -> bool:
        """A limit on tokens ("Token" in the quotaId)."""
        return "Token" in self.quota_id

    @property
    def counts_requests(self) -> bool:
        """A limit on requests ("Request" in the quotaId, and not on tokens)."""
        return "Request" in self.quota_id and not self.counts_tokens

    @property
    def limit(self) -> int | None:
        """The limit as a number, or None when absent or not a number."""
        return int(self.quota_value) if self.quota_value.isdigit() else None

    @property
    def input_tokens_per_minute(self) -> bool:
        """A tokens-per-minute limit (``GenerateContentInputTokensPerModelPerMinute-...``)."""
        return "TokensPer" in self.quota_id and self.per_minute

    @property
    def spend_limit(self) -> bool:
        """A billing tier's spend limit (a rolling 10-minute window): "spend" in its quotaId or quotaMetric."""
        return "spend" in self.quota_id.lower() or "spend" in self.quota_metric.lower()

    def dimension(self, name: str) -> str:
        return dict(self.dimensions).get(name, "")


# Google's words for a retired model refused to a project that had not used it ("...is no longer available to
# new users..."): a fact about (project, model), not an unknown model.
GONE_FOR_NEW_USERS: Final = "no longer available to new users"


def classify(
    http_status: int,
    transport: Transport = Transport.OK,
    reasons: Iterable[str] = (),
    violations: Iterable[QuotaViolation] = (),
    estimated_input_tokens: int = 0,
    message: str = "",
) -> AnswerKind:
    """The meaning of one answer (the brief's table; the first matching row wins).

    ``estimated_input_tokens`` is the edge's estimate of the request's input
    (0: unknown): a 429 with a tokens-per-minute violation whose limit is
    below it is the request's fault (its input alone exceeds the limit).
    """
    if transport is Transport.CANCELLED or transport is Transport.UNUSED:
        return AnswerKind.CANCELLED
    if transport is not Transport.OK:
        return AnswerKind.TRANSPORT_FAILURE
    if 200 <= http_status < 300:
        return AnswerKind.OK
    named = frozenset(reasons)
    if not named.isdisjoint(CAPACITY_REASONS):
        return AnswerKind.MODEL_OVERLOADED
    if http_status == 402:
        return AnswerKind.BILLING_DEPLETED
    if http_status == 429:
        return _quota_kind(tuple(violations), estimated_input_tokens)
    if http_status in _KEY_STATUSES:
        return _key_kind(reasons)
    if http_status == 503:
        return AnswerKind.MODEL_OVERLOADED
    if http_status == 404 and GONE_FOR_NEW_USERS in message:
        return AnswerKind.MODEL_GONE_FOR_PROJECT
    if http_status >= 500 or http_status == 408:
        return AnswerKind.UPSTREAM_TROUBLE
    return AnswerKind.REQUEST_AT_FAULT


def _key_kind(reasons: Iterable[str]) -> AnswerKind:
    """A 400/401/403: the key's fault only when a reason says so; any other is the request's."""
    named = frozenset(reasons)
    if not named.isdisjoint(KEY_INVALID_REASONS):
        return AnswerKind.KEY_INVALID
    if not named.isdisjoint(KEY_FORBIDDEN_REASONS):
        return AnswerKind.KEY_FORBIDDEN
    if not named.isdisjoint(KEY_CONFIG_REASONS):
        return AnswerKind.KEY_MISCONFIGURED
    if not named.isdisjoint(PROJECT_FEATURE_REASONS):
        return AnswerKind.NOT_FOR_PROJECT
    return AnswerKind.REQUEST_AT_FAULT


def _quota_kind(violations: tuple[QuotaViolation, ...], estimated_input_tokens: int = 0) -> AnswerKind:
    if violations and all(v.limit == 0 for v in violations):
        return AnswerKind.MODEL_NOT_ON_TIER
    if estimated_input_tokens > 0 and any(
        v.input_tokens_per_minute and (limit := v.limit) and limit < estimated_input_tokens for v in violations
    ):
        return AnswerKind.REQUEST_AT_FAULT
    if any(v.per_day for v in violations):
        return AnswerKind.DAILY_QUOTA
    return AnswerKind.RATE_LIMITED


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """Google's error object, parsed; unreadable bodies still keep the HTTP status."""

    http_status: int
    status: str = ""  # canonical, e.g. RESOURCE_EXHAUSTED
    message: str = ""
    reasons: tuple[str, ...] = ()  # every ErrorInfo.reason, in order
    retry_delay_s: float = 0.0  # RetryInfo.retryDelay; 0 when absent
    violations: tuple[QuotaViolation, ...] = ()
    # The error object as received ({"code", "message", "status", "details"...}), if any.
    error: dict[str, Any] | None = field(default=None, compare=False)
    transport: Transport = Transport.OK
    # The edge's estimate of the request's input tokens (0: unknown), for a tokens-per-minute 429.
    estimated_input_tokens: int = 0
    # ErrorInfo metadata ``consumer: projects/<number>``: the key's project number ("" when not told).
    consumer_project: str = ""

    @property
    def reason(self) -> str:
        """The reason keyring is told: Google's capacity first (never the key's), then the first that blames the
        key, else the first one."""
        for reason in self.reasons:
            if reason in CAPACITY_REASONS:
                return reason
        for reason in self.reasons:
            if reason in KEY_REASONS:
                return reason
        return self.reasons[0] if self.reasons else ""

    @property
    def kind(self) -> AnswerKind:
        return classify(
            self.http_status, self.transport, self.reasons, self.violations, self.estimated_input_tokens, self.message
        )


def parse_error(http_status: int, body: bytes) -> UpstreamError:
    """Read a Google error body of either dialect; never raises."""
    status = google_status(http_status)
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return UpstreamError(http_status, status, message=body[:300].decode("utf-8", "replace").strip())
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return UpstreamError(http_status, status)
    reasons: list[str] = []
    retry_delay_s = 0.0
    violations: list[QuotaViolation] = []
    consumer = ""
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        kind = detail.get("@type")
        if kind == _ERROR_INFO:
            consumer = consumer or _consumer_project(detail.get("metadata"))
        if kind == _ERROR_INFO and isinstance(detail.get("reason"), str) and detail["reason"]:
            reasons.append(detail["reason"])
        elif kind == _RETRY_INFO:
            retry_delay_s = duration_s(detail.get("retryDelay"))
        elif kind == _QUOTA_FAILURE:
            violations += _violations(detail.get("violations"))
    named = error.get("status")
    raw_message = error.get("message")
    message = raw_message if isinstance(raw_message, str) else ""
    if http_status == 403 and not reasons and message.startswith(_LEAKED_MESSAGE):
        reasons.append(LEAKED_KEY_REASON)
    return UpstreamError(
        http_status,
        named if isinstance(named, str) and named else status,
        message,
        tuple(reasons),
        retry_delay_s,
        tuple(violations),
        error,
        consumer_project=consumer,
    )


def _consumer_project(metadata: Any) -> str:
    """ErrorInfo metadata ``consumer: "projects/<number>"`` -> the number; "" for anything else."""
    consumer = metadata.get("consumer") if isinstance(metadata, dict) else None
    match = _CONSUMER.match(consumer) if isinstance(consumer, str) else None
    return match.group(1) if match else ""


def _violations(items: Any) -> Iterable[QuotaViolation]:
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        dimensions = item.get("quotaDimensions")
        yield QuotaViolation(
            quota_id=_text(item.get("quotaId")),
            quota_metric=_text(item.get("quotaMetric")),
            dimensions=tuple(
                sorted((str(k), str(v)) for k, v in dimensions.items()) if isinstance(dimensions, dict) else ()
            ),
            quota_value=_text(item.get("quotaValue")),
            future_quota_value=_text(item.get("futureQuotaValue")),
        )


def _text(value: Any) -> str:
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""


def duration_s(value: Any) -> float:
    """google.protobuf.Duration JSON ("37s", "1.5s", "0.123456789s") -> seconds at full precision (up to nine
    fractional digits, as the Duration's nanos); 0 when absent or malformed. Parsed as a whole: a number found
    inside another text (a "403" among the digits) is never read as a delay."""
    if not isinstance(value, str):
        return 0.0
    match = _DURATION.match(value)
    if not match:
        return 0.0
    nanos = int((match.group(2) or "").ljust(9, "0"))
    return int(match.group(1) or 0) + nanos / 1e9


# -- the quota day --------------------------------------------------------------

# Gemini's per-day quotas reset at midnight US Pacific time.
PACIFIC: Final = ZoneInfo("America/Los_Angeles")


def pacific_day(now: float) -> tuple[float, float]:
    """The Pacific day ``now`` falls in, as (its midnight, the next midnight) in epoch seconds (DST-aware)."""
    day = dt.datetime.fromtimestamp(now, PACIFIC).date()
    midnight = dt.datetime.combine(day, dt.time(0, 0), tzinfo=PACIFIC)
    following = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 0), tzinfo=PACIFIC)
    return midnight.timestamp(), following.timestamp()
