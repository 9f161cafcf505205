"""Billing accounts in the console's Overview and in keyring's metrics (issue 21), in headless Chromium.

One pool, keys in five projects: p1 and p2 of account acct-a (Tier 2), p3 of acct-b (Tier 1), p4 and p5 with
no account given. A 402 through a p1 key cools acct-a (both its projects); a spend-limit 429 through p4's
cools that project only (no account known). The Overview's table shows a row per account with what the API
says, and keyring exports ``keyring_billing_account_cooling`` for the cooling account only.
"""

from __future__ import annotations

import calendar
import hashlib
import time
from typing import Any

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key

from .conftest import ADMIN_TOKEN, AdminStack
from .test_console import page as page  # the headless Chromium fixture

pytestmark = pytest.mark.etcd

MODEL = "gemini-3.5-flash"
PROJECTS = {"p1": ("acct-a", 2), "p2": ("acct-a", 2), "p3": ("acct-b", 1), "p4": ("", 0), "p5": ("", 0)}
DEPLETED = pb.Outcome(http_status=402, error_status="RESOURCE_EXHAUSTED",
                      error_message="Your prepayment credits are depleted.")  # fmt: skip
SPEND_LIMITED = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", quota_violations=[
    pb.QuotaViolation(quota_id="SpendBasedRateLimitPerTenMinutesPerBillingAccount", quota_value="10")])  # fmt: skip


async def _answer_through(admin: AdminStack, token: str, project: str, outcome: pb.Outcome) -> None:
    """One call leased a key of ``project`` (every other project excluded), released with Google's answer."""
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    others = [name for name in PROJECTS if name != project]
    request = pb.AcquireRequest(token_hash=token_hash, model=MODEL, exclude_projects=others)
    lease = (await admin.replica.lease.Acquire(request)).lease
    release = pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL, outcome=outcome)
    await admin.replica.lease.Release(release)


async def test_billing_accounts_are_rows_of_the_overview_and_cooling_ones_a_metric(
    page: Any, admin: AdminStack
) -> None:
    from playwright.async_api import expect

    rpc = admin.replica.admin
    await rpc.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="billed")))
    keys = [
        pb.KeyInput(secret=fake_gemini_key(f"billing-{project}"), project=project, billing_account=account,
                    billing_tier=tier)
        for project, (account, tier) in PROJECTS.items()
    ]  # fmt: skip
    await rpc.AddKeys(pb.AddKeysRequest(pool="billed", keys=keys))
    token = (await rpc.CreateToken(pb.CreateTokenRequest(pool="billed", name="app"))).token
    await _answer_through(admin, token, "p1", DEPLETED)
    await _answer_through(admin, token, "p4", SPEND_LIMITED)

    ids = page.get_by_test_id
    await page.goto(admin.base_url + "/")
    await ids("login-token").fill(ADMIN_TOKEN)
    await ids("login-submit").click()
    await ids("nav-overview").click()
    await ids("overview-pool").select_option("billed")
    await expect(page.locator("[data-testid=billing-row]")).to_have_count(3)
    api = await page.evaluate("async () => (await fetch('/api/pools/billed/overview')).json()")
    shown = await page.locator("[data-testid=billing-row]").evaluate_all(
        "rows => rows.map((row) => ({...row.dataset, cells: [...row.cells].map((cell) => cell.textContent)}))"
    )

    rows = {row["account"]: row for row in api["billing_accounts"]}
    assert [row["account"] for row in api["billing_accounts"]] == ["acct-a", "acct-b", ""]
    depleted, serving, unknown = rows["acct-a"], rows["acct-b"], rows[""]
    assert (depleted["state"], depleted["cause"], depleted["projects"], depleted["tier"]) == (
        "cooling", "billing_depleted", ["p1", "p2"], 2)  # fmt: skip
    assert (serving["state"], serving["cause"], serving["until"], serving["tier"]) == ("serving", "", None, 1)
    assert (unknown["state"], unknown["cause"], unknown["cooling_projects"]) == ("cooling", "spend_limit", ["p4"])
    assert [(row["account"], row["state"], row["cause"], row["until"], row["projects"], int(row["tier"]))
            for row in shown] == [
        (row["account"], row["state"], row["cause"], row["until"] or "", " ".join(row["projects"]), row["tier"])
        for row in api["billing_accounts"]
    ]  # fmt: skip
    assert shown[0]["cells"][:5] == ["acct-a", "Tier 2", "p1, p2", "2", "cooling"]
    assert shown[0]["cells"][5] == "prepaid credits spent (402)"  # the cause in words, not only a code
    assert shown[2]["cells"][0] == "(not given)" and "cooling: p4" in shown[2]["cells"][2]

    registry = admin.replica.server.metrics.registry
    left = registry.get_sample_value(
        "keyring_billing_account_cooling", {"pool": "billed", "account": "acct-a", "cause": "billing_depleted"}
    )
    until = calendar.timegm(time.strptime(depleted["until"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert left is not None and abs(left - (until - time.time())) < 5
    assert registry.get_sample_value(
        "keyring_billing_account_cooling", {"pool": "billed", "account": "acct-b", "cause": "billing_depleted"}
    ) is None  # fmt: skip
    billing = [m for m in registry.collect() if m.name == "keyring_billing_account_cooling"]
    exported = {sample.labels["account"] for m in billing for sample in m.samples}
    assert exported == {"acct-a"}  # a project with no account is no account's
