"""OpenAI's dialect: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``.

Forwarded to Gemini's OpenAI-compatible endpoint (``{base}/v1beta/openai/...``,
the path is the edge's own constant) with the real key as a Bearer token,
the allow-listed headers (``wire``) and no query at all. The client's body is
forwarded as received; the edge reads only ``model`` (which must be a model
id, ``wire.valid_model``) and ``stream`` from it, once keyring has accepted
the client's token (``dialects.authenticated``: before any body is read).
"""

from __future__ import annotations

from aiohttp import web

from services.common.naming import token_hash

from .. import wire
from ..context import EDGE
from ..errors import EdgeError, bad_request, missing_token
from ..estimates import openai_input
from ..forwarding import forward
from ..routing import OPENAI
from ..upstream import Call
from . import authenticated, bearer, json_object, named_resources, only_allowed, read_body, service_tier, shaped


def _token(request: web.Request) -> str:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise missing_token(OPENAI)
    return shaped(token)


async def _post(request: web.Request, endpoint: str, can_stream: bool) -> web.StreamResponse:
    hashed = await authenticated(request, _token(request))  # a token keyring refuses is a 401 before any read
    body = await read_body(request)
    data = json_object(request, body)
    named = data.get("model")
    if not isinstance(named, str) or not named:
        raise bad_request("you must provide a model parameter")
    model = wire.valid_model(named)
    if model is None:
        raise bad_request("the model parameter is not a model id (lower-case letters, digits, '.' and '-')")
    call = Call(
        method="POST",
        url=wire.openai_url(request.app[EDGE].base_url, endpoint),
        headers=wire.forward_headers(request.headers.items()),
        body=body,
        token_hash=hashed,
        model=model,
        stream=can_stream and data.get("stream") is True,
        key_in_bearer=True,
        route=endpoint.replace("/", "."),
        # A cache named through extra_body (google.cached_content) goes to its owner's project.
        affinity=named_resources(body, data),
        input_tokens=openai_input(endpoint, data, body),
        service_tier=service_tier(data),
    )
    del data  # read: not kept for the call's length (a stream's parsed prompt, a few times its size, issue 23)
    return await forward(request, call)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``, streamed (SSE) when the body says ``"stream": true``."""
    return await _post(request, "chat/completions", can_stream=True)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """``POST /v1/embeddings``."""
    return await _post(request, "embeddings", can_stream=False)


def _only_allowed(body: bytes, allowed: tuple[str, ...]) -> bytes:
    return only_allowed(body, allowed, listing="data", name="id")


async def list_models(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models`` (Bearer callers): the upstream's list, filtered by the allow-list."""
    call = Call(
        method="GET",
        url=wire.openai_url(request.app[EDGE].base_url, "models"),
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
    try:
        path = wire.model_path(request.raw_path)
    except wire.MalformedPath as error:
        raise bad_request(str(error)) from None
    if path.action:
        raise EdgeError(404, f"no such model: {path.model}:{path.action}", openai_code="model_not_found")
    call = Call(
        method="GET",
        url=wire.openai_url(request.app[EDGE].base_url, "models", path.model),
        headers=wire.forward_headers(request.headers.items()),
        body=None,
        token_hash=token_hash(_token(request)),
        model=path.model,
        key_in_bearer=True,
        route="models.get",
    )
    return await forward(request, call)
