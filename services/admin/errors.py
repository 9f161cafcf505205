"""The one place where failures become HTTP answers.

Every error the admin service gives has one shape::

    {"error": {"code": <http status>, "status": "<NAME>", "message": "..."}}

Three sources, each mapped here and nowhere else:

- ``ApiError``, raised by handlers for bad input, missing auth, CSRF...;
- ``grpc.aio.AioRpcError`` from keyring (``from_rpc_error``): NOT_FOUND 404,
  ALREADY_EXISTS / FAILED_PRECONDITION / ABORTED 409, INVALID_ARGUMENT 400,
  UNAVAILABLE 503, UNIMPLEMENTED 501, anything unexpected 502;
- ``web.HTTPException`` raised by aiohttp itself (no route 404, wrong method
  405, body too large 413).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
import orjson
from aiohttp import web

log = logging.getLogger(__name__)

# HTTP status -> the status name used when no gRPC status says better.
_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "FAILED_PRECONDITION",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "BAD_GATEWAY",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# keyring's gRPC codes -> HTTP. Codes keyring's admin RPCs do not use on purpose fall to 502.
_GRPC_TO_HTTP: Final = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Client-facing codes whose message keyring writes for the operator; others are not passed on.
_PASS_MESSAGE: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

JSON: Final = "application/json"
# Every JSON answer may carry a one-time token or operator data: never cached.
NO_STORE: Final = {"Cache-Control": "no-store"}


class ApiError(Exception):
    """An error answer: HTTP status, status name and a message safe to show."""

    def __init__(self, http_status: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.status = status or _NAMES.get(http_status, "UNKNOWN")


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def from_rpc_error(error: grpc.aio.AioRpcError, method: str) -> ApiError:
    code = error.code()
    http_status = _GRPC_TO_HTTP.get(code, 502)
    if code in _PASS_MESSAGE:
        message = error.details() or code.name.lower()
    elif code is grpc.StatusCode.UNIMPLEMENTED:
        message = f"keyring does not implement {method} yet"
    elif code is grpc.StatusCode.UNAVAILABLE:
        message = "keyring is unavailable; try again shortly"
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"keyring did not answer {method} in time"
    else:
        log.error("keyring %s failed: %s", method, code.name)
        message = f"keyring failed to answer {method}"
    status = code.name if http_status != 502 else "BAD_GATEWAY"
    return ApiError(http_status, message, status)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type=JSON, headers={**NO_STORE, **(headers or {})}
    )


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": error.http_status, "status": error.status, "message": error.message}}
    return json_response(body, error.http_status, headers)


_HTTP_MESSAGES: Final = {
    404: "no such route",
    405: "method not allowed on this route",
    413: "request body too large",
}


@web.middleware
async def error_shape(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Reshape every failure into the one JSON error; never touches successful bodies."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = _HTTP_MESSAGES.get(error.status, error.reason)
        if error.status == 413:
            message = f"request body too large (limit {request.app.get(MAX_BODY, 0)} bytes)"
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return error_response(ApiError(error.status, message), headers)
    except grpc.aio.AioRpcError as error:
        return error_response(from_rpc_error(error, "a call"))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal error"))


MAX_BODY: Final = web.AppKey("max_body_bytes", int)
