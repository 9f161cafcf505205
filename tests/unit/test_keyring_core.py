"""Keyring's rooms on the in-memory store under a fake clock: no etcd, no server, no waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from services.common.answers import QuotaViolation
from services.common.naming import token_hash
from services.devstack.fake_keys import fake_gemini_key
from services.keyring import desk as desk_module
from services.keyring.administration import Administration, KeyInput
from services.keyring.core import Keyring
from services.keyring.domain.errors import NoKeyAvailable, NotReady, Unauthenticated
from services.keyring.domain.identity import GEMINI_KEY_PATTERN
from services.keyring.domain.models import CooldownId, CooldownReason, CooldownScope, Outcome, Pool
from services.keyring.domain.policy import next_pacific_midnight
from services.keyring.sealing import SecretBox, generate_kek
from services.keyring.store import MemoryStore

from .builders import FakeChecker, FakeClock

MODEL = "gemini-3.5-flash"
OTHER_MODEL = "gemini-3.1-pro-preview"
RATE_LIMITED = Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=30)


@dataclass
class World:
    store: MemoryStore
    clock: FakeClock
    checker: FakeChecker
    box: SecretBox
    keyring: Keyring
    token: str  # the client token's hash
    key_id: str

    async def replica(self, replica_id: str) -> Keyring:
        """Another replica on the same store and clock."""
        other = Keyring(
            self.store, self.box, FakeChecker(), replica_id=replica_id, janitor_interval_s=3600, clock=self.clock
        )
        await other.start(timeout_s=2)
        return other


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store, clock, checker, box = MemoryStore(), FakeClock(), FakeChecker(), SecretBox.from_base64(generate_kek())
    keyring = Keyring(store, box, checker, replica_id="r1", janitor_interval_s=3600, clock=clock)
    await keyring.start(timeout_s=2)
    admin = Administration(keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=10)
    await admin.pools.create_pool(Pool("main"))
    [added] = await admin.keys.add_keys("main", [KeyInput(secret=fake_gemini_key("k0"), project="proj-a")])
    _, token = await admin.tokens.create_token("main", "tests")
    yield World(store, clock, checker, box, keyring, token_hash(token), added.key_id)
    await keyring.stop()
    await store.close()


def judgements(monkeypatch: pytest.MonkeyPatch) -> list[Outcome]:
    """Every outcome the lease desk hands to the policy, in order."""
    seen: list[Outcome] = []
    real: Callable[..., Any] = desk_module.judge

    def counting(outcome: Outcome, *args: Any) -> Any:
        seen.append(outcome)
        return real(outcome, *args)

    monkeypatch.setattr(desk_module, "judge", counting)
    return seen


async def lease_and_release(keyring: Keyring, token: str, outcome: Outcome, model: str = MODEL) -> None:
    grant, _ = keyring.desk.acquire(token, model)
    assert await keyring.desk.release(grant.lease.lease_id, grant.key.key_id, model, outcome)


async def test_a_429_cools_the_projects_model_until_the_clock_passes_it(world: World) -> None:
    desk = world.keyring.desk
    await lease_and_release(world.keyring, world.token, RATE_LIMITED)
    cooldown = world.keyring.cache.view.cooldowns[CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)]
    assert cooldown.until == world.clock.now + 30 and cooldown.reason is CooldownReason.RATE_LIMIT
    with pytest.raises(NoKeyAvailable) as refused:
        desk.acquire(world.token, MODEL)
    assert refused.value.retry_after_s == 30
    desk.acquire(world.token, OTHER_MODEL)  # another model of the project is not cooled
    world.clock.now += 30.5
    assert desk.acquire(world.token, MODEL)[0].key.key_id == world.key_id


async def test_an_outcome_is_judged_once_on_the_normal_path(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = judgements(monkeypatch)
    await lease_and_release(world.keyring, world.token, RATE_LIMITED)
    assert seen == [RATE_LIMITED]
    assert world.keyring.cache.view.keys[world.key_id].consecutive_failures == 1
    seen.clear()
    await lease_and_release(world.keyring, world.token, Outcome(200), OTHER_MODEL)  # clears the failure count
    assert seen == [Outcome(200)]
    await lease_and_release(world.keyring, world.token, Outcome(200), OTHER_MODEL)  # routine: not judged at all
    assert seen == [Outcome(200)]


async def test_a_lost_guard_merges_again_with_the_fresh_record(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision is judged once; a guarded write that loses merges it with the fresh record (no second judgement)."""
    other = await world.replica("r2")
    try:
        seen = judgements(monkeypatch)
        await lease_and_release(world.keyring, world.token, RATE_LIMITED)  # r1: in its view at once, written behind
        # Meanwhile r2 learns that the project's daily quota is spent and writes it first.
        daily = Outcome(429, violations=(QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),))
        await lease_and_release(other, world.token, daily)
        await other.decisions.flush()
        await world.keyring.decisions.flush()  # r1's guard loses: re-read and merged, not judged again
        assert seen == [RATE_LIMITED, daily]
        pair = CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)
        for keyring in (world.keyring, other):
            assert keyring.cache.view.cooldowns[pair].reason is CooldownReason.DAILY_QUOTA  # the longer one stays
            assert keyring.decisions.backlog == 0
        entry = await world.store.get(world.keyring.cache.layout.cooldown(pair))
        assert entry is not None and b"daily_quota" in entry.value
    finally:
        await other.stop()


