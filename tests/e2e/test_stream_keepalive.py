"""Long silences in a stream survive a proxy with an idle timeout: the edge writes SSE keep-alives.

Between the client and the edge sits a small TCP proxy that closes a
connection idle (no byte either way) for more than ``IDLE_S``, as ingresses
and load balancers do. The upstream (the simulator) pauses longer than that
between two chunks. With keep-alives (``EDGE_STREAM_KEEPALIVE_S``) the answer
arrives whole in both dialects, empty lines between its events (which the
official clients ignore: openai and google-genai are run through it); without
them the proxy cuts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from google import genai
from google.genai import types
from openai import AsyncOpenAI

from services.edge.app import start_edge
from services.edge.config import EdgeSettings

from .conftest import MakeStack, Stack

IDLE_S = 0.7
PAUSE_S = 1.5  # upstream silence between chunks: longer than the proxy allows
KEEPALIVE_S = 0.2
MODEL = "gemini-3.5-flash"
NATIVE = f"/v1beta/models/{MODEL}:streamGenerateContent"
NATIVE_BODY = {"contents": [{"role": "user", "parts": [{"text": "Think long, then answer"}]}]}
OPENAI_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Think long"}], "stream": True}
DIALECTS = ("gemini", "openai")


class IdleTimeoutProxy:
    """Forwards TCP to ``target_port``; closes both sides of a connection idle for more than ``idle_s``."""

    def __init__(self, target_port: int, idle_s: float) -> None:
        self.target_port, self.idle_s = target_port, idle_s
        self.cut = 0  # connections closed for idleness
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        last = loop.time()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            nonlocal last
            while data := await source.read(65536):
                last = loop.time()
                sink.write(data)
                await sink.drain()

        async def watchdog() -> None:
            while loop.time() - last <= self.idle_s:
                await asyncio.sleep(0.05)
            self.cut += 1

        tasks = [
            asyncio.ensure_future(pipe(client_reader, upstream_writer)),
            asyncio.ensure_future(pipe(upstream_reader, client_writer)),
            asyncio.ensure_future(watchdog()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_writer, upstream_writer):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()


@contextlib.asynccontextmanager
async def behind_proxy(edge_url: str) -> AsyncIterator[tuple[str, IdleTimeoutProxy]]:
    proxy = IdleTimeoutProxy(int(edge_url.rsplit(":", 1)[1]), IDLE_S)
    url = await proxy.start()
    try:
        yield url, proxy
    finally:
        await proxy.close()


async def slow_stack(make_stack: MakeStack, keepalive_s: float) -> Stack:
    stack = await make_stack(stream_keepalive_s=keepalive_s)
    stack.sim.default_chunks = 3
    stack.sim.default_chunk_delay_s = PAUSE_S
    return stack


async def read_through(url: str, dialect: str, stack: Stack) -> tuple[int, bytes, bool]:
    """(status, bytes received, whether the answer ended cleanly) of one streamed call through the proxy."""
    async with aiohttp.ClientSession() as http:
        if dialect == "gemini":
            call = http.post(url + NATIVE, params={"alt": "sse"}, json=NATIVE_BODY, headers=stack.gemini_headers())
        else:
            call = http.post(url + "/v1/chat/completions", json=OPENAI_BODY, headers=stack.bearer_headers())
        async with call as answer:
            received = b""
            try:
                async for data in answer.content.iter_any():
                    received += data
            except aiohttp.ClientPayloadError:
                return answer.status, received, False
            return answer.status, received, True


def keepalives(received: bytes) -> int:
    """Empty lines that end no event: what the edge wrote while the upstream was silent."""
    return re.sub(rb"data: [^\r\n]*(?:\r\n|\n)(?:\r\n|\n)", b"", received).count(b"\n")


def events(received: bytes) -> list[bytes]:
    return re.findall(rb"^data: [^\r\n]*", received, flags=re.MULTILINE)


async def test_a_silent_stream_reaches_the_client_whole_through_an_idle_timeout_proxy(make_stack: MakeStack) -> None:
    """Both dialects, one stream each, at the same time (their silences overlap; each connection its own)."""
    stack = await slow_stack(make_stack, KEEPALIVE_S)
    async with behind_proxy(stack.edge_url) as (url, proxy):
        answers = await asyncio.gather(*(read_through(url, dialect, stack) for dialect in DIALECTS))
    for dialect, (status, received, clean) in zip(DIALECTS, answers, strict=True):
        assert status == 200 and clean, (dialect, received)
        assert keepalives(received) >= 2 * int(PAUSE_S / KEEPALIVE_S) - 2, (dialect, received)
        data = events(received)
        if dialect == "gemini":
            assert len(data) == 3, received
        else:
            assert data[-1] == b"data: [DONE]" and len(data) >= 4, received
    assert proxy.cut == 0
    await stack.no_lease_held()


async def _openai_client_text(url: str, stack: Stack) -> str:
    client = AsyncOpenAI(base_url=url + "/v1", api_key=stack.token, max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Think long"}], stream=True
        )
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    finally:
        await client.close()


async def _genai_client_chunks(url: str, stack: Stack) -> list[types.GenerateContentResponse]:
    client = genai.Client(api_key=stack.token, http_options=types.HttpOptions(base_url=url, api_version="v1beta"))
    try:
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents="Think long")
        return [chunk async for chunk in stream]
    finally:
        await client.aio.aclose()
        client.close()


async def test_the_official_clients_ignore_keep_alives(make_stack: MakeStack) -> None:
    """openai and google-genai, each streaming through the proxy at the same time (their silences overlap)."""
    stack = await slow_stack(make_stack, KEEPALIVE_S)
    stack.sim.default_chunk_delay_s = 0.8  # a few keep-alives between chunks, not a long test
    async with behind_proxy(stack.edge_url) as (url, _proxy):
        text, chunks = await asyncio.gather(_openai_client_text(url, stack), _genai_client_chunks(url, stack))
    assert text
    assert len(chunks) == 3 and all(chunk.text for chunk in chunks)


async def test_without_keep_alives_the_proxy_cuts_the_silent_stream(make_stack: MakeStack) -> None:
    """Both dialects at the same time: each connection is cut once."""
    stack = await slow_stack(make_stack, 0)
    async with behind_proxy(stack.edge_url) as (url, proxy):
        answers = await asyncio.gather(*(read_through(url, dialect, stack) for dialect in DIALECTS))
    for dialect, (status, received, clean) in zip(DIALECTS, answers, strict=True):
        assert status == 200, dialect
        assert not clean or len(events(received)) < (3 if dialect == "gemini" else 4), (dialect, received)
        assert keepalives(received) == 0, (dialect, received)
    assert proxy.cut == len(DIALECTS)
    await stack.no_lease_held(within_s=PAUSE_S * 3)


async def test_the_upstream_read_timeout_still_ends_a_silent_stream(make_stack: MakeStack) -> None:
    """Keep-alives go to the client; the upstream's silence is still bounded by EDGE_READ_TIMEOUT_S."""
    stack = await make_stack(stream_keepalive_s=0.2, read_timeout_s=1.0)
    stack.sim.default_chunks = 2
    stack.sim.default_chunk_delay_s = 3.0
    status, received, clean = await read_through(stack.edge_url, "gemini", stack)
    assert status == 200 and not clean  # cut, not ended as if whole
    assert keepalives(received) >= 1 and len(events(received)) == 1
    await stack.no_lease_held()


