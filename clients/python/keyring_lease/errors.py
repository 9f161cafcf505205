"""What can go wrong when leasing, mapped once from gRPC status codes (``from_rpc``).

    LeaseError                 every error of this package
    ├── TokenRefused           the client token is unknown, expired or revoked (UNAUTHENTICATED)
    ├── NotPermitted           the model is outside the pool's allow-list, or this certificate's identity
    │                          may not lease (KEYRING_LEASE_IDENTITIES) (PERMISSION_DENIED)
    ├── NoKeyAvailable         no key may be used now; ``retry_after_s`` says when one frees up
    │                          (RESOURCE_EXHAUSTED)
    ├── InvalidRequest         keyring refused the request as malformed (INVALID_ARGUMENT, NOT_FOUND...)
    └── KeyringUnavailable     no replica answered (UNAVAILABLE, DEADLINE_EXCEEDED), or TLS files unreadable
"""

from __future__ import annotations

import grpc

__all__ = [
    "InvalidRequest",
    "KeyringUnavailable",
    "LeaseError",
    "NoKeyAvailable",
    "NotPermitted",
    "TokenRefused",
    "from_rpc",
]

# keyring puts the delay of a RESOURCE_EXHAUSTED in this trailing metadata too (besides RetryInfo).
_RETRY_AFTER_METADATA = "retry-after-ms"


class LeaseError(Exception):
    """Base of this package's errors; ``code`` is the gRPC status name when keyring answered."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class TokenRefused(LeaseError):
    """The client token is not one keyring leases for."""


class NotPermitted(LeaseError):
    """The model is not allowed for the pool, or this identity may not lease."""


class NoKeyAvailable(LeaseError):
    """Every eligible key is busy or cooling (or the token's own limit is hit): retry after ``retry_after_s``."""

    def __init__(self, message: str, code: str = "", retry_after_s: float = 0.0) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s


class InvalidRequest(LeaseError):
    """keyring refused the request itself."""


class KeyringUnavailable(LeaseError):
    """No replica could be reached, or none answered in time."""


_BY_CODE: dict[grpc.StatusCode, type[LeaseError]] = {
    grpc.StatusCode.UNAUTHENTICATED: TokenRefused,
    grpc.StatusCode.PERMISSION_DENIED: NotPermitted,
    grpc.StatusCode.UNAVAILABLE: KeyringUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: KeyringUnavailable,
    grpc.StatusCode.CANCELLED: KeyringUnavailable,
}


def from_rpc(error: grpc.aio.AioRpcError) -> LeaseError:
    """The one translation of a failed RPC into this package's errors."""
    code = error.code()
    message = error.details() or code.name
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return NoKeyAvailable(message, code.name, _retry_after_s(error))
    return _BY_CODE.get(code, InvalidRequest)(message, code.name)


def _retry_after_s(error: grpc.aio.AioRpcError) -> float:
    for key, value in error.trailing_metadata() or ():
        if key == _RETRY_AFTER_METADATA:
            try:
                return int(value) / 1000
            except (TypeError, ValueError):
                return 0.0
    return 0.0
