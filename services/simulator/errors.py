"""Google-shaped errors: one builder shared by every route and both dialects.

The native API answers `{"error": {...}}`; the OpenAI-compatible endpoint
wraps the very same object in a one-element JSON array, as Gemini does.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Final, Literal

import orjson
from aiohttp import web

from .quotas import Refusal
from .resources import mask
from .state import Behaviour

Dialect = Literal["native", "openai"]

SERVICE: Final = "generativelanguage.googleapis.com"
RATE_LIMIT_DOCS: Final = "https://ai.google.dev/gemini-api/docs/rate-limits"
UNREGISTERED_MESSAGE: Final = (
    "Method doesn't allow unregistered callers (callers without established identity)."
    " Please use API Key or other form of API consumer identity to call this API."
)
INVALID_KEY_MESSAGE: Final = "API key not valid. Please pass a valid API key."
#: A project's spend-based rate limit (per 10 minutes) is spent.
#: A billing account whose prepaid credits are spent (HTTP 402, every project of the account; models.list still 200).
PREPAY_DEPLETED_MESSAGE: Final = (
    "Your prepayment credits are depleted. Please go to AI Studio at https://ai.studio/projects to manage your"
    " project and billing."
)
SPEND_LIMIT_MESSAGE: Final = (
    "Your project has exceeded its spend-based rate limit for the current 10-minute window,"
    " please check your plan and billing details. For more information on this error, head to:"
    f" {RATE_LIMIT_DOCS}."
)
INVALID_JSON_MESSAGE: Final = "Invalid JSON payload received. Unexpected token."

#: Canonical gRPC status name per HTTP code, for errors whose code was overridden.
CANONICAL_STATUS: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class SimError(Exception):
    """An error answer; raised anywhere in a handler and rendered by the endpoint wrapper."""

    def __init__(self, code: int, status: str, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details or []

    def payload(self) -> dict[str, Any]:
        """The `{"error": {...}}` object in Google's shape (no `details` key when empty)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class DropConnection(Exception):
    """Raised to close the client connection without (further) answer."""


def error_response(error: SimError, dialect: Dialect) -> web.Response:
    """Render `error` for the dialect: bare object (native) or one-element array (OpenAI)."""
    payload: Any = error.payload()
    if dialect == "openai":
        payload = [payload]
    return web.Response(body=orjson.dumps(payload), status=error.code, content_type="application/json")


def invalid_argument(message: str) -> SimError:
    """400 INVALID_ARGUMENT for a malformed request."""
    return SimError(400, "INVALID_ARGUMENT", message)


def not_found(message: str) -> SimError:
    """404 NOT_FOUND."""
    return SimError(404, "NOT_FOUND", message)


def model_not_found(model: str, api_version: str, method: str) -> SimError:
    """404 for an unknown model, worded like Google's."""
    return not_found(
        f"models/{model} is not found for API version {api_version}, or is not supported for {method}."
        " Call ListModels to see the list of available models and their supported methods."
    )


def missing_key() -> SimError:
    """403 for a request that carries no API key at all."""
    return SimError(403, "PERMISSION_DENIED", UNREGISTERED_MESSAGE)


def multiple_credentials() -> SimError:
    """400 for a request carrying two credentials (a key header and a Bearer, a header and `?key=`...)."""
    return SimError(400, "INVALID_ARGUMENT", "Multiple authentication credentials received. Please pass only one.")


def permission_denied(message: str) -> SimError:
    """403 PERMISSION_DENIED without details (a resource of another project, for files and caches)."""
    return SimError(403, "PERMISSION_DENIED", message)


def failed_precondition(message: str) -> SimError:
    """400 FAILED_PRECONDITION."""
    return SimError(400, "FAILED_PRECONDITION", message)


def unauthenticated() -> SimError:
    """401 for a credential Google cannot use (an OAuth access token that is not one): no ErrorInfo blames a key."""
    return SimError(401, *_SIMPLE_ERRORS["unauthenticated"][1:])


