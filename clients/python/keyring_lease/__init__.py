"""keyring-lease: lease upstream Gemini API keys from Keyring for an internal service.

    pool = LeasePool("keyring:50051", token=CLIENT_TOKEN, identity=Identity(cert, key, ca))
    async with pool, pool.lease("gemini-3.5-flash") as lease:
        status, body = await call_gemini(lease.key)
        lease.report(status, body)

The stable interface is what this module exports (``__all__``); everything else is private. Google's
answers are classified by the same module the edge uses (``keyring_lease.answers``).
"""

from keyring_lease.answers import AnswerKind
from keyring_lease.errors import (
    InvalidRequest,
    KeyringUnavailable,
    LeaseError,
    NoKeyAvailable,
    NotPermitted,
    TokenRefused,
)
from keyring_lease.lease import Attempts, Lease
from keyring_lease.pool import Identity, LeasePool

__all__ = [
    "AnswerKind",
    "Attempts",
    "Identity",
    "InvalidRequest",
    "KeyringUnavailable",
    "Lease",
    "LeaseError",
    "LeasePool",
    "NoKeyAvailable",
    "NotPermitted",
    "TokenRefused",
]
