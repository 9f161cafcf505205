"""One keyring replica: four rooms, each with one owner, and their lifecycle.

- ``cache`` (``StateCache``): the view of the store, built by a range read
  and kept current by a watch; readiness.
- ``writer`` (``StateWriter``): guarded transactions and commits; the one
  place an unreachable store becomes ``NotReady``.
- ``desk`` (``LeaseDesk``): acquire, release, outcome reporting, secrets;
  its health decisions written behind by ``decisions`` (``WriteBehind``).
- ``housekeeping`` (``Housekeeping``): janitor, usage, audit, the re-check
  of unhealthy keys.

Other modules use the rooms' public methods only; this object starts and
stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import orjson

from .cache import StateCache
from .codec import Layout
from .desk import Clock, LeaseDesk
from .domain.errors import KeyringError
from .domain.lease_ids import LeaseSigner
from .housekeeping import Checker, Housekeeping
from .sealing import SecretBox
from .store import Registration, Store, StoreUnavailable
from .write_behind import WriteBehind
from .writer import StateWriter


class Keyring:
    def __init__(
        self,
        store: Store,
        box: SecretBox,
        checker: Checker,
        *,
        replica_id: str,
        layout: Layout | None = None,
        membership_ttl_s: int = 10,
        janitor_interval_s: float = 1.0,
        recheck_interval_s: float = 0.0,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        lease_key: bytes | None = None,
    ) -> None:
        self.box = box
        self.replica_id = replica_id
        self.clock = clock
        # This process, as opposed to the replica's name (a pod name survives container
        # restarts): lease ids and usage buckets must not collide with a predecessor's.
        self.instance = f"{replica_id}.{secrets.token_hex(4)}"
        self.cache = StateCache(store, layout or Layout())
        self.writer = StateWriter(store, self.cache)
        # Lease ids are signed so any replica can vouch for another's lease (its release
        # still reports the outcome); replicas share the key, a lone keyring may use its own.
        signer = LeaseSigner(lease_key or secrets.token_bytes(32))
        self.decisions = WriteBehind(self.cache, self.writer)
        self.desk = LeaseDesk(
            self.cache,
            self.writer,
            box,
            instance=self.instance,
            clock=clock,
            rng=rng,
            signer=signer,
            decisions=self.decisions,
        )
        self.housekeeping = Housekeeping(
            self.cache, self.writer, self.desk, checker, instance=self.instance, clock=clock
        )
        self._store = store
        self._membership_ttl_s = membership_ttl_s
        self._janitor_interval_s = janitor_interval_s
        self._recheck_interval_s = recheck_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self._recheck: asyncio.Task[None] | None = None
        self._open_secrets: asyncio.Task[None] | None = None
        self._registration: Registration | None = None

    @property
    def ready(self) -> bool:
        """Serving: the view is built and the replica has not begun to shut down."""
        return self.desk.accepting and self.cache.built

    async def start(self, timeout_s: float = 30.0) -> None:
        """Build the view, join the replicas, start the chores, then take leases."""
        self._spawn(self.cache.follow(), "keyring-follow-store")
        await self.cache.wait_built(timeout_s)
        member = orjson.dumps({"replica_id": self.replica_id, "instance": self.instance, "started_at": self.clock()})
        self._registration = await self._store.register(
            self.cache.layout.member(self.replica_id), member, self._membership_ttl_s
        )
        self._spawn(self.housekeeping.janitor(self._janitor_interval_s), "keyring-janitor")
        self._spawn(self.decisions.run(), "keyring-write-behind")
        if self._recheck_interval_s > 0:
            recheck = self.housekeeping.recheck(self._recheck_interval_s, self.replica_id)
            self._recheck = self._spawn(recheck, "keyring-recheck")
        self.desk.accepting = True
        self._open_secrets = self._spawn(self.desk.open_secrets(), "keyring-open-secrets")  # ahead of first leases

    def stop_accepting(self) -> None:
        """First step of a graceful shutdown: new leases refused (releases still work), no re-checks, no warm-up."""
        self.desk.accepting = False
        for chore in (self._recheck, self._open_secrets):
            if chore is not None:
                chore.cancel()

    async def leave(self) -> None:
        """The start of a graceful shutdown: new leases refused, then the membership dropped at once.

        The other replicas see one member fewer and take the whole of each split
        budget (per-key in-flight caps, per-minute budgets) while this one drains.
        """
        self.stop_accepting()
        if self._registration is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._registration.close()
            self._registration = None

    async def stop(self) -> None:
        self.stop_accepting()
        if self._registration is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._registration.close()
            self._registration = None
        await self.decisions.drain(timeout_s=2.0)
        # The last counts: what is not written here the edges re-send (they keep releases until durable).
        with contextlib.suppress(KeyringError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.housekeeping.flush_usage()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.housekeeping.close()

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.append(task)
        return task
