"""Relaying a streamed answer (SSE) to the client, chunk by chunk as it comes.

A stream is committed when its first upstream chunk arrives: from then on
the client has a status line, so an upstream failure cannot be answered any
more; the connection is cut instead (``cut``), because a clean end would pass
a truncated answer for a whole one. Upstream read failures are not caught
here: they reach the attempt's one transport mapping (``upstream``), which
cuts. Only the client's side is handled here: a client gone while we write.
"""

from __future__ import annotations

import time
from typing import Any, Final

import aiohttp
from aiohttp import web

from .observability import STARTED

# Bytes of a stream's end kept to read the token usage of its last event.
TAIL_BYTES: Final = 4096


def response_for(status: int, headers: list[tuple[str, str]]) -> web.StreamResponse:
    """The client's streamed response, with the upstream's (filtered) headers; not yet sent."""
    response = web.StreamResponse(status=status, headers=headers)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


async def relay(
    request: web.Request, response: web.StreamResponse, answer: aiohttp.ClientResponse, chunk: bytes, first_byte: Any
) -> bytes | None:
    """Send ``chunk`` (the first) and every following one; the stream's last bytes, or None if the client left.

    ``first_byte`` is the histogram (child) of the time to the first byte.
    """
    tail = b""
    try:
        await response.prepare(request)  # the first bytes: the first chunk follows at once
        first_byte.observe(time.perf_counter() - request[STARTED])
    except ConnectionError:  # the client went away
        return None
    while chunk:
        try:
            await response.write(chunk)
        except ConnectionError:
            return None
        tail = chunk if len(chunk) >= TAIL_BYTES else (tail + chunk)[-TAIL_BYTES:]
        chunk = await answer.content.readany()  # a failure here is the upstream's: it propagates
    try:
        await response.write_eof()
    except ConnectionError:
        return None
    return tail


def cut(request: web.Request) -> None:
    """End a committed stream without a clean end (the client sees a broken answer, not a short one)."""
    if request.transport is not None:
        request.transport.close()
