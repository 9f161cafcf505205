"""Issue 21 through real servers: billing accounts.

etcd, two keyring replicas, two edges (A prefers replica A, B prefers replica
B) and the simulator, whose projects p1 and p2 share billing account
``acct-a`` and p3, p4 account ``acct-b``. A depleted prepay (402) of acct-a
stops both of its projects being leased on every replica at once, acct-b keeps
serving and no client sees a 402; a spend-limit 429 of acct-b does the same
for its window.


Service tiers: a priority call is leased only keys of a Tier 2/3 account, and
Google's downgrade (``x-gemini-service-tier: standard``) reaches the client
and the edge's metric. Each class is its own: a priority 429 cools and
teaches the project's priority class only, and a flex call is counted as flex.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_auth_key
from services.simulator import SimulatorState, start_simulator
from services.simulator.errors import project_number
from services.simulator.state import Behaviour
from tests.e2e.conftest import eventually, start_edges_crosswise
from tests.integration.conftest import Replica, StartReplica, kek, start_replica  # noqa: F401

MODEL = "gemini-3.5-flash"
BODY = {"contents": [{"parts": [{"text": "hello"}]}]}
ACCOUNTS = {"p1": "acct-a", "p2": "acct-a", "p3": "acct-b", "p4": "acct-b"}
TIERS = {"acct-a": 1, "acct-b": 2}  # the billing accounts' Gemini tiers: priority is acct-b's only


@dataclass
class Billed:
    replicas: list[Replica]
    sim: SimulatorState
    edges: list[str]
    token: str
    http: aiohttp.ClientSession
    secrets: dict[str, str]  # project -> its key

    async def generate(self, edge: str) -> int:
        async with self.http.post(
            f"{edge}/v1beta/models/{MODEL}:generateContent", json=BODY, headers={"x-goog-api-key": self.token}
        ) as resp:
            await resp.read()
            return resp.status

    def upstream_projects(self) -> list[str]:
        return [self.sim.project_of(r.key or "") for r in self.sim.requests if ":generateContent" in r.path]

    def account_cooling(self, account: str) -> bool:
        """Every replica's view holds a running cooldown of the billing account."""
        return all(
            any(
                c.id.scope.value == "account" and c.id.subject == account
                for c in replica.keyring.cache.view.cooldowns.values()
            )
            for replica in self.replicas
        )


@pytest.fixture
async def billed(start_replica: StartReplica) -> AsyncIterator[Billed]:  # noqa: F811
    replicas = [await start_replica("replica-a"), await start_replica("replica-b")]
    sim_runner, sim_url, sim = await start_simulator()
    admin = replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
    secrets = {project: fake_auth_key(f"billing-{project}") for project in ACCOUNTS}
    keys = [
        pb.KeyInput(
            secret=secret, project=project, billing_account=ACCOUNTS[project], billing_tier=TIERS[ACCOUNTS[project]]
        )
        for project, secret in secrets.items()
    ]
    added = await admin.AddKeys(pb.AddKeysRequest(pool="main", keys=keys))
    assert added.added == len(keys)
    for project, secret in secrets.items():
        sim.set_project(secret, project)
    sim.quotas.accounts.update(ACCOUNTS)
    sim.quotas.tiers.update(TIERS)
    created = await admin.CreateToken(pb.CreateTokenRequest(pool="main", name="billed"))
    token_id = created.info.token_id
    await eventually(
        lambda: all(
            replica.keyring.cache.replica_count() == 2
            and token_id in replica.keyring.cache.view.tokens
            and len(replica.keyring.cache.view.keys) == len(keys)
            for replica in replicas
        ),
        5.0,
        "the replicas do not see each other, the keys and the token",
    )
    addresses = [replica.address for replica in replicas]
    runners, edges = await start_edges_crosswise(addresses, sim_url)
    http = aiohttp.ClientSession()
    try:
        yield Billed(replicas, sim, edges, created.token, http, secrets)
    finally:
        await http.close()
        for runner in (*runners, sim_runner):
            await runner.cleanup()