def user_project_denied(project: str) -> SimError:
    """403 for an ``X-Goog-User-Project`` the caller may not bill: the request's header, not the key, is refused."""
    return SimError(
        403,
        "PERMISSION_DENIED",
        f"Caller does not have required permission to use project {project}. Grant the caller the"
        " roles/serviceusage.serviceUsageConsumer role, or a custom role with the serviceusage.services.use"
        " permission, by visiting https://console.developers.google.com/iam-admin/iam/project?project="
        f"{project} and then retry.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "USER_PROJECT_DENIED",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE, "consumer": f"projects/{project}"},
            }
        ],
    )


def format_duration(seconds: float) -> str:
    """google.protobuf.Duration JSON form: `30s`, `1.5s`."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:g}s"


def _quota_error(violations: list[tuple[str, str, str | None]], model: str | None, retry_s: float | None) -> SimError:
    """Google's 429 for quota violations `(metric, quotaId, quotaValue|None)`: one message line and one
    QuotaFailure violation each, a Help link, and RetryInfo when `retry_s` is given."""
    dimensions = {"location": "global"}
    if model:
        dimensions["model"] = model
    message = (
        "You exceeded your current quota, please check your plan and billing details."
        f" For more information on this error, head to: {RATE_LIMIT_DOCS}."
        " To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit."
    )
    entries: list[dict[str, Any]] = []
    for metric, quota_id, value in violations:
        limit = value or 0
        message += f"\n* Quota exceeded for metric: {SERVICE}/{metric}, limit: {limit}, model: {model or 'unknown'}"
        entry: dict[str, Any] = {
            "quotaMetric": f"{SERVICE}/{metric}",
            "quotaId": quota_id,
            "quotaDimensions": dict(dimensions),
        }
        if value is not None:
            entry["quotaValue"] = value
        entries.append(entry)
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": entries},
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}],
        },
    ]
    if retry_s is not None:
        message += f"\nPlease retry in {round(retry_s, 6):g}s."
        # RetryInfo in whole seconds, rounded up: a retry after it lands in the freed window.
        delay = format_duration(retry_s if float(retry_s).is_integer() else math.ceil(retry_s))
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return SimError(429, "RESOURCE_EXHAUSTED", message, details)


def _rate_limit(b: Behaviour, model: str | None) -> SimError:
    """A scripted 429: one violation, RetryInfo of exactly `retry_delay_s` (none when None)."""
    error = _quota_error([("generate_content_free_tier_requests", b.quota_id, b.quota_value)], model, None)
    if b.retry_delay_s is not None:
        delay = format_duration(b.retry_delay_s)
        error.message += f"\nPlease retry in {delay}."
        error.details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
    return error


def gone_for_new_users(model: str) -> SimError:
    """A retired model refused to a project that had not used it (Google's 404 since the 2026-12-01 retirements)."""
    return SimError(
        404,
        "NOT_FOUND",
        f"This model models/{model} is no longer available to new users. Please update your code to use a newer"
        " model for the latest features and improvements.",
    )


def quota_exhausted(refusal: Refusal, model: str | None) -> SimError:
    """The 429 for a request the quota book refused (quota violations or a spent budget)."""
    if refusal.kind == "depleted":
        return SimError(402, "RESOURCE_EXHAUSTED", PREPAY_DEPLETED_MESSAGE)
    if refusal.kind == "spend":
        message = SPEND_LIMIT_MESSAGE
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Learn more about Gemini API rate limits", "url": RATE_LIMIT_DOCS}],
            }
        ]
        if refusal.retry_s is not None:
            delay = format_duration(math.ceil(refusal.retry_s))
            message += f" Please retry in {delay}."
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
        return SimError(429, "RESOURCE_EXHAUSTED", message, details)
    return _quota_error([(v.metric, v.quota_id, v.value) for v in refusal.violations], model, refusal.retry_s)


def _invalid_key() -> SimError:
    return SimError(
        400,
        "INVALID_ARGUMENT",
        INVALID_KEY_MESSAGE,
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": INVALID_KEY_MESSAGE,
            },
        ],
    )


def project_number(project: str) -> str:
    """The 12-digit number Google would name a project by (stable per project id)."""
    return str(int(hashlib.sha256(project.encode()).hexdigest()[:12], 16) % 10**12).zfill(12)


