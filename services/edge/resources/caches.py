"""Context caches: ``POST /{version}/cachedContents``, ``GET|PATCH|DELETE /{version}/cachedContents/{id}``.

A create is leased for the cache's ``model`` (the pool's allow-list applies)
and by affinity when its contents name files (they must be the cache's
project's); the answer's cache is bound until its ``expireTime``. An update
(a new ttl or expireTime) binds it again until its new expiry; a delete
unbinds it. The list: ``listing``.
"""

from __future__ import annotations

from aiohttp import web

from .. import wire
from ..dialects import authenticated, json_object, named_resources, read_body
from ..errors import bad_request
from ..estimates import cache_input
from ..forwarding import forward
from . import bindings
from .common import client_token, hashed_token, path_of, resource_call


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /{version}/cachedContents``."""
    path = path_of(request, "cachedContents", item=False)
    hashed = await authenticated(request, client_token(request))
    body = await read_body(request)
    data = json_object(request, body)
    named = data.get("model")
    model = wire.valid_model(named) if isinstance(named, str) else None
    if model is None:
        raise bad_request("a cache needs a model: models/{model id}")
    affinity = named_resources(body, data)
    call = resource_call(
        request, path, hashed, "caches.create", body=body, model=model, affinity=affinity, settle=bindings.cache,
        binds=True,
        input_tokens=cache_input(data, body),
    )  # fmt: skip
    return await forward(request, call)


async def item(request: web.Request) -> web.StreamResponse:
    """``GET|PATCH|DELETE /{version}/cachedContents/{id}``."""
    path = path_of(request, "cachedContents", item=True)
    if request.method == "PATCH":
        hashed = await authenticated(request, client_token(request))
        body = await read_body(request)
        if body:
            json_object(request, body)
        call = resource_call(
            request, path, hashed, "caches.update", body=body, affinity=(path.name,), settle=bindings.cache
        )
    elif request.method == "DELETE":
        settle = bindings.deleted(path.name)
        call = resource_call(
            request, path, hashed_token(request), "caches.delete", affinity=(path.name,), settle=settle
        )
    else:
        call = resource_call(request, path, hashed_token(request), "caches.get", affinity=(path.name,))
    return await forward(request, call)
