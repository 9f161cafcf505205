"""Tokens-per-minute pacing through the real parts keeps upstream 429s away (issue 14).

Real servers: etcd, a keyring replica, the edge, the simulator as the upstream.
Two projects, one key each; the simulator admits 1000 input tokens per
project per minute (429 without RetryInfo beyond); the pool's operator limit
says the same (``quota_input_tokens_per_minute``). Calls of 300 input tokens:
keyring reserves the edge's estimate at lease, so each project takes 3 calls a
minute, and the next call is refused by keyring (a 429 with the exact
Retry-After: the minute's end) without reaching the upstream.
"""

from __future__ import annotations

import asyncio
import math
import time

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from tests.e2e.conftest import MakeStack, eventually
from tests.integration.conftest import kek, start_replica  # noqa: F401

MODEL = "gemini-3.5-flash"
TPM = 1000
TEXT = "x" * 1200  # 300 tokens as the edge estimates and the simulator counts (4 characters a token)
BODY = {"contents": [{"role": "user", "parts": [{"text": TEXT}]}]}


async def test_a_known_tpm_limit_paces_leases_so_the_upstream_never_answers_429(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=2, pool_policy=pb.Policy(quota_input_tokens_per_minute=TPM))
    secrets = {secret: f"proj-{i}" for i, secret in enumerate(stack.keys)}
    for secret, project in secrets.items():
        changes = pb.KeyInput(project=project)
        await stack.replica.admin.UpdateKey(
            pb.UpdateKeyRequest(key_id=stack.key_ids[secret], changes=changes, update_fields=["project"])
        )
        stack.sim.set_project(secret, project)
    view = stack.replica.keyring.cache.view
    await eventually(lambda: {k.project for k in view.keys.values()} == set(secrets.values()), 5.0, "no projects")
    stack.sim.quotas.set_rule(None, MODEL, {"tpm": TPM, "retry_info": False})
    assert stack.http is not None
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent"

    async def post() -> tuple[int, str, int]:
        assert stack.http is not None
        async with stack.http.post(url, json=BODY, headers=stack.gemini_headers()) as reply:
            payload = await reply.json()
            tokens = payload.get("usageMetadata", {}).get("promptTokenCount", 0) if reply.status == 200 else 0
            return reply.status, reply.headers.get("Retry-After", ""), tokens

    # Not across a minute's end: a call leased in one minute and admitted by the simulator in the next counts
    # in different windows (by design, at most one window's worth); the test is about pacing within one.
    await eventually(lambda: time.time() % 60 < 57, 4.0, "the minute does not turn")
    served = served_tokens = 0
    refused: list[tuple[str, float]] = []
    for _ in range(10):  # bursts of 4 concurrent calls until keyring refuses one (a minute holds 6)
        answers = await asyncio.gather(*(post() for _ in range(4)))
        at = time.time()
        for status, retry_after, tokens in answers:
            assert status in (200, 429), status
            if status == 200:
                served, served_tokens = served + 1, served_tokens + tokens
            else:
                refused.append((retry_after, at))
        if refused:
            break
    assert refused, "keyring never refused a call over the projects' tokens-per-minute limits"
    assert served_tokens == 300 * served
    upstream_calls = sum(stack.sim.counts().get(secret, 0) for secret in secrets)
    assert upstream_calls == served  # every call that reached the upstream was admitted: no upstream 429
    for retry_after, at in refused:
        assert abs(int(retry_after) - math.ceil(60 - at % 60)) <= 1, (retry_after, at % 60)
    await stack.no_lease_held()


async def test_a_request_larger_than_the_tpm_limit_is_the_clients_fault_and_cools_nothing(
    make_stack: MakeStack,
) -> None:
    """Issue 14: the upstream's 429 names a tokens-per-minute limit below the edge's estimate of the request."""
    stack = await make_stack(keys=2)
    stack.sim.quotas.set_rule(None, MODEL, {"tpm": 100, "retry_info": False})
    assert stack.http is not None
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent"
    big = {"contents": [{"role": "user", "parts": [{"text": "y" * 2400}]}]}  # 600 tokens: six times the limit
    async with stack.http.post(url, json=big, headers=stack.gemini_headers()) as reply:
        status, payload = reply.status, await reply.json()
    assert status == 429, payload
    assert payload["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert sum(stack.sim.counts().values()) == 1  # no other key tried: the request is at fault, not the key
    view = stack.replica.keyring.cache.view
    assert not view.cooldowns  # nothing cooled
    assert all(key.consecutive_failures == 0 for key in view.keys.values())
    small = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    async with stack.http.post(url, json=small, headers=stack.gemini_headers()) as reply:
        assert reply.status == 200
    await stack.no_lease_held()


async def test_a_body_over_the_parse_budget_is_forwarded_unread_and_not_estimated(make_stack: MakeStack) -> None:
    """The input estimate comes from the body the edge parsed within ``max_json_elements``, never a parse of its own.

    Over the budget the edge reads nothing of the body, so it cannot tell an oversized request: the upstream's
    429 counts as the project's quota (another key is tried), unlike the estimated request of the test above.
    """
    stack = await make_stack(keys=2, max_json_elements=16)
    stack.sim.quotas.set_rule(None, MODEL, {"tpm": 100, "retry_info": False})
    assert stack.http is not None
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent"
    parts = [{"text": "y" * 240} for _ in range(10)]  # 600 tokens in more than 16 JSON elements
    async with stack.http.post(
        url, json={"contents": [{"role": "user", "parts": parts}]}, headers=stack.gemini_headers()
    ) as reply:
        assert reply.status == 429
    assert sum(stack.sim.counts().values()) == 2  # not blamed on the request: it was not read
    await stack.no_lease_held()
