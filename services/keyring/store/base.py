"""The store contract keyring's state lives behind.

Keyring keeps a full view of its state in memory and persists every change
here. Two implementations follow this contract: ``EtcdStore`` (aetcd, the
real one) and ``MemoryStore`` (for fast unit tests); one contract test suite
runs against both, the etcd run on a real etcd.

Contract
--------
Keys are ``str`` paths under a prefix, values are ``bytes``. Every stored
entry remembers the ``mod_revision`` of its last write; revisions grow
monotonically across the whole store (as etcd's do).

Reads
    ``snapshot(prefix)`` is one consistent range read: all entries under the
    prefix at one ``revision``. ``get(key)`` reads one entry or ``None``.

Watch
    ``watch(prefix, start_revision)`` yields batches of ``Event`` for every
    change under the prefix from ``start_revision`` on (inclusive), in
    revision order, each batch from one store revision. It raises
    ``WatchCompacted`` when ``start_revision`` is no longer available (the
    caller rebuilds from a new snapshot) and ``StoreUnavailable`` when the
    store is unreachable. It never silently skips events.

Writes (the only atomic operation)
    ``commit(writes)`` applies all writes in one transaction, guarded by each
    write's ``expected_revision``: ``None`` = no guard, ``0`` = the key must
    not exist, ``n > 0`` = the key's current mod_revision must be ``n``.
    Returns the new store revision when every guard held, ``None`` when any
    guard lost (then nothing was written). Losing a guard is normal under
    several replicas: re-read and decide again. At most ``MAX_WRITES_PER_COMMIT``
    writes go in one commit (etcd's default --max-txn-ops is 128).

Membership
    ``register(key, value, ttl_s)`` puts ``key`` bound to a store-side lease
    (etcd lease) and keeps it alive in the background; the key disappears
    ``ttl_s`` after its holder dies. ``Registration.close()`` deletes it at
    once. If the store forgets the lease (expired while unreachable), the
    registration is re-created.

Failures
    Losing a guard returns ``None``; an unreachable or failing store raises
    ``StoreUnavailable`` (from every method). Nothing else escapes.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

MAX_WRITES_PER_COMMIT = 128


class StoreError(Exception):
    """Base of the store's exceptions."""


class StoreUnavailable(StoreError):
    """The store could not be reached or failed; the operation may not have happened."""


class WatchCompacted(StoreError):
    """The watch's start revision was compacted away; rebuild from a snapshot."""


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class Event:
    """One change; ``value is None`` means the key was deleted (or expired)."""

    key: str
    value: bytes | None
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Write:
    """A put (``value`` set) or a delete (``value is None``), optionally guarded."""

    key: str
    value: bytes | None
    expected_revision: int | None = None


def validate_writes(writes: Sequence[Write]) -> None:
    """Reject what etcd rejects as a malformed txn: too many ops, a key twice."""
    if len(writes) > MAX_WRITES_PER_COMMIT:
        raise ValueError(f"{len(writes)} writes in one commit, at most {MAX_WRITES_PER_COMMIT}")
    keys = [w.key for w in writes]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice in one commit")


async def await_cancelled(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` and wait for it; swallow its CancelledError but not our own."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class Registration(abc.ABC):
    """A key kept alive by the store for as long as its holder lives."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the keep-alive and delete the key now."""


class Store(abc.ABC):
    """See the module docstring for the contract."""

    @abc.abstractmethod
    async def snapshot(self, prefix: str) -> Snapshot: ...

    @abc.abstractmethod
    async def get(self, key: str) -> Entry | None: ...

    @abc.abstractmethod
    def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[list[Event], None]: ...

    @abc.abstractmethod
    async def commit(self, writes: Sequence[Write]) -> int | None: ...

    @abc.abstractmethod
    async def register(self, key: str, value: bytes, ttl_s: int) -> Registration: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
