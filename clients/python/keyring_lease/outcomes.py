"""Google's answer, as keyring is told it: the edge's classifier (``answers``) and the Outcome message.

``answers`` is the very module the edge and keyring use (services/common/answers.py, linked into this
package), so an internal service and the edge judge an answer the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keyring_lease._proto.keyring.v1 import keyring_pb2 as pb
from keyring_lease.answers import AnswerKind, Transport, UpstreamError, classify, parse_error

__all__ = ["Report", "answer_report", "cancelled_report", "transport_report"]

_TRANSPORT = {
    Transport.OK: pb.Outcome.TRANSPORT_OK,
    Transport.TIMEOUT: pb.Outcome.TRANSPORT_TIMEOUT,
    Transport.CONNECTION: pb.Outcome.TRANSPORT_CONNECTION,
    Transport.CANCELLED: pb.Outcome.TRANSPORT_CANCELLED,
}
_MESSAGE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Report:
    """What a lease reports at its release: the classified kind and the Outcome keyring judges."""

    kind: AnswerKind
    outcome: pb.Outcome
    error: UpstreamError | None = None


def answer_report(
    http_status: int,
    body: bytes | str,
    latency_ms: int,
    tokens: tuple[int | None, int | None] = (None, None),
    model: str = "",
) -> Report:
    """An HTTP answer of Google's (status and body, either dialect): a success with its token counts (and the
    model that answered, when not ``model``), or an error with its status, reason, retry delay, quota
    violations and consumer project, as the edge reports them (services/edge/upstream.py ``error_outcome``)."""
    raw = body.encode() if isinstance(body, str) else body
    if 200 <= http_status < 300:
        data = _json(raw)
        counted = _usage(data)
        served = _model_version(data)
        outcome = pb.Outcome(
            transport=pb.Outcome.TRANSPORT_OK,
            http_status=http_status,
            latency_ms=latency_ms,
            input_tokens=tokens[0] if tokens[0] is not None else counted[0],
            output_tokens=tokens[1] if tokens[1] is not None else counted[1],
            served_model=served if served != model.removeprefix("models/") else "",
        )
        return Report(classify(http_status), outcome)
    error = parse_error(http_status, raw)
    outcome = pb.Outcome(
        transport=pb.Outcome.TRANSPORT_OK,
        http_status=error.http_status,
        error_status=error.status,
        error_reason=error.reason,
        retry_delay_ms=round(error.retry_delay_s * 1000),
        quota_violations=[
            pb.QuotaViolation(
                quota_id=violation.quota_id,
                quota_metric=violation.quota_metric,
                dimensions=dict(violation.dimensions),
                quota_value=violation.quota_value,
                future_quota_value=violation.future_quota_value,
            )
            for violation in error.violations
        ],
        latency_ms=latency_ms,
        error_message=error.message[:_MESSAGE_LIMIT],
        consumer_project=error.consumer_project,
    )
    return Report(error.kind, outcome, error)


def transport_report(transport: Transport, latency_ms: int) -> Report:
    """The call never got an HTTP answer: a timeout or a broken connection (or the caller gave up)."""
    outcome = pb.Outcome(transport=_TRANSPORT[transport], latency_ms=latency_ms)
    return Report(classify(0, transport), outcome)


def cancelled_report(latency_ms: int) -> Report:
    """Nothing was reported (the block raised or returned first): says nothing of the key."""
    return transport_report(Transport.CANCELLED, latency_ms)


def _json(body: bytes) -> dict[str, Any]:
    """The answer as a JSON object; {} when it is not one (a stream's text, an empty body)."""
    try:
        data: Any = json.loads(body) if body else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _model_version(data: dict[str, Any]) -> str:
    """The model that answered (native ``modelVersion``, OpenAI ``model``), without ``models/``."""
    named = data.get("modelVersion", data.get("model"))
    return named.removeprefix("models/") if isinstance(named, str) else ""


def _usage(data: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens from a native answer's usageMetadata or an OpenAI-compatible answer's usage."""
    native = data.get("usageMetadata")
    if isinstance(native, dict):
        output = _count(native, "candidatesTokenCount") + _count(native, "thoughtsTokenCount")
        return _count(native, "promptTokenCount"), output
    openai = data.get("usage")
    if isinstance(openai, dict):
        return _count(openai, "prompt_tokens"), _count(openai, "completion_tokens")
    return 0, 0


def _count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
