"""Learned quota limits through a real keyring replica and the admin API (issue 14)."""

from __future__ import annotations

import asyncio
import hashlib
import time

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .conftest import AdminStack, Api
from .test_api import make_pool, secrets_for

MODEL = "gemini-3.5-flash"


async def test_a_429s_limits_are_listed_per_project_with_use_remaining_and_reset(api: Api, admin: AdminStack) -> None:
    await make_pool(api, policy={"quota_requests_per_day": 500})  # the operator's value wins
    token = (await api.post("/api/tokens", {"pool": "main", "name": "edge"})).body["token"]
    added = await api.post(
        "/api/pools/main/keys", {"keys": [{"secret": secrets_for(api, "q", 1)[0], "project": "proj-q"}]}
    )
    assert added.status == 200 and added.body["added"] == 1, added.text
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    lease = (await admin.replica.lease.Acquire(pb.AcquireRequest(token_hash=token_hash, model=MODEL))).lease
    violations = [
        pb.QuotaViolation(quota_id="GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="10",
                          dimensions={"model": MODEL}),
        pb.QuotaViolation(quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier", quota_value="250",
                          dimensions={"model": MODEL}),
    ]  # fmt: skip
    outcome = pb.Outcome(
        http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=1, quota_violations=violations
    )
    await admin.replica.lease.Release(
        pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL, outcome=outcome)
    )
    deadline = time.monotonic() + 10
    while True:
        rows = (await api.get("/api/quotas?project=proj-q")).body["quotas"]
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    by_metric = {row["metric"]: row for row in rows}
    rpm, rpd = by_metric["requests_per_minute"], by_metric["requests_per_day"]
    assert (rpm["limit"], rpm["source"], rpm["used"]) == (10, "learnt", 1)
    assert rpm["remaining"] == rpm["replica_share"] - 1 and rpm["learnt_at"].endswith("Z")
    assert rpm["resets_at"].endswith("Z") and rpm["pool"] == "main" and rpm["model"] == MODEL
    assert (rpd["limit"], rpd["source"]) == (500, "operator")
    assert (await api.get("/api/quotas?pool=nope")).status == 404
    assert (await api.get("/api/quotas?project=other")).body["quotas"] == []
