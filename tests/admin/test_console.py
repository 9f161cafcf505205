"""The web console in real headless Chromium against the admin app, a real keyring and a real etcd.

Needs /usr/bin/chromium (Debian: ``apt-get install -y chromium``) and the ``playwright``
Python package; Playwright's own browser download is not used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key
from services.edge.app import start_edge
from services.edge.config import EdgeSettings
from services.simulator import Behaviour, SimulatorState, start_simulator

from .conftest import ADMIN_TOKEN, AdminStack

pytestmark = pytest.mark.etcd

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
APP_JS = Path(__file__).resolve().parents[2] / "services" / "admin" / "static" / "app.js"
MODEL = "gemini-3.5-flash"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _refresh_ms() -> int:
    found = re.search(r"^const REFRESH_MS = (\d+);", APP_JS.read_text(), re.MULTILINE)
    assert found, "app.js no longer defines REFRESH_MS"
    return int(found.group(1))


REFRESH_MS = _refresh_ms()


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A Chromium page whose clock the test may move on (``page.clock``); it runs in real time otherwise."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900})
            page = await context.new_page()
            page.set_default_timeout(15_000)
            await page.clock.install()
            yield page
        finally:
            await browser.close()


async def refresh_due(page: Any) -> None:
    """The console's periodic refresh (app.js ``REFRESH_MS``) made due now: the page's clock jumps one interval
    instead of the test waiting it out; only that timer fires the refresh, so a page that stopped refreshing fails."""
    await page.clock.fast_forward(REFRESH_MS)


@dataclass
class Traffic:
    """A real edge in front of the simulator, on the test's keyring."""

    simulator: SimulatorState
    edge_url: str
    http: aiohttp.ClientSession

    async def generate(self, token: str) -> int:
        url = f"{self.edge_url}/v1beta/models/{MODEL}:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
        async with self.http.post(url, json=body, headers={"x-goog-api-key": token}) as answer:
            return answer.status


@pytest.fixture
async def traffic(admin: AdminStack) -> AsyncIterator[Traffic]:
    sim_runner, sim_url, simulator = await start_simulator()
    settings = EdgeSettings(keyring_addresses=f"127.0.0.1:{admin.replica.server.port}", upstream_base_url=sim_url)
    edge_runner, edge_url = await start_edge(settings, host="127.0.0.1", port=0)
    async with aiohttp.ClientSession() as http:
        yield Traffic(simulator, edge_url, http)
    await edge_runner.cleanup()
    await sim_runner.cleanup()


