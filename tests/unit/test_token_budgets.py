"""Client-token budgets on the in-memory store under a fake clock: per minute, per day, per model, reset times."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from services.common.naming import token_hash
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.administration import Administration, KeyInput
from services.keyring.codec import decode_token, encode
from services.keyring.core import Keyring
from services.keyring.domain.admissions import Published
from services.keyring.domain.budgets import BudgetMeter
from services.keyring.domain.errors import InvalidArgument, NoKeyAvailable
from services.keyring.domain.identity import GEMINI_KEY_PATTERN
from services.keyring.domain.leasing import SlidingWindow
from services.keyring.domain.models import ClientToken, KeyState, Outcome, Pool, TokenBudget
from services.keyring.sealing import SecretBox, generate_kek
from services.keyring.store import MemoryStore

from .builders import FakeChecker, FakeClock

MODEL = "gemini-3.5-flash"
OTHER = "gemini-3.1-pro-preview"
START = 1_750_000_040.0  # 20 s into an epoch minute; the UTC day ends at 1_750_032_000


@dataclass
class Budgeted:
    clock: FakeClock
    keyring: Keyring
    admin: Administration
    token: ClientToken
    hashed: str
    store: MemoryStore
    box: SecretBox

    async def call(self, model: str = MODEL, tokens: int = 0) -> None:
        grant, _ = self.keyring.desk.acquire(self.hashed, model)
        outcome = Outcome(200, input_tokens=tokens // 2, output_tokens=tokens - tokens // 2)
        assert await self.keyring.desk.release(grant.lease.lease_id, grant.key.key_id, model, outcome)

    def refused(self, model: str = MODEL) -> NoKeyAvailable:
        with pytest.raises(NoKeyAvailable) as refused:
            self.keyring.desk.acquire(self.hashed, model)
        return refused.value

    async def budgets(self, *budgets: TokenBudget) -> None:
        self.token = await self.admin.tokens.update_token(self.token.token_id, budgets=budgets)


@pytest.fixture
async def world() -> AsyncIterator[Budgeted]:
    store, clock, box = MemoryStore(), FakeClock(START), SecretBox.from_base64(generate_kek())
    keyring = Keyring(store, box, FakeChecker(), replica_id="r1", janitor_interval_s=3600, clock=clock)
    await keyring.start(timeout_s=2)
    admin = Administration(keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=10)
    await admin.pools.create_pool(Pool("main"))
    await admin.keys.add_keys("main", [KeyInput(secret=fake_gemini_key(f"k{i}"), project="p") for i in range(2)])
    token, clear = await admin.tokens.create_token("main", "budgeted")
    yield Budgeted(clock, keyring, admin, token, token_hash(clear), store, box)
    await keyring.stop()
    await store.close()


def untouched_keys(world: Budgeted) -> None:
    view = world.keyring.cache.view
    assert all(key.state is KeyState.ACTIVE and not key.consecutive_failures for key in view.keys.values())
    assert not view.cooldowns


async def test_requests_per_minute_refused_until_the_minute_ends(world: Budgeted) -> None:
    await world.budgets(TokenBudget(requests_per_minute=3))
    for _ in range(3):
        await world.call()
    refused = world.refused()
    assert "client token's budget (requests per minute)" in str(refused) and "not the pool's keys" in str(refused)
    assert refused.retry_after_s == pytest.approx(40.0)  # the epoch minute's end
    untouched_keys(world)
    world.clock.now += 40
    await world.call()


async def test_tokens_per_day_counted_after_the_call_and_reset_at_utc_midnight(world: Budgeted) -> None:
    await world.budgets(TokenBudget(tokens_per_day=1000))
    await world.call(tokens=600)
    await world.call(tokens=600)  # admitted while not spent: the last call overshoots by its own size
    world.clock.now += 3600
    refused = world.refused()
    assert "tokens per day" in str(refused)
    assert refused.retry_after_s == pytest.approx(1_750_032_000 - world.clock.now)
    untouched_keys(world)
    world.clock.now = 1_750_032_000.0
    await world.call()


async def test_requests_per_day_outlasts_the_minute(world: Budgeted) -> None:
    await world.budgets(TokenBudget(requests_per_day=2, requests_per_minute=10))
    await world.call()
    await world.call()
    world.clock.now += 120
    assert "requests per day" in str(world.refused())


async def test_a_models_budget_leaves_other_models_alone(world: Budgeted) -> None:
    await world.budgets(TokenBudget(model=f"models/{MODEL}", tokens_per_minute=100), TokenBudget(requests_per_minute=5))
    assert world.token.budgets[0].model == MODEL  # normalised like allow-lists
    await world.call(MODEL, tokens=150)
    assert f"tokens per minute for model {MODEL!r}" in str(world.refused(MODEL))
    for _ in range(4):
        await world.call(OTHER, tokens=150)  # 1 + 4 = the all-models budget's 5
    assert "requests per minute" in str(world.refused(OTHER))  # the all-models budget counted MODEL's call too


async def test_budgets_are_split_across_live_replicas(world: Budgeted) -> None:
    other = Keyring(world.store, world.box, FakeChecker(), replica_id="r2", janitor_interval_s=3600, clock=world.clock)
    await other.start(timeout_s=2)
    try:
        await world.budgets(TokenBudget(requests_per_minute=4))
        for _ in range(50):
            if world.keyring.cache.replica_count() == 2 and other.cache.view.tokens[world.token.token_id].budgets:
                break
            await asyncio.sleep(0.01)
        second = Budgeted(world.clock, other, world.admin, world.token, world.hashed, world.store, world.box)
        for replica in (world, second):
            await replica.call()
            await replica.call()
            assert "requests per minute" in str(replica.refused())  # each replica admits its half
    finally:
        await other.stop()


async def test_budgets_stored_edited_and_checked(world: Budgeted) -> None:
    with pytest.raises(InvalidArgument):
        await world.budgets(TokenBudget(requests_per_day=-1))
    with pytest.raises(InvalidArgument):
        await world.budgets(TokenBudget(model="m", requests_per_day=1), TokenBudget(model="m", tokens_per_day=1))
    with pytest.raises(InvalidArgument):
        await world.budgets(TokenBudget(model="m"))
    await world.budgets(TokenBudget(requests_per_day=7))
    record = world.keyring.cache.view.tokens[world.token.token_id]
    assert decode_token(orjson.loads(encode(record)), record.revision) == record
    await world.budgets()
    assert world.keyring.cache.view.tokens[world.token.token_id].budgets == ()


async def test_only_the_models_a_budget_names_get_windows_of_their_own(world: Budgeted) -> None:
    """Issue 18, finding 9: client-chosen model ids each kept a window per span until the day ended."""
    await world.budgets(TokenBudget(model=MODEL, requests_per_minute=100), TokenBudget(tokens_per_day=10**9))
    for i in range(50):
        await world.call(f"junk-{i}", tokens=2)
    await world.call(MODEL, tokens=2)
    meter = world.keyring.desk.allocator.budgets
    assert len(meter._windows) == 4  # every model's minute and day, MODEL's minute and day: not one per junk id
    assert "tokens per day" not in str(meter.spent(world.token.token_id, world.token.budgets, "junk-7", 1, START))


def test_survivors_take_off_what_departed_instances_admitted_in_the_window() -> None:
    """Issue 19, finding 3: three replicas split 300 a minute; one dies having admitted 100 (it published 90)."""
    budgets = (TokenBudget(requests_per_minute=300),)
    meter = BudgetMeter()
    for _ in range(100):
        meter.add_request("t", budgets, MODEL, START)
    assert meter.spent("t", budgets, MODEL, 3, START) is not None  # a third of 300 each
    dead = BudgetMeter()
    for _ in range(90):
        dead.add_request("t", budgets, MODEL, START)
    assert dead.changed
    published = Published(START, dead.windows(START))
    assert not dead.changed  # published: nothing new to write until the next call
    meter.account_departed([Published.from_dict(orjson.loads(orjson.dumps(published.to_dict())))])
    for _ in range(5):  # its share of the rest is (300 - 90) / 2 = 105: five more here, as many on r2
        assert meter.spent("t", budgets, MODEL, 2, START) is None
        meter.add_request("t", budgets, MODEL, START)
    # 105 + 105 + 90 = 300 (the dead one's last 10, admitted after its last publish, unseen)
    assert meter.spent("t", budgets, MODEL, 2, START) is not None
    assert meter.spent("t", budgets, MODEL, 1, START + 60) is None  # the next minute owes it nothing


def test_a_keys_and_a_tokens_requests_per_minute_take_off_what_departed_instances_admitted() -> None:
    """The sliding windows (a key's and a token's requests per minute), published in 5 s buckets."""
    dead, mine = SlidingWindow(60.0), SlidingWindow(60.0)
    for second in range(20):
        dead.add("k", START + second)  # 20 in its last 20 s
        mine.add("k", START + second)
    minutes = dead.published(START + 20, lambda subject: subject == "k")
    assert sum(count for _, count in minutes["k"]) == 20 and not dead.published(START + 20, lambda subject: False)
    assert mine.limit_for("k", 60, 2, START + 20) == 30  # no departed instance: half of 60 each
    mine.account_departed([minutes])
    assert mine.limit_for("k", 60, 1, START + 20) == 40  # all of it is this replica's now, less the dead one's 20
    assert mine.limit_for("k", 15, 1, START + 20) == -1  # nothing left
    assert not mine.allows("k", -1, START + 20) and mine.frees_at("k", -1, START + 20) == START + 65
    assert mine.limit_for("k", 60, 1, START + 86) == 60  # its events have left the window
    assert mine.limit_for("other", 60, 1, START + 20) == 60


def test_a_sliding_window_keeps_no_event_older_than_its_span() -> None:
    """Keys and tokens without a per-minute limit are never counted: their events must not pile up."""
    window = SlidingWindow(60.0)
    for second in range(1000):
        window.add("unlimited", START + second)
    assert len(window._events["unlimited"]) <= 61
    window.published(START + 2000, lambda subject: True)
    assert "unlimited" not in window._events


async def test_a_replica_that_leaves_mid_minute_leaves_only_what_it_did_not_admit(world: Budgeted) -> None:
    """Through two replicas on one store: r2 admits 1 of 6 and stops; r1 then admits 6 - 1 in all, not 6."""
    other = Keyring(world.store, world.box, FakeChecker(), replica_id="r2", janitor_interval_s=3600, clock=world.clock)
    await other.start(timeout_s=2)
    await world.budgets(TokenBudget(requests_per_minute=6))
    for _ in range(50):
        if world.keyring.cache.replica_count() == 2 and other.cache.view.tokens[world.token.token_id].budgets:
            break
        await asyncio.sleep(0.01)
    second = Budgeted(world.clock, other, world.admin, world.token, world.hashed, world.store, world.box)
    await second.call()
    for _ in range(3):
        await world.call()
    assert "requests per minute" in str(world.refused())  # its half
    await other.stop()  # gone from the membership; its last flush published what it admitted
    for _ in range(50):
        if world.keyring.cache.replica_count() == 1 and other.instance in world.keyring.cache.view.admitted:
            break
        await asyncio.sleep(0.01)
    await world.call()
    await world.call()  # 3 + 2 here, 1 there: the minute's 6
    assert "requests per minute" in str(world.refused())
