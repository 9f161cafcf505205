"""Credits through the edge (``EDGE_KEYRING_CREDITS``, issue 23): the official clients' calls are served,
counted once each in usage (credits used or given back count nothing more), and no lease is left held; across two
edges and two replicas, a key one edge's call finds cooling takes back the credits the other edge holds there."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web
from google import genai
from google.genai import types
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key
from services.edge.context import EDGE
from services.edge.keyring.credits import Credit
from services.simulator import Behaviour, SimulatorState, start_simulator
from tests.integration.conftest import Replica, StartReplica, record_lease_messages, start_replica  # noqa: F401

from .conftest import MakeStack, eventually, start_edges_crosswise

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


# -- two edges over two replicas, both official clients ----------------------------------------------------------

MODEL = "gemini-3.5-flash"
PROMPT = "hello"
IDLE_S = 1.0
Call = Callable[[], Awaitable[str]]


@dataclass
class Crosswise:
    """Edge A asks replica A first, edge B replica B first: each replica grants credits."""

    replicas: list[Replica]
    sim: SimulatorState
    edges: list[web.Application]
    calls: list[list[Call]]  # per edge: the four kinds of call, both clients, plain and streamed
    key_of: dict[str, str]  # key id -> secret
    made: int = 0  # client calls made, each answered

    async def call(self, edge: int, kind: int) -> None:
        """One call of ``kind`` (0-3) through ``edge`` (0: A, 1: B); it must be answered."""
        assert await self.calls[edge][kind % 4]()
        self.made += 1

    def shelf(self, edge: int) -> list[Credit]:
        credits = self.edges[edge][EDGE].keyring.credits
        assert credits is not None
        return credits.held()

    def held(self) -> int:
        return sum(len(replica.keyring.desk.book) for replica in self.replicas)


def clients_calls(edge_url: str, token: str, stack: contextlib.AsyncExitStack) -> list[Call]:
    openai = AsyncOpenAI(base_url=f"{edge_url}/v1", api_key=token, max_retries=0)
    stack.push_async_callback(openai.close)
    gemini = genai.Client(api_key=token, http_options=types.HttpOptions(base_url=edge_url, api_version="v1beta"))
    stack.push_async_callback(gemini.aio.aclose)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]

    async def chat() -> str:
        answer = await openai.chat.completions.create(model=MODEL, messages=messages)
        return answer.choices[0].message.content or ""

    async def chat_stream() -> str:
        stream = await openai.chat.completions.create(model=MODEL, messages=messages, stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])

    async def generate() -> str:
        return (await gemini.aio.models.generate_content(model=MODEL, contents=PROMPT)).text or ""

    async def generate_stream() -> str:
        stream = await gemini.aio.models.generate_content_stream(model=MODEL, contents=PROMPT)
        return "".join([chunk.text or "" async for chunk in stream])

    return [chat, chat_stream, generate, generate_stream]


@pytest.fixture
async def crosswise(start_replica: StartReplica) -> AsyncIterator[Crosswise]:  # noqa: F811
    replicas = [await start_replica("replica-a"), await start_replica("replica-b")]
    sim_runner, sim_url, sim = await start_simulator()
    admin = replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
    secrets = [fake_gemini_key(f"credits-{i}") for i in range(3)]
    added = await admin.AddKeys(pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=s) for s in secrets]))
    created = await admin.CreateToken(pb.CreateTokenRequest(pool="main", name="credits"))
    await eventually(
        lambda: all(
            replica.keyring.cache.replica_count() == 2 and created.info.token_id in replica.keyring.cache.view.tokens
            for replica in replicas
        ),
        5.0,
        "the replicas do not see each other and the token",
    )
    addresses = [replica.address for replica in replicas]
    runners, urls = await start_edges_crosswise(addresses, sim_url, keyring_credits=4, keyring_credit_idle_s=IDLE_S)
    async with contextlib.AsyncExitStack() as stack:
        try:
            yield Crosswise(
                replicas,
                sim,
                [runner.app for runner in runners],
                [clients_calls(url, created.token, stack) for url in urls],
                {result.key_id: secret for secret, result in zip(secrets, added.results, strict=True)},
            )
        finally:
            await stack.aclose()
            for runner in (*runners, sim_runner):
                await runner.cleanup()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each message the edges' lease streams send, as its calls' kinds ("acquire", "credit", "release"...)."""
    return record_lease_messages(monkeypatch)


