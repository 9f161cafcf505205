"""The one classifier of upstream answers: parsing both dialects' error shapes, and the table."""

from __future__ import annotations

import orjson
import pytest

from services.common.answers import (
    KEY_CONFIG_REASONS,
    KEY_FORBIDDEN_REASONS,
    KEY_INVALID_REASONS,
    KEY_REASONS,
    LEAKED_KEY_REASON,
    AnswerKind,
    QuotaViolation,
    Transport,
    UpstreamError,
    classify,
    duration_s,
    parse_error,
)

PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


def _quota_error(*violations: dict[str, object], retry: str | None = "37s") -> dict[str, object]:
    details: list[dict[str, object]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": list(violations)},
        {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
    ]
    if retry is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry})
    return {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": details}}


def test_native_429_is_read_whole() -> None:
    body = _quota_error(
        {
            "quotaMetric": "m/requests",
            "quotaId": PER_MINUTE,
            "quotaDimensions": {"model": "gemini-3.5-flash", "location": "global"},
            "quotaValue": "10",
        },
        {"quotaMetric": "m/tokens", "quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier"},
    )
    parsed = parse_error(429, orjson.dumps(body))
    assert parsed.status == "RESOURCE_EXHAUSTED"
    assert parsed.retry_delay_s == 37.0
    assert [v.quota_id for v in parsed.violations] == [
        PER_MINUTE,
        "GenerateContentInputTokensPerModelPerMinute-FreeTier",
    ]
    first = parsed.violations[0]
    assert first.limit == 10 and first.dimension("model") == "gemini-3.5-flash" and first.quota_metric == "m/requests"
    assert parsed.violations[1].quota_value == "" and parsed.violations[1].limit is None
    assert parsed.kind is AnswerKind.RATE_LIMITED
    assert parsed.error is not None and parsed.error["code"] == 429


def test_openai_compatible_array_is_unwrapped() -> None:
    body = [
        {
            "error": {
                "code": 400,
                "message": "API key not valid.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            }
        }
    ]
    parsed = parse_error(400, orjson.dumps(body))
    assert parsed.reasons == ("API_KEY_INVALID",) and parsed.reason == "API_KEY_INVALID"
    assert parsed.message == "API key not valid."
    assert parsed.kind is AnswerKind.KEY_INVALID


@pytest.mark.parametrize(
    "body", [b"", b"not json at all", b"[]", b"{}", b'{"error": "text"}', b"[1, 2]", b'{"error": {"details": "x"}}']
)
def test_unreadable_bodies_keep_the_status(body: bytes) -> None:
    parsed = parse_error(503, body)
    assert parsed.http_status == 503 and parsed.status == "UNAVAILABLE"
    assert parsed.kind is AnswerKind.MODEL_OVERLOADED


def test_malformed_details_are_skipped() -> None:
    body = {
        "error": {
            "code": 429,
            "details": [
                "text",
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": 12},
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": ["x", {"quotaId": 5, "quotaDimensions": []}],
                },
            ],
        }
    }
    parsed = parse_error(429, orjson.dumps(body))
    assert parsed.retry_delay_s == 0.0
    assert parsed.violations == (QuotaViolation(quota_id="5"),)


@pytest.mark.parametrize(
    ("status", "transport", "reasons", "violations", "kind"),
    [
        (200, Transport.OK, (), (), AnswerKind.OK),
        (0, Transport.CANCELLED, (), (), AnswerKind.CANCELLED),
        (0, Transport.TIMEOUT, (), (), AnswerKind.TRANSPORT_FAILURE),
        (0, Transport.CONNECTION, (), (), AnswerKind.TRANSPORT_FAILURE),
        (429, Transport.OK, (), (), AnswerKind.RATE_LIMITED),
        (429, Transport.OK, (), (QuotaViolation(PER_MINUTE, quota_value="10"),), AnswerKind.RATE_LIMITED),
        (429, Transport.OK, (), (QuotaViolation(PER_MINUTE), QuotaViolation(PER_DAY)), AnswerKind.DAILY_QUOTA),
        (429, Transport.OK, (), (QuotaViolation(PER_MINUTE, quota_value="0"),), AnswerKind.MODEL_NOT_ON_TIER),
        (400, Transport.OK, ("API_KEY_INVALID",), (), AnswerKind.KEY_INVALID),
        (401, Transport.OK, ("ACCESS_TOKEN_TYPE_UNSUPPORTED",), (), AnswerKind.KEY_INVALID),
        (403, Transport.OK, ("CONSUMER_SUSPENDED",), (), AnswerKind.KEY_FORBIDDEN),
        (403, Transport.OK, ("API_KEY_SERVICE_BLOCKED",), (), AnswerKind.KEY_MISCONFIGURED),
        # Issue 18: billing or an API off for what the request asks is the project's, not a broken key
        (403, Transport.OK, ("SERVICE_DISABLED",), (), AnswerKind.NOT_FOR_PROJECT),
        (403, Transport.OK, ("BILLING_DISABLED",), (), AnswerKind.NOT_FOR_PROJECT),
        (403, Transport.OK, ("BILLING_DISABLED", "CONSUMER_SUSPENDED"), (), AnswerKind.KEY_FORBIDDEN),
        (403, Transport.OK, ("API_KEY_REPORTED_LEAKED",), (), AnswerKind.KEY_INVALID),
        # Issue 11: no reason that blames the key, no blame (before, a bare 401 was KEY_INVALID, a 403 KEY_FORBIDDEN)
        (401, Transport.OK, (), (), AnswerKind.REQUEST_AT_FAULT),
        (403, Transport.OK, (), (), AnswerKind.REQUEST_AT_FAULT),
        (403, Transport.OK, ("USER_PROJECT_DENIED",), (), AnswerKind.REQUEST_AT_FAULT),
        (401, Transport.OK, ("ACCESS_TOKEN_EXPIRED",), (), AnswerKind.REQUEST_AT_FAULT),
        (404, Transport.OK, ("API_KEY_INVALID",), (), AnswerKind.REQUEST_AT_FAULT),
        (400, Transport.OK, (), (), AnswerKind.REQUEST_AT_FAULT),
        (404, Transport.OK, (), (), AnswerKind.REQUEST_AT_FAULT),
        (500, Transport.OK, (), (), AnswerKind.UPSTREAM_TROUBLE),
        (502, Transport.OK, (), (), AnswerKind.UPSTREAM_TROUBLE),
        (504, Transport.OK, (), (), AnswerKind.UPSTREAM_TROUBLE),
        (505, Transport.OK, (), (), AnswerKind.UPSTREAM_TROUBLE),
        (408, Transport.OK, (), (), AnswerKind.UPSTREAM_TROUBLE),
        (503, Transport.OK, (), (), AnswerKind.MODEL_OVERLOADED),
    ],
)
def test_the_table(
    status: int,
    transport: Transport,
    reasons: tuple[str, ...],
    violations: tuple[QuotaViolation, ...],
    kind: AnswerKind,
) -> None:
    assert classify(status, transport, reasons, violations) is kind


def test_who_fails_over() -> None:
    stays = {kind for kind in AnswerKind if not kind.tries_another_key}
    assert stays == {AnswerKind.OK, AnswerKind.REQUEST_AT_FAULT, AnswerKind.CANCELLED}


@pytest.mark.parametrize(
    ("text", "seconds"), [("37s", 37.0), ("1.5s", 1.5), (".25s", 0.25), ("", 0.0), ("5m", 0.0), (None, 0.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_the_leaked_key_403_carries_no_reason_and_gets_a_synthesized_one() -> None:
    body = {
        "error": {
            "code": 403,
            "message": "Your API key was reported as leaked. Please use another API key.",
            "status": "PERMISSION_DENIED",
        }
    }
    parsed = parse_error(403, orjson.dumps(body))
    assert parsed.reasons == (LEAKED_KEY_REASON,) and parsed.kind is AnswerKind.KEY_INVALID
    echoed = {"error": {"code": 400, "message": "Your API key was reported as leaked", "status": "INVALID_ARGUMENT"}}
    assert parse_error(400, orjson.dumps(echoed)).kind is AnswerKind.REQUEST_AT_FAULT  # only Google's 403


def test_the_reason_keyring_is_told_is_the_one_that_blames_the_key() -> None:
    body = {
        "error": {
            "code": 403,
            "status": "PERMISSION_DENIED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SOMETHING_ELSE"},
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CONSUMER_SUSPENDED"},
            ],
        }
    }
    parsed = parse_error(403, orjson.dumps(body))
    assert parsed.reason == "CONSUMER_SUSPENDED" and parsed.kind is AnswerKind.KEY_FORBIDDEN


def test_the_key_reasons_are_one_set() -> None:
    assert KEY_REASONS == KEY_INVALID_REASONS | KEY_FORBIDDEN_REASONS | KEY_CONFIG_REASONS
    assert not KEY_INVALID_REASONS & KEY_FORBIDDEN_REASONS


TPM = "GenerateContentInputTokensPerModelPerMinute-FreeTier"


def test_a_tpm_429_below_the_requests_estimate_is_the_requests_fault() -> None:
    tpm = QuotaViolation(TPM, quota_value="250000")
    assert classify(429, violations=(tpm,), estimated_input_tokens=250_001) is AnswerKind.REQUEST_AT_FAULT
    assert classify(429, violations=(tpm,), estimated_input_tokens=249_999) is AnswerKind.RATE_LIMITED
    assert classify(429, violations=(tpm,)) is AnswerKind.RATE_LIMITED  # no estimate: no blame
    assert classify(429, violations=(QuotaViolation(TPM),), estimated_input_tokens=10**9) is AnswerKind.RATE_LIMITED
    per_minute = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="10")
    assert classify(429, violations=(per_minute,), estimated_input_tokens=10**6) is AnswerKind.RATE_LIMITED
    error = UpstreamError(429, violations=(tpm,), estimated_input_tokens=300_000)
    assert error.kind is AnswerKind.REQUEST_AT_FAULT and not error.kind.tries_another_key


def test_every_violation_at_zero_is_not_on_tier_even_per_day() -> None:
    per_day = QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier", quota_value="0")
    per_minute = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="0")
    assert classify(429, violations=(per_day, per_minute)) is AnswerKind.MODEL_NOT_ON_TIER
    assert classify(429, violations=(per_day,)) is AnswerKind.MODEL_NOT_ON_TIER