async def test_a_depleted_account_stops_its_projects_everywhere_and_no_client_sees_402(billed: Billed) -> None:
    billed.sim.quotas.depleted = {"acct-a"}
    statuses = [await billed.generate(edge) for _ in range(4) for edge in billed.edges]
    assert statuses == [200] * 8, statuses
    await eventually(lambda: billed.account_cooling("acct-a"), 3.0, "acct-a is not cooling on every replica")
    seen = len(billed.upstream_projects())
    statuses = [await billed.generate(edge) for _ in range(3) for edge in billed.edges]
    assert statuses == [200] * 6, statuses
    after = billed.upstream_projects()[seen:]
    assert after and all(ACCOUNTS[project] == "acct-b" for project in after), after
    # Both projects of acct-a are shown cooling for the account, on every replica; acct-b's keys are clean.
    for replica in billed.replicas:
        for key in (await replica.admin.ListKeys(pb.ListKeysRequest())).keys:
            account = [c for c in key.cooldowns if c.scope == "account"]
            if key.billing_account == "acct-a":
                assert account and account[0].reason == "billing_depleted" and key.state == pb.ACTIVE, key
            else:
                assert not key.cooldowns and key.state == pb.ACTIVE, key


async def test_a_spend_limit_of_one_account_moves_its_traffic_to_the_other(billed: Billed) -> None:
    billed.sim.quotas.set_rule(None, None, {"spend_budget_usd": 0.0, "usd_per_mtok": 1.0})
    billed.sim.quotas.set_rule("p1", None, {"spend_budget_usd": 1.0})
    billed.sim.quotas.set_rule("p2", None, {"spend_budget_usd": 1.0})
    statuses = [await billed.generate(edge) for _ in range(4) for edge in billed.edges]
    assert statuses == [200] * 8, statuses
    await eventually(lambda: billed.account_cooling("acct-b"), 3.0, "acct-b is not cooling on every replica")
    seen = len(billed.upstream_projects())
    statuses = [await billed.generate(edge) for _ in range(3) for edge in billed.edges]
    assert statuses == [200] * 6, statuses
    after = billed.upstream_projects()[seen:]
    assert after and all(ACCOUNTS[project] == "acct-a" for project in after), after


async def test_a_retired_name_cools_and_limits_the_model_that_answered_it(billed: Billed) -> None:
    """gemini-2.5-flash is served by gemini-3.5-flash-lite: the 429's cooldown and learnt limit are the served
    model's, the alias finds them (and so does the served name), and the key's cooldown shows both names."""
    served = "gemini-3.5-flash-lite"
    billed.sim.quotas.set_rule("p1", served, {"rpm": 0})
    statuses = []
    for attempt in range(8):  # until a call has met p1 (round robin over four keys)
        if "p1" in billed.upstream_projects():
            break
        async with billed.http.post(
            f"{billed.edges[attempt % 2]}/v1beta/models/gemini-2.5-flash:generateContent",
            json=BODY,
            headers={"x-goog-api-key": billed.token},
        ) as resp:
            statuses.append(resp.status)
            if resp.status == 200:
                assert (await resp.json())["modelVersion"] == served
    assert statuses and set(statuses) == {200}, statuses

    def cooled() -> bool:
        return all(
            any(c.id.model == served and c.id.subject == "p1" for c in r.keyring.cache.view.cooldowns.values())
            for r in billed.replicas
        )

    await eventually(lambda: billed.upstream_projects().count("p1") > 0 and cooled(), 3.0, "p1 is not cooling")
    limits = billed.replicas[0].keyring.cache.view.limits
    assert any(limit_id.model == served and limit_id.project == "p1" for limit_id in limits), limits
    assert not any(limit_id.model == "gemini-2.5-flash" for limit_id in limits), limits
    key = await billed.replicas[0].admin.GetKey(pb.GetKeyRequest(key_id=_key_id(billed, "p1")))
    assert [(c.model, c.asked_model) for c in key.cooldowns] == [(served, "gemini-2.5-flash")], key.cooldowns
    seen = len(billed.upstream_projects())
    for edge in billed.edges:
        for model in ("gemini-2.5-flash", served):
            async with billed.http.post(
                f"{edge}/v1beta/models/{model}:generateContent", json=BODY, headers={"x-goog-api-key": billed.token}
            ) as resp:
                assert resp.status == 200
    assert "p1" not in billed.upstream_projects()[seen:]


def _key_id(billed: Billed, project: str) -> str:
    for replica in billed.replicas[:1]:
        for key_id, key in replica.keyring.cache.view.keys.items():
            if key.project == project:
                return key_id
    raise AssertionError(f"no key of {project}")


