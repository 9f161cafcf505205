"""Gemini's own dialect: ``/v1beta/models...`` and ``/v1/models...``.

The request goes to the same path upstream, with the query kept (``alt=sse``,
``pageSize``...) minus ``key``, and the real key in ``x-goog-api-key``. The
body is forwarded byte for byte as received: it is parsed only to check that
it is JSON, never re-serialised, so fields the edge does not know (toolConfig,
cachedContent, safetySettings, tomorrow's fields) reach Google untouched.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web
from yarl import URL

from .. import upstream
from ..errors import GEMINI, EdgeError, missing_token, speaks
from ..forwarding import EDGE, Call, forward
from . import bearer, json_object, model_id, token_hash
from . import openai as openai_dialect

ACTIONS: Final = frozenset(
    {"generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents"}
)


def _token(request: web.Request) -> str:
    token = (
        request.headers.get("x-goog-api-key")
        or request.query.get("key")
        or bearer(request.headers.get("Authorization"))
    )
    if not token:
        raise missing_token(GEMINI)
    return token


def speaks_gemini(request: web.Request) -> bool:
    """Did the caller authenticate the Gemini way (``x-goog-api-key`` or ``?key=``)?"""
    return "x-goog-api-key" in request.headers or "key" in request.query


def _url(request: web.Request) -> URL:
    query = upstream.without_key(request.rel_url.raw_query_string)
    url = request.app[EDGE].base_url + request.rel_url.raw_path
    return URL(f"{url}?{query}" if query else url, encoded=True)


def _call(
    request: web.Request, model: str, body: bytes | None, route: str, *, stream: bool = False, transform: Any = None
) -> Call:
    return Call(
        dialect=GEMINI,
        method=request.method,
        url=_url(request),
        headers=upstream.forward_headers(request.headers.items()),
        body=body,
        token_hash=token_hash(_token(request)),
        model=model,
        stream=stream,
        transform=transform,
        route=route,
    )


def only_allowed(body: bytes, allowed: tuple[str, ...]) -> bytes:
    """A Gemini model list without the models outside the pool's allow-list."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        data["models"] = [
            m for m in data["models"] if isinstance(m, dict) and model_id(str(m.get("name", ""))) in allowed
        ]
    return orjson.dumps(data)


@speaks(GEMINI)
async def list_models(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models``: the upstream's page, filtered by the pool's allow-list."""
    return await forward(request, _call(request, "", None, "models.list", transform=only_allowed))


@speaks(GEMINI)
async def get_model(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models/{model}``."""
    model = model_id(request.match_info["tail"])
    if not model or ":" in model:
        raise EdgeError(404, f"no such model: {model!r}")
    return await forward(request, _call(request, model, None, "models.get"))


@speaks(GEMINI)
async def model_action(request: web.Request) -> web.StreamResponse:
    """``POST /{version}/models/{model}:{action}``."""
    name, _, action = request.match_info["tail"].rpartition(":")
    model = model_id(name)
    if action not in ACTIONS or not model:
        raise EdgeError(404, f"method not found: {request.path}")
    _token(request)  # a missing token is a 401 before anything else is read
    body = await request.read()
    json_object(body)
    return await forward(request, _call(request, model, body, action, stream=action == "streamGenerateContent"))


async def v1_models(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models`` is claimed by both dialects: the way the caller authenticates decides."""
    if speaks_gemini(request):
        return await list_models(request)
    return await openai_dialect.list_models(request)


async def v1_model(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/{model}``, decided the same way."""
    if speaks_gemini(request):
        return await get_model(request)
    return await openai_dialect.get_model(request)