def test_spend_limit_violations_are_told() -> None:
    assert QuotaViolation("SpendBasedLimitPerTier").spend_limit
    assert QuotaViolation("x", quota_metric="generativelanguage.googleapis.com/spend_per_10_minutes").spend_limit
    assert not QuotaViolation(TPM).spend_limit


# -- issue 21: Google's error details read whole ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0.123456789s", 0.123456789), ("2.000000001s", 2.000000001), ("403.5s", 403.5), ("1.1234567890s", 0.0)],
)
def test_retry_delay_is_a_duration_at_full_precision(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_error_info_consumer_names_the_keys_project_number() -> None:
    body = {
        "error": {
            "code": 403,
            "status": "PERMISSION_DENIED",
            "message": "Requests from this IP are blocked.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_IP_ADDRESS_BLOCKED",
                    "metadata": {"consumer": "projects/123456789012", "service": "generativelanguage.googleapis.com"},
                }
            ],
        }
    }
    parsed = parse_error(403, orjson.dumps(body))
    assert parsed.consumer_project == "123456789012"
    assert parsed.kind is AnswerKind.KEY_MISCONFIGURED and parsed.kind.tries_another_key
    assert (
        parse_error(
            403,
            orjson.dumps(
                {
                    "error": {
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "metadata": {"consumer": "projects/x/../1"},
                            }
                        ]
                    }
                }
            ),
        ).consumer_project
        == ""
    )