async def test_priority_never_reaches_a_tier_1_project_and_a_downgrade_is_visible(billed: Billed) -> None:
    priority = {**BODY, "serviceTier": "priority"}
    for _ in range(3):
        for edge in billed.edges:
            async with billed.http.post(
                f"{edge}/v1beta/models/{MODEL}:generateContent", json=priority, headers={"x-goog-api-key": billed.token}
            ) as resp:
                assert resp.status == 200 and resp.headers.get("x-gemini-service-tier") == "priority"
    assert {ACCOUNTS[project] for project in billed.upstream_projects()} == {"acct-b"}
    # The OpenAI dialect's spelling leases the same way; a tier of neither dialect is the client's error.
    async with billed.http.post(
        f"{billed.edges[1]}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "service_tier": "priority"},
        headers={"Authorization": f"Bearer {billed.token}"},
    ) as resp:
        assert resp.status == 200
    assert {ACCOUNTS[project] for project in billed.upstream_projects()} == {"acct-b"}
    seen = len(billed.sim.requests)
    async with billed.http.post(
        f"{billed.edges[0]}/v1beta/models/{MODEL}:generateContent",
        json={**BODY, "serviceTier": "turbo"},
        headers={"x-goog-api-key": billed.token},
    ) as resp:
        assert resp.status == 400 and "service_tier" in (await resp.json())["error"]["message"]
    assert len(billed.sim.requests) == seen
    # Google downgrades: the client sees the header, the edge counts it.
    billed.sim.quotas.priority_capacity = False
    async with billed.http.post(
        f"{billed.edges[0]}/v1beta/models/{MODEL}:generateContent",
        json=priority,
        headers={"x-goog-api-key": billed.token},
    ) as resp:
        assert resp.status == 200 and resp.headers.get("x-gemini-service-tier") == "standard"
    async with billed.http.get(f"{billed.edges[0]}/metrics") as resp:
        page = await resp.text()
    assert 'edge_service_tier_downgrades_total{served="standard"} 1.0' in page


async def test_a_model_gone_for_one_project_is_served_by_another(billed: Billed) -> None:
    """A 404 "no longer available to new users" is a fact about (project, model): another project serves the
    call, and that project is not asked for the model again (on either replica)."""
    billed.sim.quotas.gone.add(("p2", "gemini-2.5-flash"))
    url = "/v1beta/models/gemini-2.5-flash:generateContent"
    for attempt in range(8):
        if "p2" in billed.upstream_projects():
            break
        async with billed.http.post(
            f"{billed.edges[attempt % 2]}{url}", json=BODY, headers={"x-goog-api-key": billed.token}
        ) as resp:
            assert resp.status == 200
    assert billed.upstream_projects().count("p2") == 1

    def cooled() -> bool:
        return all(
            any(
                c.id.subject == "p2" and c.reason.value == "model_gone" for c in r.keyring.cache.view.cooldowns.values()
            )
            for r in billed.replicas
        )

    await eventually(cooled, 3.0, "p2 is not cooling for the model on every replica")
    for attempt in range(6):
        async with billed.http.post(
            f"{billed.edges[attempt % 2]}{url}", json=BODY, headers={"x-goog-api-key": billed.token}
        ) as resp:
            assert resp.status == 200
    assert billed.upstream_projects().count("p2") == 1


async def test_error_details_read_whole_through_both_replicas(billed: Billed) -> None:
    """An IP-restricted key (the egress proxy's address) is a configuration fault with Google's project number
    learnt; MODEL_CAPACITY_EXHAUSTED is nobody's quota: both fail over, the client sees 200, nothing is cooled."""
    billed.sim.set_sticky(billed.secrets["p1"], Behaviour("ip_blocked"))
    billed.sim.set_sticky(billed.secrets["p3"], Behaviour("capacity_exhausted"))
    for attempt in range(8):
        async with billed.http.post(
            f"{billed.edges[attempt % 2]}/v1beta/models/{MODEL}:generateContent",
            json=BODY,
            headers={"x-goog-api-key": billed.token},
        ) as resp:
            assert resp.status == 200
    assert {"p1", "p3"} <= set(billed.upstream_projects())
    keys = {k.project: k for k in (await billed.replicas[0].admin.ListKeys(pb.ListKeysRequest())).keys}
    blocked = keys["p1"]
    assert blocked.state == pb.SUSPENDED and blocked.last_error.reason == "API_KEY_IP_ADDRESS_BLOCKED"
    assert "restrictions" in blocked.last_error.message and blocked.project_number == project_number("p1")
    busy = keys["p3"]
    assert busy.state == pb.ACTIVE and not busy.cooldowns and not busy.consecutive_failures, busy