def _ip_blocked(project: str) -> SimError:
    """An IP-restricted key called from another address (e.g. behind a proxy): Google names the key's project."""
    return SimError(
        403,
        "PERMISSION_DENIED",
        "The provided API key has an IP address restriction. The originating IP address of the call violates"
        " this restriction.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_IP_ADDRESS_BLOCKED",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE, "consumer": f"projects/{project_number(project)}"},
            }
        ],
    )


def _capacity_exhausted(model: str | None) -> SimError:
    """Google out of capacity for a model: nobody's quota (a peer key may be served)."""
    return SimError(
        429,
        "RESOURCE_EXHAUSTED",
        f"The model {model or 'requested'} is overloaded due to high demand. Please try again later.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "MODEL_CAPACITY_EXHAUSTED",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE, "model": model or ""},
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.500000000s"},
        ],
    )


def _permission_denied(key: str) -> SimError:
    return SimError(
        403,
        "PERMISSION_DENIED",
        f"Permission denied: Consumer 'api_key:{mask(key)}' has been suspended.",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CONSUMER_SUSPENDED",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE, "consumer": f"api_key:{mask(key)}"},
            }
        ],
    )


def _project_lacks(reason: str, key: str) -> SimError:
    """Google's 403 when the key's project lacks the API or billing a request needs (Google's wording)."""
    number = str(int.from_bytes(key.encode()[-6:], "big") % 10**12)  # a stable fake project number
    if reason == "SERVICE_DISABLED":
        message = (
            f"Generative Language API has not been used in project {number} before or it is disabled. Enable it by"
            f" visiting https://console.developers.google.com/apis/api/{SERVICE}/overview?project={number} then"
            " retry. If you enabled this API recently, wait a few minutes for the action to propagate to our"
            " systems and retry."
        )
    else:
        message = (
            f"This API method requires billing to be enabled. Please enable billing on project #{number} by"
            f" visiting https://console.developers.google.com/billing/enable?project={number} then retry. If you"
            " enabled billing for this project recently, wait a few minutes for the action to propagate to our"
            " systems and retry."
        )
    return SimError(
        403,
        "PERMISSION_DENIED",
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"consumer": f"projects/{number}", "service": SERVICE},
            }
        ],
    )


def _token_type_unsupported() -> SimError:
    """401 for a key the API refuses by its type: the ErrorInfo blames the key."""
    return SimError(
        401,
        "UNAUTHENTICATED",
        "API keys are not supported by this API. Expected OAuth2 access token or other authentication credentials"
        " that assert a principal. See https://cloud.google.com/docs/authentication",
        [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE},
            }
        ],
    )


_SIMPLE_ERRORS: Final[dict[str, tuple[int, str, str]]] = {
    "unauthenticated": (
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token,"
        " login cookie or other valid authentication credential."
        " See https://developers.google.com/identity/sign-in/web/devconsole-project.",
    ),
    # Google's answer for a key reported as leaked: no details at all.
    "leaked_key": (403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key."),
    "server_error": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in"
        " https://developers.generativeai.google/guide/troubleshooting",
    ),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "timeout": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def behaviour_error(b: Behaviour, key: str, model: str | None, project: str = "") -> SimError | None:
    """The error a scripted behaviour stands for, or None for `ok`/`drop*` kinds (`project`: the key's)."""
    kind = b.kind
    if kind == "rate_limit":
        error = _rate_limit(b, model)
    elif kind == "ip_blocked":
        error = _ip_blocked(project or "unknown")
    elif kind == "capacity_exhausted":
        error = _capacity_exhausted(model)
    elif kind == "invalid_key":
        error = _invalid_key()
    elif kind == "permission_denied":
        error = _permission_denied(key)
    elif kind == "token_type_unsupported":
        error = _token_type_unsupported()
    elif kind in ("service_disabled", "billing_disabled"):
        error = _project_lacks(kind.upper(), key)
    elif kind in _SIMPLE_ERRORS:
        error = SimError(*_SIMPLE_ERRORS[kind])
    else:
        return None
    if b.status is not None and b.status != error.code:
        error.code = b.status
        error.status = CANONICAL_STATUS.get(b.status, "UNKNOWN")
    if b.message is not None:
        error.message = b.message
    return error
