"""Operator actions on pools; a forced delete takes the pool's keys and tokens with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from ..domain.allocator import require_pool
from ..domain.errors import AlreadyExists, FailedPrecondition
from ..domain.models import ClientToken, Pool, UpstreamKey
from ..domain.view import KeyringView
from ..store import MAX_WRITES_PER_COMMIT
from ..writer import Change, StateWriter
from .inputs import PoolChanges, chunks, valid_models, valid_policy, valid_pool, valid_text


class Pools:
    def __init__(self, view: KeyringView, writer: StateWriter, clock: Callable[[], float]) -> None:
        self._view = view
        self._writer = writer
        self._clock = clock

    async def create_pool(self, pool: Pool) -> Pool:
        pool = valid_pool(pool)

        def decide() -> list[Change]:
            if pool.name in self._view.pools:
                raise AlreadyExists(f"pool {pool.name!r} already exists")
            return [self._writer.put(dataclasses.replace(pool, created_at=self._clock(), revision=0))]

        await self._writer.transact(decide)
        return self._view.pools[pool.name]

    def get_pool(self, name: str) -> Pool:
        return require_pool(self._view, name)

    def list_pools(self) -> list[Pool]:
        return sorted(self._view.pools.values(), key=lambda pool: pool.name)

    async def update_pool(self, name: str, changes: PoolChanges) -> Pool:
        def decide() -> list[Change]:
            current = require_pool(self._view, name)
            updated = current
            if changes.allowed_models is not None:
                updated = dataclasses.replace(updated, allowed_models=valid_models(changes.allowed_models))
            if changes.strategy is not None:
                updated = dataclasses.replace(updated, strategy=changes.strategy)
            if changes.policy is not None:
                updated = dataclasses.replace(updated, policy=valid_policy(current, changes.policy))
            if changes.description is not None:
                updated = dataclasses.replace(updated, description=valid_text(changes.description, "description"))
            return [] if updated == current else [self._writer.put(updated)]

        await self._writer.transact(decide)
        return require_pool(self._view, name)

    async def delete_pool(self, name: str, force: bool) -> tuple[int, int]:
        """Delete a pool; refused while keys or tokens belong to it unless forced."""
        require_pool(self._view, name)
        keys, tokens = self._view.keys_of(name), self._view.tokens_of(name)
        if (keys or tokens) and not force:
            raise FailedPrecondition(
                f"pool {name!r} still has {len(keys)} keys and {len(tokens)} tokens; delete them or force"
            )
        members: list[UpstreamKey | ClientToken] = [*keys, *tokens]
        for chunk in chunks(members, MAX_WRITES_PER_COMMIT):
            await self._delete_all(chunk)

        def decide() -> list[Change]:
            pool = self._view.pools.get(name)
            return [self._writer.delete(pool)] if pool else []

        await self._writer.transact(decide)
        return len(keys), len(tokens)

    async def _delete_all(self, records: Sequence[UpstreamKey | ClientToken]) -> None:
        def decide() -> list[Change]:
            current = [self._current(record) for record in records]
            return [self._writer.delete(record) for record in current if record is not None]

        await self._writer.transact(decide)

    def _current(self, record: UpstreamKey | ClientToken) -> UpstreamKey | ClientToken | None:
        if isinstance(record, UpstreamKey):
            return self._view.keys.get(record.key_id)
        return self._view.tokens.get(record.token_id)
