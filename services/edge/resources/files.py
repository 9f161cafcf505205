"""Files: ``GET|DELETE /{version}/files/{id}``, ``GET /{version}/files/{id}:download?alt=media``.

Each is leased by affinity (the key that uploaded or generated the file, or
another key of its project); a delete unbinds it. Uploads: ``uploads``;
the list: ``listing``.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import bad_request
from ..forwarding import forward
from . import bindings
from .common import hashed_token, path_of, resource_call


async def item(request: web.Request) -> web.StreamResponse:
    """``GET|DELETE /{version}/files/{id}`` and ``GET /{version}/files/{id}:download``."""
    path = path_of(request, "files", item=True)
    hashed = hashed_token(request)
    if path.action and request.method != "GET":
        raise bad_request("a download is a GET")
    if request.method == "DELETE":
        settle = bindings.deleted(path.name)
        call = resource_call(request, path, hashed, "files.delete", affinity=(path.name,), settle=settle)
    else:
        route = "files.download" if path.action else "files.get"
        call = resource_call(request, path, hashed, route, affinity=(path.name,))
    return await forward(request, call)
