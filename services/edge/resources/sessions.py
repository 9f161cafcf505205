"""Upload sessions sealed into the upload URLs the edge hands out (``resources.uploads``).

AES-GCM under a key derived from ``EDGE_UPLOAD_SESSION_KEY``: the client's
token hash, the upstream's upload id, the declared size, the API version, an
expiry and, for a kind's upload (an environment's file, a file search store's
document), where its bytes go upstream. Any replica with the same key opens it; nobody can read, alter or
forge one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import struct
import time
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

_AAD: Final = b"keyring-edge-upload-session-v1"
_HEAD: Final = struct.Struct(">32sQQB")  # token hash, expiry (unix s), declared size, version
_VERSIONS: Final = ("v1beta", "v1", "v1alpha")  # sealed as an index: new ones at the end
_MAX_SEALED: Final = 2048


@dataclass(frozen=True, slots=True)
class UploadSession:
    token_hash: str  # hex SHA-256 of the client's token
    upstream_id: str  # the upstream's upload_id
    size: int  # bytes declared at the start
    version: str
    expires_at: int
    # Where the bytes go upstream for a kind's upload (``upload/v1/fileSearchStores/s:uploadToFileSearchStore``);
    # "" for a file (``/upload/{version}/files``). Sealed before the upstream id, a space between (neither has one).
    target: str = ""

    @property
    def name(self) -> str:
        """The session's name in keyring (bound to the key that opened it)."""
        return "uploads/" + hashlib.sha256(self.upstream_id.encode()).hexdigest()[:32]


class UploadSessions:
    """Seals upload sessions into the URL's ``upload_id``, and opens them (any replica with the same key)."""

    def __init__(self, secret: str) -> None:
        if not secret:
            log.warning(
                "EDGE_UPLOAD_SESSION_KEY is not set: upload sessions are sealed with a key of this process only,"
                " so the bytes of an upload must come back to this edge replica"
            )
        material = secret.encode() if secret else os.urandom(32)
        self._aead = AESGCM(hashlib.sha256(_AAD + b"\0" + material).digest())

    def seal(self, session: UploadSession) -> str:
        head = _HEAD.pack(
            bytes.fromhex(session.token_hash), session.expires_at, session.size, _VERSIONS.index(session.version)
        )
        nonce = os.urandom(12)
        tail = f"{session.target} {session.upstream_id}" if session.target else session.upstream_id
        sealed = nonce + self._aead.encrypt(nonce, head + tail.encode(), _AAD)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, sealed: str, now: float | None = None) -> UploadSession | None:
        """The session, or None when it is not one of ours, was tampered with or has expired."""
        if not 0 < len(sealed) <= _MAX_SEALED:
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], _AAD)
        except (binascii.Error, ValueError, InvalidTag):
            return None
        if len(plain) <= _HEAD.size:
            return None
        hashed, expires_at, size, version = _HEAD.unpack_from(plain)
        if expires_at < (time.time() if now is None else now) or version >= len(_VERSIONS):
            return None
        target, _, upstream_id = plain[_HEAD.size :].decode().rpartition(" ")
        return UploadSession(hashed.hex(), upstream_id, size, _VERSIONS[version], expires_at, target)
