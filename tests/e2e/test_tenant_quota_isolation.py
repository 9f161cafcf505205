"""Tenants of a project cannot spend its quota counters for each other (issue 18, findings 4, 9, 10).

Real servers: etcd, a keyring replica, the edge, the simulator as the upstream.
One pool, one key in one project, an operator's tokens-per-minute limit
(keyring paces by it), two client tokens. The input estimate a call reserves
is settled to what the answer counted, so requests the upstream refuses (400)
leave nothing for the other tenant to wait on; and model ids the upstream
does not serve (404) leave no quota row and no metric series behind. An edge
identity reserves at most ``KEYRING_MAX_INPUT_ESTIMATE`` for one lease.
"""

from __future__ import annotations

import asyncio
import time

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.domain.limits import QuotaMetric
from services.keyring.metrics import ViewCollector
from services.simulator.state import Behaviour
from tests.e2e.conftest import MakeStack, Stack, eventually
from tests.integration.conftest import StartReplica, kek, make_pool, start_replica  # noqa: F401
from tests.integration.test_keyring_metrics import scrape

MODEL = "gemini-3.5-flash"
TPM = 1000


def body(tokens: int) -> dict[str, object]:
    """A generate request of ``tokens`` input tokens as the edge estimates them (4 bytes a token)."""
    return {"contents": [{"role": "user", "parts": [{"text": "x" * (4 * tokens)}]}]}


async def shared_project(make_stack: MakeStack) -> tuple[Stack, str]:
    """The stack (its one key in project ``proj-shared``, any model allowed) and a second token of its pool."""
    stack = await make_stack(keys=1, allowed_models=(), pool_policy=pb.Policy(quota_input_tokens_per_minute=TPM))
    [secret] = stack.keys
    changes = pb.KeyInput(project="proj-shared")
    await stack.replica.admin.UpdateKey(
        pb.UpdateKeyRequest(key_id=stack.key_ids[secret], changes=changes, update_fields=["project"])
    )
    stack.sim.set_project(secret, "proj-shared")
    view = stack.replica.keyring.cache.view
    await eventually(lambda: {k.project for k in view.keys.values()} == {"proj-shared"}, 5.0, "no project")
    other = await stack.replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="tenant-b"))
    return stack, other.token


async def post(stack: Stack, token: str, model: str, data: dict[str, object]) -> int:
    assert stack.http is not None
    url = f"{stack.edge_url}/v1beta/models/{model}:generateContent"
    async with stack.http.post(url, json=data, headers=stack.gemini_headers(token)) as reply:
        await reply.read()
        return reply.status


async def quota_state(stack: Stack) -> tuple[set[tuple[str, str, str]], set[tuple[str, ...]]]:
    """(admin ListQuotas rows, keyring_quota_* series) as (project, model, metric) and (name, labels...)."""
    listed = await stack.replica.admin.ListQuotas(pb.ListQuotasRequest())
    rows = {(row.project, row.model, row.metric) for row in listed.quotas}
    keyring = stack.replica.keyring
    series = {
        (sample.name, *sample.labels.values())
        for family in ViewCollector(keyring.cache, keyring.desk).collect()
        if family.name.startswith("keyring_quota")
        for sample in family.samples
    }
    return rows, series


async def test_requests_the_upstream_refuses_do_not_pace_the_other_tenant_out(make_stack: MakeStack) -> None:
    stack, tenant_b = await shared_project(make_stack)
    [secret] = stack.keys
    # Tenant A: six large requests the upstream answers 400 (150 tokens each: 900 of the minute's 1000).
    stack.sim.script(secret, *[Behaviour("server_error", status=400, message="bad request")] * 6, model=MODEL)
    for _ in range(6):
        assert await post(stack, stack.token, MODEL, body(150)) == 400
    assert sum(stack.sim.counts().values()) == 6
    await stack.no_lease_held()  # every release has reached keyring
    # Tenant B: three calls of 300 tokens fit the project's minute (before: 900 kept + 300 > 1000, a 429).
    assert [await post(stack, tenant_b, MODEL, body(300)) for _ in range(3)] == [200, 200, 200]
    await stack.no_lease_held()
    quotas = stack.replica.keyring.desk.allocator.quotas
    used = quotas.used("proj-shared", MODEL, QuotaMetric.INPUT_TOKENS_PER_MINUTE, time.time())
    assert used <= 900 and used % 300 == 0, used  # B's calls as the upstream counted them, nothing of A's


async def test_model_ids_the_upstream_does_not_serve_leave_no_quota_rows_or_series(make_stack: MakeStack) -> None:
    stack, tenant_b = await shared_project(make_stack)
    assert await post(stack, tenant_b, MODEL, body(10)) == 200  # a served model: its row and series
    await stack.no_lease_held()  # its release (settling the estimate) reached keyring
    before = await quota_state(stack)
    assert before[0] == {("proj-shared", MODEL, "input_tokens_per_minute")}
    assert before[1]
    gate = asyncio.Semaphore(16)

    async def junk(i: int) -> int:
        async with gate:
            return await post(stack, stack.token, f"gemini-no-such-{i}", body(10))

    statuses = await asyncio.gather(*(junk(i) for i in range(300)))
    assert set(statuses) == {404}
    assert sum(stack.sim.counts().values()) == 301  # each leased and answered 404 by the upstream
    await stack.no_lease_held()
    assert await quota_state(stack) == before
    assert len(stack.replica.keyring.desk.allocator.quotas) == 1  # no counter kept for any of them


async def test_an_edge_identity_reserves_at_most_one_leases_estimate(start_replica: StartReplica) -> None:  # noqa: F811
    """Finding 10: an Acquire (with the edge's certificate) naming a huge estimate is clamped and counted."""
    replica = await start_replica(max_input_estimate=5000)
    token = await make_pool(replica, policy=pb.Policy(quota_input_tokens_per_minute=1_000_000))
    key = pb.KeyInput(secret=fake_gemini_key("clamp"), project="proj-c")
    await replica.admin.AddKeys(pb.AddKeysRequest(pool="main", keys=[key]))
    view = replica.keyring.cache.view
    await eventually(lambda: len(view.keys) == 1, 5.0, "the key is not in the view")
    request = pb.AcquireRequest(token_hash=token, model=MODEL, estimated_input_tokens=10**15)
    lease = (await replica.lease.Acquire(request)).lease
    quotas = replica.keyring.desk.allocator.quotas
    assert quotas.used("proj-c", MODEL, QuotaMetric.INPUT_TOKENS_PER_MINUTE, time.time()) in (
        5000,
        0,
    )  # 0: a new minute
    assert quotas.used("proj-c", MODEL, QuotaMetric.INPUT_TOKENS_PER_DAY, time.time()) == 5000
    _, samples = await scrape(replica.server.metrics_port)
    assert samples[("keyring_input_estimates_clamped_total", ())] == 1
    cancelled = pb.Outcome(transport=pb.Outcome.TRANSPORT_CANCELLED)
    await replica.lease.Release(
        pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL, outcome=cancelled)
    )
    assert quotas.used("proj-c", MODEL, QuotaMetric.INPUT_TOKENS_PER_DAY, time.time()) == 0  # a cancel keeps nothing
