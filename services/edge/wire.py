"""What crosses the edge, and what is read from it on the way.

Going up, nothing the client sent is forwarded as it came: the upstream
request is built from validated parts and allow-lists, here.

- **Path**: ``model_path`` parses the raw request path (before any decoding)
  against one strict pattern, ``/{version}/models[/{model}[:{action}]]``:
  version ``v1alpha``, ``v1beta`` or ``v1`` (``VERSIONS``), a model id of ``[a-z0-9][a-z0-9.-]{0,127}``
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
  ``x-server-timeout``, ``api-revision``: what google-genai and the openai
  package send that means something upstream; the Interactions API's
  behaviour depends on ``Api-Revision``), plus an ``Accept-Encoding`` restricted to codings
  the edge can read back. No ``Authorization``, ``x-goog-api-key``,
  ``x-goog-user-project``, ``x-http-method-override``, ``referer``, app
  identity headers or cookies: the one upstream credential is the leased key,
  added per attempt (``upstream``).

Project-bound resources (docs/configuration.md "Files, caches, batches, operations and
interactions") are routed by the table of kinds (``resources.kinds.parse``:
one pattern per row, the ids below among them); ``resource_path`` still
parses the names answers give (``resources.bindings``) and the upload route:

- ``/{version}/files/{id}[:download]``, ``/{version}/cachedContents/{id}``,
  ``/{version}/batches/{id}[:cancel]``, ``/{version}/interactions/{id}[/cancel]``
  and ``/{version}/models/{model}/operations/{id}``; their collections
  (``/{version}/files`` ...) and ``/upload/{version}/files`` are exact routes.
  Ids: files ``FILE_ID`` (Google's rule: at most 40 lower-case letters,
  digits and dashes, no dash first or last), caches, batches and operations
  ``JOB_ID`` (``[a-z0-9][a-z0-9-]{0,63}``), interactions ``INTERACTION_ID``
  (``[A-Za-z0-9][A-Za-z0-9_-]{0,127}``: Google's interaction ids carry capitals
  and ``_``, e.g. ``v1_ChdX...``). The same refusals as for model paths.
- Query, on resource routes only (``RESOURCE_QUERY``): ``FORWARDED_QUERY``
  plus ``alt=media`` (downloads), ``stream`` and ``include_input``
  (``true``/``false``) and ``last_event_id`` (interactions: a get streamed
  and resumed), ``updateMask`` (a cache's PATCH). ``pageSize`` and
  ``pageToken`` of list calls are the edge's own (``listing``), never
  forwarded as they came.
- Headers, on the upload route only (``UPLOAD_HEADERS``): the resumable
  upload protocol's ``x-goog-upload-protocol``, ``-command``, ``-offset``,
  ``-header-content-length`` and ``-header-content-type``. The client's
  ``upload_id`` is the edge's sealed session (``uploads``): the upstream's
  own id is taken from inside it, never from the client.

Coming back (``response_headers``): only ``PASSED_BACK_HEADERS`` of the
upstream's answer (``content-type``, ``content-encoding``,
``content-disposition``, ``retry-after``, ``x-gemini-service-tier`` and the
resumable upload protocol's ``x-goog-upload-status``, ``-size-received`` and
``-chunk-granularity``), never the upstream's hosts, cookies, tracing or
upload ids (``x-guploader-uploadid``). ``x-goog-upload-url`` (and its
``-control-url``) names the upstream's upload session, a capability without a
key: it is dropped, except on an upload's start, whose call asks for it
(``Call.passed_back``) and whose settle rewrites it to the edge's public URL
(``resources.uploads``). ``content-length`` is aiohttp's own (a whole answer)
or absent (a relayed stream, whose scrubbed chunks may be shorter). A body is
decoded for reading (errors, token usage). Pure functions over strings,
bytes and headers, tested alone (tests/unit/test_edge_pieces.py).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from yarl import URL

# The request headers forwarded upstream (lower-case), nothing else.
FORWARDED_HEADERS: Final = frozenset(
    {"content-type", "accept", "user-agent", "x-goog-api-client", "x-server-timeout", "api-revision"}
)
# The API versions the edge serves (google-genai 3.x calls v1 by default; ephemeral tokens, new kinds: v1alpha).
VERSIONS: Final = ("v1alpha", "v1beta", "v1")
_VERSION: Final = "|".join(VERSIONS)
# The query parameters forwarded upstream, each with the values it may take (None: any value up to 1 KiB).
FORWARDED_QUERY: Final[Mapping[str, frozenset[str] | None]] = {
    "alt": frozenset({"sse", "json"}),
    "pageSize": None,
    "pageToken": None,
}
# Resource routes (files, caches, batches, interactions, operations) also forward these.
RESOURCE_QUERY: Final[Mapping[str, frozenset[str] | None]] = {
    **FORWARDED_QUERY,
    "alt": frozenset({"sse", "json", "media"}),
    "stream": frozenset({"true", "false"}),
    "include_input": frozenset({"true", "false"}),
    "last_event_id": None,
    "updateMask": None,
}
# The upload route also forwards the resumable upload protocol's headers.
UPLOAD_HEADERS: Final = frozenset(
    {
        "x-goog-upload-protocol",
        "x-goog-upload-command",
        "x-goog-upload-offset",
        "x-goog-upload-header-content-length",
        "x-goog-upload-header-content-type",
    }
)
_MAX_QUERY_VALUE: Final = 1024

# The model id: lower-case letters, digits, dots and dashes (gemini-3.5-flash-lite, text-embedding-004...).
MODEL_ID: Final = r"[a-z0-9][a-z0-9.\-]{0,127}"
_MODEL: Final = re.compile(MODEL_ID)
_MODEL_PATH: Final = re.compile(
    r"/(?P<version>" + _VERSION + r")/models"
    r"(?:/(?:models/)?(?P<model>" + MODEL_ID + r")(?::(?P<action>[A-Za-z]{1,64}))?)?"
)
# Ids of project-bound resources (module docstring).
FILE_ID: Final = r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?"
JOB_ID: Final = r"[a-z0-9][a-z0-9-]{0,63}"
INTERACTION_ID: Final = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
_RESOURCE_PATH: Final = re.compile(
    r"/(?P<version>" + _VERSION + r")/(?:"
    r"files/(?P<files>" + FILE_ID + r")(?::(?P<files_action>download))?"
    r"|cachedContents/(?P<cachedContents>" + JOB_ID + r")"
    r"|batches/(?P<batches>" + JOB_ID + r")(?::(?P<batches_action>cancel))?"
    r"|interactions/(?P<interactions>" + INTERACTION_ID + r")(?:/(?P<interactions_action>cancel))?"
    r"|models/(?:models/)?(?P<model>" + MODEL_ID + r")/operations/(?P<operations>" + JOB_ID + r")"
    r")"
)
_KINDS: Final = ("files", "cachedContents", "batches", "interactions", "operations")
_COLLECTION_PATH: Final = re.compile(
    r"/(?P<version>" + _VERSION + r")/(?P<kind>files|cachedContents|batches|interactions)"
)
_UPLOAD_PATH: Final = re.compile(r"/upload/(?P<version>" + _VERSION + r")/files")
# A file named in a body: files/{id} or a Google file URI.
_FILE_NAME: Final = re.compile(
    r"(?:https://generativelanguage\.googleapis\.com/(?:"
    + _VERSION
    + r")/)?files/("
    + FILE_ID
    + r")(?::download(?:\?alt=media)?)?"
)
_MAX_NAMED_VALUE: Final = 300
# An escape that decodes to printable ASCII: all it takes to spell a name the bytes do not show.
_ASCII_ESCAPE: Final = re.compile(rb"\\(?:u00[2-7][0-9a-fA-F]|/)")

# The upstream's answer headers passed back to the client (lower-case), nothing else (module docstring).
PASSED_BACK_HEADERS: Final = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-disposition",
        "retry-after",
        "x-gemini-service-tier",
        "x-goog-upload-status",
        "x-goog-upload-size-received",
        "x-goog-upload-chunk-granularity",
    }
)
# The upstream's upload session URL: passed only to an upload start's settle, which rewrites it.
UPLOAD_URL_HEADER: Final = "x-goog-upload-url"
_READABLE_CODINGS: Final = frozenset({"gzip", "deflate", "identity"})

_PROMPT_TOKENS: Final = re.compile(rb'"(?:promptTokenCount|prompt_tokens)"\s*:\s*(\d+)')
_OUTPUT_TOKENS: Final = re.compile(rb'"(?:candidatesTokenCount|completion_tokens)"\s*:\s*(\d+)')


# -- the request ------------------------------------------------------------


class ChunkFilter(Protocol):
    """What a relayed stream's chunks pass through (``masking.StreamScrubber``, ``StreamDecoded``)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


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


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """A parsed resource path: ``kind`` files, cachedContents, batches, interactions or operations."""

    version: str
    kind: str
    id: str = ""  # "" for a collection
    action: str = ""  # download, cancel
    model: str = ""  # operations only

    @property
    def name(self) -> str:
        """The name as Google spells it (and keyring's affinity): ``files/abc``, ``models/m/operations/x``."""
        if self.kind == "operations":
            return f"models/{self.model}/operations/{self.id}"
        return f"{self.kind}/{self.id}"


