"""Choosing keys: strategies, tiers, cooldowns, caps and budgets, from memory alone."""

from __future__ import annotations

from collections import Counter

import pytest

from services.common.naming import token_hash
from services.keyring.domain.admissions import Published
from services.keyring.domain.errors import NoKeyAvailable, PermissionDenied, Unauthenticated
from services.keyring.domain.models import (
    ClientToken,
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    Policy,
    Strategy,
)

from .builders import TOKEN_HASH, World, key

NOW = 1000.0


def test_round_robin_visits_every_key_in_turn() -> None:
    world = World([key(f"k{i}") for i in range(4)])
    assert [world.lease() for _ in range(8)] == ["k0", "k1", "k2", "k3"] * 2


def test_weighted_distribution_follows_the_weights() -> None:
    world = World([key("a", weight=3), key("b"), key("c")], strategy=Strategy.WEIGHTED)
    counts = Counter(world.lease() for _ in range(10_000))
    for key_id, share in {"a": 0.6, "b": 0.2, "c": 0.2}.items():
        assert abs(counts[key_id] / 10_000 - share) <= 0.05 * share


def test_weighted_skips_ineligible_keys_and_keeps_proportions() -> None:
    world = World([key("a", weight=3), key("b"), key("c", state=KeyState.DISABLED)], strategy=Strategy.WEIGHTED)
    counts = Counter(world.lease() for _ in range(4000))
    assert counts["c"] == 0
    assert abs(counts["a"] / 4000 - 0.75) < 0.04


def test_random_uses_every_key() -> None:
    world = World([key(f"k{i}") for i in range(5)], strategy=Strategy.RANDOM)
    assert set(world.lease() for _ in range(500)) == {f"k{i}" for i in range(5)}


def test_least_loaded_prefers_the_idle_key() -> None:
    world = World([key("a"), key("b")], strategy=Strategy.LEAST_LOADED)
    first = world.allocator.acquire(TOKEN_HASH, "m", (), NOW)
    second = world.allocator.acquire(TOKEN_HASH, "m", (), NOW)
    assert {first.key.key_id, second.key.key_id} == {"a", "b"}


def test_cooling_model_leaves_other_models_leasable() -> None:
    world = World([key("a")])
    cooldown = Cooldown(CooldownId(CooldownScope.KEY, "a", "m1"), CooldownReason.RATE_LIMIT, NOW + 30)
    world.view.put_cooldown(cooldown)
    with pytest.raises(NoKeyAvailable) as refused:
        world.lease("m1", NOW)
    assert refused.value.retry_after_s == pytest.approx(30)
    assert world.lease("m2", NOW) == "a"
    assert world.lease("m1", NOW + 31) == "a"  # the cooldown ran out


def test_project_cooldown_holds_back_every_sibling() -> None:
    world = World([key("a", project="p1"), key("b", project="p1"), key("c", project="p2")])
    world.view.put_cooldown(Cooldown(CooldownId(CooldownScope.PROJECT, "p1", "m"), CooldownReason.RATE_LIMIT, NOW + 60))
    assert {world.lease("m", NOW) for _ in range(6)} == {"c"}


def test_lower_tier_only_when_the_first_tier_has_nothing() -> None:
    world = World([key("free1", tier=1), key("free2", tier=1), key("paid", tier=2)])
    assert "paid" not in {world.lease("m", NOW) for _ in range(10)}
    for free in ("free1", "free2"):
        world.view.put_cooldown(Cooldown(CooldownId(CooldownScope.KEY, free, "m"), CooldownReason.RATE_LIMIT, NOW + 10))
    assert world.lease("m", NOW) == "paid"
    assert world.lease("m", NOW + 11) in {"free1", "free2"}


@pytest.mark.parametrize("state", [KeyState.INVALID, KeyState.DISABLED])
def test_dead_keys_are_never_leased(state: KeyState) -> None:
    world = World([key("dead", state=state), key("ok")])
    assert {world.lease() for _ in range(10)} == {"ok"}


def test_suspended_key_returns_after_its_suspension() -> None:
    world = World([key("s", state=KeyState.SUSPENDED, state_until=NOW + 100)])
    with pytest.raises(NoKeyAvailable) as refused:
        world.lease("m", NOW)
    assert refused.value.retry_after_s == pytest.approx(100)
    assert world.lease("m", NOW + 100) == "s"


def test_in_flight_cap_is_split_among_replicas() -> None:
    world = World([key("a")], policy=Policy(max_in_flight=4), replicas=2)
    world.allocator.acquire(TOKEN_HASH, "m", (), NOW)
    world.allocator.acquire(TOKEN_HASH, "m", (), NOW)
    with pytest.raises(NoKeyAvailable):
        world.allocator.acquire(TOKEN_HASH, "m", (), NOW)
    world.replicas = 1  # the other replica left: this one may use the whole cap
    world.allocator.acquire(TOKEN_HASH, "m", (), NOW)


def test_requests_per_minute_budget() -> None:
    world = World([key("a")], policy=Policy(requests_per_minute=3))
    for offset in range(3):
        world.lease("m", NOW + offset)
    with pytest.raises(NoKeyAvailable) as refused:
        world.lease("m", NOW + 10)
    assert refused.value.retry_after_s == pytest.approx(50)
    assert world.lease("m", NOW + 60.5) == "a"


