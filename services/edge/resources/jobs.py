"""Long-running operations under a model, once created (their creating calls are model actions):
``GET /{version}/models/{model}/operations/{id}`` (polling a ``predictLongRunning``).

Leased by affinity. A poll's answer that names files (a finished video)
binds them to the key's project, so their download finds it. Batches are a
row of ``kinds`` (the same rule: ``Kind.results``).
"""

from __future__ import annotations

from aiohttp import web

from ..forwarding import forward
from . import bindings
from .common import hashed_token, path_of, resource_call


async def operation(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/models/{model}/operations/{id}``: a poll."""
    path = path_of(request, "operations", item=True)
    call = resource_call(
        request, path, hashed_token(request), "operations.get", affinity=(path.name,), settle=bindings.job_results
    )
    return await forward(request, call)