def resource_path(raw_path: str) -> ResourcePath:
    """The validated parts of a raw resource path (one of the patterns of the module docstring)."""
    path = raw_path.partition("?")[0]
    match = _RESOURCE_PATH.fullmatch(path)
    if match is not None:
        kind = next(kind for kind in _KINDS if match[kind])
        return ResourcePath(match["version"], kind, match[kind], match.groupdict().get(f"{kind}_action") or "",
                            match["model"] or "")  # fmt: skip
    collection = _COLLECTION_PATH.fullmatch(path)
    if collection is not None:
        return ResourcePath(collection["version"], collection["kind"])
    upload = _UPLOAD_PATH.fullmatch(path)
    if upload is not None:
        return ResourcePath(upload["version"], "uploads")
    raise MalformedPath(
        "malformed path: expected /{version}/files/{id}[:download], /{version}/cachedContents/{id},"
        " /{version}/batches/{id}[:cancel], /{version}/interactions/{id}[/cancel] or"
        " /{version}/models/{model}/operations/{id}, with ids of lower-case letters, digits and '-'"
        " (interactions: also capitals and '_'), of bounded length"
    )


def resource_url(base_url: str, path: ResourcePath, query: list[tuple[str, str]]) -> URL:
    """The upstream URL of a resource path, from its validated parts only."""
    if path.kind == "uploads":
        tail = f"/upload/{path.version}/files"
    elif not path.id:
        tail = f"/{path.version}/{path.kind}"
    else:
        tail = f"/{path.version}/{path.name}"
        if path.action:
            tail += f"/{path.action}" if path.kind == "interactions" else f":{path.action}"
    return _with_query(URL(f"{base_url}{tail}", encoded=True), query)


