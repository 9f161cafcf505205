"""A request-head timeout for aiohttp servers (aiohttp has none of its own).

aiohttp closes a connection that stays idle longer than its
``keepalive_timeout``, but a client that opens a connection and sends the
request line and headers one byte at a time holds it (and a handler slot's
worth of buffers) for as long as it likes. Here every request head must be
complete within ``head_timeout_s`` of the moment it could start: the
connection's opening, or the first byte of a later request on a kept-alive
connection. Otherwise the connection is closed, with no answer (the client
is not reading one; nginx's ``client_header_timeout`` does the same with a
408 nobody reads).

The timer stops at the head: bytes of a request's body never arm it (a
large upload on a slow link is not a slow head). A body's pace is the
reader's to bound (the edge's ``read_body``, admin's ``bodies.read_body``:
each within its own body timeout, answered 408); after such a 408
``end_after_answer`` closes the connection once the answer is written,
instead of aiohttp lingering to drain a body that is not coming.

``HeadTimeoutRunner`` is an ``aiohttp.web.AppRunner`` whose server makes
``HeadTimedHandler`` protocols. It leans on a few attributes of aiohttp's
``RequestHandler`` (which parser receives the bytes, how many heads were
parsed, the queue of parsed requests and their payloads, the lingering
time), pinned by tests/admin/test_slow_clients.py and
tests/e2e/test_trust_boundary.py against the aiohttp in use. Used by
``services.common.serving.start_app`` for the edge and admin.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler


class HeadTimedHandler(RequestHandler):
    """aiohttp's protocol, closing the connection when a request head takes longer than ``head_timeout_s``."""

    __slots__ = ("_body", "_head_deadline", "_head_timeout_s")

    def __init__(self, manager: web.Server, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = head_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the last parsed request's body, until it is complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first head is due from the opening on

    def data_received(self, data: bytes) -> None:
        # Bytes for the request parser, and no body under way: they start (or continue) a head.
        in_body = self._body is not None and not self._body.is_eof()
        reading_head = self._payload_parser is None and not self._upgraded and not in_body
        heads_before = self._request_count
        super().data_received(data)
        if self._request_count != heads_before:
            self._disarm()  # a head is complete; the next one is timed from its first byte
            self._body = self._messages[-1][1] if self._messages else None
        elif reading_head and data:
            self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._body = None
        super().connection_lost(exc)

    def end_after_answer(self) -> None:
        """Close the connection once the answer in progress is written, without draining the unread body."""
        self._lingering_time = 0.0

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self._loop.call_later(self._head_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        self.force_close()


def end_after_answer(request: web.BaseRequest) -> None:
    """After this request's answer, close its connection instead of lingering on its body (served by us)."""
    if isinstance(request.protocol, HeadTimedHandler):
        request.protocol.end_after_answer()


class _HeadTimedServer(web.Server):
    """aiohttp's server (the protocol factory), making ``HeadTimedHandler`` protocols."""

    head_timeout_s: float = 10.0

    def __call__(self) -> RequestHandler:
        return HeadTimedHandler(self, self.head_timeout_s, loop=self._loop, **self._kwargs)


class HeadTimeoutRunner(web.AppRunner):
    """``web.AppRunner`` whose connections must deliver each request head within ``head_timeout_s``."""

    def __init__(self, app: web.Application, *, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._head_timeout_s = head_timeout_s

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app's server as aiohttp built it (handler, request factory, options), making our protocol.
        server.__class__ = _HeadTimedServer
        assert isinstance(server, _HeadTimedServer)
        server.head_timeout_s = self._head_timeout_s
        return server
