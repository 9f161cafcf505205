"""The one place where failures become HTTP answers, in the caller's dialect.

The exceptions the edge raises, and who raises them::

    EdgeError                  an answer the edge gives itself
    ├── the client's request   bad JSON, no token (dialect handlers); aiohttp's
    │                          own 404/405/413 (web.HTTPException) are re-shaped
    └── LeaseRefused           keyring's refusal (raised by the keyring package only)
        ├── TokenRejected        401
        ├── ModelNotAllowed      403
        ├── NoKeyFree            429 + Retry-After
        ├── InvalidLeaseRequest  400
        ├── UnknownResource      404 (a resource no key of the pool created)
        └── KeyringUnavailable   503 + Retry-After: 1
    UpstreamFailed             the upstream's final error, passed on (forwarding)

``answer_in_dialect`` is the one middleware that turns them into answers:
``{"error": {"message", "type", "param", "code"}}`` for OpenAI callers,
``{"error": {"code", "message", "status"}}`` for Google's (the upstream's own
error object as received, when there is one).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from services.common.answers import UpstreamError, google_status
from services.common.web import json_response

from .routing import DIALECT, OPENAI, Dialect, Handler, dialect_of

KEYRING_UNAVAILABLE: Final = "the key service is unavailable; try again shortly"


class EdgeError(Exception):
    """An answer the edge gives itself (no upstream body to pass on)."""

    def __init__(
        self,
        http_status: int,
        message: str,
        *,
        openai_code: str | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.google_status = google_status(http_status)
        self.openai_code = openai_code
        self.retry_after_s = retry_after_s
        self.headers = headers


class LeaseRefused(EdgeError):
    """Keyring did not grant a lease; ``reason`` names keyring's status (a metric label)."""

    reason = "UNKNOWN"


class TokenRejected(LeaseRefused):
    reason = "UNAUTHENTICATED"

    def __init__(self) -> None:
        super().__init__(401, "invalid, expired or revoked API token", openai_code="invalid_api_key")


class ModelNotAllowed(LeaseRefused):
    reason = "PERMISSION_DENIED"

    def __init__(self, message: str) -> None:
        super().__init__(403, message, openai_code="model_not_allowed")


class NoKeyFree(LeaseRefused):
    """Every key of the pool is cooling or busy; ``retry_after_s`` says when one frees up (0: unknown)."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float, cause: str = "") -> None:
        super().__init__(429, message, openai_code="rate_limit_exceeded", retry_after_s=retry_after_s)
        # Keyring's StreamError.reason: "LIVE_SESSIONS" / "LIVE_SESSIONS_PER_TOKEN" for a session cap, else "".
        self.cause = cause


class InvalidLeaseRequest(LeaseRefused):
    reason = "INVALID_ARGUMENT"

    def __init__(self, message: str) -> None:
        super().__init__(400, message, openai_code="invalid_request")


class UnknownResource(LeaseRefused):
    """The call names a resource keyring knows no owner of in this pool: no upstream call is made."""

    reason = "NOT_FOUND"

    def __init__(self, names: tuple[str, ...] | list[str]) -> None:
        named = ", ".join(names) or "the resource"
        super().__init__(
            404,
            f"{named} was not found: no key of this pool created it (or it has expired or been deleted)",
            openai_code="not_found",
        )


class KeyringUnavailable(LeaseRefused):
    """No keyring replica answered (or one answered with an unexpected status, named by ``reason``)."""

    def __init__(self, detail: str = "no keyring replica is reachable", reason: str = "UNAVAILABLE") -> None:
        super().__init__(503, KEYRING_UNAVAILABLE, openai_code="service_unavailable", retry_after_s=1.0)
        self.detail = detail
        self.reason = reason


class UpstreamFailed(Exception):
    """The upstream's final error for this request, to pass on with its own status.

    ``refused``: keyring's refusal that ended a failover (no other key to try), if that is what ended it.
    """

    def __init__(
        self, error: UpstreamError, retry_after_s: float | None = None, refused: LeaseRefused | None = None
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after_s = retry_after_s
        self.refused = refused


def missing_token(dialect: Dialect) -> EdgeError:
    where = "an Authorization: Bearer header" if dialect == OPENAI else "an x-goog-api-key header or a key parameter"
    return EdgeError(401, f"no API token: pass it in {where}", openai_code="missing_api_key")


def bad_request(message: str) -> EdgeError:
    return EdgeError(400, message, openai_code="invalid_request")


def from_http_exception(exc: web.HTTPException) -> EdgeError:
    """aiohttp's own refusals (404, 405, 413...) with a readable message, in our shape."""
    http_status = exc.status
    if http_status == 413:
        message = "the request body is too large"
    elif http_status == 405:
        allowed = exc.headers.get("Allow")
        message = f"method not allowed on this path (allowed: {allowed})" if allowed else "method not allowed"
    elif http_status == 404:
        message = "no such route"
    else:
        message = exc.reason or "request refused"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return EdgeError(http_status, message, openai_code=exc.reason.lower().replace(" ", "_"), headers=headers)


# -- rendering ---------------------------------------------------------------


def openai_type(http_status: int) -> str:
    if http_status == 401:
        return "authentication_error"
    if http_status == 403:
        return "permission_error"
    if http_status == 429:
        return "rate_limit_error"
    if http_status >= 500:
        return "server_error"
    return "invalid_request_error"


def render(error: EdgeError, dialect: Dialect) -> web.Response:
    if dialect == OPENAI:
        payload: dict[str, Any] = {
            "error": {
                "message": error.message,
                "type": openai_type(error.http_status),
                "param": None,
                "code": error.openai_code,
            }
        }
    else:
        payload = {"error": {"code": error.http_status, "message": error.message, "status": error.google_status}}
    return json_response(payload, error.http_status, error.headers, error.retry_after_s)


def render_upstream(error: UpstreamError, dialect: Dialect, retry_after_s: float | None = None) -> web.Response:
    """The upstream's final error with its own status: reshaped for OpenAI, as received for Google."""
    if retry_after_s is None and error.retry_delay_s:
        retry_after_s = error.retry_delay_s
    if dialect == OPENAI:
        payload: dict[str, Any] = {
            "error": {
                "message": error.message or f"upstream error {error.http_status}",
                "type": openai_type(error.http_status),
                "param": None,
                "code": error.status or None,
            }
        }
    elif error.error is not None:
        payload = {"error": error.error}
    else:
        payload = {"error": {"code": error.http_status, "message": error.message, "status": error.status}}
    return json_response(
        payload, error.http_status, retry_after_s=retry_after_s if error.http_status in (429, 503) else None
    )


@web.middleware
async def answer_in_dialect(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decide the request's dialect once (stored under ``DIALECT``) and answer every error in it."""
    request[DIALECT] = dialect = dialect_of(request)
    try:
        return await handler(request)
    except EdgeError as error:
        return render(error, dialect)
    except UpstreamFailed as failed:
        return render_upstream(failed.error, dialect, failed.retry_after_s)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(from_http_exception(exc), dialect)
