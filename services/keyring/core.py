"""One keyring replica: its view of the store, its leases, and every write it makes.

The view is built by a range read and kept current by a watch from that
revision (patroni's KVCache, in asyncio). Leases are granted from memory.
State changes go to the store as transactions guarded by each record's
mod_revision; a lost guard means another replica wrote first, so the change
is decided again on fresh data (``transact``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .codec import Layout, Record, decode, encode
from .domain.allocator import Allocator, Grant
from .domain.errors import Conflict, KeyringError, NotReady
from .domain.leasing import LeaseBook
from .domain.models import (
    ClientToken,
    Cooldown,
    CooldownId,
    CooldownScope,
    KeyState,
    Outcome,
    Policy,
    Pool,
    Transport,
    UpstreamKey,
)
from .domain.policy import is_routine_success, judge
from .domain.usage import Bucket, UsageCounter, UsageSummary, summarise
from .domain.view import KeyringView
from .checker import UpstreamChecker
from .sealing import SecretBox
from .store import MAX_WRITES_PER_COMMIT, Registration, Snapshot, Store, StoreUnavailable, WatchCompacted, Write

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
COOLDOWN_GC_INTERVAL_S = 30.0
USAGE_FLUSH_INTERVAL_S = 5.0
USAGE_RETENTION_S = 25 * 3600
AUDIT_LIMIT = 1000
Clock = Callable[[], float]


class Observer:
    """What the core tells the outside world (metrics); every method is a no-op here."""

    def lease_granted(self, pool: str) -> None: ...

    def lease_denied(self, pool: str, reason: str) -> None: ...

    def lease_released(self, pool: str, key_id: str, held_s: float, failed: bool) -> None: ...

    def lease_expired(self, pool: str) -> None: ...

    def cooldown_started(self, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Change:
    """One record to write (``record``) or delete (``record is None``), guarded by ``expected``."""

    path: str
    record: Record | None
    expected: int


class Keyring:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        *,
        replica_id: str,
        layout: Layout | None = None,
        membership_ttl_s: int = 10,
        janitor_interval_s: float = 1.0,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.box = box
        self.layout = layout or Layout()
        self.replica_id = replica_id
        self.clock = clock
        self.view = KeyringView()
        # This process, as opposed to the replica's name (a pod name survives container
        # restarts): lease ids and usage buckets must not collide with a predecessor's.
        self.instance = f"{replica_id}.{secrets.token_hex(4)}"
        self.book = LeaseBook(self.instance)
        self.allocator = Allocator(self.view, self.book, self.replica_count, rng)
        self._membership_ttl_s = membership_ttl_s
        self._janitor_interval_s = janitor_interval_s
        self._revisions: dict[str, int] = {}
        self._secrets: dict[str, tuple[str, str]] = {}  # key id -> (sealed, clear)
        self._built = asyncio.Event()
        self._accepting = False
        self._tasks: list[asyncio.Task[None]] = []
        self._registration: Registration | None = None
        self.usage = UsageCounter()
        # When each key and client token was last used, over all replicas (from their usage buckets).
        self.last_used: dict[str, float] = {}
        # The newest store revision this replica has seen (its own commits included);
        # the watch is behind by store_revision - view.revision.
        self.store_revision = 0
        self.observer = Observer()

    # -- lifecycle ------------------------------------------------------

    @property
    def watch_lag(self) -> int:
        """Revisions the watch-fed view trails the newest revision this replica knows of."""
        return max(0, self.store_revision - self.view.revision)

    @property
    def ready(self) -> bool:
        """Serving: the view is built and the replica has not begun to shut down."""
        return self._accepting and self._built.is_set()

    def replica_count(self) -> int:
        return max(1, len(self.view.members))

    async def start(self, timeout_s: float = 30.0) -> None:
        self._tasks.append(asyncio.create_task(self._follow_store(), name="keyring-follow-store"))
        await asyncio.wait_for(self._built.wait(), timeout_s)
        member = orjson.dumps({"replica_id": self.replica_id, "started_at": self.clock()})
        self._registration = await self.store.register(
            self.layout.member(self.replica_id), member, self._membership_ttl_s
        )
        self._tasks.append(asyncio.create_task(self._janitor(), name="keyring-janitor"))
        self._accepting = True

    def stop_accepting(self) -> None:
        """First step of a graceful shutdown: new leases are refused, releases still work."""
        self._accepting = False

    async def stop(self) -> None:
        self._accepting = False
        if self._registration is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._registration.close()
            self._registration = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- leasing --------------------------------------------------------

    def acquire(self, token_hash: str, model: str, exclude: frozenset[str] = frozenset()) -> tuple[Grant, str]:
        """A lease and the key's secret in clear; raises a domain error when refused."""
        if not self._accepting:
            raise NotReady("this keyring replica is not serving leases")
        try:
            grant = self.allocator.acquire(token_hash, model, exclude, self.clock())
        except KeyringError as error:
            self.observer.lease_denied(getattr(error, "pool", ""), type(error).__name__)
            raise
        self.observer.lease_granted(grant.pool.name)
        return grant, self._secret_of(grant.key.key_id, grant.key.sealed_secret)

    def release_slot(self, lease_id: str, key_id: str, model: str, outcome: Outcome) -> tuple[bool, str, str]:
        """Give the slot back and count the call; returns (was ours, key id, model)."""
        lease = self.allocator.release(lease_id)
        token_id = ""
        if lease is not None:
            key_id, model, token_id = lease.key_id, lease.model, lease.token_id
        key = self.view.keys.get(key_id)
        if key is not None and outcome.transport is not Transport.CANCELLED:
            now = self.clock()
            failed = outcome.transport is not Transport.OK or not 200 <= outcome.http_status < 300
            self.usage.count(now, key.pool, key_id, token_id, failed, outcome.input_tokens, outcome.output_tokens)
            self.last_used[key_id] = now
            if token_id:
                self.last_used[token_id] = now
            held_s = now - lease.granted_at if lease is not None else outcome.latency_s
            self.observer.lease_released(key.pool, key_id, held_s, failed)
        return lease is not None, key_id, model

    def outcome_is_news(self, key_id: str, model: str, outcome: Outcome) -> bool:
        """Whether the outcome changes any state (most successes do not: no write, no wait)."""
        key = self.view.keys.get(key_id)
        if key is None or is_routine_success(outcome, key):
            return False
        return bool(self._outcome_changes(key_id, model, outcome))

    async def release(self, lease_id: str, key_id: str, model: str, outcome: Outcome) -> bool:
        """Give the slot back and learn from the outcome; False when the lease was not ours."""
        known, key_id, model = self.release_slot(lease_id, key_id, model, outcome)
        if self.outcome_is_news(key_id, model, outcome):
            await self.report(key_id, model, outcome)
        return known

    async def report(self, key_id: str, model: str, outcome: Outcome) -> None:
        """Apply the outcome policy and persist what it changes."""
        changes = await self.transact(functools.partial(self._outcome_changes, key_id, model, outcome))
        for change in changes:
            if isinstance(change.record, Cooldown):
                self.observer.cooldown_started(change.record.reason.value)

    async def verify(self, checker: UpstreamChecker, key_ids: list[str]) -> list[tuple[str, Outcome]]:
        """Check keys upstream; a key that answers is revived, a refusal is judged as usual."""
        results = []
        for key_id in key_ids:
            key = self.view.keys.get(key_id)
            if key is None:
                continue
            outcome = await checker.check(self._secret_of(key_id, key.sealed_secret))
            if 200 <= outcome.http_status < 300:
                await self.transact(functools.partial(self._revived, key_id))
            else:
                await self.report(key_id, "", outcome)
            results.append((key_id, outcome))
        return results

    def _revived(self, key_id: str) -> list[Change]:
        key = self.view.keys.get(key_id)
        if key is None or key.state is KeyState.DISABLED:
            return []
        healthy = dataclasses.replace(key, state=KeyState.ACTIVE, state_until=0.0, consecutive_failures=0, forbidden_strikes=0)
        return [] if healthy == key else [put(self.layout, healthy)]

    def unhealthy_keys(self, pool: str = "") -> list[str]:
        return sorted(
            key.key_id
            for key in self.view.keys.values()
            if key.state in (KeyState.INVALID, KeyState.SUSPENDED) and (not pool or key.pool == pool)
        )

    def is_leader(self) -> bool:
        """The replica with the smallest id does the cluster's periodic chores."""
        return min(self.view.members, default=self.replica_id) == self.replica_id

    def _outcome_changes(self, key_id: str, model: str, outcome: Outcome) -> list[Change]:
        key = self.view.keys.get(key_id)
        if key is None:
            return []
        pool = self.view.pools.get(key.pool)
        policy = pool.policy if pool else Policy()
        verdict = judge(outcome, key, model, policy, self.clock(), self.view.cooldowns)
        changes = []
        if verdict.cooldown is not None:
            changes.append(put(self.layout, verdict.cooldown))
        if verdict.key is not None:
            changes.append(put(self.layout, verdict.key))
        return changes

    def _secret_of(self, key_id: str, sealed: str) -> str:
        cached = self._secrets.get(key_id)
        if cached is not None and cached[0] == sealed:
            return cached[1]
        clear = self.box.open(sealed, key_id)
        self._secrets[key_id] = (sealed, clear)
        return clear

    # -- writes ---------------------------------------------------------

    async def transact(self, decide: Callable[[], list[Change]]) -> list[Change]:
        """Decide on the view, write guarded; on a lost guard refresh and decide again."""
        for _ in range(MAX_ATTEMPTS):
            changes = decide()
            if not changes or await self.commit(changes):
                return changes
            await self._refresh([change.path for change in changes])
        raise Conflict("the state changed concurrently too often; try again")

    async def commit(self, changes: list[Change]) -> bool:
        """Write all changes atomically and apply them to the view; False when a guard lost."""
        if len(changes) > MAX_WRITES_PER_COMMIT:
            raise ValueError(f"at most {MAX_WRITES_PER_COMMIT} changes per commit")
        writes = [
            Write(change.path, None if change.record is None else encode(change.record), change.expected)
            for change in changes
        ]
        try:
            revision = await self.store.commit(writes)
        except StoreUnavailable as error:
            raise NotReady("the store is unavailable; nothing was changed") from error
        if revision is None:
            return False
        self.store_revision = max(self.store_revision, revision)
        for write in writes:
            self._apply(write.key, write.value, revision)
        return True

    async def _refresh(self, paths: list[str]) -> None:
        for path in paths:
            try:
                entry = await self.store.get(path)
            except StoreUnavailable as error:
                raise NotReady("the store is unavailable") from error
            if entry is None:
                self._forget(path)
            else:
                self._apply(path, entry.value, entry.mod_revision)

    # -- following the store --------------------------------------------

    async def _follow_store(self) -> None:
        """Range read, then watch from that revision; rebuild after any watch failure."""
        backoff = 0.1
        while True:
            try:
                snapshot = await self.store.snapshot(self.layout.prefix)
                self._rebuild(snapshot)
                self._built.set()
                backoff = 0.1
                async with contextlib.aclosing(self.store.watch(self.layout.prefix, snapshot.revision + 1)) as watch:
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
        self._revisions.clear()
        for entry in snapshot.entries:
            self._apply(entry.key, entry.value, entry.mod_revision)
        self.view.revision = snapshot.revision
        self.store_revision = max(self.store_revision, snapshot.revision)

    def _apply(self, path: str, value: bytes | None, revision: int) -> None:
        """Apply one stored change to the view unless the view already has a newer one."""
        if revision <= self._revisions.get(path, 0):
            return
        self._revisions[path] = revision
        if value is None:
            self._forget(path)
            return
        kind, parts = self.layout.kind_of(path)
        if kind == "members":
            self.view.members[parts[0]] = value
            return
        if kind in ("usage", "audit"):
            getattr(self.view, kind)[path] = value
            if kind == "usage":
                self._merge_last_used(value)
            return
        try:
            record = decode(kind, value, revision)
        except (ValueError, KeyError, TypeError):
            log.error("skipping a malformed record at %s", path)
            return
        if record is not None:
            self._put_in_view(record)

    def _merge_last_used(self, bucket: bytes) -> None:
        try:
            seen = orjson.loads(bucket).get("last_used", {})
        except (orjson.JSONDecodeError, AttributeError):
            return
        for subject, at in seen.items():
            if at > self.last_used.get(subject, 0.0):
                self.last_used[subject] = at

    def _put_in_view(self, record: Record) -> None:
        if isinstance(record, Pool):
            self.view.put_pool(record)
        elif isinstance(record, UpstreamKey):
            self.view.put_key(record)
        elif isinstance(record, ClientToken):
            self.view.put_token(record)
        elif isinstance(record, Cooldown):
            self.view.put_cooldown(record)

    def _forget(self, path: str) -> None:
        kind, parts = self.layout.kind_of(path)
        if kind == "pools":
            self.view.remove_pool(parts[0])
        elif kind == "keys":
            self.view.remove_key(parts[0])
            self._secrets.pop(parts[0], None)
        elif kind == "tokens":
            self.view.remove_token(parts[0])
        elif kind == "cooldowns" and len(parts) == 3:
            self.view.remove_cooldown(CooldownId(CooldownScope(parts[0]), parts[1], parts[2]))
        elif kind == "members":
            self.view.members.pop(parts[0], None)
        elif kind in ("usage", "audit"):
            getattr(self.view, kind).pop(path, None)

    # -- housekeeping ---------------------------------------------------

    async def _janitor(self) -> None:
        """Reclaim abandoned leases, flush usage, drop what has aged out."""
        last_gc = last_flush = 0.0
        while True:
            await asyncio.sleep(self._janitor_interval_s)
            now = self.clock()
            for lease in self.book.reclaim_expired(now):
                self.observer.lease_expired(lease.pool)
            with contextlib.suppress(NotReady, Conflict):
                if now - last_flush >= USAGE_FLUSH_INTERVAL_S:
                    last_flush = now
                    await self.flush_usage()
                if now - last_gc >= COOLDOWN_GC_INTERVAL_S:
                    last_gc = now
                    await self._collect_cooldowns(now)
                    await self._collect_usage_and_audit(now)

    # -- usage and audit ------------------------------------------------

    async def flush_usage(self) -> None:
        """Write this replica's changed usage buckets (only this replica writes them)."""
        for bucket in self.usage.take_dirty(self.clock()):
            path = self.layout.usage(self.instance, bucket.start)
            await self._write_unguarded(path, orjson.dumps(bucket.to_dict()))

    async def usage_summary(self, window_s: float, pool: str = "") -> UsageSummary:
        await self.flush_usage()
        buckets = [Bucket.from_dict(orjson.loads(value)) for value in self.view.usage.values()]
        return summarise(buckets, self.clock() - window_s, pool)

    async def record_audit(self, actor: str, action: str, target: str, detail: str) -> None:
        now = self.clock()
        entry = {"at": now, "actor": actor[:200], "action": action, "target": target[:200], "detail": detail[:500]}
        await self._write_unguarded(self.layout.audit(int(now * 1000), secrets.token_hex(4)), orjson.dumps(entry))

    def audit_entries(self, limit: int) -> list[dict[str, Any]]:
        newest = sorted(self.view.audit, reverse=True)[:limit]
        return [orjson.loads(self.view.audit[path]) for path in newest]

    async def _write_unguarded(self, path: str, value: bytes | None) -> None:
        try:
            revision = await self.store.commit([Write(path, value)])
        except StoreUnavailable as error:
            raise NotReady("the store is unavailable; nothing was changed") from error
        if revision is not None:
            self.store_revision = max(self.store_revision, revision)
            self._apply(path, value, revision)

    async def _collect_usage_and_audit(self, now: float) -> None:
        horizon = now - USAGE_RETENTION_S
        for path in [p for p in self.view.usage if int(p.rsplit("/", 1)[1]) < horizon]:
            await self._write_unguarded(path, None)
        for path in sorted(self.view.audit)[:-AUDIT_LIMIT]:
            await self._write_unguarded(path, None)

    async def _collect_cooldowns(self, now: float) -> None:
        memory = max((pool.policy.strike_memory_s for pool in self.view.pools.values()), default=3600.0)
        stale = [c for c in self.view.cooldowns.values() if c.until + memory < now]
        for cooldown in stale:
            await self.commit([delete(self.layout, cooldown)])


def put(layout: Layout, record: Record) -> Change:
    """Write ``record``, guarded by the revision it was read at (0: must be new)."""
    return Change(layout.path_of(record), record, record.revision)


def delete(layout: Layout, record: Record) -> Change:
    return Change(layout.path_of(record), None, record.revision)
