"""The state writer: every write this replica makes to the store.

State changes go to the store as transactions guarded by each record's
mod_revision (``Change.expected``). A lost guard means another replica (or
another task of this one) wrote first: the writer reads the paths again and
has the change decided again on fresh data (``transact``). A store that
cannot be reached becomes ``NotReady`` here, in ``_call``, and
nowhere else. What the store accepted is applied to the state cache at once,
before the watch brings it back.

Health decisions (an outcome's cooldown, a key's health) do not come through
``transact``: they are applied in memory first and written behind by
``write_behind.py``, whose lost guards merge again instead of deciding again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .cache import StateCache
from .codec import Layout, Record, encode
from .domain.errors import Conflict, NotReady
from .store import MAX_WRITES_PER_COMMIT, Entry, Store, StoreUnavailable, Write

MAX_ATTEMPTS = 8
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Change:
    """One record to write (``record``) or delete (``record is None``), guarded by ``expected`` (None: unguarded)."""

    path: str
    record: Record | None
    expected: int | None


Decide = Callable[[], Sequence[Change]]


class StateWriter:
    def __init__(self, store: Store, cache: StateCache) -> None:
        self._store = store
        self._cache = cache
        self._layout: Layout = cache.layout

    def put(self, record: Record) -> Change:
        """Write ``record``, guarded by the revision it was read at (0: must be new)."""
        return Change(self._layout.path_of(record), record, record.revision)

    def delete(self, record: Record) -> Change:
        """Delete ``record``, guarded by the revision it was read at."""
        return Change(self._layout.path_of(record), None, record.revision)

    def overwrite(self, record: Record) -> Change:
        """Write ``record`` whatever is stored (last writer wins: records of one owner, e.g. affinity)."""
        return Change(self._layout.path_of(record), record, None)

    def erase(self, path: str) -> Change:
        """Delete whatever is stored at ``path`` (nothing there: nothing happens)."""
        return Change(path, None, None)

    async def transact(self, decide: Decide, decided: Sequence[Change] | None = None) -> Sequence[Change]:
        """Write what ``decide`` decides on the view, guarded; on a lost guard refresh and decide again.

        ``decided`` is a decision already taken on the current view (an outcome
        judged once on release): it is written as it is unless a guard loses.
        """
        changes = decide() if decided is None else decided
        for _ in range(MAX_ATTEMPTS):
            if not changes or await self.commit(changes):
                return changes
            await self.refresh([change.path for change in changes])
            changes = decide()
        raise Conflict("the state changed concurrently too often; try again")

    async def commit(self, changes: Sequence[Change]) -> bool:
        """Write all changes atomically and apply them to the view; False when a guard lost."""
        if len(changes) > MAX_WRITES_PER_COMMIT:
            raise ValueError(f"at most {MAX_WRITES_PER_COMMIT} changes per commit")
        writes = [
            Write(change.path, None if change.record is None else encode(change.record), change.expected)
            for change in changes
        ]
        revision = await self._call(self._store.commit(writes))
        if revision is None:
            return False
        for write in writes:
            self._cache.apply(write.key, write.value, revision)
        return True

    async def commit_raw(self, writes: Sequence[Write]) -> bool:
        """Raw records (no ``Record``: a browser token) written atomically, guards as given; False when one lost."""
        revision = await self._call(self._store.commit(list(writes)))
        if revision is None:
            return False
        for write in writes:
            self._cache.apply(write.key, write.value, revision)
        return True

    async def write_unguarded(self, path: str, value: bytes | None) -> None:
        """Put (or delete, ``value is None``) a record only this replica writes: usage, audit."""
        await self.write_all_unguarded([(path, value)])

    async def write_all_unguarded(self, writes: Sequence[tuple[str, bytes | None]]) -> None:
        """Several records only this replica writes, in one atomic commit (a usage flush: all its buckets or none)."""
        revision = await self._call(self._store.commit([Write(path, value) for path, value in writes]))
        if revision is not None:
            for path, value in writes:
                self._cache.apply(path, value, revision)

    async def refresh(self, paths: list[str]) -> None:
        """Read ``paths`` from the store into the view now (a lost guard, or a record the watch has not brought yet)."""
        entries: list[Entry | None] = await self._call(asyncio.gather(*(self._store.get(path) for path in paths)))
        for path, entry in zip(paths, entries, strict=True):
            if entry is None:
                self._cache.forget(path)
            else:
                self._cache.apply(path, entry.value, entry.mod_revision)

    async def _call(self, operation: Awaitable[T]) -> T:
        """The one place an unreachable store becomes NotReady (the caller may try again later)."""
        try:
            return await operation
        except StoreUnavailable as error:
            raise NotReady("the store is unavailable; nothing was changed") from error