async def test_console_operator_session(page: Any, admin: AdminStack, traffic: Traffic) -> None:
    from playwright.async_api import expect

    ids = page.get_by_test_id
    await page.goto(admin.base_url + "/")

    # Log in (a wrong token first).
    await ids("login-token").fill("wrong-token-0123456789")
    await ids("login-submit").click()
    await expect(ids("login-error")).to_have_text("Wrong token.")
    await ids("login-token").fill(ADMIN_TOKEN)
    await ids("login-submit").click()
    await expect(ids("who")).to_have_text("ops")

    # A pool.
    await ids("pool-name").fill("main")
    await ids("pool-create").click()
    await expect(page.locator("[data-testid=pool-row][data-pool=main]")).to_be_visible()

    # Bulk-add 200 keys by paste (plus one malformed line).
    secrets = [fake_gemini_key(f"console-{index}") for index in range(200)]
    await ids("nav-keys").click()
    await page.locator("[data-testid=add-keys] summary").click()
    await ids("add-pool").select_option("main")
    await ids("add-text").fill("\n".join([*secrets, "AIzaNotAKey"]))
    await ids("add-submit").click()
    await expect(ids("add-result")).to_contain_text("200 added, 0 duplicate, 1 malformed")
    await expect(ids("key-row")).to_have_count(200)
    await expect(ids("keys-count")).to_have_text("1-200 of 200")

    # Disable one.
    first = ids("key-row").first
    disabled_id = await first.get_attribute("data-key-id")
    await first.get_by_test_id("key-disable").click()
    row = page.locator(f"[data-testid=key-row][data-key-id='{disabled_id}']")
    await expect(row.get_by_test_id("key-state")).to_have_text("disabled")

    # A client token, shown once.
    await ids("nav-tokens").click()
    await ids("token-pool").select_option("main")
    await ids("token-name").fill("console-app")
    await ids("token-rpd").fill("1000")
    await ids("token-create").click()
    await expect(ids("token-once")).to_be_visible()
    token = (await ids("token-value").text_content()) or ""
    assert token.startswith("kr-")
    await expect(ids("token-row")).to_have_count(1)
    await expect(ids("token-budgets")).to_have_text("all models: 1000 req/day")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept(
        json.dumps([{"model": "", "requests_per_day": 1000}, {"model": MODEL, "tokens_per_minute": 50000}]))))
    await ids("token-budget-edit").click()
    await expect(ids("token-budgets")).to_have_text(
        f"all models: 1000 req/day; {MODEL}: 50000 tokens/min")
    await ids("token-dismiss").click()
    await expect(ids("token-once")).to_be_hidden()
    assert token not in await page.content()

    # Traffic through a real edge to the simulator: every key answers 429 at first, so the
    # request fails over through three keys (all cool down), then two requests succeed.
    await ids("nav-pools").click()
    pool_row = page.locator("[data-testid=pool-row][data-pool=main]")
    await expect(pool_row.get_by_test_id("pool-requests")).to_have_text("0")
    for secret in secrets:
        traffic.simulator.set_sticky(secret, Behaviour.rate_limit(retry_delay_s=60))
    assert await traffic.generate(token) == 429
    traffic.simulator.clear()
    for _ in range(2):
        assert await traffic.generate(token) == 200
    await refresh_due(page)
    await expect(pool_row.get_by_test_id("pool-requests")).to_have_text("5", timeout=15_000)
    await expect(pool_row.get_by_test_id("pool-errors")).to_have_text("3")
    await ids("nav-tokens").click()
    await expect(ids("token-last-used")).not_to_have_text("never", timeout=15_000)

    # The console counts the cooldowns down.
    cooling_keys = (await admin.replica.admin.ListKeys(pb.ListKeysRequest(
        filter=pb.KeyFilter(cooling_model=MODEL)))).keys
    assert len(cooling_keys) == 3
    await ids("nav-keys").click()
    cooling = page.locator(f"[data-testid=key-row][data-key-id='{cooling_keys[0].key_id}'] [data-testid=key-cooldown]")
    await expect(cooling).to_contain_text(MODEL, timeout=15_000)
    left = cooling.get_by_test_id("cooldown-left")
    await expect(left).to_have_text(_countdown_pattern())
    shown = await left.text_content()
    await page.clock.fast_forward(1_000)  # a second on the page's clock: the countdown's timer ticks it
    await expect(left).not_to_have_text(shown or "", timeout=5_000)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.get_by_test_id("keys-table").screenshot(path=str(ARTIFACTS / "admin-keys-table.png"))

    # The overview counts it; no secret ever reached the page.
    await ids("nav-pools").click()
    await expect(pool_row).to_contain_text("200")
    content = await page.content()
    assert not [secret for secret in secrets if secret in content]

    # Audit shows who did it.
    await ids("nav-audit").click()
    await expect(ids("audit-row").filter(has_text="AddKeys")).to_contain_text("admin:ops")

    # Log out: back to the login form, also after a reload.
    await ids("logout").click()
    await expect(ids("login-form")).to_be_visible()
    await page.reload()
    await expect(ids("login-form")).to_be_visible()
    await expect(ids("nav-keys")).to_be_hidden()


def _countdown_pattern() -> Any:
    import re

    return re.compile(r"^[0-5]?\d:\d\d$")


async def test_console_viewer_sees_no_controls_that_change_state(page: Any, admin: AdminStack) -> None:
    """A viewer token reads; the console shows no control it cannot use, and the server says 403 anyway."""
    from playwright.async_api import expect

    from services.admin.app import start_admin
    from services.admin.config import AdminSettings

    viewer_token = "viewer-token-0123456789ab"
    data = admin.settings.model_dump()
    data["admin_tokens"] = f"{admin.settings.admin_tokens.get_secret_value()},watch:viewer:{viewer_token}"
    runner, base_url = await start_admin(AdminSettings(**data), host="127.0.0.1", port=0)
    try:
        await admin.replica.admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
        await admin.replica.admin.AddKeys(
            pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=fake_gemini_key("viewer-console"))])
        )
        await admin.replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="app"))
        ids = page.get_by_test_id
        await page.goto(base_url + "/")
        await ids("login-token").fill(viewer_token)
        await ids("login-submit").click()
        await expect(ids("who")).to_have_text("watch")
        await expect(ids("role")).to_have_text("(read only)")
        await expect(page.locator("[data-testid=pool-row][data-pool=main]")).to_be_visible()
        await expect(ids("pool-form")).to_be_hidden()
        await ids("nav-keys").click()
        await expect(ids("key-row")).to_have_count(1)
        for control in ("add-keys", "bulk-apply", "verify-unhealthy", "key-disable"):
            await expect(ids(control)).to_be_hidden()
        await ids("nav-tokens").click()
        await expect(ids("token-row")).to_have_count(1)
        for control in ("token-form", "token-rotate", "token-revoke"):
            await expect(ids(control)).to_be_hidden()
        await ids("nav-quotas").click()  # read-only: every role sees it
        await expect(ids("quotas-empty")).to_contain_text("No quota limit is known yet")
        # The server refuses a change from this session whatever the page shows.
        status = await page.evaluate(
            """async () => {
                const csrf = document.cookie.split("; ").find((c) => c.startsWith("keyring_csrf=")).split("=")[1];
                const answer = await fetch("/api/pools", {method: "POST", credentials: "same-origin",
                    headers: {"Content-Type": "application/json", "X-CSRF-Token": decodeURIComponent(csrf)},
                    body: JSON.stringify({name: "sneaky"})});
                return answer.status;
            }"""
        )
        assert status == 403
        assert [pool.name for pool in (await admin.replica.admin.ListPools(pb.ListPoolsRequest())).pools] == ["main"]
    finally:
        await runner.cleanup()