async def test_a_success_teaches_the_alias_streamed_or_whole(billed: Billed) -> None:
    """The edge reports a 2xx's modelVersion, so the granting replica learns which model serves a retired name."""
    for edge, action in zip(billed.edges, ("streamGenerateContent?alt=sse", "generateContent"), strict=True):
        async with billed.http.post(
            f"{edge}/v1beta/models/gemini-2.5-flash:{action}", json=BODY, headers={"x-goog-api-key": billed.token}
        ) as resp:
            assert resp.status == 200 and "gemini-3.5-flash-lite" in await resp.text()

    def learnt() -> int:
        return sum(
            r.keyring.desk.allocator.served.served_of("gemini-2.5-flash") == "gemini-3.5-flash-lite"
            for r in billed.replicas
        )

    await eventually(lambda: learnt() >= 1, 3.0, "no replica learnt that gemini-3.5-flash-lite serves gemini-2.5-flash")


async def test_a_priority_429_leaves_standard_traffic_served_and_flex_is_counted_as_flex(billed: Billed) -> None:
    """Each service class is its own (part 21-tiers): p3's priority limit (0.3 x its 10 RPM) spent, the 429
    cools and teaches (p3, model@priority) only, on both replicas; priority moves to p4 while standard calls
    still reach p3; a flex call is counted as flex in the pool's usage."""
    window = billed.sim.quotas.window_s
    billed.sim.quotas.advance(window - billed.sim.quotas.now() % window + 0.01)  # a whole minute ahead
    billed.sim.quotas.set_rule("p3", None, {"rpm": 10})
    priority = {**BODY, "serviceTier": "priority"}
    for attempt in range(16):  # until p3 was asked a fourth priority call (its own limit is 3)
        if billed.upstream_projects().count("p3") > 3:
            break
        async with billed.http.post(
            f"{billed.edges[attempt % 2]}/v1beta/models/{MODEL}:generateContent",
            json=priority,
            headers={"x-goog-api-key": billed.token},
        ) as resp:
            assert resp.status == 200, await resp.text()
    assert billed.upstream_projects().count("p3") == 4
    classed = f"{MODEL}@priority"

    def cooled() -> bool:
        return all(
            any(c.id.subject == "p3" and c.id.model == classed for c in r.keyring.cache.view.cooldowns.values())
            for r in billed.replicas
        )

    await eventually(cooled, 3.0, "p3's priority class is not cooling on every replica")
    for replica in billed.replicas:
        view = replica.keyring.cache.view
        assert not any(c.id.subject == "p3" and c.id.model == MODEL for c in view.cooldowns.values())
        assert not any(limit_id.project == "p3" and limit_id.model == MODEL for limit_id in view.limits)
    limits = billed.replicas[0].keyring.cache.view.limits
    assert {(i.model, i.metric, q.limit) for i, q in limits.items() if i.project == "p3"} == {
        (classed, "requests_per_minute", 3)
    }
    seen = len(billed.upstream_projects())
    for attempt in range(4):
        async with billed.http.post(
            f"{billed.edges[attempt % 2]}/v1beta/models/{MODEL}:generateContent",
            json=priority,
            headers={"x-goog-api-key": billed.token},
        ) as resp:
            assert resp.status == 200
    assert set(billed.upstream_projects()[seen:]) == {"p4"}
    seen = len(billed.upstream_projects())
    statuses = [await billed.generate(edge) for _ in range(4) for edge in billed.edges]
    assert statuses == [200] * 8 and "p3" in billed.upstream_projects()[seen:], billed.upstream_projects()[seen:]
    async with billed.http.post(
        f"{billed.edges[0]}/v1beta/models/{MODEL}:generateContent",
        json={**BODY, "serviceTier": "flex"},
        headers={"x-goog-api-key": billed.token},
    ) as resp:
        assert resp.status == 200 and resp.headers.get("x-gemini-service-tier") == "flex"

    async def by_tier() -> dict[str, int]:
        for replica in billed.replicas[::-1]:  # each flushes its own counts; the first one asked reads both
            usage = await replica.admin.GetUsage(pb.GetUsageRequest(pool="main"))
        counted: dict[str, int] = {}
        for point in usage.series:
            for tier, calls in point.requests_by_tier.items():
                counted[tier] = counted.get(tier, 0) + calls
        return counted

    deadline = time.monotonic() + 3.0  # the other replica's flush reaches replica A's view through the watch
    while (counted := await by_tier()).get("flex") != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert counted.get("flex") == 1 and counted.get("priority", 0) >= 8, counted
