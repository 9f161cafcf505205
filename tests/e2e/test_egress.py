"""Egress proxies: each lease's egress slot picks one proxy, consistently per key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from services.simulator import SimulatorState, start_simulator

from .conftest import MakeStack

GENERATE = "/v1beta/models/gemini-3.5-flash:generateContent"
NATIVE_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.fixture
async def proxies() -> AsyncIterator[list[tuple[str, SimulatorState]]]:
    """Two simulators standing in for forward proxies (they answer absolute-form requests themselves)."""
    runners: list[web.AppRunner] = []
    started = []
    for _ in range(2):
        runner, url, state = await start_simulator()
        runners.append(runner)
        started.append((url, state))
    yield started
    for runner in runners:
        await runner.cleanup()


async def test_requests_leave_through_the_proxy_of_their_key(
    make_stack: MakeStack, proxies: list[tuple[str, SimulatorState]]
) -> None:
    stack = await make_stack(keys=6, egress_proxies=",".join(url for url, _ in proxies))
    assert stack.http is not None
    for _ in range(24):
        async with stack.http.post(stack.edge_url + GENERATE, json=NATIVE_BODY, headers=stack.gemini_headers()) as r:
            assert r.status == 200
    assert stack.sim.requests == []  # nothing went direct
    seen = [{request.key for request in state.requests} for _, state in proxies]
    assert sum(len(state.requests) for _, state in proxies) == 24
    assert not seen[0] & seen[1]  # a key always leaves through the same proxy
    assert seen[0] | seen[1] == set(stack.keys)
