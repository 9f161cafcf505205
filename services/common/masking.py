"""How a secret is shown when it must be shown at all (``AIza...x4Q2``, ``AQ.A...9fZk``), and redaction.

Two kinds of Gemini API key exist (docs/operator-guide.md "Keys: auth and standard"):
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


# Browser tokens the pool mints (``auth_tokens/`` and 43 url-safe characters): masked in log lines only, since the
# mint answer must carry its own token to the caller.
_BROWSER_TOKEN: Final = re.compile(r"auth_tokens/[0-9A-Za-z_\-]{20,}")


def redact_log_line(text: str) -> str:
    """``redact``, and minted browser tokens too: what a log line may show."""
    text = redact(text)
    if "auth_tokens/" not in text:
        return text
    return _BROWSER_TOKEN.sub(lambda found: "auth_tokens/" + mask(found.group()[len("auth_tokens/") :]), text)


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


# Characters a key or client token is made of: a run of them at a chunk's end may go on in the next chunk.
_KEY_BYTES: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-."
_KEY_CHARACTERS: Final = frozenset(_KEY_BYTES)
# Longer than any key shape (an auth key: "AQ." and at most 200): a longer run is let go but for this tail.
_HELD_AT_MOST: Final = 256


class StreamScrubber:
    """``scrub`` for an answer relayed chunk by chunk, wherever the chunks are cut.

    A key cut in two by a chunk boundary is in neither chunk whole, so a chunk
    ending in a run of key characters (or in a beginning of ``secret``) keeps
    that run back and sends it with the next chunk (or with ``flush`` at the
    end). An SSE event or a JSON frame ends in a newline or a bracket, so the
    hot path holds nothing back and pays a few bytes searches per chunk.
    """

    __slots__ = ("_held", "_mask", "_odd", "_secret")

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._mask = mask(secret).encode()
        self._held = b""
        # A secret of other characters than a key's: its beginnings are looked for apart (never for a real key).
        self._odd = bool(self._secret.translate(None, _KEY_BYTES))  # what is left once key characters are deleted

    def feed(self, chunk: bytes) -> bytes:
        """What of ``chunk`` (after what was held) can go out now, scrubbed."""
        data = self._held + chunk if self._held else chunk
        cut = self._hold_from(data)
        self._held = data[cut:]
        return self._scrubbed(data[:cut]) if cut else b""

    def flush(self) -> bytes:
        """The end of the answer: what was held, scrubbed."""
        data, self._held = self._held, b""
        return self._scrubbed(data)

    def _scrubbed(self, data: bytes) -> bytes:
        if self._secret and self._secret in data:
            data = data.replace(self._secret, self._mask)
        return redact_bytes(data)

    def _hold_from(self, data: bytes) -> int:
        """Where the tail that may be the beginning of a key starts (``len(data)``: nothing to hold)."""
        end = len(data)
        cut = end
        floor = max(0, end - _HELD_AT_MOST)
        while cut > floor and data[cut - 1] in _KEY_CHARACTERS:
            cut -= 1
        if self._odd:
            secret = self._secret
            for length in range(min(len(secret) - 1, end), end - cut, -1):
                if data.endswith(secret[:length]):
                    return end - length
        return cut
