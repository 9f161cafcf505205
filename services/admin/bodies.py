"""What a request body may cost admin, bounded before a byte of it is parsed.

Parsing JSON builds Python objects: up to ~36 bytes of memory per byte of a
body made of ``[{},{},...]`` (one 8 MiB login body took admin from 75 MB to
367 MB, over its 256Mi limit). So every body is read against a limit fit
for its route (``BodyLimit``) and checked before it is parsed:

- a declared ``Content-Length`` above the route's ``max_bytes`` is refused
  (413) with nothing read, an undeclared length as soon as it crosses it;
- the whole body must arrive within ``body_timeout_s`` of the handler asking
  for it (408, and the connection is closed after the answer): the request
  head has its own timeout (``services.common.head_timeout``), which body
  bytes never re-arm;
- a body holding more than ``max_elements`` structural characters (``{``,
  ``[``, ``,``: an upper bound of the values it holds) is refused (413)
  unparsed.

``/api/login`` is reachable without credentials, so its limit is a few KiB
(``LOGIN``); every other route's body is read only after the caller is
authenticated (``auth.authenticate``), with ``ROUTE`` or, for the routes that
carry many keys (adding keys, importing), the settings' ``max_body_bytes`` and
``max_json_elements`` (``large_limit``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from aiohttp import StreamReader, web

from services.common.head_timeout import end_after_answer

from .errors import ApiError


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The most a route's body may hold: bytes, and structural JSON characters."""

    max_bytes: int
    max_elements: int


# A token (<= 1000 characters) and a name (<= 64): one object, two fields.
LOGIN: Final = BodyLimit(4 * 1024, 64)
# Pools (1000 allowed models), bulk actions (1000 key ids), tokens, key updates.
ROUTE: Final = BodyLimit(256 * 1024, 10_000)
# Action routes take no body (an empty object is tolerated).
EMPTY: Final = BodyLimit(1024, 16)
BODY_TIMEOUT: Final = web.AppKey("body_timeout_s", float)
LARGE: Final = web.AppKey("large_body_limit", BodyLimit)


def large_limit(request: web.Request) -> BodyLimit:
    """The limit of the routes carrying many keys (the settings' ``max_body_bytes``, ``max_json_elements``)."""
    return request.app[LARGE]


def too_large(limit: BodyLimit) -> ApiError:
    return ApiError(413, f"request body too large (limit {limit.max_bytes} bytes)", "PAYLOAD_TOO_LARGE")


async def read_body(request: web.Request, limit: BodyLimit) -> bytes:
    """The body, at most ``limit.max_bytes`` and within the body timeout (413, 408 otherwise)."""
    declared = request.content_length
    if declared is not None and declared > limit.max_bytes:
        raise too_large(limit)
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT]):
            body = await _read_at_most(request.content, limit)
    except TimeoutError:
        end_after_answer(request)  # the rest is not coming: no lingering for it
        raise ApiError(408, "the request body did not arrive in time", "REQUEST_TIMEOUT") from None
    if elements(body) > limit.max_elements:
        raise ApiError(413, f"the request body holds more than {limit.max_elements} JSON elements",
                       "PAYLOAD_TOO_LARGE")
    return body


async def _read_at_most(content: StreamReader, limit: BodyLimit) -> bytes:
    body = bytearray()
    while chunk := await content.read(limit.max_bytes + 1 - len(body)):
        body += chunk
        if len(body) > limit.max_bytes:
            raise too_large(limit)
    return bytes(body)


def elements(body: bytes) -> int:
    """An upper bound of the JSON values a body holds (structural characters, strings' included)."""
    return body.count(b"{") + body.count(b"[") + body.count(b",")
