"""Credits through the edge (``EDGE_KEYRING_CREDITS``, issue 23): the official OpenAI client's calls are served,
counted once each in usage (credits used or given back count nothing more), and no lease is left held."""

from __future__ import annotations

from openai import AsyncOpenAI

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .conftest import MakeStack

CALLS = 12


async def test_calls_served_from_credits_are_counted_once_and_unused_ones_go_back(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=3, keyring_credits=4, keyring_credit_idle_s=0.3)
    async with AsyncOpenAI(base_url=f"{stack.edge_url}/v1", api_key=stack.token, max_retries=0) as client:
        for _ in range(CALLS):
            answer = await client.chat.completions.create(
                model="gemini-3.5-flash", messages=[{"role": "user", "content": "hello"}]
            )
            assert answer.choices[0].message.content
    assert stack.leases_held >= 2  # credits kept ahead of need (without them, the last call's lease at most)
    assert sum(stack.sim.counts().values()) == CALLS  # one upstream call each: no credit called anything itself
    await stack.no_lease_held(within_s=3)  # the credits left went back after their idle time
    usage = await stack.replica.admin.GetUsage(pb.GetUsageRequest(pool="main"))
    [pool] = usage.pools
    assert (pool.figures.requests, pool.figures.unknown) == (CALLS, 0)  # counted once each, none unknown
