"""Choosing a key within one priority tier.

Each strategy starts from a cheap guess and checks eligibility key by key,
so a pick costs O(1) while most keys are eligible, not O(keys): with 1,000
keys a full scan per lease would cost more than the RPC itself.
``least_loaded`` is the exception: it must look at every key.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Sequence

from .models import Strategy

Eligible = Callable[[str], bool]
Load = Callable[[str], int]

# Weighted draws rejected this often fall back to an exact draw among the eligible.
_WEIGHTED_TRIES = 8


class TierRing:
    """The keys of one tier of one pool, in a stable order, with a round-robin cursor."""

    def __init__(self, tier: int, key_ids: Sequence[str], weights: Sequence[int]) -> None:
        self.tier = tier
        self.key_ids = list(key_ids)
        self.weights = [max(1, weight) for weight in weights]
        self.cumulative = list(itertools.accumulate(self.weights))
        self.cursor = 0

    def __len__(self) -> int:
        return len(self.key_ids)


def pick(strategy: Strategy, ring: TierRing, eligible: Eligible, load: Load, rng: random.Random) -> str | None:
    """The key to lease from this tier, or None when none of its keys is eligible."""
    if not ring.key_ids:
        return None
    if strategy is Strategy.RANDOM:
        return _scan_from(ring, rng.randrange(len(ring)), eligible)
    if strategy is Strategy.WEIGHTED:
        return _weighted(ring, eligible, rng)
    if strategy is Strategy.LEAST_LOADED:
        return _least_loaded(ring, eligible, load, rng)
    return _round_robin(ring, eligible)


def _scan_from(ring: TierRing, start: int, eligible: Eligible) -> str | None:
    size = len(ring)
    for offset in range(size):
        key_id = ring.key_ids[(start + offset) % size]
        if eligible(key_id):
            return key_id
    return None


def _round_robin(ring: TierRing, eligible: Eligible) -> str | None:
    size = len(ring)
    for offset in range(size):
        index = (ring.cursor + offset) % size
        key_id = ring.key_ids[index]
        if eligible(key_id):
            ring.cursor = (index + 1) % size
            return key_id
    return None


def _weighted(ring: TierRing, eligible: Eligible, rng: random.Random) -> str | None:
    """Draw by weight; rejection keeps the exact proportions among eligible keys."""
    total = ring.cumulative[-1]
    for _ in range(_WEIGHTED_TRIES):
        key_id = ring.key_ids[bisect.bisect_right(ring.cumulative, rng.randrange(total))]
        if eligible(key_id):
            return key_id
    candidates = [(key_id, w) for key_id, w in zip(ring.key_ids, ring.weights, strict=True) if eligible(key_id)]
    if not candidates:
        return None
    ids, weights = zip(*candidates, strict=True)
    chosen: str = rng.choices(ids, weights=weights)[0]
    return chosen


def _least_loaded(ring: TierRing, eligible: Eligible, load: Load, rng: random.Random) -> str | None:
    best: list[str] = []
    best_load = -1
    for key_id in ring.key_ids:
        if not eligible(key_id):
            continue
        current = load(key_id)
        if best_load < 0 or current < best_load:
            best, best_load = [key_id], current
        elif current == best_load:
            best.append(key_id)
    return rng.choice(best) if best else None
