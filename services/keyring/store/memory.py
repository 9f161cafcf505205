"""``MemoryStore``: the store contract in process memory, for fast unit tests.

It mirrors etcd's semantics where the contract depends on them: one global
revision bumped once per commit that changes something, ``mod_revision``
guards, deletes of missing keys are no-ops, watch replay from a start
revision out of a bounded history, ``WatchCompacted`` below the compaction
floor, and leases that expire unless kept alive. Test hooks that etcd offers
too (``compact``, ``revoke_lease``) and one it cannot (``unavailable``) let
tests provoke the failure paths.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from services.keyring.store.base import (
    Entry,
    Event,
    Registration,
    Snapshot,
    Store,
    StoreUnavailable,
    WatchCompacted,
    Write,
    await_cancelled,
    validate_writes,
)

DEFAULT_HISTORY_LIMIT = 10_000


@dataclass(slots=True)
class _Stored:
    value: bytes
    mod_revision: int
    lease_id: int = 0


@dataclass(slots=True)
class _Lease:
    ttl_s: float
    keys: set[str] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class MemoryStore(Store):
    """The store contract in memory; single event loop, not thread-safe."""

    def __init__(self, *, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        self._data: dict[str, _Stored] = {}
        self._revision = 1  # like a fresh etcd: the first write gets revision 2
        self._history: list[tuple[int, list[Event]]] = []
        self._history_limit = history_limit
        self._compacted = 0  # watching from below this revision raises WatchCompacted
        self._changed = asyncio.Event()
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(1)
        self._registrations: set[MemoryRegistration] = set()
        self._unavailable = False
        self._closed = False

    # ------------------------------------------------------------ test hooks
    @property
    def revision(self) -> int:
        return self._revision

    @property
    def unavailable(self) -> bool:
        return self._unavailable

    @unavailable.setter
    def unavailable(self, value: bool) -> None:
        """While True every call (and every live watch) raises StoreUnavailable."""
        self._unavailable = value
        if value:
            self._notify()

    def compact(self, revision: int) -> None:
        """Forget history below ``revision``, as etcd's compaction does."""
        if revision > self._revision:
            raise ValueError(f"cannot compact to future revision {revision} > {self._revision}")
        self._compacted = max(self._compacted, revision)
        cut = bisect.bisect_left(self._history, self._compacted, key=lambda h: h[0])
        del self._history[:cut]
        self._notify()

    def revoke_lease(self, lease_id: int) -> None:
        """Drop a lease and its keys now, as if the store forgot it."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        if lease.timer is not None:
            lease.timer.cancel()
        self._apply([Write(key, None) for key in sorted(lease.keys) if self._bound(key, lease_id)])

    # ------------------------------------------------------------------ reads
    async def snapshot(self, prefix: str) -> Snapshot:
        self._check()
        entries = [
            Entry(key, stored.value, stored.mod_revision)
            for key, stored in sorted(self._data.items())
            if key.startswith(prefix)
        ]
        return Snapshot(self._revision, entries)

    async def get(self, key: str) -> Entry | None:
        self._check()
        stored = self._data.get(key)
        return Entry(key, stored.value, stored.mod_revision) if stored else None

    # ------------------------------------------------------------------ watch
    async def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[list[Event], None]:
        """Replay history from ``start_revision`` (0 = from now), then follow live changes."""
        self._check()
        next_rev = start_revision if start_revision > 0 else self._revision + 1
        while True:
            self._check()
            if next_rev < self._compacted:
                raise WatchCompacted(f"revision {next_rev} compacted (floor {self._compacted})")
            changed = self._changed
            batches = self._batches_from(prefix, next_rev)
            next_rev = max(next_rev, self._revision + 1)  # history up to now is scanned
            if not batches:
                await changed.wait()
                continue
            for batch in batches:
                yield batch

    def _batches_from(self, prefix: str, start: int) -> list[list[Event]]:
        first = bisect.bisect_left(self._history, start, key=lambda h: h[0])
        batches = []
        for _, events in self._history[first:]:
            mine = [e for e in events if e.key.startswith(prefix)]
            if mine:
                batches.append(mine)
        return batches

    # ----------------------------------------------------------------- writes
    async def commit(self, writes: Sequence[Write]) -> int | None:
        self._check()
        validate_writes(writes)
        if not all(self._guard_holds(w) for w in writes):
            return None
        return self._apply(writes)

    def _guard_holds(self, write: Write) -> bool:
        if write.expected_revision is None:
            return True
        stored = self._data.get(write.key)
        current = stored.mod_revision if stored else 0
        return current == write.expected_revision

    def _apply(self, writes: Sequence[Write], lease_id: int = 0) -> int:
        """Apply writes as one revision; a commit that changes nothing keeps the revision."""
        rev = self._revision + 1
        events = [e for w in writes if (e := self._apply_one(w, rev, lease_id)) is not None]
        if events:
            self._revision = rev
            self._history.append((rev, events))
            self._trim_history()
            self._notify()
        return self._revision

    def _apply_one(self, write: Write, rev: int, lease_id: int) -> Event | None:
        old = self._data.get(write.key)
        if old is not None and old.lease_id:
            lease = self._leases.get(old.lease_id)
            if lease is not None:
                lease.keys.discard(write.key)
        if write.value is None:
            if self._data.pop(write.key, None) is None:
                return None
            return Event(write.key, None, rev)
        self._data[write.key] = _Stored(write.value, rev, lease_id)
        if lease_id:
            self._leases[lease_id].keys.add(write.key)
        return Event(write.key, write.value, rev)

    def _trim_history(self) -> None:
        excess = len(self._history) - self._history_limit
        if excess > 0:
            del self._history[:excess]
            self._compacted = max(self._compacted, self._history[0][0])

    def _notify(self) -> None:
        """Wake every watcher; each re-reads history from its own next revision."""
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------- membership
    async def register(self, key: str, value: bytes, ttl_s: int) -> Registration:
        self._check()
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        registration = MemoryRegistration(self, key, value, ttl_s)
        self._registrations.add(registration)
        return registration

    def put_on_lease(self, key: str, value: bytes, ttl_s: float) -> int:
        """Grant a lease and put ``key`` on it (etcd: lease grant + put with lease); its id."""
        self._check()
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(ttl_s)
        self.keep_alive(lease_id)
        self._apply([Write(key, value)], lease_id=lease_id)
        return lease_id

    def keep_alive(self, lease_id: int) -> bool:
        """Push the lease's expiry ``ttl`` ahead; False when the lease is gone."""
        self._check()
        lease = self._leases.get(lease_id)
        if lease is None:
            return False
        if lease.timer is not None:
            lease.timer.cancel()
        lease.timer = asyncio.get_running_loop().call_later(lease.ttl_s, self.revoke_lease, lease_id)
        return True

    def unregister(self, registration: MemoryRegistration, revoke: bool) -> None:
        """Forget a registration; with ``revoke`` its lease and key go now."""
        self._registrations.discard(registration)
        if revoke:
            self._check()
            self.revoke_lease(registration.lease_id)

    def _bound(self, key: str, lease_id: int) -> bool:
        stored = self._data.get(key)
        return stored is not None and stored.lease_id == lease_id

    # ------------------------------------------------------------------- life
    async def close(self) -> None:
        """Close registrations (their keys go) and refuse further calls."""
        for registration in list(self._registrations):
            try:
                await registration.close()
            except StoreUnavailable:
                registration.abandon()  # its lease expires on its own
        self._closed = True
        self._notify()

    def _check(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory store is closed")
        if self._unavailable:
            raise StoreUnavailable("memory store marked unavailable")


class MemoryRegistration(Registration):
    """A key bound to an in-memory lease, kept alive every ttl/3 by a task."""

    def __init__(self, store: MemoryStore, key: str, value: bytes, ttl_s: int) -> None:
        self._store = store
        self.key = key
        self._value = value
        self.ttl_s = ttl_s
        self.lease_id = store.put_on_lease(key, value, ttl_s)
        self._task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"register {key}"
        )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                if not self._store.keep_alive(self.lease_id):
                    # the store forgot us: re-create, as the contract says
                    self.lease_id = self._store.put_on_lease(self.key, self._value, self.ttl_s)
            except StoreUnavailable:
                continue  # keep trying; the lease may still be alive when the store returns

    def abandon(self) -> None:
        """Stop refreshing without deleting, as if the holder crashed (for tests)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await await_cancelled(task)
        self._store.unregister(self, revoke=True)
