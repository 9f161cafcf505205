"""Key strings and client tokens: validation, stable ids, masks and stored token hashes.

Stable ids come from hashes of high-entropy strings, so the same key
imported twice gets the same id (duplicates are found without decrypting
anything) and an id says nothing useful about its secret.

A client token is known on the wire by its SHA-256 (services.common.naming:
the edge sends it) and in the store by an HMAC of that SHA-256 under a
server-side key (``TokenHasher``): a value read from the store or an export,
presented to Acquire, is hashed again and matches nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator, Sequence

from services.common import masking
from services.common.masking import mask

__all__ = [
    "AUTH_KEY_PATTERN",
    "GEMINI_KEY_PATTERN",
    "KEY_KINDS",
    "STANDARD_KEY_PATTERN",
    "TokenHasher",
    "is_key_string",
    "key_id_for",
    "key_kind",
    "mask",
    "new_client_token",
    "token_id_for",
]

# The two kinds of Gemini API key (docs/operator-guide.md "Keys: auth and standard"); the patterns live in
# services.common.masking, which redacts both wherever text leaves a service.
STANDARD_KEY_PATTERN = masking.STANDARD_KEY_PATTERN  # "AIza" + 35 of [0-9A-Za-z_-]: retired from September 2026
AUTH_KEY_PATTERN = masking.AUTH_KEY_PATTERN  # "AQ." + 20-200 of [0-9A-Za-z_-]: what AI Studio issues now
# What keyring accepts by default (KEYRING_KEY_PATTERN overrides it): either kind.
GEMINI_KEY_PATTERN = f"{STANDARD_KEY_PATTERN}|{AUTH_KEY_PATTERN}"
KEY_KINDS = ("auth", "standard", "other")
TOKEN_PREFIX = "kr-"


def is_key_string(candidate: str, pattern: str = GEMINI_KEY_PATTERN) -> bool:
    return re.fullmatch(pattern, candidate) is not None


def key_kind(secret: str) -> str:
    """``auth`` (AQ.), ``standard`` (AIza) or ``other`` (accepted only under a custom KEYRING_KEY_PATTERN)."""
    if re.fullmatch(AUTH_KEY_PATTERN, secret):
        return "auth"
    if re.fullmatch(STANDARD_KEY_PATTERN, secret):
        return "standard"
    return "other"


def kind_from_mask(shown: str) -> str:
    """The kind of a key stored before kinds were recorded, from its mask (the secret's first characters)."""
    if shown.startswith("AQ."):
        return "auth"
    return "standard" if shown.startswith("AIza") else "other"


def malformed_key_message(shown: str) -> str:
    """What an operator is told about a string that is no key (shown masked, never in full)."""
    return (
        f"{shown} is not a Gemini API key (expected an auth key, AQ. followed by 20-200 letters, digits, "
        "'-' or '_', or a standard key, AIza followed by 35 of them)"
    )


def key_id_for(secret: str) -> str:
    return "k-" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def new_client_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_id_for(stored_hash: str) -> str:
    """A new token's id: the start of its stored (keyed) hash, which is no credential and reveals none.

    Tokens created before hashes were keyed keep the id they had (the start of
    the unkeyed SHA-256: 48 bits of a 256-bit value, not enough to present).
    """
    return "t-" + stored_hash[:12]


class TokenHasher:
    """Stored client-token hashes: HMAC-SHA256 of the presented SHA-256 under a server-side key.

    One key per configured key-encryption key (derived from it, named by its
    id), the current one first: new tokens are keyed with the current key, and
    a lookup tries the others only while a KEK rotation is under way.

    ``accept_unkeyed``: records from before keyed hashes (a bare SHA-256, which
    anyone who can write the store can forge) match too. Off unless an upgrade
    asks for it (KEYRING_ACCEPT_UNKEYED_TOKENS) until the reseal command keyed them.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, accept_unkeyed: bool = False) -> None:
        if not keys:
            raise ValueError("a token hasher needs at least one key")
        self._keys = list(keys)
        self.accept_unkeyed = accept_unkeyed

    @property
    def current(self) -> str:
        """The id of the key new tokens are keyed with."""
        return self._keys[0][0]

    def keyed(self, presented: str) -> str:
        """The stored hash of a presented SHA-256 (hex) under the current key."""
        return _hmac_hex(self._keys[0][1], presented)

    def candidates(self, presented: str) -> Iterator[tuple[str, str]]:
        """(key id, stored hash) under each configured key, the current one first (computed lazily)."""
        for key_id, key in self._keys:
            yield key_id, _hmac_hex(key, presented)


def _hmac_hex(key: bytes, presented: str) -> str:
    return hmac.digest(key, presented.encode(), "sha256").hex()
