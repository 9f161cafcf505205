"""A stream keeps no parsed copy of its request (issue 23: ten thousand streams in one edge's memory).

The dialect handlers parsed the body (a few times its size as Python objects) and kept it, as a local, for the
whole length of the call: for a stream, its whole upstream time. While a stream of each dialect is open, no
coroutine of the edge refers to its parsed body any more (the simulator, in this process too, may), nor to the
headers it sent upstream (a dict with the leased key, aiohttp keeps its own copy) nor, relay apart, to the
stream's first chunk.
"""

from __future__ import annotations

import gc
import types
import uuid
from collections.abc import Callable

from services.simulator.state import SimulatorState
from tests.e2e.conftest import MakeStack


def edge_coroutines_holding(is_parsed_body: Callable[[dict[str, object]], bool]) -> list[str]:
    """Names of the edge's coroutines that refer to a parsed body (a dict ``is_parsed_body`` says is one)."""
    bodies = [obj for obj in gc.get_objects() if type(obj) is dict and is_parsed_body(obj)]
    return [
        holder.cr_code.co_qualname
        for holder in gc.get_referrers(*bodies)
        if isinstance(holder, types.CoroutineType) and "/services/edge/" in holder.cr_code.co_filename
    ]


def edge_locals_holding(is_wanted: Callable[[object], bool]) -> list[str]:
    """Names of the edge's coroutines with a local ``is_wanted`` says is one (bytes, and a dict of strings only,
    are not tracked by gc, so the frames are searched)."""
    return [
        coroutine.cr_code.co_qualname
        for coroutine in gc.get_objects()
        if isinstance(coroutine, types.CoroutineType)
        and "/services/edge/" in coroutine.cr_code.co_filename
        and coroutine.cr_frame is not None
        and any(is_wanted(value) for value in coroutine.cr_frame.f_locals.values())
    ]


def is_upstream_headers(value: object) -> bool:
    """The headers the edge built for the upstream call: the leased key in them (the client's never are)."""
    return type(value) is dict and ("x-goog-api-key" in value or "Authorization" in value)


def is_first_chunk(value: object) -> bool:
    """The stream's first chunk, once relayed (the client read it): only ``relay`` may still have it."""
    return type(value) is bytes and value.startswith(b"data:")


async def test_an_open_stream_holds_no_parsed_body_in_either_dialect(make_stack: MakeStack) -> None:
    stack = await make_stack(sim_state=SimulatorState(default_chunks=3, default_chunk_delay_s=0.3))
    marker = f"prompt-{uuid.uuid4().hex}"
    native = b'{"contents": [{"role": "user", "parts": [{"text": "%s"}]}]}' % marker.encode()
    openai = b'{"model": "gemini-3.5-flash", "stream": true, "messages": [{"role": "user", "content": "%s"}]}' % (
        marker.encode()
    )
    calls = (
        (f"{stack.edge_url}/v1beta/models/gemini-3.5-flash:streamGenerateContent?alt=sse", native,
         stack.gemini_headers(), lambda body: "contents" in body and marker in str(body["contents"])),
        (f"{stack.edge_url}/v1/chat/completions", openai, stack.bearer_headers(),
         lambda body: "messages" in body and marker in str(body["messages"])),
    )  # fmt: skip
    for url, body, headers, is_parsed_body in calls:
        async with stack.http.post(url, data=body, headers={**headers, "Content-Type": "application/json"}) as reply:
            assert reply.status == 200
            assert (await reply.content.readline()).startswith(b"data:")  # committed: inside forward until the end
            assert edge_coroutines_holding(is_parsed_body) == []
            assert edge_locals_holding(is_upstream_headers) == []
            assert set(edge_locals_holding(is_first_chunk)) <= {"relay"}
            await reply.read()
