"""The state cache: this replica's view of the store, and nothing but reading it.

The view is built by a range read and kept current by a watch from that
revision (patroni's KVCache, in asyncio); after any watch failure it is
rebuilt from a new snapshot. Each path remembers the revision it was last
applied at, so an older change (a watch event that trails this replica's own
commit) never overwrites a newer one. The state writer applies its commits
here through ``apply``; the write-behind (``write_behind.py``) puts health
decisions in through ``put_decided``; nobody else changes the view.

The view is the store plus this replica's decisions the store has not
confirmed yet (``pending``, ``domain/decisions.py``): every cooldown or key
record applied from the store (watch event, re-read, rebuilt snapshot) has
them merged in, and a pending cooldown the store does not hold (yet, or
any more) stays in the view. So a decision holds from the moment it is made,
whatever the store says meanwhile, until the store says it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import orjson

from .codec import Layout, Record, decode
from .domain.admissions import Published
from .domain.decisions import Decision, PendingDecisions, merge_cooldown, merge_health, merge_limit
from .domain.models import (
    Affinity,
    ClientToken,
    Cooldown,
    CooldownId,
    CooldownScope,
    LimitId,
    Pool,
    QuotaLimit,
    UpstreamKey,
)
from .domain.view import KeyringView
from .store import Snapshot, Store, StoreUnavailable, WatchCompacted

log = logging.getLogger(__name__)


class StateCache:
    def __init__(self, store: Store, layout: Layout) -> None:
        self.layout = layout
        self.view = KeyringView()
        # When each key and client token was last used, over all replicas (from their usage buckets): merged
        # when read (``last_used``), not as each bucket arrives, so the lease path never walks a bucket.
        self._last_used: dict[str, float] = {}
        self._unmerged: dict[str, bytes] = {}  # usage buckets by path, the newest of each, not merged yet
        # The newest store revision this replica has seen (its own commits included);
        # the watch is behind by store_revision - view.revision.
        self.store_revision = 0
        # Called with a key id when the key leaves the view (the lease desk drops its secret).
        self.on_key_removed: list[Callable[[str], None]] = []
        # Called with each key record read from the store (added, edited, resealed: the lease desk opens its secret).
        self.on_key_put: list[Callable[[UpstreamKey], None]] = []
        # Told the id of a client token or the name of a pool put or removed (credits granted for it are revoked).
        self.on_token_changed: list[Callable[[str], None]] = []
        self.on_pool_changed: list[Callable[[str], None]] = []
        # Health decisions of this replica not confirmed by the store yet (written by write_behind.py).
        self.pending = PendingDecisions()
        self._store = store
        self._revisions: dict[str, int] = {}
        self._built = asyncio.Event()
        self._instances: tuple[str, ...] | None = None  # the members' instances, until the membership changes

    @property
    def built(self) -> bool:
        return self._built.is_set()

    async def wait_built(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._built.wait(), timeout_s)

    @property
    def watch_lag(self) -> int:
        """Revisions the watch-fed view trails the newest revision this replica knows of."""
        return max(0, self.store_revision - self.view.revision)

    def replica_count(self) -> int:
        return max(1, len(self.view.members))

    def instances(self) -> tuple[str, ...]:
        """The live keyring instances (a lease id's instance part), sorted; the same tuple until members change."""
        if self._instances is None:
            self._instances = tuple(sorted(filter(None, map(member_instance, self.view.members.values()))))
        return self._instances

    def is_leader(self, replica_id: str) -> bool:
        """The replica with the smallest id does the cluster's periodic chores."""
        return min(self.view.members, default=replica_id) == replica_id

    # -- following the store --------------------------------------------

    async def follow(self) -> None:
        """Range read, then watch from that revision; rebuild after any watch failure (runs until cancelled)."""
        backoff = 0.1
        while True:
            try:
                snapshot = await self._store.snapshot(self.layout.prefix)
                self._rebuild(snapshot)
                self._built.set()
                backoff = 0.1
                async with contextlib.aclosing(self._store.watch(self.layout.prefix, snapshot.revision + 1)) as watch:
                    async for events in watch:
                        for event in events:
                            self._apply(event.key, event.value, event.mod_revision)
                            self.view.revision = max(self.view.revision, event.mod_revision)
                        self.store_revision = max(self.store_revision, self.view.revision)
            except (StoreUnavailable, WatchCompacted) as error:
                log.warning("store watch interrupted (%s); rebuilding the view", type(error).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _rebuild(self, snapshot: Snapshot) -> None:
        self.view.clear()
        self._instances = None
        self._revisions.clear()
        for entry in snapshot.entries:
            self._apply(entry.key, entry.value, entry.mod_revision)
        for cooldown in self.pending.orphan_cooldowns():
            if cooldown.id not in self.view.cooldowns:
                self.view.put_cooldown(cooldown)
        for limit in self.pending.orphan_limits():
            if limit.id not in self.view.limits:
                self.view.put_limit(limit)
        self.view.revision = snapshot.revision
        self.store_revision = max(self.store_revision, snapshot.revision)

    # -- what the writer learnt -----------------------------------------

    def apply(self, path: str, value: bytes | None, revision: int) -> None:
        """A committed write (``value is None``: deleted) at ``revision``, or a fresh read of it."""
        self.store_revision = max(self.store_revision, revision)
        self._apply(path, value, revision)

    def _apply(self, path: str, value: bytes | None, revision: int) -> None:
        """Apply one stored change to the view unless the view already has a newer one."""
        if revision <= self._revisions.get(path, 0):
            return
        self._revisions[path] = revision
        if value is None:
            self.forget(path)
            return
        kind, parts = self.layout.kind_of(path)
        if kind == "members":
            self.view.members[parts[0]] = value
            self._instances = None
            return
        if kind == "live_tokens":
            self.view.live_tokens[path] = (value, revision)
            return
        if kind in ("usage", "usage_keys", "audit", "sessions"):
            getattr(self.view, kind)[path] = value
            if kind in ("usage", "usage_keys"):
                self._unmerged[path] = value
            return
        if kind == "admitted":
            try:
                self.view.admitted[parts[0]] = Published.from_dict(orjson.loads(value))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                log.error("skipping a malformed record at %s", path)
                return
            self.view.admitted_version += 1
            return
        try:
            record = decode(kind, value, revision)
        except (ValueError, KeyError, TypeError):
            log.error("skipping a malformed record at %s", path)
            return
        if record is not None:
            self._put_in_view(record)

    @property
    def last_used(self) -> dict[str, float]:
        """When each key and client token was last used, over all replicas (this replica's calls write it too).

        A replica's usage bucket names up to 100,000 keys and comes back at every flush: parsing it is left to
        the reads (admin pages), off the lease path's event loop.
        """
        if self._unmerged:
            buckets, self._unmerged = self._unmerged, {}
            for bucket in buckets.values():
                self._merge_last_used(bucket)
        return self._last_used

    def _merge_last_used(self, bucket: bytes) -> None:
        try:
            seen = orjson.loads(bucket).get("last_used", {})
        except (orjson.JSONDecodeError, AttributeError):
            return
        last_used = self._last_used
        for subject, at in seen.items():
            if at > last_used.get(subject, 0.0):
                last_used[subject] = at

    def put_decided(self, decided: Decision) -> bool:
        """A health decision (this replica's, or a peer's) merged into the view now; False: it said so already."""
        if isinstance(decided, UpstreamKey):
            key = self.view.keys.get(decided.key_id)
            if key is None:
                return False
            merged_key = merge_health(key, decided)
            if merged_key is key:
                return False
            self.view.put_key(merged_key)
            return True
        if isinstance(decided, QuotaLimit):
            known = self.view.limits.get(decided.id)
            merged_limit = merge_limit(known, decided)
            if merged_limit is known:
                return False
            self.view.put_limit(merged_limit)
            return True
        cooldown = self.view.cooldowns.get(decided.id)
        merged = merge_cooldown(cooldown, decided)
        if merged is cooldown:
            return False
        self.view.put_cooldown(merged)
        return True

    def _put_in_view(self, record: Record) -> None:
        if self.pending.entries and isinstance(record, (UpstreamKey, Cooldown, QuotaLimit)):
            record = self.pending.overlay(record)
        if isinstance(record, Pool):
            self.view.put_pool(record)
            for listener in self.on_pool_changed:
                listener(record.name)
        elif isinstance(record, UpstreamKey):
            self.view.put_key(record)
            for key_listener in self.on_key_put:
                key_listener(record)
        elif isinstance(record, ClientToken):
            self.view.put_token(record)
            for listener in self.on_token_changed:
                listener(record.token_id)
        elif isinstance(record, Cooldown):
            self.view.put_cooldown(record)
        elif isinstance(record, Affinity):
            self.view.put_affinity(record)
        elif isinstance(record, QuotaLimit):
            self.view.put_limit(record)

    def forget(self, path: str) -> None:
        """The record at ``path`` is gone from the store (read fresh after a lost guard)."""
        kind, parts = self.layout.kind_of(path)
        if kind == "pools":
            self.view.remove_pool(parts[0])
            for listener in self.on_pool_changed:
                listener(parts[0])
        elif kind == "keys":
            self.pending.discard(parts[0])
            self.view.remove_key(parts[0])
            for listener in self.on_key_removed:
                listener(parts[0])
        elif kind == "tokens":
            self.view.remove_token(parts[0])
            for listener in self.on_token_changed:
                listener(parts[0])
        elif kind == "cooldowns" and len(parts) == 3:
            cooldown_id = CooldownId(CooldownScope(parts[0]), parts[1], parts[2])
            kept = self.pending.get(cooldown_id)
            if isinstance(kept, Cooldown):  # decided here, not in the store (yet): it stays
                self.view.put_cooldown(kept)
            else:
                self.view.remove_cooldown(cooldown_id)
        elif kind == "limits" and len(parts) == 3:
            limit_id = LimitId(*parts)
            pending = self.pending.get(limit_id)
            if isinstance(pending, QuotaLimit):  # learnt here, not in the store (yet): it stays
                self.view.put_limit(pending)
            else:
                self.view.remove_limit(limit_id)
        elif kind == "affinity" and len(parts) == 2:
            self.view.remove_affinity(parts[0], parts[1])
        elif kind == "members":
            self.view.members.pop(parts[0], None)
            self._instances = None
        elif kind in ("usage", "usage_keys", "audit", "sessions", "live_tokens"):
            getattr(self.view, kind).pop(path, None)
        elif kind == "admitted":
            self.view.admitted.pop(parts[0], None)
            self.view.admitted_version += 1


def member_instance(record: bytes) -> str:
    """The instance a membership record names ("": a record without one, or not ours)."""
    try:
        instance = orjson.loads(record).get("instance")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return instance if isinstance(instance, str) else ""
