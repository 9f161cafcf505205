"""Key strings and client tokens: validation, stable ids and masks (token hashes: services.common.naming).

Stable ids come from hashes of high-entropy strings, so the same key
imported twice gets the same id (duplicates are found without decrypting
anything) and an id says nothing useful about its secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from services.common.masking import mask

__all__ = [
    "GEMINI_KEY_PATTERN",
    "is_key_string",
    "key_id_for",
    "mask",
    "new_client_token",
    "token_id_for",
]

# Google API keys: "AIza" and 35 more characters of [0-9A-Za-z_-].
GEMINI_KEY_PATTERN = r"AIza[0-9A-Za-z_\-]{35}"
TOKEN_PREFIX = "kr-"


def is_key_string(candidate: str, pattern: str = GEMINI_KEY_PATTERN) -> bool:
    return re.fullmatch(pattern, candidate) is not None


def key_id_for(secret: str) -> str:
    return "k-" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def new_client_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_id_for(token_hash_hex: str) -> str:
    return "t-" + token_hash_hex[:12]