async def test_a_recheck_that_hits_a_models_daily_quota_cools_that_model_until_pacific_midnight(world: World) -> None:
    per_day = QuotaViolation(
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        dimensions=(("location", "global"), ("model", OTHER_MODEL)),
        quota_value="250",
    )
    world.checker.answer = Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=20, violations=(per_day,))
    [(key_id, _)] = await world.keyring.housekeeping.verify([world.key_id])
    cooldown = world.keyring.cache.view.cooldowns[CooldownId(CooldownScope.PROJECT, "proj-a", OTHER_MODEL)]
    assert cooldown.reason is CooldownReason.DAILY_QUOTA
    assert cooldown.until == next_pacific_midnight(world.clock.now)
    world.keyring.desk.acquire(world.token, MODEL)  # other models keep the key
    with pytest.raises(NoKeyAvailable):
        world.keyring.desk.acquire(world.token, OTHER_MODEL)
    world.clock.now = cooldown.until + 1
    assert world.keyring.desk.acquire(world.token, OTHER_MODEL)[0].key.key_id == key_id


async def test_check_token_answers_from_memory_as_acquire_would(world: World) -> None:
    """CheckToken at the desk: the pool for a usable token; Unauthenticated for unknown, revoked, expired ones."""
    desk = world.keyring.desk
    admin = Administration(world.keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=10)
    assert desk.check_token(world.token) == "main"
    with pytest.raises(Unauthenticated):
        desk.check_token(token_hash("kr-no-such-token-anywhere"))
    [record] = [t for t in world.keyring.cache.view.tokens.values() if t.pool == "main"]
    assert record.keyed and record.token_hash != world.token
    with pytest.raises(Unauthenticated):
        desk.check_token(record.token_hash)  # the stored keyed hash, presented as it is
    _, clear = await admin.tokens.create_token("main", "expiring", expires_at=world.clock.now + 60)
    assert desk.check_token(token_hash(clear)) == "main"
    world.clock.now += 61
    with pytest.raises(Unauthenticated):
        desk.check_token(token_hash(clear))
    await admin.tokens.revoke_token(record.token_id)
    with pytest.raises(Unauthenticated):
        desk.check_token(world.token)
    with pytest.raises(Unauthenticated):
        desk.acquire(world.token, MODEL)  # the same refusals as Acquire's
    desk.accepting = False
    with pytest.raises(NotReady):  # a replica not serving does not answer for a view it may not have
        desk.check_token(token_hash(clear))


NOT_ON_TIER = Outcome(
    429,
    error_status="RESOURCE_EXHAUSTED",
    violations=(QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier", quota_value="0"),),
)


async def test_a_model_not_on_the_tier_is_out_until_midnight_on_every_replica_or_an_operators_revive(
    world: World,
) -> None:
    await lease_and_release(world.keyring, world.token, NOT_ON_TIER)
    pair = CooldownId(CooldownScope.PROJECT, "proj-a", MODEL)
    cooldown = world.keyring.cache.view.cooldowns[pair]
    assert cooldown.reason is CooldownReason.NOT_ON_TIER and cooldown.until == next_pacific_midnight(world.clock.now)
    assert world.keyring.cache.view.keys[world.key_id].consecutive_failures == 0  # not the key's fault
    await world.keyring.decisions.flush()
    other = await world.replica("r2")
    try:
        for replica in (world.keyring, other):
            with pytest.raises(NoKeyAvailable) as refused:
                replica.desk.acquire(world.token, MODEL)
            assert refused.value.retry_after_s == pytest.approx(cooldown.until - world.clock.now, abs=1)
        world.clock.now += 6 * 3600  # later the same day: still out, no call spent
        with pytest.raises(NoKeyAvailable):
            other.desk.acquire(world.token, MODEL)
        admin = Administration(world.keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=10)
        await admin.keys.set_key_state(world.key_id, "revive")  # the operator's word
        assert pair not in world.keyring.cache.view.cooldowns
        assert world.keyring.desk.acquire(world.token, MODEL)[0].key.key_id == world.key_id
    finally:
        await other.stop()