def calls_of(sent: list[list[str]], kind: str) -> int:
    return sum(message.count(kind) for message in sent)


async def test_both_clients_through_two_edges_and_two_replicas_spend_credits_once_and_a_cooling_key_revokes_them(
    crosswise: Crosswise, sent: list[list[str]]
) -> None:
    sim, call = crosswise.sim, crosswise.call
    for kind in (0, 1, 2, 3, 0, 1, 2, 3):  # interleaved: each kind through edge A, then edge B
        await call(0, kind)
        await call(1, kind)
    assert sum(sim.counts().values()) == crosswise.made == 16  # one upstream call each: credits call nothing
    assert calls_of(sent, "acquire") <= 8  # most took a credit (no acquire of their own; 2 an edge as its shelf ramps)
    assert all(replica.keyring.desk.observer.granted["main"] for replica in crosswise.replicas)  # both granted
    assert crosswise.held() >= 2  # leases held ahead of need while no call is in flight

    await eventually(lambda: crosswise.held() == 0, IDLE_S * 3, "credits kept past their idle time")

    # A key edge A's call finds cooling: edge B's credits on it (granted by either replica) go back at once.
    for _ in range(3):  # fresh shelves (a shelf holds twice its calls of the last idle time)
        await call(1, 0)
        await call(0, 0)
    await eventually(lambda: len(crosswise.shelf(0)) == len(crosswise.shelf(1)) == 4, 2.0, "shelves not filled")
    held_by_b = crosswise.shelf(1)[-1]
    cooled, live_until = held_by_b.lease.key_id, held_by_b.expires_at
    secret = crosswise.key_of[cooled]
    for _ in range(12):  # edge A's calls take its credits in turn (the oldest first, all asked by chats) ...
        upcoming = crosswise.shelf(0)[:1]
        # ... until the next is on that key from the other replica: only a report tells that one the outcome.
        if upcoming and upcoming[0].lease.key_id == cooled and upcoming[0].replica != held_by_b.replica:
            break
        await call(0, 0)
    else:
        pytest.fail("edge A got no credit on edge B's key from the other replica")
    sim.set_sticky(secret, Behaviour.rate_limit(retry_delay_s=30))
    before = sim.count(secret)
    await call(0, 0)  # answered all the same: failed over to another key
    assert sim.count(secret) == before + 1
    await eventually(
        lambda: all(c.lease.key_id != cooled for c in crosswise.shelf(1)), 2.0, "edge B kept a cooling key's credit"
    )
    assert time.monotonic() < live_until, "edge B's credit on the cooling key went back only when it expired"
    for kind in range(4):  # edge B's next calls (and A's) go to the other keys
        await call(1, kind)
        await call(0, kind)
    assert sim.count(secret) == before + 1
    assert sum(sim.counts().values()) == crosswise.made + 1  # the one 429 besides one upstream call per call

    # Every credit left goes back after its idle time, and each upstream call counts once across both replicas.
    await eventually(lambda: crosswise.held() == 0, IDLE_S * 3, "a lease is still held")
    upstream = crosswise.made + 1
    for replica in crosswise.replicas:  # each flushes its own counts; the other's arrive through etcd
        await replica.admin.GetUsage(pb.GetUsageRequest(pool="main"))
    figures = None
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        usage = await crosswise.replicas[0].admin.GetUsage(pb.GetUsageRequest(pool="main"))
        [pool] = usage.pools
        figures = pool.figures
        if figures.requests >= upstream:
            break
        await asyncio.sleep(0.02)
    assert figures is not None
    assert (figures.requests, figures.errors, figures.unknown) == (upstream, 1, 0)
