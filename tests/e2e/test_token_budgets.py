"""A client token's budget holds across two edges and two keyring replicas, and a spent budget changes no key.

Real servers: etcd, two keyring replicas, two edges (A prefers replica A, B
prefers replica B), the simulator. The token may make 4 requests a day: each
replica admits its half; the fifth and later calls get a 429 in the caller's
dialect with Retry-After and a message that blames the token's budget.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_auth_key
from services.simulator import SimulatorState, start_simulator
from tests.e2e.conftest import eventually, start_edges_crosswise
from tests.integration.conftest import Replica, StartReplica, kek, start_replica  # noqa: F401

MODEL = "gemini-3.5-flash-lite"
BODY = {"contents": [{"parts": [{"text": "hello"}]}]}


@dataclass
class Budgeted:
    replicas: list[Replica]
    sim: SimulatorState
    edges: list[str]
    token: str
    http: aiohttp.ClientSession


@pytest.fixture
async def budgeted(start_replica: StartReplica) -> AsyncIterator[Budgeted]:  # noqa: F811
    replicas = [await start_replica("replica-a"), await start_replica("replica-b")]
    sim_runner, sim_url, sim = await start_simulator()
    admin = replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
    keys = [pb.KeyInput(secret=fake_auth_key(f"budget-{i}"), project=f"project-{i}") for i in range(3)]
    await admin.AddKeys(pb.AddKeysRequest(pool="main", keys=keys))
    created = await admin.CreateToken(
        pb.CreateTokenRequest(pool="main", name="budgeted", budgets=[pb.TokenBudget(requests_per_day=4)])
    )
    token_id = created.info.token_id
    await eventually(
        lambda: all(
            replica.keyring.cache.replica_count() == 2 and token_id in replica.keyring.cache.view.tokens
            for replica in replicas
        ),
        5.0,
        "the replicas do not see each other and the token",
    )
    addresses = [replica.address for replica in replicas]
    runners, edges = await start_edges_crosswise(addresses, sim_url)
    http = aiohttp.ClientSession()
    try:
        yield Budgeted(replicas, sim, edges, created.token, http)
    finally:
        await http.close()
        for runner in (*runners, sim_runner):
            await runner.cleanup()


async def test_a_token_budget_holds_across_edges_and_replicas_and_changes_no_key(budgeted: Budgeted) -> None:
    statuses: list[int] = []
    refusals: list[tuple[str | None, str]] = []
    for _ in range(4):
        for edge in budgeted.edges:
            async with budgeted.http.post(
                f"{edge}/v1beta/models/{MODEL}:generateContent", json=BODY, headers={"x-goog-api-key": budgeted.token}
            ) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    refusals.append((resp.headers.get("Retry-After"), (await resp.json())["error"]["message"]))
    assert statuses.count(200) == 4 and statuses.count(429) == 4, statuses
    for retry_after, message in refusals:
        assert retry_after is not None and 0 < int(retry_after) <= 86400
        assert "client token's budget (requests per day)" in message and "not the pool's keys" in message
    # The OpenAI dialect says the same in its own shape.
    async with budgeted.http.post(
        f"{budgeted.edges[0]}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {budgeted.token}"},
    ) as resp:
        assert resp.status == 429 and resp.headers.get("Retry-After")
        answer = await resp.json()
        error = answer[0]["error"] if isinstance(answer, list) else answer["error"]
        assert "client token's budget" in error["message"]
    upstream = [r for r in budgeted.sim.requests if ":generateContent" in r.path or "chat/completions" in r.path]
    assert len(upstream) == 4
    for replica in budgeted.replicas:
        listed = await replica.admin.ListKeys(pb.ListKeysRequest())
        for key in listed.keys:
            assert key.state == pb.ACTIVE and not key.cooldowns and not key.consecutive_failures, key
