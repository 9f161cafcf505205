"""The allocator's shortcuts (cooldowns looked at once per project and account) agree with a plain scan of every key.

Random pools: keys with or without a project and billing account, states,
cooldowns of their own, of their project and of their account, for the model
or all models, running or over, and keys held at their in-flight cap. Whatever
the allocator grants, the plain scan calls eligible; whenever it refuses, the
plain scan finds nothing and the same soonest time a key frees (issue 23: the
shortcut is what keeps a refusal over 100,000 keys from costing seconds).
"""

from __future__ import annotations

import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.keyring.domain.demand import LeaseRequest
from services.keyring.domain.errors import NoKeyAvailable
from services.keyring.domain.models import (
    ALL_MODELS,
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    Policy,
    UpstreamKey,
)
from services.keyring.domain.view import KeyringView

from .builders import TOKEN_HASH, World, key

NOW = 1000.0
MODEL = "m"
IN_FLIGHT_RETRY_S = 1.0  # the allocator's hint when only in-flight caps block

keys = st.lists(
    st.tuples(
        st.sampled_from(["", "pa", "pb"]),
        st.sampled_from(["", "ba"]),
        st.sampled_from([KeyState.ACTIVE, KeyState.ACTIVE, KeyState.SUSPENDED, KeyState.DISABLED]),
        st.sampled_from([NOW - 5, NOW + 40]),
        st.booleans(),  # held at its in-flight cap
    ),
    min_size=1,
    max_size=10,
)
cooldowns = st.lists(
    st.tuples(
        st.sampled_from([CooldownScope.KEY, CooldownScope.PROJECT, CooldownScope.ACCOUNT]),
        st.integers(0, 9),  # which key's id, project or account
        st.sampled_from([MODEL, ALL_MODELS, "other"]),
        st.sampled_from([NOW - 1, NOW + 10, NOW + 30, NOW + 90]),
    ),
    max_size=12,
)


def cooled_until(view: KeyringView, item: UpstreamKey) -> float:
    """The plain scan: every cooldown subject of every key, one by one."""
    ends = 0.0
    for subject in item.cooldown_subjects(MODEL):
        cooldown = view.cooldowns.get(subject)
        if cooldown is not None:
            ends = max(ends, cooldown.until)
    return ends


def check_one_acquire(world: World, items: list[UpstreamKey], exclude: set[str]) -> None:
    """One acquire against the plain scan: a granted key is eligible; a refusal finds none and the same soonest time."""
    pool = world.view.pools["p"]
    request = LeaseRequest(TOKEN_HASH, MODEL, frozenset(exclude), (), frozenset(), 0, False)

    def spent(project: str) -> float:
        return world.allocator._spent_until(project, pool, request, 1, NOW)

    eligible = {
        item.key_id
        for item in items
        if item.key_id not in exclude
        and item.leasable_state(NOW)
        and cooled_until(world.view, item) <= NOW
        and world.book.in_flight(item.key_id) == 0
        and not (item.project and spent(item.project))
    }
    try:
        grant = world.allocator.acquire(TOKEN_HASH, MODEL, exclude, NOW)
    except NoKeyAvailable as refusal:
        assert not eligible
        soonest = math.inf
        for item in items:
            if item.state is KeyState.DISABLED:
                continue
            frees = max(item.state_until if item.state is KeyState.SUSPENDED else NOW, cooled_until(world.view, item))
            frees = max(frees, spent(item.project))
            soonest = min(soonest, NOW + IN_FLIGHT_RETRY_S if frees <= NOW else frees)
        if math.isinf(soonest):
            assert "no usable key" in str(refusal)
        else:
            assert refusal.retry_after_s == soonest - NOW
    else:
        assert grant.key.key_id in eligible


@settings(max_examples=300, deadline=None)
@given(keys, cooldowns, st.booleans(), st.booleans())
# One key cooling on its own, its project sibling held at its cap: whichever the scan meets first, the sibling
# frees first (an own cooldown taken for the project's would say 30 s).
@example(
    [("pa", "", KeyState.ACTIVE, NOW, False), ("pa", "", KeyState.ACTIVE, NOW, True)],
    [(CooldownScope.KEY, 0, MODEL, NOW + 30)],
    False,
    False,
)
@example(
    [("pa", "", KeyState.ACTIVE, NOW, True), ("pa", "", KeyState.ACTIVE, NOW, False)],
    [(CooldownScope.KEY, 1, MODEL, NOW + 30)],
    False,
    False,
)
# A project cooling 30 s, one of its keys 90 s on its own: the project frees in 30 s whichever key comes first.
@example(
    [("pa", "", KeyState.ACTIVE, NOW, False), ("pa", "", KeyState.ACTIVE, NOW, False)],
    [(CooldownScope.PROJECT, 0, MODEL, NOW + 30), (CooldownScope.KEY, 0, MODEL, NOW + 90)],
    False,
    False,
)
@example(
    [("pa", "", KeyState.ACTIVE, NOW, False), ("pa", "", KeyState.ACTIVE, NOW, False)],
    [(CooldownScope.PROJECT, 0, MODEL, NOW + 30), (CooldownScope.KEY, 1, MODEL, NOW + 90)],
    False,
    False,
)
def test_grants_and_refusals_agree_with_a_plain_scan(
    spec: list[tuple[str, str, KeyState, float, bool]],
    cooling: list[tuple[CooldownScope, int, str, float]],
    excluded_first: bool,
    paced: bool,
) -> None:
    """Three acquires in a row: after a refusal the allocator looks at projects first (``all_held``), after a
    grant the project it leased may have spent its window (``paced``: one request per minute per project), and
    keys held at their cap are released after the first."""
    items = [
        key(f"k{i}", project=project, billing_account=account, state=state, state_until=until)
        for i, (project, account, state, until, _) in enumerate(spec)
    ]
    world = World(items, policy=Policy(max_in_flight=1, quota_requests_per_minute=1 if paced else 0))
    held = [world.book.grant(f"k{i}", "p", MODEL, 60.0, NOW, "t-1") for i, (*_, busy) in enumerate(spec) if busy]
    for scope, which, model, until in cooling:
        item = items[which % len(items)]
        subject = {CooldownScope.KEY: item.key_id, CooldownScope.PROJECT: item.project}.get(scope, item.billing_account)
        if subject:
            world.view.put_cooldown(Cooldown(CooldownId(scope, subject, model), CooldownReason.RATE_LIMIT, until))
    exclude = {"k0"} if excluded_first else set()
    check_one_acquire(world, items, exclude)
    for lease in held:  # slots free after a refusal: the next acquire must see them
        world.allocator.release(lease.lease_id)
    check_one_acquire(world, items, exclude)
    check_one_acquire(world, items, exclude)
