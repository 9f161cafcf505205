"""The usage ledger: every upstream call counted exactly once, across retries, replicas and their deaths.

Which release counts a call:

- the replica holding the lease counts it when it is released, in its
  current usage epoch, and answers with that epoch (``counted_epoch``);
- a lease this instance reclaimed unreleased (its stream ended and the grace
  passed, or its TTL did: the edge died or lost it) counts when reclaimed, as
  a call of unknown outcome (``reclaimed``): it may have reached the upstream;
- a release of a lease this instance granted but no longer holds counts only
  when the lease had been reclaimed unreleased, once, and then only resolves
  the unknown call (its outcome and tokens, no second request); a re-sent
  release this instance already counted (it names the epoch) counts nothing;
- a release of another instance's lease that the edge also keeps for its
  granter (``kept_for_granter``: delivered here while the granter's stream was
  down) counts nothing here: the granter, or its successor, gets it later;
- a handover (the edge cannot reach the granter and asks this replica to
  settle the release): counted here, once, when the granting instance is no
  longer a member, by the rule below; while it is one, nothing is counted or
  kept waiting here (``granter_alive``): the edge keeps owing it to the granter;
- any other release of another instance's lease counts only once that instance is no
  longer a member (until then it waits, ``count_departed``: if it lives, it
  holds the lease or counted the call), then only once, and only when the
  call was not counted there, or counted in an epoch that instance never
  flushed (its buckets in the store carry the epoch of their last write).

Epochs make a SIGKILLed replica lose nothing: counts go into the current
epoch; a flush (``housekeeping.flush_usage``) closes the epoch and writes the
dirty buckets in one commit, each stamped with it; once that is confirmed,
every count of that epoch or an earlier one is durable (``durable``, sent to
the edges with every lease stream reply). The edge keeps each release
answered with an epoch until it is durable and, when the replica's stream
breaks, re-sends the ones it has not seen durable: the next instance counts
those the dead one never flushed.

A call counted here for another instance's lease is counted for its client
token too when the release names it with the tag its granter made
(``Lease.token_tag``, ``LeaseSigner.vouched_token``): its pool and key otherwise.

Not covered (each needs two faults within one flush interval): a release
whose answer never reached the edge is counted again if its granter had
flushed it before dying; a call counted late by a replica that then dies
before its own flush is lost; a lease reclaimed (counted unknown) whose
granter then dies is counted again when its release is handed over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from .codec import Layout
from .domain.lease_ids import granting_instance
from .domain.leasing import LeaseRecord
from .domain.usage import Bucket, Call, RecentIds, UsageCounter
from .domain.view import KeyringView

MAX_WAITING = 10_000  # releases waiting for their granting instance to leave, at most
WAIT_FOR_DEPARTURE_S = 120.0  # after this, the granting instance is alive: it counted the call


@dataclass(frozen=True, slots=True)
class _Waiting:
    since: float
    call: Call
    counted_epoch: int


class UsageLedger:
    """This replica's usage counts and the rules that make each call count once."""

    def __init__(self, view: KeyringView, layout: Layout, instance: str, clock: Callable[[], float]) -> None:
        self.usage = UsageCounter()  # flushed by housekeeping
        self._view = view
        self._layout = layout
        self._instance = instance
        self._clock = clock
        self._expired = RecentIds()  # own leases reclaimed by their TTL: a late release still counts, once
        self._counted_late = RecentIds()  # other instances' leases counted here
        self._waiting: dict[str, _Waiting] = {}  # releases of a live instance's lease
        # A departed instance writes no more: its flushed epoch, read once (a SIGKILL's re-sent releases are many).
        self._departed_epochs: dict[str, int] = {}

    def count(self, call: Call) -> int:
        """Count a call of a lease this replica holds; the epoch it went into."""
        return self.usage.count(self._clock(), call)

    def reclaimed(self, lease: LeaseRecord) -> None:
        """A lease of this instance reclaimed unreleased: a call of unknown outcome (a late release resolves it)."""
        self.count(Call(lease.pool, lease.key_id, lease.token_id, False, 0, 0, unknown=True))
        self._expired.add(lease.lease_id)

    def count_late(self, lease_id: str, call: Call, counted_epoch: int, kept_for_granter: bool = False) -> int:
        """A release of a lease this replica does not hold: counted when the rules say so; the epoch, else 0.

        The epoch returned is non-zero only for this instance's own leases (counted
        now, or ``counted_epoch`` echoed: the edge keeps the release until durable).
        """
        instance = granting_instance(lease_id)
        if instance == self._instance:
            if counted_epoch:
                return counted_epoch
            return self.usage.resolve(self._clock(), call) if self._expired.take(lease_id) else 0
        if kept_for_granter or lease_id in self._counted_late:
            return 0
        if not self._is_member(instance):
            if self._counted_there(instance, counted_epoch) or not self._counted_late.add(lease_id):
                return 0
            self.count(call)
            return 0
        if len(self._waiting) < MAX_WAITING:
            self._waiting[lease_id] = _Waiting(self._clock(), call, counted_epoch)
        return 0

    def granter_alive(self, lease_id: str) -> bool:
        """Whether another instance granted the lease and is still a member (a handover counts nothing here)."""
        instance = granting_instance(lease_id)
        return instance != self._instance and self._is_member(instance)

    def count_departed(self, now: float) -> None:
        """Count the waiting releases whose granting instance left; forget those it outlived (it counted them)."""
        for lease_id, waiting in list(self._waiting.items()):
            instance = granting_instance(lease_id)
            if not self._is_member(instance):
                del self._waiting[lease_id]
                if not self._counted_there(instance, waiting.counted_epoch) and self._counted_late.add(lease_id):
                    self.count(waiting.call)
            elif now - waiting.since > WAIT_FOR_DEPARTURE_S:
                del self._waiting[lease_id]

    def flushed_epoch(self, instance: str) -> int:
        """The last usage epoch ``instance`` wrote to the store (0: none), from its buckets in the view."""
        prefix = self._layout.usage(instance, 0)[:-1]
        records = [value for path, value in self._view.usage.items() if path.startswith(prefix)]
        return max((Bucket.from_dict(orjson.loads(value)).epoch for value in records), default=0)

    def _counted_there(self, instance: str, counted_epoch: int) -> bool:
        """Whether the departed ``instance`` counted the call and its count reached the store."""
        if not counted_epoch:
            return False
        flushed = self._departed_epochs.get(instance)
        if flushed is None:
            if len(self._departed_epochs) >= MAX_WAITING:
                self._departed_epochs.clear()
            flushed = self._departed_epochs[instance] = self.flushed_epoch(instance)
        return counted_epoch <= flushed

    def _is_member(self, instance: str) -> bool:
        replica_id = instance.rpartition(".")[0]
        member = self._view.members.get(replica_id)
        if member is None:
            return False
        try:
            recorded = orjson.loads(member).get("instance")
        except (orjson.JSONDecodeError, AttributeError):
            return True
        return recorded is None or recorded == instance
