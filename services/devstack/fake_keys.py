"""Fake-but-valid key strings for the test suite, the benchmarks and the demo stack."""

from __future__ import annotations

import hashlib
import string

_ALPHABET = string.ascii_letters + string.digits + "-_"


def _characters(seed: str, count: int) -> str:
    digest = b""
    block = 0
    while len(digest) < count:
        digest += hashlib.sha256(f"{block}:{seed}".encode() if block else seed.encode()).digest()
        block += 1
    return "".join(_ALPHABET[byte % len(_ALPHABET)] for byte in digest[:count])


def fake_gemini_key(seed: str) -> str:
    """A string shaped like a standard Gemini API key (AIza + 35 characters), unique per seed."""
    digest = hashlib.sha256(seed.encode()).digest() + hashlib.sha256(b"2" + seed.encode()).digest()
    return "AIza" + "".join(_ALPHABET[byte % len(_ALPHABET)] for byte in digest[:35])


def fake_auth_key(seed: str) -> str:
    """A string shaped like a Gemini auth key (AQ.Ab + 48 url-safe characters), unique per seed."""
    return "AQ.Ab" + _characters("auth:" + seed, 48)
