"""A pool's tier rings and (project, account) groups kept up to date key by key agree with those built from scratch.

Issue 23 (100,000 keys in one pool): neither is rebuilt when a key comes, goes or moves.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from services.keyring.domain.view import KeyringView

from .builders import World, key

POOLS = ("p", "q")
IDS = [f"k{i:02d}" for i in range(12)]

put = st.tuples(
    st.just("put"), st.sampled_from(IDS), st.sampled_from(POOLS), st.integers(1, 3), st.integers(0, 3),
    st.sampled_from(["", "pa", "pb"]), st.sampled_from(["", "ba"]),
)  # fmt: skip
remove = st.tuples(
    st.just("remove"), st.sampled_from(IDS), st.just(""), st.just(0), st.just(0), st.just(""), st.just("")
)
look = st.tuples(
    st.just("rings"), st.sampled_from(IDS), st.sampled_from(POOLS), st.just(0), st.just(0), st.just(""), st.just("")
)
Step = tuple[str, str, str, int, int, str, str]


def shape(view: KeyringView, pool: str) -> list[tuple[int, list[str], list[int], list[int]]]:
    return [(ring.tier, ring.key_ids, ring.weights, ring.cumulative) for ring in view.rings(pool)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(put, remove, look), max_size=40))
def test_rings_and_groups_kept_key_by_key_equal_those_built_from_the_keys(steps: list[Step]) -> None:
    view = KeyringView()
    for action, key_id, pool, tier, weight, project, account in steps:
        if action == "put":
            view.put_key(key(key_id, pool, tier=tier, weight=weight, project=project, billing_account=account))
        elif action == "remove":
            view.remove_key(key_id)
        else:
            view.rings(pool)  # built now: the steps after it change it in place
    fresh = KeyringView()
    for item in view.keys.values():
        fresh.put_key(item)
    for pool in POOLS:
        assert shape(view, pool) == shape(fresh, pool)
        assert view.groups(pool) == fresh.groups(pool)
        for ring in view.rings(pool):
            assert 0 <= ring.cursor < len(ring)


def test_round_robin_goes_on_where_it_was_when_keys_come_and_go() -> None:
    """A key added or removed does not restart the turn at the first key (which would favour the lowest ids)."""
    world = World([key(f"k{i}") for i in range(4)])
    assert [world.lease(), world.lease()] == ["k0", "k1"]
    world.view.put_key(key("k9"))
    world.view.remove_key("k0")
    assert [world.lease() for _ in range(4)] == ["k2", "k3", "k9", "k1"]


def test_a_keys_new_weight_and_tier_take_effect_at_once() -> None:
    world = World([key("a"), key("b", tier=2)])
    world.view.rings("p")
    world.view.put_key(dataclasses.replace(world.view.keys["b"], tier=1, weight=5))
    world.view.put_key(dataclasses.replace(world.view.keys["a"], tier=3))
    assert shape(world.view, "p") == [(1, ["b"], [5], [5]), (3, ["a"], [1], [1])]
