"""Files: ``GET|DELETE /{version}/files/{id}``, ``GET /{version}/files/{id}:download?alt=media``.

A download is relayed as a stream (``Call.stream``): chunks reach the client
as they come, scrubbed like any stream, and the edge never holds the file.

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
        # A download (a video, a batch's results) is relayed chunk by chunk, never held whole (issue 18).
        download = bool(path.action) or request.query.get("alt") == "media"
        route = "files.download" if download else "files.get"
        call = resource_call(request, path, hashed, route, affinity=(path.name,), stream=download)
    return await forward(request, call)
