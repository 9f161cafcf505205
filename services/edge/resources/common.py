"""What every resource handler does: parse the path, read the token, build the call."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from services.common.naming import token_hash

from .. import wire
from ..context import EDGE
from ..dialects.gemini import client_token
from ..errors import EdgeError, bad_request
from ..upstream import Call, Settle

__all__ = ["client_token", "hashed_token", "path_of", "resource_call"]


def hashed_token(request: web.Request) -> str:
    """The hash of the client's token, for a call without a body (its Acquire authenticates it)."""
    return token_hash(client_token(request))


def path_of(request: web.Request, *kinds: str, item: bool) -> wire.ResourcePath:
    """The request's validated resource path, of one of ``kinds``, an item (with an id) or a collection."""
    try:
        path = wire.resource_path(request.raw_path)
    except wire.MalformedPath as error:
        raise bad_request(str(error)) from None
    if path.kind not in kinds or bool(path.id) != item:
        raise EdgeError(404, "no such route", openai_code="not_found")
    return path


def resource_call(
    request: web.Request,
    path: wire.ResourcePath,
    token_hash: str,
    route: str,
    *,
    body: bytes | None = None,
    model: str = "",
    affinity: tuple[str, ...] = (),
    settle: Settle | None = None,
    stream: bool = False,
    query: Mapping[str, frozenset[str] | None] = wire.RESOURCE_QUERY,
    extra_headers: frozenset[str] = frozenset(),
    input_tokens: int = 0,
    binds: bool = False,
) -> Call:
    """The upstream call for a resource path: URL from its parts, allow-listed query and headers.

    ``binds``: the call creates a resource (keyring refuses it, 429, when the pool's or the token's
    bindings are at their cap: nothing is made upstream that could not be routed to).
    """
    return Call(
        method=request.method,
        url=wire.resource_url(request.app[EDGE].base_url, path, wire.forward_query(request.query.items(), query)),
        headers=wire.forward_headers(request.headers.items(), extra_headers),
        body=body,
        token_hash=token_hash,
        model=model,
        stream=stream,
        route=route,
        affinity=affinity,
        settle=settle,
        binds=binds,
        input_tokens=input_tokens,
    )
