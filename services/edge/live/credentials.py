"""Where a Live client's credential travels (LIVE_API_NOTES.md 1.4): read from every carrier, forwarded nowhere.

The key path (``BidiGenerateContent``) takes a client token from
``x-goog-api-key`` (Python), ``?key=`` (JS, browsers, raw clients) or
``Authorization: Bearer``; the Constrained path a browser token
(``auth_tokens/...``) from ``?access_token=`` (JS) or ``Authorization: Token``
(Python, which sends the same string in ``x-goog-api-key`` too). The same
value in two carriers is one credential; two different values are refused as
Google refuses them (1007). Nothing of the client's query goes upstream.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .protocol import INVALID_PAYLOAD, POLICY, UNAUTHENTICATED, UNREGISTERED, Refused

BROWSER_TOKEN_PREFIX: Final = "auth_tokens/"
MULTIPLE: Final = "Multiple authentication credentials received. Please pass only one."
_MAX_LENGTH: Final = 512


def _authorization(request: web.Request, scheme: str) -> str | None:
    if len(request.headers.getall("Authorization", [])) > 1:
        raise Refused(INVALID_PAYLOAD, MULTIPLE)
    given, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if given.lower() == scheme else None


def _one(found: list[str | None]) -> str:
    values = {value.strip() for value in found if value and value.strip()}
    if not values:
        raise Refused(POLICY, UNREGISTERED)
    if len(values) > 1:
        raise Refused(INVALID_PAYLOAD, MULTIPLE)
    value = values.pop()
    if len(value) > _MAX_LENGTH or not value.isascii() or not value.isprintable():
        raise Refused(POLICY, UNAUTHENTICATED)
    return value


def client_token(request: web.Request) -> str:
    """The key path's client token (a browser token here is refused: it belongs on the Constrained path)."""
    if "access_token" in request.query or _authorization(request, "token"):
        raise Refused(POLICY, UNAUTHENTICATED)
    token = _one(
        [
            *request.headers.getall("x-goog-api-key", []),
            *request.query.getall("key", []),
            _authorization(request, "bearer"),
        ]
    )
    if token.startswith(BROWSER_TOKEN_PREFIX):
        raise Refused(POLICY, UNAUTHENTICATED)
    return token


def browser_token(request: web.Request) -> str:
    """The Constrained path's browser token (``auth_tokens/...``); anything else is refused (1008)."""
    token = _one(
        [
            *request.query.getall("access_token", []),
            _authorization(request, "token"),
            *request.headers.getall("x-goog-api-key", []),
        ]
    )
    if "key" in request.query or not token.startswith(BROWSER_TOKEN_PREFIX):
        raise Refused(POLICY, UNAUTHENTICATED)
    return token
