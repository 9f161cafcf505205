"""How a secret is shown when it must be shown at all: ``AIza...x4Q2``."""

from __future__ import annotations


def mask(secret: str) -> str:
    """Enough to recognise a key, never enough to use it."""
    if len(secret) < 12:
        return "****"
    return f"{secret[:4]}...{secret[-4:]}"


def scrub(data: bytes, secret: str) -> bytes:
    """``data`` with every occurrence of ``secret`` replaced by its mask (Google quotes keys in some errors)."""
    if not secret or secret.encode() not in data:
        return data
    return data.replace(secret.encode(), mask(secret).encode())
