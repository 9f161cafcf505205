"""A property-based state machine of the domain model.

Hypothesis drives random sequences of leases, releases, cooldowns, state
changes, replica-count changes and clock moves, and checks after each step:
a key cooling for a model, invalid or disabled is never leased for it; in-flight
counts never go negative nor past this replica's share of the cap.
"""

from __future__ import annotations

import dataclasses
import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from services.keyring.domain.allocator import Allocator
from services.keyring.domain.errors import NoKeyAvailable
from services.keyring.domain.leasing import LeaseBook, share
from services.keyring.domain.models import (
    ClientToken,
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    Policy,
    Pool,
    Strategy,
)
from services.keyring.domain.view import KeyringView

from .builders import TOKEN_HASH, key

KEYS = [f"k{i}" for i in range(6)]
MODELS = ["m1", "m2"]
PROJECTS = ["", "pa", "pb"]
CAP = 3


class LeasingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.replicas = 1
        self.view = KeyringView()
        self.book = LeaseBook("r")
        self.leases: list[str] = []

    @rule(
        strategy=st.sampled_from(list(Strategy)),
        projects=st.lists(st.sampled_from(PROJECTS), min_size=6, max_size=6),
        tiers=st.lists(st.integers(1, 2), min_size=6, max_size=6),
        weights=st.lists(st.integers(1, 5), min_size=6, max_size=6),
    )
    def configure(self, strategy: Strategy, projects: list[str], tiers: list[int], weights: list[int]) -> None:
        self.view.put_pool(Pool("p", (), strategy, Policy(max_in_flight=CAP)))
        self.view.put_token(ClientToken("t", TOKEN_HASH, "p"))
        for key_id, project, tier, weight in zip(KEYS, projects, tiers, weights, strict=True):
            current = self.view.keys.get(key_id)
            state = current.state if current else KeyState.ACTIVE
            self.view.put_key(key(key_id, project=project, tier=tier, weight=weight, state=state))
        self.allocator = Allocator(self.view, self.book, lambda: self.replicas, random.Random(1))

    @rule(model=st.sampled_from(MODELS))
    def acquire(self, model: str) -> None:
        if not hasattr(self, "allocator"):
            return
        try:
            grant = self.allocator.acquire(TOKEN_HASH, model, (), self.now)
        except NoKeyAvailable as refused:
            assert refused.retry_after_s > 0
            return
        leased = grant.key
        assert leased.state not in (KeyState.INVALID, KeyState.DISABLED)
        assert leased.leasable_state(self.now)
        for subject in leased.cooldown_subjects(model):
            cooldown = self.view.cooldowns.get(subject)
            assert cooldown is None or not cooldown.active(self.now), f"{leased.key_id} leased while cooling"
        assert self.book.in_flight(leased.key_id) <= share(CAP, self.replicas)
        self.leases.append(grant.lease.lease_id)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if self.leases:
            lease_id = self.leases.pop(data.draw(st.integers(0, len(self.leases) - 1)))
            self.book.release(lease_id)
            assert self.book.release(lease_id) is None  # a second release is a no-op

    @rule(
        key_id=st.sampled_from(KEYS),
        model=st.sampled_from(MODELS),
        project_wide=st.booleans(),
        seconds=st.floats(1, 120),
    )
    def cool(self, key_id: str, model: str, project_wide: bool, seconds: float) -> None:
        current = self.view.keys.get(key_id)
        if current is None:
            return
        scope = CooldownScope.PROJECT if project_wide and current.project else CooldownScope.KEY
        subject = current.project if scope is CooldownScope.PROJECT else key_id
        self.view.put_cooldown(
            Cooldown(CooldownId(scope, subject, model), CooldownReason.RATE_LIMIT, self.now + seconds)
        )

    @rule(key_id=st.sampled_from(KEYS), state=st.sampled_from(list(KeyState)), seconds=st.floats(0, 100))
    def change_state(self, key_id: str, state: KeyState, seconds: float) -> None:
        current = self.view.keys.get(key_id)
        if current is not None:
            self.view.put_key(dataclasses.replace(current, state=state, state_until=self.now + seconds))

    @rule(replicas=st.integers(1, 4))
    def membership(self, replicas: int) -> None:
        self.replicas = replicas

    @rule(seconds=st.floats(0, 700))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        expired = {lease.lease_id for lease in self.book.reclaim_expired(self.now)}
        self.leases = [lease_id for lease_id in self.leases if lease_id not in expired]

    @invariant()
    def in_flight_counts_stay_in_bounds(self) -> None:
        total = 0
        for key_id in KEYS:
            in_flight = self.book.in_flight(key_id)
            assert in_flight >= 0
            total += in_flight
        assert total == len(self.book) == len(self.leases)

    @invariant()
    def caps_hold_for_the_current_share(self) -> None:
        # Shrinking the share (more replicas) may leave older leases above it; new ones never are.
        for key_id in KEYS:
            assert self.book.in_flight(key_id) <= CAP


TestLeasing = LeasingMachine.TestCase
TestLeasing.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_share_never_exceeds_the_total_for_fewer_replicas_than_budget() -> None:
    for total in range(1, 50):
        for replicas in range(1, total + 1):
            assert 1 <= share(total, replicas) * replicas <= total
