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

The lease's client token is bound to its id the same way (``token_tag``): such a
replica counts the call for the token the release names only when its tag holds.
"""

from __future__ import annotations

import hashlib
import hmac

LATE_RELEASE_S = 600.0
_MAC_HEX = 32
_TOKEN_PURPOSE = "lease-token"  # ``mac`` purpose of a lease's token tag
_MAX_TOKEN_ID = 64  # a token id is "t-" and 12 hex digits: anything longer is not one


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

    def token_tag(self, lease_id: str, token_id: str) -> str:
        """A MAC binding ``token_id`` to ``lease_id`` (``Lease.token_tag``): the edge sends both back when releasing."""
        return self.mac(_TOKEN_PURPOSE, lease_id, token_id)

    def vouched_token(self, lease_id: str, token_id: str, tag: str) -> str:
        """``token_id`` when ``tag`` binds it to ``lease_id``; "" otherwise (none sent, forged, too long)."""
        if not token_id or len(token_id) > _MAX_TOKEN_ID or len(tag) != _MAC_HEX:
            return ""
        return token_id if hmac.compare_digest(tag, self.token_tag(lease_id, token_id)) else ""

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