async def test_console_quotas_list_each_known_limit_with_use_remaining_and_reset(page: Any, admin: AdminStack) -> None:
    """Issue 14: the Quotas view lists every known limit (learnt from a 429 or the pool policy's); empty before any."""
    from playwright.async_api import expect

    model = MODEL
    rpc = admin.replica.admin
    await rpc.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main", policy=pb.Policy(quota_requests_per_day=500))))
    await rpc.AddKeys(
        pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=fake_gemini_key("quota-console"), project="proj-q")])
    )
    token = (await rpc.CreateToken(pb.CreateTokenRequest(pool="main", name="edge"))).token
    ids = page.get_by_test_id
    await page.goto(admin.base_url + "/")
    await ids("login-token").fill(ADMIN_TOKEN)
    await ids("login-submit").click()
    await expect(ids("who")).to_have_text("ops")
    await ids("nav-quotas").click()

    # The pool's limit is listed only once the project serves the model: nothing is known yet.
    empty = ids("quotas-empty")
    await expect(empty).to_contain_text("No quota limit is known yet")
    await expect(empty).to_contain_text("429")
    await expect(empty).to_contain_text("quota_requests_per_minute")
    await expect(ids("quotas-table")).to_be_hidden()
    await expect(ids("quota-row")).to_have_count(0)

    # One lease, answered with a 429 naming a limit of 10 requests per minute: the view's refresh shows both limits.
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    lease = (await admin.replica.lease.Acquire(pb.AcquireRequest(token_hash=token_hash, model=model))).lease
    violation = pb.QuotaViolation(quota_id="GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="10",
                                  dimensions={"model": model})  # fmt: skip
    outcome = pb.Outcome(
        http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=1, quota_violations=[violation]
    )
    await admin.replica.lease.Release(
        pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=model, outcome=outcome)
    )
    rpm = page.locator("[data-testid=quota-row][data-metric=requests_per_minute]")
    rpd = page.locator("[data-testid=quota-row][data-metric=requests_per_day]")
    await refresh_due(page)
    await expect(rpm.get_by_test_id("quota-limit")).to_have_text("10", timeout=15_000)
    await expect(empty).to_be_hidden()
    await expect(ids("quota-row")).to_have_count(2)
    for row in (rpm, rpd):
        await expect(row.get_by_test_id("quota-project")).to_have_text("proj-q")
        await expect(row.get_by_test_id("quota-model")).to_have_text(model)
        await expect(row.get_by_test_id("quota-reset")).to_contain_text(re.compile(r"\d{1,2}:\d\d:\d\d"))
    await expect(rpm.get_by_test_id("quota-source")).to_have_text(re.compile(r"^learnt from a 429, .*\d:\d\d"))
    await expect(rpm.get_by_test_id("quota-reset-in")).to_have_text(re.compile(r"^(in \d{1,2} s|in 1 min|now)$"))
    # The minute may end between the release and this read: used and remaining from one rendering.
    used, remaining = await rpm.evaluate(
        "row => ['quota-used', 'quota-remaining'].map((id) => row.querySelector(`[data-testid=${id}]`).textContent)"
    )
    assert (used, remaining) in {("1", "9"), ("0", "10")}
    await expect(rpd.get_by_test_id("quota-limit")).to_have_text("500")
    await expect(rpd.get_by_test_id("quota-source")).to_have_text("set by the pool policy")
    await expect(rpd.get_by_test_id("quota-used")).to_have_text("1")
    await expect(rpd.get_by_test_id("quota-remaining")).to_have_text("499")
    await expect(rpd.get_by_test_id("quota-reset-in")).to_have_text(re.compile(r"^in \d+ (h( \d+ min)?|min|s)$"))
    ARTIFACTS.mkdir(exist_ok=True)
    await page.locator("#view-quotas").screenshot(path=str(ARTIFACTS / "admin-quotas.png"))

    # Filters (the API's pool and project).
    await ids("quota-filter-project").fill("other")
    await ids("quota-filter-project").press("Enter")
    await expect(empty).to_contain_text("No quota limit is known yet for this pool or project")
    await expect(ids("quota-row")).to_have_count(0)
    await ids("quota-filter-project").fill("proj-q")
    await ids("quota-filter-project").press("Enter")
    await expect(ids("quota-row")).to_have_count(2)
    await ids("quota-filter-pool").select_option("main")
    await expect(ids("quota-row")).to_have_count(2)
    await expect(empty).to_be_hidden()
