"""Batches and long-running operations, once created (their creating calls are model actions).

- ``GET|DELETE /{version}/batches/{id}``, ``POST /{version}/batches/{id}:cancel``;
- ``GET /{version}/models/{model}/operations/{id}`` (polling a
  ``predictLongRunning``).

All leased by affinity. A poll's answer that names files (a finished video,
a batch's ``responsesFile``) binds them to the key's project, so their
download finds it; a delete unbinds the batch.
"""

from __future__ import annotations

from aiohttp import web

from ..dialects import authenticated, read_body
from ..errors import bad_request
from ..forwarding import forward
from . import bindings
from .common import client_token, hashed_token, path_of, resource_call


async def batch(request: web.Request) -> web.StreamResponse:
    """``GET|DELETE /{version}/batches/{id}``, ``POST /{version}/batches/{id}:cancel``."""
    path = path_of(request, "batches", item=True)
    if request.method == "POST":
        if path.action != "cancel":
            raise bad_request("expected /{version}/batches/{id}:cancel")
        hashed = await authenticated(request, client_token(request))
        body = await read_body(request)
        call = resource_call(request, path, hashed, "batches.cancel", body=body, affinity=(path.name,))
        return await forward(request, call)
    if path.action:
        raise bad_request(f"{path.action} is a POST")
    hashed = hashed_token(request)
    if request.method == "DELETE":
        settle = bindings.deleted(path.name)
        call = resource_call(request, path, hashed, "batches.delete", affinity=(path.name,), settle=settle)
    else:
        call = resource_call(request, path, hashed, "batches.get", affinity=(path.name,), settle=bindings.job_results)
    return await forward(request, call)


async def operation(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models/{model}/operations/{id}``: a poll."""
    path = path_of(request, "operations", item=True)
    call = resource_call(
        request, path, hashed_token(request), "operations.get", affinity=(path.name,), settle=bindings.job_results
    )
    return await forward(request, call)