def file_name(value: str) -> str | None:
    """``files/{id}`` from a file's name or Google URI (``https://generativelanguage.googleapis.com/v1beta/files/{id}``)."""
    match = _FILE_NAME.fullmatch(value)
    return f"files/{match.group(1)}" if match else None


class UnreadableNames(ValueError):
    """A body that may name project-bound resources is too large to parse: which project it needs is unknown."""


Namer = Callable[[str], str | None]  # a naming field's value -> the resource's name, or None


@dataclass(frozen=True, slots=True)
class References:
    """Which body fields name project-bound resources, and how (``resources.kinds``: the table's ``references``).

    ``namers``: a field's value (a string, or each string of a list) -> the resource's name, or None;
    ``top``: fields read at the body's top level only; ``hints``: byte strings one of which a body without
    an ASCII escape shows when one of its fields may name something.
    """

    namers: Mapping[str, Namer]
    top: frozenset[str]
    hints: tuple[bytes, ...]
    twice: re.Pattern[bytes]  # a naming field (not ``top``) given with a string or a list of strings, in the bytes

    @classmethod
    def of(cls, namers: Mapping[str, Namer], top: Iterable[str], hints: Iterable[bytes]) -> References:
        top = frozenset(top)
        nested = "|".join(sorted(re.escape(field) for field in namers if field not in top)) or "(?!)"
        twice = re.compile(rb'"(' + nested.encode() + rb')"\s*:\s*(?:"([^"\\]{1,300})"|\[([^\]]{0,4096})\])')
        return cls(dict(namers), top, tuple(dict.fromkeys(hints)), twice)


def named_resources(body: bytes, data: object, refs: References) -> tuple[str, ...]:
    """The project-bound resources a request body names (``fileData.fileUri``, ``cachedContent``,
    ``fileSearchStoreNames``, an interaction's ``environment``...: ``refs``).

    Read as Google reads them, from the decoded JSON (``data``, the parsed
    ``body``): ``"file\\u0055ri"`` is ``fileUri`` and ``"files\\/id"`` is
    ``files/id``. Only the values of the naming fields count (text that merely
    mentions a file is not one), and only values shaped like a name of the
    field's kind. A nested field given twice counts with every value (the bytes
    are searched too: a parser keeps one of them, and which one Google keeps is
    not ours to guess); a top-level one given twice is refused by the parser
    (``json_body.DECIDED``).

    The hot path pays a few bytes searches and one regular-expression search
    (``may_name_resources``); only a body that may name something is walked.
    ``data`` None (a body over the parse budget, not parsed) that may name
    something raises ``UnreadableNames``: the caller refuses it (413), as it
    cannot tell which project the call needs.
    """
    if not may_name_resources(body, refs):
        return ()
    if data is None:
        raise UnreadableNames(
            "a request body naming project-bound resources (files, caches, stores...) must fit the parse budget"
            " (EDGE_MAX_JSON_ELEMENTS)"
        )
    found = dict.fromkeys(_names_in(data, refs))
    for match in refs.twice.finditer(body):  # a field given twice: the parser kept only one
        namer = refs.namers[match.group(1).decode()]
        values = [match.group(2)] if match.group(2) is not None else re.findall(rb'"([^"\\]{1,300})"', match.group(3))
        for value in values:
            name = _name_of(namer, value.decode("utf-8", "replace"))
            if name is not None:
                found[name] = None
    return tuple(found)