@pytest.mark.parametrize("reason", sorted(KEY_CONFIG_REASONS))
def test_key_restrictions_are_a_configuration_fault_not_a_forbidden_key(reason: str) -> None:
    assert classify(403, Transport.OK, (reason,)) is AnswerKind.KEY_MISCONFIGURED


@pytest.mark.parametrize("status", [429, 503, 500])
def test_capacity_exhausted_is_googles_capacity_never_the_keys(status: int) -> None:
    body = {
        "error": {
            "code": status,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "MODEL_CAPACITY_EXHAUSTED"},
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel", "quotaValue": "10"}],
                },
            ],
        }
    }
    parsed = parse_error(status, orjson.dumps(body))
    assert parsed.kind is AnswerKind.MODEL_OVERLOADED
    assert parsed.reason == "MODEL_CAPACITY_EXHAUSTED"


def test_a_402_is_a_depleted_prepay_tried_elsewhere() -> None:
    body = {"error": {"code": 402, "status": "RESOURCE_EXHAUSTED", "message": "Your prepayment credits are depleted."}}
    parsed = parse_error(402, orjson.dumps(body))
    assert parsed.status == "RESOURCE_EXHAUSTED"
    assert parsed.kind is AnswerKind.BILLING_DEPLETED and parsed.kind.tries_another_key
    assert parse_error(402, b"").status == "RESOURCE_EXHAUSTED"


def test_future_quota_value_is_read() -> None:
    body = {
        "error": {
            "code": 429,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                            "quotaValue": "10",
                            "futureQuotaValue": "5",
                        }
                    ],
                }
            ],
        }
    }
    (violation,) = parse_error(429, orjson.dumps(body)).violations
    assert (violation.limit, violation.future_quota_value) == (10, "5")
