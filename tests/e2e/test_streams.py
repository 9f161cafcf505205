"""Streams: passed through as they come, and a client that hangs up releases its lease at once."""

from __future__ import annotations

import time

import aiohttp

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.simulator import Behaviour

from .conftest import Stack, eventually

STREAM = "/v1beta/models/gemini-3.5-flash:streamGenerateContent"
NATIVE_BODY = {"contents": [{"role": "user", "parts": [{"text": "Tell me a long story"}]}]}


async def test_stream_cut_by_the_client_releases_the_lease_within_a_second(stack: Stack) -> None:
    stack.sim.default_chunks = 30
    stack.sim.default_chunk_delay_s = 0.2
    session = aiohttp.ClientSession()
    try:
        response = await session.post(
            stack.edge_url + STREAM, params={"alt": "sse"}, json=NATIVE_BODY, headers=stack.gemini_headers()
        )
        assert response.status == 200
        first = await response.content.readany()
        assert first.startswith(b"data: ")
        assert stack.leases_held == 1  # the stream is under way
        response.close()  # hang up mid-stream
        cut_at = time.monotonic()
    finally:
        await session.close()
    await eventually(lambda: stack.leases_held == 0, 1.0, "the lease of a cut stream is still held")
    assert time.monotonic() - cut_at < 1.0


async def test_chunks_are_passed_on_as_they_arrive(stack: Stack, http: aiohttp.ClientSession) -> None:
    stack.sim.default_chunks = 3
    stack.sim.default_chunk_delay_s = 0.3
    async with http.post(
        stack.edge_url + STREAM, params={"alt": "sse"}, json=NATIVE_BODY, headers=stack.gemini_headers()
    ) as r:
        started = time.monotonic()
        first = await r.content.readany()
        first_after = time.monotonic() - started
        rest = await r.read()
    assert first.startswith(b"data: ") and first_after < 0.25  # not held back until the end
    assert (first + rest).count(b"data: ") == 3
    await stack.no_lease_held()


async def test_failure_before_the_first_chunk_fails_over(stack: Stack, http: aiohttp.ClientSession) -> None:
    for key in stack.keys[:2]:
        stack.sim.script(key, Behaviour(kind="rate_limit", retry_delay_s=60))
    async with http.post(
        stack.edge_url + STREAM, params={"alt": "sse"}, json=NATIVE_BODY, headers=stack.gemini_headers()
    ) as r:
        assert r.status == 200
        assert (await r.read()).count(b"data: ") == 3


async def test_upstream_cut_mid_stream_is_not_retried(stack: Stack, http: aiohttp.ClientSession) -> None:
    for key in stack.keys:
        stack.sim.script(key, Behaviour(kind="drop_mid_stream"))
    stack.sim.default_chunks = 3
    async with http.post(
        stack.edge_url + STREAM, params={"alt": "sse"}, json=NATIVE_BODY, headers=stack.gemini_headers()
    ) as r:
        assert r.status == 200
        try:
            await r.read()
            truncated = False
        except aiohttp.ClientPayloadError:
            truncated = True
    assert truncated  # the client learns that the answer is incomplete
    assert len(stack.sim.requests) == 1  # bytes were sent: no second key
    await stack.no_lease_held()


async def test_cut_stream_releases_even_while_the_upstream_is_silent(stack: Stack) -> None:
    """The handler is cancelled when the client goes away: no waiting for the next upstream chunk."""
    stack.sim.default_chunks = 3
    stack.sim.default_chunk_delay_s = 10
    session = aiohttp.ClientSession()
    try:
        response = await session.post(
            stack.edge_url + STREAM, params={"alt": "sse"}, json=NATIVE_BODY, headers=stack.gemini_headers()
        )
        assert (await response.content.readany()).startswith(b"data: ")
        response.close()
    finally:
        await session.close()
    await eventually(lambda: stack.leases_held == 0, 1.0, "the lease of a cut stream is still held")
    key = await stack.replica.admin.GetKey(pb.GetKeyRequest(key_id=stack.key_ids[stack.sim.requests[-1].key or ""]))
    assert key.state == pb.ACTIVE and key.consecutive_failures == 0  # a hang-up says nothing of the key
    assert not key.cooldowns
