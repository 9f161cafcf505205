"""OpenAI's dialect: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

Forwarded to Gemini's OpenAI-compatible endpoint (``{base}/v1beta/openai/...``)
with the real key as a Bearer token. The client's body is forwarded as
received; the edge reads only ``model`` and ``stream`` from it.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from yarl import URL

from services.common.naming import model_id, token_hash

from .. import wire
from ..errors import EdgeError, bad_request, missing_token
from ..forwarding import EDGE, forward
from ..routing import OPENAI
from ..upstream import Call
from . import bearer, json_object, only_allowed

COMPAT_PREFIX = "/v1beta/openai"


def _token(request: web.Request) -> str:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise missing_token(OPENAI)
    return token


def _url(request: web.Request, path: str) -> URL:
    return URL(request.app[EDGE].base_url + COMPAT_PREFIX + path, encoded=True)


async def _post(request: web.Request, path: str, can_stream: bool) -> web.StreamResponse:
    token = _token(request)
    body = await request.read()
    data = json_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter")
    call = Call(
        method="POST",
        url=_url(request, path),
        headers=wire.forward_headers(request.headers.items()),
        body=body,
        token_hash=token_hash(token),
        model=model_id(model),
        stream=can_stream and data.get("stream") is True,
        key_in_bearer=True,
        route=path.strip("/").replace("/", "."),
    )
    return await forward(request, call)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``, streamed (SSE) when the body says ``"stream": true``."""
    return await _post(request, "/chat/completions", can_stream=True)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """``POST /v1/embeddings``."""
    return await _post(request, "/embeddings", can_stream=False)


def _only_allowed(body: bytes, allowed: tuple[str, ...]) -> bytes:
    return only_allowed(body, allowed, listing="data", name="id")


async def list_models(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models`` (Bearer callers): the upstream's list, filtered by the allow-list."""
    call = Call(
        method="GET",
        url=_url(request, "/models"),
        headers=wire.forward_headers(request.headers.items()),
        body=None,
        token_hash=token_hash(_token(request)),
        model="",
        key_in_bearer=True,
        transform=_only_allowed,
        route="models.list",
    )
    return await forward(request, call)


async def get_model(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/{model}`` (Bearer callers)."""
    model = model_id(request.match_info["tail"])
    if not model or ":" in model:
        raise EdgeError(404, f"no such model: {model!r}", openai_code="model_not_found")
    call = Call(
        method="GET",
        url=_url(request, "/models/" + quote(request.match_info["tail"], safe="/:")),
        headers=wire.forward_headers(request.headers.items()),
        body=None,
        token_hash=token_hash(_token(request)),
        model=model,
        key_in_bearer=True,
        route="models.get",
    )
    return await forward(request, call)
