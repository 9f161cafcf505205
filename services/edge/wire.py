"""What crosses the edge, and what is read from it on the way.

Going up, nothing the client sent is forwarded as it came: the upstream
request is built from validated parts and allow-lists, here.

- **Path**: ``model_path`` parses the raw request path (before any decoding)
  against one strict pattern, ``/{version}/models[/{model}[:{action}]]``:
  version ``v1beta`` or ``v1``, a model id of ``[a-z0-9][a-z0-9.-]{0,127}``
  (with an optional ``models/`` prefix), an action of letters. Dot-segments,
  percent-encoded characters (``%2F``, ``%5C``, ``%2E``...), backslashes,
  empty segments and anything else off-pattern are refused (400) before any
  lease. The upstream URL is composed from the parsed parts only
  (``native_url``, ``openai_url``), never from the client's path.
- **Query** (``forward_query``): only ``FORWARDED_QUERY`` (``alt`` with the
  values ``sse`` or ``json``, ``pageSize``, ``pageToken``); everything else is
  dropped, credentials (``key``, ``access_token``) above all. Names are
  decoded once, by the same parser for every decision: ``%6Bey`` *is*
  ``key`` (it authenticates, ``routing``/``dialects``, and it is never
  forwarded); names are case-sensitive as Google's are, so ``KEY`` is not a
  token and is dropped like any other unknown parameter.
- **Headers** (``forward_headers``): only ``FORWARDED_HEADERS``
  (``content-type``, ``accept``, ``user-agent``, ``x-goog-api-client``,
  ``x-server-timeout``: what google-genai and the openai package send that
  means something upstream), plus an ``Accept-Encoding`` restricted to codings
  the edge can read back. No ``Authorization``, ``x-goog-api-key``,
  ``x-goog-user-project``, ``x-http-method-override``, ``referer``, app
  identity headers or cookies: the one upstream credential is the leased key,
  added per attempt (``upstream``).

Coming back: the upstream's headers that make sense to the client; a body
decoded for reading (errors, token usage). Pure functions over strings,
bytes and headers, tested alone (tests/unit/test_edge_pieces.py).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from yarl import URL

# The request headers forwarded upstream (lower-case), nothing else.
FORWARDED_HEADERS: Final = frozenset({"content-type", "accept", "user-agent", "x-goog-api-client", "x-server-timeout"})
# The query parameters forwarded upstream, each with the values it may take (None: any value up to 1 KiB).
FORWARDED_QUERY: Final[Mapping[str, frozenset[str] | None]] = {
    "alt": frozenset({"sse", "json"}),
    "pageSize": None,
    "pageToken": None,
}
_MAX_QUERY_VALUE: Final = 1024

# The model id: lower-case letters, digits, dots and dashes (gemini-3.5-flash-lite, text-embedding-004...).
MODEL_ID: Final = r"[a-z0-9][a-z0-9.\-]{0,127}"
_MODEL: Final = re.compile(MODEL_ID)
_MODEL_PATH: Final = re.compile(
    r"/(?P<version>v1beta|v1)/models(?:/(?:models/)?(?P<model>" + MODEL_ID + r")(?::(?P<action>[A-Za-z]{1,64}))?)?"
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


class MalformedPath(ValueError):
    """The request path is off the one pattern the edge forwards (the message says what is expected)."""


@dataclass(frozen=True, slots=True)
class ModelPath:
    """A parsed ``/{version}/models[/{model}[:{action}]]``: "" for the parts that are absent."""

    version: str
    model: str = ""
    action: str = ""


def model_path(raw_path: str) -> ModelPath:
    """The validated parts of a raw request path (``request.raw_path``; its query, if any, is ignored)."""
    match = _MODEL_PATH.fullmatch(raw_path.partition("?")[0])
    if match is None:
        raise MalformedPath(
            "malformed path: expected /{version}/models[/{model}[:{action}]] with a model id of"
            " lower-case letters, digits, '.' and '-' (no dot-segments, encoded or empty segments)"
        )
    return ModelPath(match["version"], match["model"] or "", match["action"] or "")


def valid_model(name: str) -> str | None:
    """A model named in a body (``gemini-2.5-flash`` or ``models/gemini-2.5-flash``): the bare id, or None."""
    model = name.removeprefix("models/")
    return model if _MODEL.fullmatch(model) else None


def native_url(base_url: str, path: ModelPath, query: list[tuple[str, str]]) -> URL:
    """``{base}/{version}/models[/{model}[:{action}]]?{query}``, from validated parts only."""
    tail = f"/{path.model}" if path.model else ""
    if path.action:
        tail += f":{path.action}"
    return _with_query(URL(f"{base_url}/{path.version}/models{tail}", encoded=True), query)


def openai_url(base_url: str, endpoint: str, model: str = "") -> URL:
    """``{base}/v1beta/openai/{endpoint}[/{model}]``: the endpoint is the edge's own constant."""
    tail = f"/{model}" if model else ""
    return URL(f"{base_url}/v1beta/openai/{endpoint}{tail}", encoded=True)


def _with_query(url: URL, query: list[tuple[str, str]]) -> URL:
    return url.with_query(query) if query else url


def client_key(query: Mapping[str, str]) -> str | None:
    """The client's token from the decoded query (``key``, however its name was percent-encoded)."""
    return query.get("key") or None


def forward_query(query: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The decoded query's allow-listed parameters (``FORWARDED_QUERY``), in order; the rest is dropped."""
    kept: list[tuple[str, str]] = []
    for name, value in query:
        if name not in FORWARDED_QUERY or len(value) > _MAX_QUERY_VALUE:
            continue
        values = FORWARDED_QUERY[name]
        if values is None or value in values:
            kept.append((name, value))
    return kept


def forward_headers(incoming: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The client's allow-listed headers (``FORWARDED_HEADERS``); the key is added per attempt."""
    headers: dict[str, str] = {}
    accept_encoding = "identity"
    for name, value in incoming:
        lower = name.lower()
        if lower in FORWARDED_HEADERS:
            headers[lower] = value
        elif lower == "accept-encoding":
            accept_encoding = readable_codings(value)
    # Always explicit, or aiohttp would ask for gzip on a client's behalf.
    headers["accept-encoding"] = accept_encoding
    return headers


def readable_codings(accept_encoding: str) -> str:
    """The client's Accept-Encoding restricted to codings the edge can decode (gzip, deflate)."""
    kept = [token for token in accept_encoding.split(",") if token.split(";")[0].strip().lower() in _READABLE_CODINGS]
    return ",".join(token.strip() for token in kept) or "identity"


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
