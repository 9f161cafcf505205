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

from ..forwarding import forward
from . import bindings
from .common import cancel_get_delete, hashed_token, path_of, resource_call


async def batch(request: web.Request) -> web.StreamResponse:
    """``GET|DELETE /{version}/batches/{id}``, ``POST /{version}/batches/{id}:cancel``."""
    return await cancel_get_delete(
        request, "batches", cancel_hint="/{version}/batches/{id}:cancel", get_settle=bindings.job_results
    )


async def operation(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models/{model}/operations/{id}``: a poll."""
    path = path_of(request, "operations", item=True)
    call = resource_call(
        request, path, hashed_token(request), "operations.get", affinity=(path.name,), settle=bindings.job_results
    )
    return await forward(request, call)
