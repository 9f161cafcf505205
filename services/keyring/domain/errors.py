"""Domain errors: what can go wrong, free of any transport.

The gRPC servicer maps each to one status code in one place
(``services.keyring.grpc_errors``):

    KeyringError
     +-- NotFound            unknown pool, key or token      -> NOT_FOUND
     +-- AlreadyExists       pool name or key taken          -> ALREADY_EXISTS
     +-- InvalidArgument     malformed input                 -> INVALID_ARGUMENT
     +-- FailedPrecondition  e.g. deleting a pool in use     -> FAILED_PRECONDITION
     +-- Unauthenticated     bad client token                -> UNAUTHENTICATED
     +-- PermissionDenied    model outside the allow-list    -> PERMISSION_DENIED
     +-- NoKeyAvailable      nothing eligible right now      -> RESOURCE_EXHAUSTED + RetryInfo
     +-- Conflict            lost a guarded write too often  -> ABORTED
     +-- NotReady            no view yet / shutting down     -> UNAVAILABLE
"""

from __future__ import annotations


class KeyringError(Exception):
    """Base of every domain error; the message is safe to show to a caller."""


class NotFound(KeyringError):
    pass


class AlreadyExists(KeyringError):
    pass


class InvalidArgument(KeyringError):
    pass


class FailedPrecondition(KeyringError):
    pass


class Unauthenticated(KeyringError):
    pass


class PermissionDenied(KeyringError):
    pass


class Conflict(KeyringError):
    pass


class NotReady(KeyringError):
    pass


class NoKeyAvailable(KeyringError):
    """No key is eligible; ``retry_after_s`` is the time until the soonest one frees up.

    ``reason``: a cause the edge renders specially (the proto's ``StreamError.reason``), e.g. a session cap.
    """

    def __init__(self, message: str, retry_after_s: float, pool: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.pool = pool
        self.reason = reason
