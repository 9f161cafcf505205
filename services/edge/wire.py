"""What crosses the edge, and what is read from it on the way.

Going up: the client's headers minus credentials and hop-by-hop ones, the
Accept-Encoding restricted to codings the edge can read back, the query
minus the client's ``key``. Coming back: the upstream's headers that make
sense to the client; a body decoded for reading (errors, token usage).
Pure functions over bytes and headers, tested alone
(tests/unit/test_edge_pieces.py).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote_plus

# Never forwarded to the upstream: hop-by-hop, the client's credentials, cookies,
# and headers aiohttp sets itself from the body it sends.
_DROP_REQUEST: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "authorization",
        "x-goog-api-key",
        "cookie",
        "accept-encoding",  # re-derived: only codings the edge can read back (errors, usage)
        "expect",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
# Never passed back to the client: hop-by-hop, and what aiohttp derives itself.
_DROP_RESPONSE: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "set-cookie",
        "alt-svc",
        "server",
        "date",
    }
)
_READABLE_CODINGS: Final = frozenset({"gzip", "deflate", "identity"})

_PROMPT_TOKENS: Final = re.compile(rb'"(?:promptTokenCount|prompt_tokens)"\s*:\s*(\d+)')
_OUTPUT_TOKENS: Final = re.compile(rb'"(?:candidatesTokenCount|completion_tokens)"\s*:\s*(\d+)')


# -- the request ------------------------------------------------------------


def forward_headers(incoming: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's headers minus hop-by-hop and credentials (the key is added per attempt)."""
    headers: dict[str, str] = {}
    accept_encoding = "identity"
    for name, value in incoming:
        lower = name.lower()
        if lower == "accept-encoding":
            accept_encoding = readable_codings(value)
        elif lower not in _DROP_REQUEST:
            headers[name] = value
    # Always explicit, or aiohttp would ask for gzip on a client's behalf.
    headers["Accept-Encoding"] = accept_encoding
    return headers


def readable_codings(accept_encoding: str) -> str:
    """The client's Accept-Encoding restricted to codings the edge can decode (gzip, deflate)."""
    kept = [token for token in accept_encoding.split(",") if token.split(";")[0].strip().lower() in _READABLE_CODINGS]
    return ",".join(token.strip() for token in kept) or "identity"


def without_key(raw_query: str) -> str:
    """The raw query string minus any ``key`` parameter (the client's token), the rest untouched."""
    if not raw_query or "key" not in raw_query:
        return raw_query
    return "&".join(
        part for part in raw_query.split("&") if part and unquote_plus(part.partition("=")[0]) != "key"
    )


def response_headers(upstream: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's answer headers that make sense to the client (content-type, encoding, x-goog-*...)."""
    return [(name, value) for name, value in upstream if name.lower() not in _DROP_RESPONSE]


# -- reading an answer ---------------------------------------------------------


def decoded(body: bytes, content_encoding: str | None) -> bytes:
    """The body without its Content-Encoding (gzip/deflate), for reading errors and usage."""
    if not content_encoding or content_encoding == "identity" or not body:
        return body
    try:
        if content_encoding == "gzip":
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if content_encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error:
        return b""
    return b""


def usage(body: bytes) -> tuple[int, int]:
    """(input, output) tokens from ``usageMetadata`` or OpenAI ``usage``; the last occurrence wins."""
    return _last_int(_PROMPT_TOKENS, body), _last_int(_OUTPUT_TOKENS, body)


def _last_int(pattern: re.Pattern[bytes], body: bytes) -> int:
    last = 0
    for match in pattern.finditer(body):
        last = int(match.group(1))
    return last
