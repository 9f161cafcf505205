"""A key on an etcd lease for as long as its holder lives (``EtcdStore.register``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import aetcd

from services.keyring.store.base import Registration, StoreUnavailable, await_cancelled

log = logging.getLogger(__name__)

# EtcdStore's boundary: times one etcd call and translates its failure.
Operation = Callable[[str], contextlib.AbstractContextManager[None]]


class EtcdRegistration(Registration):
    """A key on an etcd lease, refreshed every ttl/3 and re-created if etcd forgot the lease."""

    def __init__(
        self,
        client: aetcd.Client,
        operation: Operation,
        key: str,
        value: bytes,
        ttl_s: int,
        on_gone: Callable[[EtcdRegistration], None],
    ) -> None:
        self._client = client
        self._operation = operation
        self._on_gone = on_gone
        self.key = key
        self._value = value
        self.ttl_s = ttl_s
        self._lease: aetcd.Lease | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_id(self) -> int:
        return self._lease.id if self._lease is not None else 0

    async def start(self) -> None:
        """Put the key on a new lease and keep it alive from now on."""
        await self._create()
        self._task = asyncio.get_running_loop().create_task(self._keep_alive(), name=f"register {self.key}")

    async def _create(self) -> None:
        """Grant a lease and put the key on it (used at start and after the lease was lost)."""
        with self._operation("lease_grant"):
            self._lease = await self._client.lease(self.ttl_s)
        with self._operation("put"):
            await self._client.put(self.key.encode(), self._value, lease=self._lease)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                if not await self._refresh():
                    log.warning("lease for %s was lost; re-registering", self.key)
                    await self._create()
            except StoreUnavailable as error:
                log.warning("keep-alive of %s failed: %s", self.key, error)

    async def _refresh(self) -> bool:
        """True while etcd still holds the lease (a reply with TTL <= 0 means it is gone)."""
        assert self._lease is not None
        with self._operation("lease_keepalive"):
            reply = await self._lease.refresh()
        return reply is not None and reply.TTL > 0

    def abandon(self) -> None:
        """Stop refreshing without deleting, as if the holder crashed (for tests)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._on_gone(self)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await await_cancelled(task)
        self._on_gone(self)
        if self._lease is not None:
            await self._revoke(self._lease)
            self._lease = None

    async def _revoke(self, lease: aetcd.Lease) -> None:
        """Revoking deletes the key at once; a lease etcd no longer knows is already gone."""
        try:
            with self._operation("lease_revoke"):
                await lease.revoke()
        except StoreUnavailable as error:
            if "lease not found" not in str(error):
                raise
