"""Domain errors become gRPC statuses here, and only here.

RESOURCE_EXHAUSTED carries a google.rpc.RetryInfo detail (the time until the
soonest key frees up) and, for clients that do not read details, the same
number in the ``retry-after-ms`` trailing metadata.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

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


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def retry_after_from(error: grpc.aio.AioRpcError) -> float | None:
    """Client side: the RetryInfo delay of a RESOURCE_EXHAUSTED status, in seconds."""
    status = rpc_status.from_call(error)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.ToMilliseconds() / 1000
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_METADATA:
            return int(value) / 1000
    return None
