"""The console's Overview in headless Chromium: the charts' data (SVG marks' data-* and labels) equals the API's.

An empty pool, a busy pool (calls leased and released at a real keyring replica on a real etcd), then keys
cooling (a 429 and a 503): refreshed live, without a reload. Screenshots go to $KEYRING_SCREENSHOTS_DIR when set.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key

from .conftest import ADMIN_TOKEN, AdminStack, Api
from .test_console import page as page  # the headless Chromium fixture
from .test_console import refresh_due

pytestmark = pytest.mark.etcd

MODEL = "gemini-3.5-flash"
OK = pb.Outcome(http_status=200, input_tokens=12, output_tokens=30)
RATE_LIMITED = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=60_000)
DAY_SPENT = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", quota_violations=[pb.QuotaViolation(
    quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier", quota_value="250", dimensions={"model": MODEL})])


async def _call(admin: AdminStack, token: str, outcome: pb.Outcome) -> None:
    """One upstream call as the edge reports it: a lease for the token, released with Google's answer."""
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    lease = (await admin.replica.lease.Acquire(pb.AcquireRequest(token_hash=token_hash, model=MODEL))).lease
    await admin.replica.lease.Release(
        pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL, outcome=outcome)
    )


async def _shown(page: Any) -> dict[str, Any]:
    """What the charts carry: every mark's data, read from the DOM."""
    return await page.evaluate(
        """() => {
            const marks = (id) => [...document.querySelectorAll(`#view-overview [data-testid=${id}]`)]
                .map((mark) => ({...mark.dataset}));
            const totals = document.querySelector("[data-testid=traffic-totals]").dataset;
            return {pool: document.querySelector("#overview-charts").dataset.pool,
                    requests: Number(totals.requests), errors: Number(totals.errors),
                    series: marks("series-bar"), parts: marks("series-part"), states: marks("state-bar"),
                    causes: marks("cause-bar"), quotas: marks("quota-bar"), tokens: marks("token-bar"),
                    empty: [...document.querySelectorAll("#view-overview [data-testid=chart-empty]")]
                        .filter((p) => p.offsetParent).length};
        }"""
    )


async def _api(page: Any, pool: str) -> dict[str, Any]:
    return await page.evaluate(
        "async (pool) => (await fetch(`/api/pools/${pool}/overview`, {credentials: 'same-origin'})).json()", pool
    )


def _assert_charts_match(shown: dict[str, Any], api: dict[str, Any]) -> None:
    """Every figure of the API answer is on the page, in the mark that charts it."""
    assert shown["pool"] == api["pool"]
    assert (shown["requests"], shown["errors"]) == (api["requests"], api["errors"])
    assert len(shown["series"]) == 2 * len(api["series"])  # a requests and an errors bar per five minutes
    for name in ("requests", "errors"):  # the buckets with calls (the window may move by one between the two reads)
        bars = {bar["start"]: int(bar["value"]) for bar in shown["series"] if bar["series"] == name}
        assert {k: v for k, v in bars.items() if v} == {p["start"]: p[name] for p in api["series"] if p[name]}
        assert sum(bars.values()) == api[name]
    parts = {(part["start"], part["part"]): int(part["value"]) for part in shown["parts"]}
    assert parts == {(p["start"], kind): n for p in api["series"] for kind, n in p["errors_by_kind"].items()}
    states = {bar["state"]: int(bar["value"]) for bar in shown["states"]}
    if sum(api["keys_by_state"].values()):
        assert states == {**api["keys_by_state"], "cooling": api["keys_cooling"]}
    else:
        assert states == {}
    assert {bar["cause"]: int(bar["value"]) for bar in shown["causes"]} == api["cooldowns_by_cause"]
    assert [(bar["project"], bar["metric"], int(bar["value"]), float(bar["headroom"])) for bar in shown["quotas"]] == [
        (row["project"], row["metric"], row["used"], row["headroom_pct"]) for row in api["quotas"]
    ]
    assert [(bar["label"], int(bar["value"]), int(bar["errors"])) for bar in shown["tokens"]] == [
        (row["name"], row["requests"], row["errors"]) for row in api["busiest_tokens"]
    ]


