"""Fake-but-valid key strings for the test suite, the benchmarks and the demo stack."""

from __future__ import annotations

import hashlib
import string

_ALPHABET = string.ascii_letters + string.digits + "-_"


def fake_gemini_key(seed: str) -> str:
    """A string shaped like a Gemini API key (AIza + 35 characters), unique per seed."""
    digest = hashlib.sha256(seed.encode()).digest() + hashlib.sha256(b"2" + seed.encode()).digest()
    return "AIza" + "".join(_ALPHABET[byte % len(_ALPHABET)] for byte in digest[:35])
