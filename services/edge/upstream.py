"""Talking to Gemini: the upstream request (headers, URL, real key) and what its answer means.

Everything here is plain functions over bytes and headers, so the attempt
loop (``forwarding``) stays about control flow. Google's error object is
parsed once, into an ``UpstreamError``, from which both the keyring
``Outcome`` and the client's error answer are built.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote_plus

import orjson

from services.common.proto.keyring.v1 import keyring_pb2 as pb

# Never forwarded to the upstream: hop-by-hop, the client's credentials, cookies,
# and headers aiohttp sets itself from the body it sends.
_DROP_REQUEST: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "authorization",
        "x-goog-api-key",
        "cookie",
        "accept-encoding",  # re-derived: only codings the edge can read back (errors, usage)
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
# Never passed back to the client: hop-by-hop, and what aiohttp derives itself.
_DROP_RESPONSE: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "set-cookie",
        "alt-svc",
        "server",
        "date",
    }
)
_READABLE_CODINGS: Final = frozenset({"gzip", "deflate", "identity"})

GOOGLE_STATUS: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_PROMPT_TOKENS: Final = re.compile(rb'"(?:promptTokenCount|prompt_tokens)"\s*:\s*(\d+)')
_OUTPUT_TOKENS: Final = re.compile(rb'"(?:candidatesTokenCount|completion_tokens)"\s*:\s*(\d+)')
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")

_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"
_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_QUOTA_FAILURE: Final = "type.googleapis.com/google.rpc.QuotaFailure"


# -- the request ------------------------------------------------------------


def forward_headers(incoming: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's headers minus hop-by-hop and credentials (the key is added per attempt)."""
    headers: dict[str, str] = {}
    accept_encoding = "identity"
    for name, value in incoming:
        lower = name.lower()
        if lower == "accept-encoding":
            accept_encoding = readable_codings(value)
        elif lower not in _DROP_REQUEST:
            headers[name] = value
    # Always explicit, or aiohttp would ask for gzip on a client's behalf.
    headers["Accept-Encoding"] = accept_encoding
    return headers


def readable_codings(accept_encoding: str) -> str:
    """The client's Accept-Encoding restricted to codings the edge can decode (gzip, deflate)."""
    kept = [token for token in accept_encoding.split(",") if token.split(";")[0].strip().lower() in _READABLE_CODINGS]
    return ",".join(token.strip() for token in kept) or "identity"


def without_key(raw_query: str) -> str:
    """The raw query string minus any ``key`` parameter (the client's token), the rest untouched."""
    if not raw_query or "key" not in raw_query:
        return raw_query
    return "&".join(
        part for part in raw_query.split("&") if part and unquote_plus(part.partition("=")[0]) != "key"
    )


def response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's answer headers that make sense to the client (content-type, encoding, x-goog-*...)."""
    return [(name, value) for name, value in upstream if name.lower() not in _DROP_RESPONSE]


def decoded(body: bytes, content_encoding: str | None) -> bytes:
    """The body without its Content-Encoding (gzip/deflate), for reading errors and usage."""
    if not content_encoding or content_encoding == "identity" or not body:
        return body
    try:
        if content_encoding == "gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if content_encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error:
        return b""
    return b""


# -- the answer -------------------------------------------------------------


@dataclass(slots=True)
class UpstreamError:
    """Google's error object, parsed (both the native and the array-wrapped OpenAI form)."""

    http_status: int
    status: str = ""
    reason: str = ""
    message: str = ""
    retry_delay_ms: int = 0
    quota_ids: list[str] = field(default_factory=list)
    # The error object as received (``{"code", "message", "status", "details"...}``), if any.
    error: dict[str, Any] | None = None

    @property
    def key_invalid(self) -> bool:
        return self.reason == "API_KEY_INVALID"


def parse_error(http_status: int, body: bytes) -> UpstreamError:
    """Read a Google error body; anything unreadable still yields the HTTP status."""
    parsed = UpstreamError(http_status, status=GOOGLE_STATUS.get(http_status, "UNKNOWN"))
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed.message = body[:300].decode("utf-8", "replace").strip()
        return parsed
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return parsed
    parsed.error = error
    if isinstance(error.get("status"), str) and error["status"]:
        parsed.status = error["status"]
    if isinstance(error.get("message"), str):
        parsed.message = error["message"]
    details = error.get("details")
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict):
            _read_detail(parsed, detail)
    return parsed


def _read_detail(parsed: UpstreamError, detail: dict[str, Any]) -> None:
    kind = detail.get("@type")
    if kind == _ERROR_INFO and isinstance(detail.get("reason"), str):
        parsed.reason = parsed.reason or detail["reason"]
    elif kind == _RETRY_INFO:
        parsed.retry_delay_ms = duration_ms(detail.get("retryDelay"))
    elif kind == _QUOTA_FAILURE:
        violations = detail.get("violations")
        for violation in violations if isinstance(violations, list) else ():
            if isinstance(violation, dict) and isinstance(violation.get("quotaId"), str):
                parsed.quota_ids.append(violation["quotaId"])


def duration_ms(value: Any) -> int:
    """google.protobuf.Duration JSON ("37s", "1.5s") -> milliseconds; 0 when absent or malformed."""
    if not isinstance(value, str):
        return 0
    match = _DURATION.match(value)
    return round(float(match.group(1)) * 1000) if match else 0


def usage(body: bytes) -> tuple[int, int]:
    """(input, output) tokens from ``usageMetadata`` or OpenAI ``usage``; the last occurrence wins."""
    return _last_int(_PROMPT_TOKENS, body), _last_int(_OUTPUT_TOKENS, body)


def _last_int(pattern: re.Pattern[bytes], body: bytes) -> int:
    last = 0
    for match in pattern.finditer(body):
        last = int(match.group(1))
    return last


# -- outcomes for keyring ------------------------------------------------------


def ok_outcome(http_status: int, latency_ms: int, tokens: tuple[int, int]) -> pb.Outcome:
    return pb.Outcome(
        transport=pb.Outcome.TRANSPORT_OK,
        http_status=http_status,
        latency_ms=latency_ms,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
    )


def error_outcome(error: UpstreamError, latency_ms: int) -> pb.Outcome:
    return pb.Outcome(
        transport=pb.Outcome.TRANSPORT_OK,
        http_status=error.http_status,
        error_status=error.status,
        error_reason=error.reason,
        retry_delay_ms=error.retry_delay_ms,
        quota_violations=[pb.QuotaViolation(quota_id=quota_id) for quota_id in error.quota_ids],
        latency_ms=latency_ms,
        error_message=error.message[:500],
    )


def transport_outcome(transport: pb.Outcome.Transport, latency_ms: int, message: str) -> pb.Outcome:
    return pb.Outcome(transport=transport, latency_ms=latency_ms, error_message=message[:500])


CANCELLED: Final = pb.Outcome(transport=pb.Outcome.TRANSPORT_CANCELLED)


def transport_error(timeout: bool, message: str) -> UpstreamError:
    """A timeout or broken connection, as the error the client will see if no key does better."""
    if timeout:
        return UpstreamError(504, "DEADLINE_EXCEEDED", message=f"the upstream did not answer in time ({message})")
    return UpstreamError(502, "UNAVAILABLE", message=f"the upstream connection failed ({message})")