async def _screenshot(page: Any, name: str) -> None:
    directory = os.environ.get("KEYRING_SCREENSHOTS_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        await page.locator("#view-overview").screenshot(path=str(Path(directory) / f"overview-{name}.png"))


async def test_overview_charts_show_the_pools_figures_live(page: Any, admin: AdminStack) -> None:
    from playwright.async_api import expect

    rpc = admin.replica.admin
    await rpc.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="busy", policy=pb.Policy(quota_requests_per_day=100))))
    await rpc.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="quiet")))
    # A 429 cools the key's project: one project per key, so the others still serve.
    keys = [pb.KeyInput(secret=fake_gemini_key(f"overview-{n}"), project=f"proj-{n}") for n in range(3)]
    await rpc.AddKeys(pb.AddKeysRequest(pool="busy", keys=keys))
    app = (await rpc.CreateToken(pb.CreateTokenRequest(pool="busy", name="busy-app"))).token
    batch = (await rpc.CreateToken(pb.CreateTokenRequest(pool="busy", name="batch-job"))).token

    ids = page.get_by_test_id
    await page.goto(admin.base_url + "/")
    await ids("login-token").fill(ADMIN_TOKEN)
    await ids("login-submit").click()
    await ids("nav-overview").click()

    # An empty pool: the hour's 13 five-minute buckets all zero, and a sentence instead of each empty chart.
    await ids("overview-pool").select_option("quiet")
    charts = page.locator("#overview-charts[data-pool=quiet]")
    await expect(charts).to_be_attached()
    shown, api = await _shown(page), await _api(page, "quiet")
    assert (api["requests"], api["errors"], api["busiest_tokens"], api["quotas"]) == (0, 0, [], [])
    assert len(api["series"]) == 13 and not any(p["requests"] for p in api["series"])
    _assert_charts_match(shown, api)
    assert shown["empty"] == 4  # keys, cooldowns, quotas, tokens
    await _screenshot(page, "empty-pool")

    # A busy pool: eight calls by two tokens.
    for token, count in ((app, 6), (batch, 2)):
        for _ in range(count):
            await _call(admin, token, OK)
    await ids("overview-pool").select_option("busy")
    await expect(page.locator("#overview-charts[data-pool=busy]")).to_be_attached()
    await expect(ids("traffic-totals")).to_have_attribute("data-requests", "8")
    shown, api = await _shown(page), await _api(page, "busy")
    assert (api["requests"], api["errors"]) == (8, 0)
    assert api["keys_by_state"]["active"] == 3 and api["cooldowns_by_cause"] == {}
    assert [(t["name"], t["requests"]) for t in api["busiest_tokens"]] == [("busy-app", 6), ("batch-job", 2)]
    assert {(q["metric"], q["limit"]) for q in api["quotas"]} == {("requests_per_day", 100)}
    assert sum(q["used"] for q in api["quotas"]) == 8
    _assert_charts_match(shown, api)
    await _screenshot(page, "busy-pool")

    # Keys cooling: a 429 (rate limit, 60 s) and a 429 naming the daily quota; the page refreshes by itself.
    await _call(admin, app, RATE_LIMITED)
    await _call(admin, app, DAY_SPENT)
    await refresh_due(page)
    await expect(ids("traffic-totals")).to_have_attribute("data-errors", "2", timeout=10_000)
    await expect(page.locator("[data-testid=cause-bar]")).to_have_count(2)
    shown, api = await _shown(page), await _api(page, "busy")
    assert (api["requests"], api["errors"], api["keys_cooling"]) == (10, 2, 2)
    assert api["cooldowns_by_cause"] == {"daily_quota": 1, "rate_limit": 1}
    assert [p["errors_by_kind"] for p in api["series"] if p["errors"]] == [{"daily_quota": 1, "rate_limited": 1}]
    assert api["busiest_tokens"][0] == {**api["busiest_tokens"][0], "name": "busy-app", "requests": 8, "errors": 2}
    _assert_charts_match(shown, api)
    # Not colour alone: each cause's mark has its own pattern, and its number is written beside it.
    fills = await page.locator("[data-testid=cause-bar]").evaluate_all("bs => bs.map((b) => b.getAttribute('fill'))")
    assert len(set(fills)) == 2
    await expect(page.locator("[data-testid=chart-causes]")).to_contain_text("rate_limit")
    await _screenshot(page, "cooling-keys")


async def test_overview_of_an_unknown_pool_is_a_404(api: Api) -> None:
    """The API answers in the admin dialect."""
    answer = await api.get("/api/pools/nope/overview")
    assert answer.status == 404
    assert answer.body["error"]["status"] == "NOT_FOUND" and "nope" in answer.body["error"]["message"]
