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

Status names: a gRPC failure keeps keyring's code name (FAILED_PRECONDITION,
ALREADY_EXISTS...); otherwise the name comes from the one HTTP-to-Google
table the edge uses too (``services.common.answers.GOOGLE_STATUS``), except
where admin names the cause itself: PAYLOAD_TOO_LARGE (413),
UNSUPPORTED_MEDIA_TYPE (415) and BAD_GATEWAY (502, keyring misbehaved).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from aiohttp import web

from services.common import web as common_web
from services.common.answers import google_status

log = logging.getLogger(__name__)

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

JSON: Final = common_web.JSON
# Every JSON answer may carry a one-time token or operator data: never cached.
NO_STORE: Final = {"Cache-Control": "no-store"}


class ApiError(Exception):
    """An error answer: HTTP status, status name and a message safe to show."""

    def __init__(
        self, http_status: int, message: str, status: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.status = status or google_status(http_status)
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def bad_gateway(message: str) -> ApiError:
    """keyring answered, but not as it should have: 502 under admin's own name (Google's table says UNAVAILABLE)."""
    return ApiError(502, message, "BAD_GATEWAY")


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
        return bad_gateway(f"keyring failed to answer {method}")
    return ApiError(http_status, message, code.name)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``services.common.web.json_response`` with ``Cache-Control: no-store`` unless ``headers`` says otherwise."""
    return common_web.json_response(data, status, {**NO_STORE, **(headers or {})})


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": error.http_status, "status": error.status, "message": error.message}}
    return json_response(body, error.http_status, {**error.headers, **(headers or {})})


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
        status = None
        if error.status == 413:
            message = f"request body too large (limit {request.app.get(MAX_BODY, 0)} bytes)"
            status = "PAYLOAD_TOO_LARGE"  # admin's own name; Google's table says INVALID_ARGUMENT
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return error_response(ApiError(error.status, message, status), headers)
    except grpc.aio.AioRpcError as error:
        return error_response(from_rpc_error(error, "a call"))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(ApiError(500, "internal error"))


MAX_BODY: Final = web.AppKey("max_body_bytes", int)