# -- silence before the first chunk: an upstream of our own (headers at once, then a pause) --


EVENT = b'data: {"candidates": [{"content": {"parts": [{"text": "done"}], "role": "model"}}]}\r\n\r\n'


async def pausing_upstream(
    pause_s: float, split_event: bool = False, content_type: str = "text/event-stream"
) -> tuple[web.AppRunner, str]:
    """An upstream that sends its headers at once, then is silent for ``pause_s`` before (or inside) an event."""

    async def generate(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        event = EVENT
        if split_event:
            await response.write(event[:20])
            await asyncio.sleep(pause_s)
            await response.write(event[20:])
        else:
            await asyncio.sleep(pause_s)
            await response.write(event)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1beta/models/{action}", generate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def edge_before(stack: Stack, upstream_url: str) -> tuple[web.AppRunner, str]:
    settings = EdgeSettings(
        keyring_addresses=f"127.0.0.1:{stack.replica.server.port}",
        upstream_base_url=upstream_url,
        stream_keepalive_s=KEEPALIVE_S,
        shutdown_timeout_s=2.0,
    )
    return await start_edge(settings, host="127.0.0.1", port=0)


async def test_the_first_keep_alive_commits_a_stream_silent_before_its_first_chunk(make_stack: MakeStack) -> None:
    stack = await make_stack()
    upstream, upstream_url = await pausing_upstream(PAUSE_S)
    edge, edge_url = await edge_before(stack, upstream_url)
    try:
        async with behind_proxy(edge_url) as (url, proxy):
            status, received, clean = await read_through(url, "gemini", stack)
        assert status == 200 and clean and proxy.cut == 0
        assert received.startswith(b"\n") and keepalives(received) >= 2 and len(events(received)) == 1
    finally:
        await edge.cleanup()
        await upstream.cleanup()
    await stack.no_lease_held()


async def test_no_keep_alive_goes_inside_an_event(make_stack: MakeStack) -> None:
    stack = await make_stack()
    upstream, upstream_url = await pausing_upstream(1.0, split_event=True)
    edge, edge_url = await edge_before(stack, upstream_url)
    try:
        status, received, clean = await read_through(edge_url, "gemini", stack)
        assert status == 200 and clean
        assert keepalives(received) == 0 and len(events(received)) == 1
    finally:
        await edge.cleanup()
        await upstream.cleanup()
    await stack.no_lease_held()


async def test_a_json_array_stream_gets_no_keep_alive(make_stack: MakeStack) -> None:
    """streamGenerateContent without alt=sse is one JSON array: passed on byte for byte, nothing added."""
    stack = await make_stack()
    upstream, upstream_url = await pausing_upstream(1.0, content_type="application/json")
    edge, edge_url = await edge_before(stack, upstream_url)
    try:
        status, received, clean = await read_through(edge_url, "gemini", stack)
        assert status == 200 and clean and received == EVENT
    finally:
        await edge.cleanup()
        await upstream.cleanup()
    await stack.no_lease_held()
