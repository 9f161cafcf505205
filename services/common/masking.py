"""How a secret is shown when it must be shown at all (``AIza...x4Q2``, ``AQ.A...9fZk``), and redaction.

Two kinds of Gemini API key exist (README "Keys: auth and standard"):
**auth keys**, ``AQ.`` and then url-safe characters (what AI Studio issues
since 2026), and **standard keys**, ``AIza`` and 35 more (being retired).
Nothing here assumes either prefix: ``mask`` keeps the first and last four
characters of any secret, and ``redact`` masks every string shaped like a key
of either kind (a client token too), wherever it sits in a text: upstream
error bodies (Google quotes the key in some), log lines (``common.logs``
redacts every line it writes).
"""

from __future__ import annotations

import re
from typing import Final

# Standard keys: "AIza" and 35 more characters of [0-9A-Za-z_-].
STANDARD_KEY_PATTERN: Final = r"AIza[0-9A-Za-z_\-]{35}"
# Auth keys: "AQ." and 20-200 url-safe characters (seen issued as "AQ.Ab..."; Google publishes no length).
AUTH_KEY_PATTERN: Final = r"AQ\.[0-9A-Za-z_\-]{20,200}"
# What redaction looks for: either kind (auth keys of any length past 20 characters) and client tokens.
_SECRET_SHAPES: Final = r"AIza[0-9A-Za-z_\-]{35}|AQ\.[0-9A-Za-z_\-]{20,}|kr-[0-9A-Za-z_\-]{20,}"
_SECRETS_TEXT: Final = re.compile(_SECRET_SHAPES)
_SECRETS_BYTES: Final = re.compile(_SECRET_SHAPES.encode())


def mask(secret: str) -> str:
    """Enough to recognise a key, never enough to use it."""
    if len(secret) < 12:
        return "****"
    return f"{secret[:4]}...{secret[-4:]}"


def redact(text: str) -> str:
    """``text`` with every key-shaped string (either kind) and client token replaced by its mask."""
    if "AIza" not in text and "AQ." not in text and "kr-" not in text:
        return text
    return _SECRETS_TEXT.sub(lambda found: mask(found.group()), text)


def redact_bytes(data: bytes) -> bytes:
    """``redact`` for bytes (an answer body)."""
    if b"AIza" not in data and b"AQ." not in data and b"kr-" not in data:
        return data
    return _SECRETS_BYTES.sub(lambda found: mask(found.group().decode()).encode(), data)


def scrub(data: bytes, secret: str) -> bytes:
    """``data`` with ``secret`` (whatever its shape) and every other key-shaped string replaced by masks."""
    if secret and secret.encode() in data:
        data = data.replace(secret.encode(), mask(secret).encode())
    return redact_bytes(data)
