"""Gemini's own dialect: ``/v1beta/models...`` and ``/v1/models...``.

The upstream request is built from the validated parts of the client's
path (``wire.model_path``: version, model, action), the allow-listed query
(``alt``, ``pageSize``, ``pageToken``) and headers, and the real key in
``x-goog-api-key``; a path off the pattern is a 400 with no lease taken. The
body is forwarded byte for byte as received: it is checked to be a JSON
object (``dialects.check_json_object``), never re-serialised, so fields the
edge does not know (toolConfig, cachedContent, safetySettings, tomorrow's
fields) reach Google untouched.

A body that names a file (``fileData.fileUri``, a batch's ``fileName``) or
a cache (``cachedContent``) is leased a key of the owner's project
(``wire.named_resources``: read from the parsed JSON when the bytes may
spell one; a body over the parse budget that may is refused, 413); ``batchGenerateContent`` and
``predictLongRunning`` bind the job they create (``resources.bindings``).

The client's token comes from ``x-goog-api-key``, the ``key`` query
parameter (its name decoded like every other: ``%6Bey`` is ``key``) or a
Bearer header; it is never forwarded. A POST's token is checked at keyring
before its body is read (``dialects.authenticated``); a GET has no body, and
its Acquire checks the token.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from services.common.naming import token_hash

from .. import wire
from ..context import EDGE
from ..errors import EdgeError, bad_request, missing_token
from ..estimates import gemini_input
from ..forwarding import forward
from ..resources import bindings
from ..routing import GEMINI
from ..upstream import Call
from . import authenticated, bearer, check_json_object, named_resources, only_allowed, read_body, service_tier, shaped

ACTIONS: Final = frozenset(
    {
        "generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents",
        "batchGenerateContent", "asyncBatchEmbedContent", "predictLongRunning",
    }
)  # fmt: skip
# Actions that create a project-bound resource: what their answer names is bound to the key (resources.bindings).
CREATING: Final = {
    "batchGenerateContent": bindings.created_job,
    "asyncBatchEmbedContent": bindings.created_job,
    "predictLongRunning": bindings.created_job,
}


def client_token(request: web.Request) -> str:
    """The client's token, the Gemini way (``x-goog-api-key``, ``?key=`` or Bearer): shaped like one, or a 401."""
    return _token(request)


def _token(request: web.Request) -> str:
    token = (
        request.headers.get("x-goog-api-key")
        or wire.client_key(request.query)
        or bearer(request.headers.get("Authorization"))
    )
    if not token:
        raise missing_token(GEMINI)
    return shaped(token)


def _path(request: web.Request) -> wire.ModelPath:
    try:
        return wire.model_path(request.raw_path)
    except wire.MalformedPath as error:
        raise bad_request(str(error)) from None


def _call(
    request: web.Request,
    path: wire.ModelPath,
    hashed: str,
    body: bytes | None,
    route: str,
    *,
    stream: bool = False,
    transform: Any = None,
    affinity: tuple[str, ...] = (),
    settle: Any = None,
    input_tokens: int = 0,
    service_tier: str = "",
) -> Call:
    return Call(
        method=request.method,
        url=wire.native_url(request.app[EDGE].base_url, path, wire.forward_query(request.query.items())),
        headers=wire.forward_headers(request.headers.items()),
        body=body,
        token_hash=hashed,
        model=path.model,
        stream=stream,
        transform=transform,
        route=route,
        affinity=affinity,
        settle=settle,
        binds=settle is not None,  # only creating actions settle: each binds the job it makes
        input_tokens=input_tokens,
        service_tier=service_tier,
    )


def _only_allowed(body: bytes, allowed: tuple[str, ...]) -> bytes:
    return only_allowed(body, allowed, listing="models", name="name")


async def list_models(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models``: the upstream's page, filtered by the pool's allow-list."""
    path = _path(request)
    hashed = token_hash(_token(request))
    return await forward(request, _call(request, path, hashed, None, "models.list", transform=_only_allowed))


async def get_model(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models/{model}``."""
    path = _path(request)
    if path.action:
        raise EdgeError(404, f"no such model: {path.model}:{path.action}")
    return await forward(request, _call(request, path, token_hash(_token(request)), None, "models.get"))


async def model_action(request: web.Request) -> web.StreamResponse:
    """``POST /{version}/models/{model}:{action}``."""
    path = _path(request)
    if path.action not in ACTIONS:
        raise EdgeError(404, f"method not found: {path.action or '(none)'} on models/{path.model}")
    hashed = await authenticated(request, _token(request))  # a token keyring refuses is a 401 before any read
    body = await read_body(request)
    data = check_json_object(request, body)  # None: over the parse budget, forwarded unread and not estimated
    # A body naming a file or a cache goes to its owner's project (read from the parsed JSON; a body too
    # large to parse that may name one is a 413); two bytes searches and a regex search for every other body.
    affinity = named_resources(body, data)
    call = _call(
        request, path, hashed, body, path.action, stream=path.action == "streamGenerateContent",
        affinity=affinity, settle=CREATING.get(path.action), input_tokens=gemini_input(path.action, data, body),
        service_tier=service_tier(data),
    )  # fmt: skip
    del data  # read: not kept for the call's length (a stream's parsed prompt, a few times its size, issue 23)
    return await forward(request, call)
