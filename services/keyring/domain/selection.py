"""Choosing a key within one priority tier.

Each strategy starts from a cheap guess and checks eligibility key by key,
so a pick costs O(1) while most keys are eligible, not O(keys): with 1,000
keys a full scan per lease would cost more than the RPC itself, with 100,000
(issue 23) it would cost a replica most of its core. ``least_loaded`` draws
idle keys first and looks at every key only when few are idle.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Sequence

from .models import Strategy

Eligible = Callable[[str], bool]
Load = Callable[[str], int]

# Weighted draws rejected this often fall back to an exact draw among the eligible (a scan of every key):
# more draws in a large ring, where the scan costs more than they do.
_WEIGHTED_TRIES = 8
_WEIGHTED_TRIES_LARGE = 64
_LARGE = 512
# Random draws a least-loaded pick makes for an idle eligible key before it looks at every key.
_IDLE_TRIES = 16


class TierRing:
    """The keys of one tier of one pool, sorted by id, with a round-robin cursor.

    Kept up to date key by key (``add``, ``remove``: a memmove, not a sort),
    so a key added to a pool of 100,000 costs the next lease nothing, and the
    round-robin turn goes on where it was instead of starting over.
    """

    def __init__(self, tier: int, key_ids: Sequence[str], weights: Sequence[int]) -> None:
        self.tier = tier
        self.key_ids = list(key_ids)
        self.weights = [max(1, weight) for weight in weights]
        self._cumulative: list[int] | None = None
        self.cursor = 0

    def __len__(self) -> int:
        return len(self.key_ids)

    @property
    def cumulative(self) -> list[int]:
        """Running sums of the weights (weighted draws); summed again only after a change."""
        if self._cumulative is None:
            self._cumulative = list(itertools.accumulate(self.weights))
        return self._cumulative

    def add(self, key_id: str, weight: int) -> None:
        index = bisect.bisect_left(self.key_ids, key_id)
        self.key_ids.insert(index, key_id)
        self.weights.insert(index, max(1, weight))
        self._cumulative = None
        if index < self.cursor:
            self.cursor += 1

    def remove(self, key_id: str) -> None:
        index = bisect.bisect_left(self.key_ids, key_id)
        if index == len(self.key_ids) or self.key_ids[index] != key_id:
            return
        del self.key_ids[index], self.weights[index]
        self._cumulative = None
        if index < self.cursor:
            self.cursor -= 1
        if self.cursor >= len(self.key_ids):
            self.cursor = 0


def ring_add(rings: list[TierRing], tier: int, key_id: str, weight: int) -> None:
    """Put a key in its tier's ring of ``rings`` (sorted by tier), a new ring for a new tier."""
    for index, ring in enumerate(rings):
        if ring.tier == tier:
            ring.add(key_id, weight)
            return
        if ring.tier > tier:
            rings.insert(index, TierRing(tier, [key_id], [weight]))
            return
    rings.append(TierRing(tier, [key_id], [weight]))


def ring_remove(rings: list[TierRing], tier: int, key_id: str) -> None:
    """Take a key out of its tier's ring; a ring left empty goes."""
    for index, ring in enumerate(rings):
        if ring.tier == tier:
            ring.remove(key_id)
            if not ring.key_ids:
                del rings[index]
            return


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
    for _ in range(_WEIGHTED_TRIES if len(ring) <= _LARGE else _WEIGHTED_TRIES_LARGE):
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
    """One of the least loaded eligible keys, uniformly.

    Idle keys first: in a large pool most keys are idle (100,000 keys, at most
    as many busy ones as leases in flight), and a uniform draw that lands on an
    idle eligible key is uniform among them, which are the least loaded: the
    same answer as a scan of every key, for a few draws. Only when draws keep
    missing (few idle eligible keys) is every key looked at.
    """
    size = len(ring)
    if size > _IDLE_TRIES:
        for _ in range(_IDLE_TRIES):
            key_id = ring.key_ids[rng.randrange(size)]
            if load(key_id) == 0 and eligible(key_id):
                return key_id
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
