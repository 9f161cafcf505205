"""Gemini's own dialect: ``/v1beta/models...`` and ``/v1/models...``.

The request goes to the same path upstream, with the query kept (``alt=sse``,
``pageSize``...) minus ``key``, and the real key in ``x-goog-api-key``. The
body is forwarded byte for byte as received: it is parsed only to check that
it is JSON, never re-serialised, so fields the edge does not know (toolConfig,
cachedContent, safetySettings, tomorrow's fields) reach Google untouched.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from yarl import URL

from services.common.naming import model_id, token_hash

from .. import wire
from ..errors import EdgeError, missing_token
from ..forwarding import EDGE, forward
from ..routing import GEMINI
from ..upstream import Call
from . import bearer, json_object, only_allowed

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


def _url(request: web.Request) -> URL:
    query = wire.without_key(request.rel_url.raw_query_string)
    url = request.app[EDGE].base_url + request.rel_url.raw_path
    return URL(f"{url}?{query}" if query else url, encoded=True)


def _call(
    request: web.Request, model: str, body: bytes | None, route: str, *, stream: bool = False, transform: Any = None
) -> Call:
    return Call(
        method=request.method,
        url=_url(request),
        headers=wire.forward_headers(request.headers.items()),
        body=body,
        token_hash=token_hash(_token(request)),
        model=model,
        stream=stream,
        transform=transform,
        route=route,
    )


def _only_allowed(body: bytes, allowed: tuple[str, ...]) -> bytes:
    return only_allowed(body, allowed, listing="models", name="name")


async def list_models(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models``: the upstream's page, filtered by the pool's allow-list."""
    return await forward(request, _call(request, "", None, "models.list", transform=_only_allowed))


async def get_model(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models/{model}``."""
    model = model_id(request.match_info["tail"])
    if not model or ":" in model:
        raise EdgeError(404, f"no such model: {model!r}")
    return await forward(request, _call(request, model, None, "models.get"))


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
