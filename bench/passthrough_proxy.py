"""The least an aiohttp proxy can do: read the body, POST it upstream, answer with the reply.

No token, no lease, no failover, no metrics, no spans. ``bench/edge_bench.py``
measures it next to the edge: the latency it adds is the floor of any
aiohttp-based edge on the machine at that moment, so the edge's own cost is
the difference between the two.

    python bench/passthrough_proxy.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
_FORWARDED = ("Content-Type", "x-goog-api-key")


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    upstream = request.app[UPSTREAM] + request.path_qs
    async with request.app[SESSION].post(upstream, data=body, headers=headers) as answer:
        if "alt=sse" not in request.query_string:
            return web.Response(status=answer.status, body=await answer.read(), content_type="application/json")
        response = web.StreamResponse(status=answer.status, headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for chunk in answer.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def serve(upstream: str, port: int) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream
    app.router.add_post("/{path:.*}", forward)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        app[SESSION] = session
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"passthrough listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare aiohttp pass-through proxy (edge_bench's floor).")
    parser.add_argument("upstream", help="base URL the requests go to, e.g. http://127.0.0.1:8090")
    parser.add_argument("port", type=int, help="loopback port to listen on")
    options = parser.parse_args()
    asyncio.run(serve(options.upstream, options.port))


if __name__ == "__main__":
    main()
