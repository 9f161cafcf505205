"""Keyring's refusals as edge exceptions: the one translation of a gRPC status on the edge.

Nothing above this package sees a gRPC status: a refusal becomes the
``errors.LeaseRefused`` that answers the client (token rejected, model not
allowed, no key free with its retry time, invalid request, a named resource
the pool does not know, keyring unavailable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import grpc

from ..errors import (
    InvalidLeaseRequest,
    KeyringUnavailable,
    LeaseRefused,
    ModelNotAllowed,
    NoKeyFree,
    TokenRejected,
    UnknownResource,
)

_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}
# A refusal's reason when the replica's share of the client token's rate limit or budget is spent (keyring's
# ``allocator.TOKEN_SHARE``): shares are split over the live replicas, so another may still have room.
SHARE_SPENT: Final = "TOKEN_SHARE_SPENT"


def status_of(number: int) -> grpc.StatusCode:
    """The status a ``LeaseResult.error`` carries (UNKNOWN for a number this grpc does not know)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


def refusal(
    code: grpc.StatusCode, message: str, retry_after_s: float = 0.0, names: Sequence[str] = (), cause: str = ""
) -> LeaseRefused:
    """Keyring's refusal of a call as the edge exception that answers the client.

    ``names``: the resources the call named (affinity); NOT_FOUND says the
    pool knows no owner of them, a 404 with no upstream call. ``cause``: the
    refusal's ``StreamError.reason`` (a Live session cap), kept on ``NoKeyFree``.
    """
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return TokenRejected()
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return ModelNotAllowed(message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return NoKeyFree(message, retry_after_s, cause)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidLeaseRequest(message)
    if code is grpc.StatusCode.NOT_FOUND:
        return UnknownResource(tuple(names))
    return KeyringUnavailable(message, reason=code.name)
