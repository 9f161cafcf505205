"""Secrets at rest: AES-256-GCM under key-encryption keys (KEKs), and the client-token hash key.

A KEK comes from a file or an environment variable, i.e. a Kubernetes
Secret, as 32 bytes in base64. A box holds the current KEK, which seals,
and any number of other KEKs, which only open (the next KEK before it
becomes current, the previous one while secrets are re-sealed:
``python -m services.keyring.reseal``).

A sealed secret names the KEK that sealed it::

    v2:<kek id>:<base64 of nonce + ciphertext + tag>

The KEK id is a fingerprint of the KEK (an HMAC of a fixed label under it),
so it needs no configuration and says nothing about the key. The KEK id and
the record's id (a key id) are bound as associated data: a sealed secret
copied onto another record does not open. Values sealed before KEKs had ids
(plain base64, no prefix) still open with whichever configured KEK fits, and
are re-sealed by the reseal command.

Client tokens are stored as HMAC-SHA256, under a key derived from a KEK
(HKDF), of the SHA-256 the edge sends (``TokenHasher``); the store keeps
that SHA-256 only sealed, so that a KEK rotation can re-key the token.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .domain.identity import TokenHasher
from .domain.models import ClientToken

_NONCE_BYTES = 12
_FORMAT = "v2"
_KEK_ID_LABEL = b"keyring/v1 key-encryption key id"
_TOKEN_KEY_INFO = b"keyring/v1 client-token hash key"
# What a client token's sealed SHA-256 is bound to (a token id changes when it is re-keyed on import).
TOKEN_SEAL_CONTEXT = "client-token"


class SealingError(Exception):
    """A KEK that is missing or malformed, or a sealed secret that does not open."""


class Kek:
    """One key-encryption key: its id, its cipher and the client-token hash key derived from it."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise SealingError("a key-encryption key must be 32 bytes (base64 of 32 random bytes)")
        self.id = "kek-" + hmac.new(raw, _KEK_ID_LABEL, hashlib.sha256).hexdigest()[:12]
        self.aead = AESGCM(raw)
        self.token_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_TOKEN_KEY_INFO).derive(raw)


class SecretBox:
    """Seals under the current KEK; opens under the current one or any other configured KEK."""

    def __init__(self, kek: bytes, others: Iterable[bytes] = (), *, accept_unkeyed_tokens: bool = False) -> None:
        self.current = Kek(kek)
        self._keks: dict[str, Kek] = {self.current.id: self.current}
        for raw in others:
            other = Kek(raw)
            self._keks.setdefault(other.id, other)
        keys = [(k.id, k.token_key) for k in self._keks.values()]
        self.tokens = TokenHasher(keys, accept_unkeyed=accept_unkeyed_tokens)

    @classmethod
    def from_base64(cls, encoded: str, others: Sequence[str] = (), *, accept_unkeyed_tokens: bool = False) -> SecretBox:
        return cls(_decode(encoded), [_decode(value) for value in others], accept_unkeyed_tokens=accept_unkeyed_tokens)

    @classmethod
    def from_file(cls, path: str | Path, others: Sequence[str] = ()) -> SecretBox:
        return cls.from_base64(Path(path).read_text(), others)

    @property
    def kek_id(self) -> str:
        """The id of the KEK new secrets are sealed under."""
        return self.current.id

    @property
    def kek_ids(self) -> list[str]:
        """Every configured KEK's id, the current one first."""
        return list(self._keks)

    def seal(self, secret: str, key_id: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        kek = self.current
        sealed = nonce + kek.aead.encrypt(nonce, secret.encode(), _bound(kek.id, key_id))
        return f"{_FORMAT}:{kek.id}:{base64.b64encode(sealed).decode()}"

    def open(self, sealed: str, key_id: str) -> str:
        kek_id = kek_id_of(sealed)
        if kek_id:
            kek = self._keks.get(kek_id)
            if kek is None:
                raise SealingError(f"the secret of {key_id} is sealed under {kek_id}, which is not configured")
            clear = _open(kek, sealed.rsplit(":", 1)[1], _bound(kek_id, key_id))
        else:  # sealed before KEKs had ids: whichever configured KEK fits
            clear = next(
                (c for kek in self._keks.values() if (c := _open(kek, sealed, key_id.encode())) is not None), None
            )
        if clear is None:
            raise SealingError(f"the secret of {key_id} does not open with the configured key-encryption keys")
        return clear

    def is_current(self, sealed: str) -> bool:
        """Sealed under the current KEK (nothing for the reseal command to do)."""
        return kek_id_of(sealed) == self.current.id

    # -- client tokens --------------------------------------------------

    def key_token(self, token: ClientToken, presented: str = "") -> ClientToken:
        """The token keyed with the current KEK's token key, its SHA-256 sealed under the current KEK.

        ``presented`` is the SHA-256 the edge sends; when not given it is
        recovered from the record (``presented_hash``).
        """
        presented = presented or self.presented_hash(token)
        return dataclasses.replace(
            token,
            token_hash=self.tokens.keyed(presented),
            hash_key=self.tokens.current,
            sealed_hash=self.seal(presented, TOKEN_SEAL_CONTEXT),
        )

    def presented_hash(self, token: ClientToken) -> str:
        """The SHA-256 a token is presented by: sealed in a keyed record, bare in a legacy one."""
        return self.open(token.sealed_hash, TOKEN_SEAL_CONTEXT) if token.keyed else token.token_hash

    def token_is_current(self, token: ClientToken) -> bool:
        """Keyed with the current KEK's token key and sealed under the current KEK."""
        return token.hash_key == self.current.id and self.is_current(token.sealed_hash)


def kek_id_of(sealed: str) -> str:
    """The id of the KEK a sealed value names; "" for a value sealed before KEKs had ids."""
    match = _SEALED.match(sealed)
    return match.group(1) if match else ""


_SEALED = re.compile(r"v2:(kek-[0-9a-f]{12}):")


def _decode(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise SealingError("a key-encryption key is not valid base64") from error


def _bound(kek_id: str, key_id: str) -> bytes:
    return f"{kek_id}/{key_id}".encode()


def _open(kek: Kek, encoded: str, associated: bytes) -> str | None:
    try:
        raw = base64.b64decode(encoded, validate=True)
        return kek.aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], associated).decode()
    except (InvalidTag, ValueError, binascii.Error):
        return None


def parse_keks(listed: str) -> list[str]:
    """KEKs listed in one setting or file: base64 values separated by commas or whitespace."""
    return [value for value in re.split(r"[\s,]+", listed) if value]


def generate_kek() -> str:
    """A fresh KEK in the form the settings expect."""
    return base64.b64encode(os.urandom(32)).decode()
