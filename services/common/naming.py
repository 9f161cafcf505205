"""Names every service agrees on: what a model is called, what a client token is known by."""

from __future__ import annotations

import hashlib

MODEL_PREFIX = "models/"


def model_id(name: str) -> str:
    """``models/gemini-3.5-flash`` and ``gemini-3.5-flash`` are the same model: the bare id."""
    return name.removeprefix(MODEL_PREFIX)


def token_hash(token: str) -> str:
    """What keyring knows a client token by (SHA-256, hex): the edge sends it, the store keeps it."""
    return hashlib.sha256(token.encode()).hexdigest()
