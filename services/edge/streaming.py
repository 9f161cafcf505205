r"""Relaying a streamed answer (SSE) to the client, chunk by chunk as it comes.

A stream is committed when its first upstream chunk arrives: from then on
the client has a status line, so an upstream failure cannot be answered any
more; the connection is cut instead (``cut``), because a clean end would pass
a truncated answer for a whole one. Upstream read failures are not caught
here: they reach the attempt's one transport mapping (``upstream``), which
cuts. Only the client's side is handled here: a client gone while we write.

Keep-alives (``EDGE_STREAM_KEEPALIVE_S``, docs/configuration.md "Long silences in a
stream"): a thinking model may stay silent for minutes, longer than the idle
timeout of a proxy or load balancer between the client and the edge. When an
SSE answer (``text/event-stream``, uncompressed) has been silent that long,
the edge writes an empty line and goes on waiting. An empty line between two
events is the SSE no-op (it dispatches nothing: WHATWG HTML, "event stream
interpretation"), and the one every client checked ignores. An SSE comment
(``: keep-alive``) would break both Google SDKs: google-genai (Python, 3.6)
takes any line that is neither empty nor ``data:`` for a piece of a raw JSON
error body and fails to parse it, and ``@google/genai`` (gemini-cli 0.61)
matches events with ``^\s*data: `` at the start of its buffer, so after a
comment it matches none (it skips leading whitespace, hence empty lines).
The timer runs only while the edge waits for an upstream chunk that is not
there yet (a chunk already buffered is read with no timer),
and a keep-alive is written only between two events, never inside one (there
an empty line would end the event early).
The first keep-alive commits the stream like a first chunk would: an upstream
silent that long before its first chunk is answered 200 at once (with the
upstream's headers), so a failure after that cuts the connection instead of
trying another key. The upstream's silence is still bounded by
``EDGE_READ_TIMEOUT_S`` (counted by the upstream connection, which
keep-alives written to the client do not reset).

No key reaches the client (issue 18): every chunk passes through the
attempt's ``StreamScrubber`` (``services.common.masking``), which masks the
leased key and every key-shaped string, and holds back a tail that may be
the start of a key cut by the chunk boundary until the next chunk (an event's
end is never held). Streams are asked uncompressed (``upstream``), so the
bytes can be read; one compressed anyway is decoded first (``wire.StreamDecoded``)
and relayed uncompressed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import aiohttp
from aiohttp import web

from .observability import STARTED
from .wire import ChunkFilter

# Bytes of a stream's end kept to read the token usage of its last event.
TAIL_BYTES: Final = 4096
# Bytes of a stream's start kept for ``before_end`` (an interaction's id is in its first event).
HEAD_BYTES: Final = 8192
# An empty line between two events: dispatches nothing, so every SSE client ignores it (module docstring).
KEEPALIVE: Final = b"\n"
# The end of an SSE event: only there may a keep-alive go.
_EVENT_ENDS: Final = (b"\n\n", b"\r\n\r\n", b"\r\r")


def response_for(status: int, headers: list[tuple[str, str]]) -> web.StreamResponse:
    """The client's streamed response, with the upstream's (filtered) headers; not yet sent."""
    response = web.StreamResponse(status=status, headers=headers)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def keepalive_interval(answer: aiohttp.ClientResponse, setting_s: float) -> float:
    """Seconds of upstream silence before a keep-alive; 0 when off or when this answer may not get one.

    Only SSE answers get them (a JSON-array stream has no room for them), and only
    uncompressed ones (bytes cannot be added to someone else's gzip stream).
    """
    if setting_s <= 0 or answer.headers.get("Content-Encoding", "identity") != "identity":
        return 0.0
    if not answer.headers.get("Content-Type", "").lower().startswith("text/event-stream"):
        return 0.0
    return setting_s


async def next_chunk(answer: aiohttp.ClientResponse, interval_s: float) -> bytes | None:
    """The next chunk (b"" at the end), or None after ``interval_s`` of silence (0: wait without limit).

    Upstream failures propagate (the upstream read timeout among them). A
    chunk already buffered is taken without a timer; a wait that times out
    loses nothing (the stream reader keeps what arrives for the next call).
    """
    content = answer.content
    if not interval_s:
        return await content.readany()
    chunk = content.read_nowait()
    if chunk or content.at_eof():
        return chunk
    timer = asyncio.timeout(interval_s)
    try:
        async with timer:
            return await content.readany()
    except TimeoutError:
        if timer.expired():
            return None
        raise  # the upstream's own read timeout


async def relay(
    request: web.Request,
    response: web.StreamResponse,
    answer: aiohttp.ClientResponse,
    chunk: bytes | None,
    first_byte: Any,
    keepalive_s: float = 0.0,
    before_end: Callable[[bytes, bytes], Awaitable[None]] | None = None,
    scrubber: ChunkFilter | None = None,
) -> bytes | None:
    """Send ``chunk`` (the first; None: a keep-alive, the upstream has been silent) and every following one.

    Returns the stream's last bytes (as sent: scrubbed), or None if the client left.
    ``first_byte`` is the histogram (child) of the time to the first byte;
    ``keepalive_s`` comes from ``keepalive_interval``; ``before_end``, when
    given, is awaited with the stream's first and last bytes once the whole
    upstream stream is relayed, before the client sees its end (a created
    resource is bound first, so the client's next call finds it).
    """
    tail = head = b""
    try:
        await response.prepare(request)  # the first bytes: the first chunk (or keep-alive) follows at once
        first_byte.observe(time.perf_counter() - request[STARTED])
    except ConnectionError:  # the client went away
        return None
    while chunk is None or chunk:
        try:
            if chunk is None:
                if not tail or tail.endswith(_EVENT_ENDS):
                    await response.write(KEEPALIVE)
            else:
                sent = chunk if scrubber is None else scrubber.feed(chunk)
                if sent:
                    await response.write(sent)
                    tail, head = _kept(tail, head, sent, before_end is not None)
        except ConnectionError:
            return None
        chunk = await next_chunk(answer, keepalive_s)  # a failure here is the upstream's: it propagates
    rest = b"" if scrubber is None else scrubber.flush()
    if rest:
        try:
            await response.write(rest)
        except ConnectionError:
            return None
        tail, head = _kept(tail, head, rest, before_end is not None)
    if before_end is not None:
        await before_end(head, tail)
    try:
        await response.write_eof()
    except ConnectionError:
        return None
    return tail


def _kept(tail: bytes, head: bytes, sent: bytes, keep_head: bool) -> tuple[bytes, bytes]:
    """The stream's last ``TAIL_BYTES`` and (when wanted) first ``HEAD_BYTES``, once ``sent`` is written."""
    tail = sent if len(sent) >= TAIL_BYTES else (tail + sent)[-TAIL_BYTES:]
    if keep_head and len(head) < HEAD_BYTES:
        head = (head + sent)[:HEAD_BYTES]
    return tail, head


def cut(request: web.Request) -> None:
    """End a committed stream without a clean end (the client sees a broken answer, not a short one)."""
    if request.transport is not None:
        request.transport.close()
