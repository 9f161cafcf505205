"""The one place where failures become HTTP answers, in the caller's dialect.

Three sources, one ``EdgeError`` each time:

- keyring refusing a lease (``LeaseDenied``): 401, 403, 429 + Retry-After, 503;
- the client's own request (bad JSON, no token, too large, wrong method...),
  raised by handlers or by aiohttp itself (``web.HTTPException``);
- the upstream's final error (``UpstreamError``): its own status and error,
  re-shaped for OpenAI callers, as received for Gemini callers.

``render`` writes it as ``{"error": {"message", "type", "param", "code"}}``
(OpenAI) or ``{"error": {"code", "message", "status"}}`` (Google).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import grpc
import orjson
from aiohttp import web

from .keyring_client import LeaseDenied
from .upstream import GOOGLE_STATUS, UpstreamError

Dialect = Literal["openai", "gemini"]
OPENAI: Final = "openai"
GEMINI: Final = "gemini"

_JSON: Final = "application/json"


class EdgeError(Exception):
    """An answer the edge gives itself (no upstream body to pass on)."""

    def __init__(
        self,
        http_status: int,
        message: str,
        *,
        google_status: str | None = None,
        openai_code: str | None = None,
        retry_after_s: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.google_status = google_status or GOOGLE_STATUS.get(http_status, "UNKNOWN")
        self.openai_code = openai_code
        self.retry_after_s = retry_after_s
        self.headers = headers or {}


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
    return _json(error.http_status, payload, error.headers, error.retry_after_s)


def _json(
    http_status: int, payload: Any, headers: dict[str, str] | None = None, retry_after_s: float | None = None
) -> web.Response:
    response = web.Response(status=http_status, body=orjson.dumps(payload), content_type=_JSON)
    if headers:
        response.headers.update(headers)
    if retry_after_s is not None and retry_after_s > 0:
        response.headers["Retry-After"] = str(math.ceil(retry_after_s))
    return response


# -- keyring -------------------------------------------------------------------

_DENIALS: Final[dict[grpc.StatusCode, tuple[int, str]]] = {
    grpc.StatusCode.UNAUTHENTICATED: (401, "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "model_not_allowed"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_exceeded"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request"),
}


def lease_denied(denied: LeaseDenied) -> EdgeError:
    """Keyring's refusal as the client's answer; an unreachable keyring is our 503."""
    http_status, code = _DENIALS.get(denied.code, (503, "service_unavailable"))
    if http_status == 503:
        message = "the key service is unavailable; try again shortly"
    elif http_status == 401:
        message = "invalid, expired or revoked API token"
    else:
        message = denied.message
    retry_after = denied.retry_after_s if http_status == 429 else (1.0 if http_status == 503 else None)
    return EdgeError(http_status, message, openai_code=code, retry_after_s=retry_after)


# -- the client's request ---------------------------------------------------------


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


# -- the upstream -----------------------------------------------------------------


def upstream_failure(dialect: Dialect, error: UpstreamError, retry_after_s: float | None = None) -> web.Response:
    """The upstream's final error with its own status: reshaped for OpenAI, as received for Google."""
    if retry_after_s is None and error.retry_delay_ms:
        retry_after_s = error.retry_delay_ms / 1000
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
    return _json(error.http_status, payload, retry_after_s=retry_after_s if error.http_status in (429, 503) else None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def speaks(dialect: Dialect) -> Callable[[Handler], Handler]:
    """Decorate a route handler: its ``EdgeError``s and aiohttp's refusals (413 from
    ``request.read()``...) are answered in ``dialect``."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except EdgeError as error:
                return render(error, dialect)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                return render(from_http_exception(exc), dialect)

        return wrapped

    return decorate


def dialect_of(request: web.Request) -> Dialect:
    """The dialect of a request no handler claimed (unknown route, wrong method)."""
    path = request.path
    if path.startswith("/v1beta/"):
        return GEMINI
    if path.startswith("/v1/models"):
        if request.method == "POST" or "x-goog-api-key" in request.headers or "key" in request.query:
            return GEMINI
        return OPENAI
    if path.startswith("/v1/"):
        return OPENAI
    return GEMINI


@web.middleware
async def error_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own error answers (404, 405, 413...) in the caller's dialect; bodies untouched."""
    try:
        return await handler(request)
    except EdgeError as error:
        return render(error, dialect_of(request))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(from_http_exception(exc), dialect_of(request))