def test_a_keys_requests_per_minute_take_off_what_a_departed_instance_admitted() -> None:
    """Issue 19, finding 3: a key's per-minute cap across a replica's death (``domain/admissions.py``)."""
    world = World([key("a")], policy=Policy(requests_per_minute=6))
    world.view.admitted["r2.dead"] = Published(NOW, key_minutes={"a": ((NOW + 5, 4),)})  # 4 in its last 5 s
    world.view.admitted_version += 1
    world.lease("m", NOW)
    world.lease("m", NOW + 1)
    with pytest.raises(NoKeyAvailable) as refused:
        world.lease("m", NOW + 2)  # 6 - 4 = 2 left for the living, both used
    assert refused.value.retry_after_s == pytest.approx(58)
    published = world.allocator.published(NOW + 2)
    assert published is not None and published.key_minutes == {"a": ((NOW + 5, 2),)}
    assert world.allocator.published(NOW + 2) is None  # nothing granted since
    assert world.lease("m", NOW + 65.5) == "a"  # the dead one's events have left the window


def test_excluded_keys_are_skipped() -> None:
    world = World([key("a"), key("b")])
    assert {world.lease("m", NOW, frozenset({"a"})) for _ in range(4)} == {"b"}


def test_unknown_revoked_and_expired_tokens_are_refused() -> None:
    world = World([key("a")])
    with pytest.raises(Unauthenticated):
        world.allocator.acquire(token_hash("nope"), "m", (), NOW)
    world.view.put_token(ClientToken("t-1", TOKEN_HASH, "p", revoked=True))
    with pytest.raises(Unauthenticated):
        world.lease()
    world.view.put_token(ClientToken("t-1", TOKEN_HASH, "p", expires_at=NOW - 1))
    with pytest.raises(Unauthenticated):
        world.lease("m", NOW)


def test_model_outside_the_allow_list_is_denied() -> None:
    world = World([key("a")], allowed_models=("gemini-3.5-flash",))
    assert world.lease("gemini-3.5-flash") == "a"
    with pytest.raises(PermissionDenied):
        world.lease("gemini-3.1-pro-preview")


def test_token_rate_limit() -> None:
    world = World([key("a")])
    world.view.put_token(ClientToken("t-1", TOKEN_HASH, "p", requests_per_minute=2))
    world.lease("m", NOW)
    world.lease("m", NOW)
    with pytest.raises(NoKeyAvailable):
        world.lease("m", NOW + 1)


def test_empty_pool_reports_a_retry_delay() -> None:
    world = World([])
    with pytest.raises(NoKeyAvailable) as refused:
        world.lease()
    assert refused.value.retry_after_s > 0


def test_abandoned_leases_expire_and_return_their_slot() -> None:
    world = World([key("a")], policy=Policy(max_in_flight=1, lease_ttl_s=5))
    world.allocator.acquire(TOKEN_HASH, "m", (), NOW)
    with pytest.raises(NoKeyAvailable):
        world.allocator.acquire(TOKEN_HASH, "m", (), NOW + 1)
    assert [lease.key_id for lease in world.book.reclaim_expired(NOW + 5)] == ["a"]
    assert world.allocator.acquire(TOKEN_HASH, "m", (), NOW + 5).key.key_id == "a"


def test_expiry_heap_stays_bounded() -> None:
    world = World([key("a")])
    for _ in range(20_000):
        world.lease()
    assert len(world.book) == 0
    assert len(world.book._expiry) <= 1024 + 1


def test_retry_delay_counts_the_keys_the_caller_excluded() -> None:
    world = World([key("a"), key("b")])
    world.view.put_cooldown(Cooldown(CooldownId(CooldownScope.KEY, "a", "m"), CooldownReason.RATE_LIMIT, NOW + 40))
    world.view.put_cooldown(Cooldown(CooldownId(CooldownScope.KEY, "b", "m"), CooldownReason.RATE_LIMIT, NOW + 90))
    with pytest.raises(NoKeyAvailable) as refused:
        world.lease("m", NOW, exclude=frozenset({"a"}))
    assert refused.value.retry_after_s == pytest.approx(40)


def test_view_lists_a_keys_own_and_project_cooldowns_and_forgets_removed_ones() -> None:
    world = World([key("a", project="p1"), key("b", project="p2")])
    own = Cooldown(CooldownId(CooldownScope.KEY, "a", "m1"), CooldownReason.RATE_LIMIT, NOW + 10)
    project = Cooldown(CooldownId(CooldownScope.PROJECT, "p1", "m2"), CooldownReason.RATE_LIMIT, NOW + 20)
    other = Cooldown(CooldownId(CooldownScope.KEY, "b", "m1"), CooldownReason.RATE_LIMIT, NOW + 30)
    expired = Cooldown(CooldownId(CooldownScope.KEY, "a", "m3"), CooldownReason.SERVER_ERROR, NOW - 1)
    for cooldown in (own, project, other, expired):
        world.view.put_cooldown(cooldown)
    longer = Cooldown(own.id, CooldownReason.RATE_LIMIT, NOW + 99, strikes=2)
    world.view.put_cooldown(longer)  # replaces, never duplicates
    a = world.view.keys["a"]
    assert sorted(world.view.cooldowns_of(a, NOW), key=lambda c: c.until) == [project, longer]
    world.view.remove_cooldown(own.id)
    world.view.remove_cooldown(project.id)
    assert world.view.cooldowns_of(a, NOW) == []
    assert world.view.cooldowns_of(world.view.keys["b"], NOW) == [other]
