"""Domain errors become gRPC statuses here, and only here.

RESOURCE_EXHAUSTED carries a google.rpc.RetryInfo detail (the time until the
soonest key frees up) and, for clients that do not read details, the same
number in the ``retry-after-ms`` trailing metadata.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .domain import errors

RETRY_AFTER_METADATA = "retry-after-ms"

_CODES: dict[type[errors.KeyringError], grpc.StatusCode] = {
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.NoKeyAvailable: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.NotReady: grpc.StatusCode.UNAVAILABLE,
}


def status_code_of(error: errors.KeyringError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in _CODES:
            return _CODES[kind]
    return grpc.StatusCode.INTERNAL


def retry_after_ms(error: errors.KeyringError) -> int:
    if isinstance(error, errors.NoKeyAvailable):
        return max(1, math.ceil(error.retry_after_s * 1000))
    return 0


def to_rpc_status(error: errors.KeyringError) -> grpc.Status:
    code = status_code_of(error)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=str(error))
    delay_ms = retry_after_ms(error)
    if delay_ms:
        detail = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(delay_ms)
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    rich = rpc_status.to_status(status)
    if delay_ms:
        metadata = (*rich.trailing_metadata, (RETRY_AFTER_METADATA, str(delay_ms)))
        return _Status(rich.code, rich.details, metadata)
    return rich


class _Status(grpc.Status):  # type: ignore[misc]  # grpc ships no types for Status
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, str], ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def domain_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """A unary handler whose domain errors end the call with their gRPC status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except errors.KeyringError as error:
            await context.abort_with_status(to_rpc_status(error))
            raise  # unreachable: abort raises

    return wrapper


def stream_error(call_id: int, error: errors.KeyringError) -> pb.LeaseResult:
    """A domain error as one lease stream result (the stream itself goes on)."""
    return pb.LeaseResult(
        id=call_id,
        error=pb.StreamError(
            code=status_code_of(error).value[0],
            message=str(error),
            retry_after_ms=retry_after_ms(error),
            reason=error.reason if isinstance(error, errors.NoKeyAvailable) else "",
        ),
    )