def may_name_resources(body: bytes, refs: References) -> bool:
    """Whether a body may name a resource of ``refs`` once decoded.

    Without an escape that decodes to printable ASCII (``\\u0020``-``\\u007f``
    or ``\\/``), the decoded JSON names ``files/``, ``cachedContents/``... (or
    holds a field taking a bare id) only where the bytes spell them; escapes of
    other characters (``\\n``, non-ASCII text) cannot spell a name.
    """
    return any(hint in body for hint in refs.hints) or _ASCII_ESCAPE.search(body) is not None


def _names_in(data: object, refs: References) -> list[str]:
    """The names in the naming fields of parsed JSON, in document order (an explicit stack: no recursion).

    A list's items are read as values of the list's field (``fileSearchStoreNames: [...]``)."""
    found: list[str] = []
    stack: list[tuple[object, object, bool]] = [("", data, False)]
    while stack:
        field, item, top = stack.pop()
        if isinstance(item, str):
            namer = refs.namers.get(field) if isinstance(field, str) else None
            if namer is not None and (top or field not in refs.top):
                name = _name_of(namer, item)
                if name is not None:
                    found.append(name)
        elif isinstance(item, dict):
            root = item is data
            stack.extend((key, value, root) for key, value in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((field, value, top) for value in reversed(item))
    return found


def _name_of(namer: Namer, value: str) -> str | None:
    return namer(value) if len(value) <= _MAX_NAMED_VALUE else None


def valid_model(name: str) -> str | None:
    """A model named in a body (``gemini-3.5-flash`` or ``models/gemini-3.5-flash``): the bare id, or None."""
    model = name.removeprefix("models/")
    return model if _MODEL.fullmatch(model) else None


def valid_agent(name: str) -> str | None:
    """An Interactions agent (``deep-research-pro-preview-12-2025``, or ``agents/...``): the bare id, or None."""
    agent = name.removeprefix("agents/")
    return agent if _MODEL.fullmatch(agent) else None


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


def forward_query(
    query: Iterable[tuple[str, str]], allowed: Mapping[str, frozenset[str] | None] = FORWARDED_QUERY
) -> list[tuple[str, str]]:
    """The decoded query's allow-listed parameters (``FORWARDED_QUERY``), in order; the rest is dropped."""
    kept: list[tuple[str, str]] = []
    for name, value in query:
        if name not in allowed or len(value) > _MAX_QUERY_VALUE:
            continue
        values = allowed[name]
        if values is None or value in values:
            kept.append((name, value))
    return kept


def forward_headers(incoming: Iterable[tuple[str, str]], extra: frozenset[str] = frozenset()) -> dict[str, str]:
    """The client's allow-listed headers (``FORWARDED_HEADERS``, and ``extra``); the key is added per attempt."""
    headers: dict[str, str] = {}
    accept_encoding = "identity"
    for name, value in incoming:
        lower = name.lower()
        if lower in FORWARDED_HEADERS or lower in extra:
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


def response_headers(
    upstream: Iterable[tuple[str, str]], extra: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """The upstream's allow-listed answer headers (``PASSED_BACK_HEADERS``, and ``extra``); the rest is dropped."""
    return [(name, value) for name, value in upstream if name.lower() in PASSED_BACK_HEADERS or name.lower() in extra]


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


class StreamDecoded:
    """A chunk filter (``feed``/``flush``) that undoes a stream's gzip or deflate before ``inner`` sees it.

    The edge asks streams uncompressed (it must read what it relays, to scrub
    it); an upstream that compresses anyway is decoded, and relayed without
    its ``Content-Encoding``.
    """

    __slots__ = ("_inflate", "_inner")

    def __init__(self, inner: ChunkFilter) -> None:
        self._inner = inner
        self._inflate = zlib.decompressobj(32 + zlib.MAX_WBITS)  # a gzip or a zlib header, told apart by itself

    def feed(self, chunk: bytes) -> bytes:
        """Raises ``zlib.error`` for bytes the encoding does not describe (a broken answer: ``upstream`` cuts)."""
        return self._inner.feed(self._inflate.decompress(chunk))

    def flush(self) -> bytes:
        return self._inner.feed(self._inflate.flush()) + self._inner.flush()


def usage(body: bytes) -> tuple[int, int]:
    """(input, output) tokens from ``usageMetadata`` or OpenAI ``usage``; the last occurrence wins."""
    return _last_int(_PROMPT_TOKENS, body), _last_int(_OUTPUT_TOKENS, body)


def _last_int(pattern: re.Pattern[bytes], body: bytes) -> int:
    last = 0
    for match in pattern.finditer(body):
        last = int(match.group(1))
    return last
