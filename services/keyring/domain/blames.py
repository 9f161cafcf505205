"""Outcomes that blame a key, judged at most so many a minute per caller identity (issue 18).

An outcome reaches keyring as the edge reports it: a release or a report
saying what the upstream answered. One that blames a key (``policy.blames_key``:
a strike, a cooldown, a key marked invalid or forbidden) changes what every
tenant of the pool is served, and a compromised edge identity could send one
for every lease it takes and empty a pool. So each caller identity (the
name on its certificate, ``authorization.caller``) has a bucket of
``per_minute`` blames, refilled continuously (``per_minute / 60`` a second,
at most ``per_minute`` saved up). A blame past it is not judged: the lease's
slot is still given back and its call counted, only the key is left as it
was (``LeaseDesk.learn``), and the metrics count it by identity.

Sizing: a real upstream event costs few blames, since once a pair cools no
lease is handed out for it; a budget of a few hundred a minute for each edge
identity covers a pool's storms (edge replicas sharing one certificate share
its budget). Per replica: an outcome is judged once on each replica it
reaches, and each replica keeps its own buckets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class BlameBudget:
    """``allow(caller, now)``: whether one more blame of ``caller`` may be judged (it is then spent)."""

    def __init__(self, per_minute: int, *, max_callers: int = 1024) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._max_callers = max_callers
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, caller: str, now: float) -> bool:
        bucket = self._buckets.get(caller)
        if bucket is None:
            self._forget_idle(now)
            bucket = self._buckets[caller] = _Bucket(float(self.per_minute), now)
        else:
            bucket.tokens = min(float(self.per_minute), bucket.tokens + max(now - bucket.at, 0.0) * self._rate)
            bucket.at = max(bucket.at, now)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _forget_idle(self, now: float) -> None:
        """Bounded memory: past ``max_callers``, the buckets refilled to the brim are forgotten (nothing lost)."""
        if len(self._buckets) < self._max_callers:
            return
        full = [
            caller
            for caller, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * self._rate >= self.per_minute
        ]
        for caller in full:
            del self._buckets[caller]
