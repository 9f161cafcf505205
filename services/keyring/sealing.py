"""Upstream secrets encrypted at rest: AES-256-GCM under a key-encryption key.

The key-encryption key (KEK) comes from a file or an environment variable,
i.e. a Kubernetes Secret, as 32 bytes in base64. The key id is bound as
associated data, so a sealed secret copied onto another key's record does
not open.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class SealingError(Exception):
    """A KEK that is missing or malformed, or a sealed secret that does not open."""


class SecretBox:
    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise SealingError("the key-encryption key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(kek)

    @classmethod
    def from_base64(cls, encoded: str) -> SecretBox:
        try:
            return cls(base64.b64decode(encoded.strip(), validate=True))
        except (binascii.Error, ValueError) as error:
            raise SealingError("the key-encryption key is not valid base64") from error

    @classmethod
    def from_file(cls, path: str | Path) -> SecretBox:
        return cls.from_base64(Path(path).read_text())

    def seal(self, secret: str, key_id: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), key_id.encode())
        return base64.b64encode(sealed).decode()

    def open(self, sealed: str, key_id: str) -> str:
        try:
            raw = base64.b64decode(sealed)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], key_id.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error) as error:
            raise SealingError(f"the secret of key {key_id} does not open with this key-encryption key") from error


def generate_kek() -> str:
    """A fresh KEK in the form the settings expect."""
    return base64.b64encode(os.urandom(32)).decode()
