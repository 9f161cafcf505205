"""Which dialect a request speaks: decided once, from the route it matched.

Every route is registered with its dialect (``add_route``). Two routes are
claimed by both dialects (``GET /v1/models`` and ``GET /v1/models/{model}``):
there the way the caller authenticates decides (``x-goog-api-key`` or
``?key=``: Gemini, else OpenAI). A request that matched no route (404, 405)
gets the one fallback rule, from its path. The error middleware
(``errors.answer_in_dialect``) asks ``dialect_of`` once and stores the answer
under ``DIALECT``; everything after it (error answers, metric labels) reads it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, Literal

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

Dialect = Literal["openai", "gemini"]
OPENAI: Final = "openai"
GEMINI: Final = "gemini"
# A route both dialects claim: the caller's way of authenticating decides.
EITHER: Final = "either"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The dialect decided for this request (set once, by the error middleware).
DIALECT: Final = web.RequestKey("keyring_dialect", str)
_ROUTE_DIALECTS: Final = web.AppKey("route_dialects", dict[AbstractRoute, str])


def add_route(app: web.Application, method: str, path: str, handler: Handler, dialect: str) -> None:
    """Register ``method path`` with the dialect it speaks (``OPENAI``, ``GEMINI`` or ``EITHER``)."""
    route = app.router.add_route(method, path, handler)
    route_dialects(app)[route] = dialect


def route_dialects(app: web.Application) -> dict[AbstractRoute, str]:
    """The app's route -> dialect table (created empty: routes no one registered fall back)."""
    table = app.get(_ROUTE_DIALECTS)
    if table is None:
        table = app[_ROUTE_DIALECTS] = {}
    return table


def dialect_of(request: web.Request) -> Dialect:
    """The request's dialect: its route's, the caller's for shared routes, the fallback rule for the rest."""
    claimed = request.app[_ROUTE_DIALECTS].get(request.match_info.route)
    if claimed == OPENAI:
        return OPENAI
    if claimed == GEMINI:
        return GEMINI
    if claimed == EITHER:
        return GEMINI if authenticates_like_gemini(request) else OPENAI
    return fallback(request.method, request.path, authenticates_like_gemini(request))


def authenticates_like_gemini(request: web.Request) -> bool:
    """Did the caller pass its token the Gemini way (``x-goog-api-key`` or ``?key=``)?"""
    return "x-goog-api-key" in request.headers or "key" in request.query


def fallback(method: str, path: str, gemini_auth: bool) -> Dialect:
    """The dialect of a request no route claimed (unknown path, wrong method), from its path."""
    if path.startswith("/v1beta/"):
        return GEMINI
    if path.startswith("/v1/models"):
        return GEMINI if method == "POST" or gemini_auth else OPENAI
    if path.startswith("/v1/"):
        return OPENAI
    return GEMINI
