"""Lease ids any replica can vouch for: the granting instance, a sequence, the expiry and a MAC.

A lease lives in the memory of the replica that granted it, but its release
may reach another replica (the granting one went down): that release must
still carry the outcome to the key's health. So a lease id is
``<instance>.<sequence>.<expires_at_ms>.<mac>``, the MAC an HMAC-SHA-256
(truncated to 128 bits) over the id, key id, model and expiry under a key
every replica shares (derived from the key-encryption key). A replica that
does not know a lease applies its outcome only when the MAC holds for the
key and model the release names and the lease expired less than
``late_release_s`` ago; anything else (an unknown or forged id) changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac

LATE_RELEASE_S = 600.0
_MAC_HEX = 32


def granting_instance(lease_id: str) -> str:
    """The instance (``<replica id>.<random>``) that granted a signed lease id."""
    return lease_id.rsplit(".", 3)[0]


class LeaseSigner:
    def __init__(self, key: bytes, late_release_s: float = LATE_RELEASE_S) -> None:
        if len(key) < 16:
            raise ValueError("the lease-signing key must be at least 16 bytes")
        self._key = key
        self._late_release_s = late_release_s

    def _mac(self, base: str, key_id: str, model: str, expires_ms: int) -> str:
        message = f"{base}\x00{key_id}\x00{model}\x00{expires_ms}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_MAC_HEX]

    def sign(self, base: str, key_id: str, model: str, expires_at: float) -> str:
        """The lease id handed out for a lease ``base`` of key_id for model, expiring at ``expires_at``."""
        expires_ms = int(expires_at * 1000)
        return f"{base}.{expires_ms}.{self._mac(base, key_id, model, expires_ms)}"

    def mac(self, purpose: str, *parts: str) -> str:
        """A MAC of ``parts`` for another ``purpose`` under the same shared key (a session grant: ``live_tokens``)."""
        message = "\x00".join((purpose, *parts)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_MAC_HEX]

    def vouches(self, lease_id: str, key_id: str, model: str, now: float) -> bool:
        """True when some replica granted ``lease_id`` for exactly this key and model, not long ago."""
        base, _, rest = lease_id.rpartition(".")
        base, _, expires = base.rpartition(".")
        if not base or not expires.isdigit() or len(expires) > 15 or len(rest) != _MAC_HEX:
            return False
        expires_ms = int(expires)
        if now > expires_ms / 1000 + self._late_release_s:
            return False
        return hmac.compare_digest(rest, self._mac(base, key_id, model, expires_ms))
