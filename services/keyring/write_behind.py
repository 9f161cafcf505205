"""Write-behind persistence of health decisions: applied in memory at once, written to the store after.

A decision (a cooldown, a key's health; ``domain/decisions.py``) takes
effect in this replica's view the moment it is made (``decide``): the next
acquire already leases by it, and the release that caused it is answered
without waiting for the store. It also joins the pending decisions (held by
the state cache, which folds them into every record it applies from the
store, so a watch event or a rebuilt view never drops one), and ``run``
writes them behind:

- each pending subject as the view's record (the stored one with the pending
  decisions merged in), guarded by the revision the view read it at, up to
  ``BATCH`` in one transaction;
- a lost guard re-reads those records and merges again (the merge is
  idempotent: a decision is never judged twice nor counted twice, whatever
  landed meanwhile, this replica's own earlier write included);
- an unreachable store keeps everything pending and is retried with a
  backoff (``RETRY_MIN_S`` doubling to ``RETRY_MAX_S``) for as long as it
  takes; decisions made meanwhile merge into the pending ones (one write per
  subject, however many decisions);
- an entry leaves once a record from the store covers it (this replica's
  write, or another replica's carrying the same decision).

A decision learnt from another replica's outcome (a peer report, ``own=False``)
is written only after ``PEER_DELAY_S``: by then the deciding replica's own
write has normally arrived through the watch and covers it, so nothing is
written twice; if it has not (that replica died, or the store was away), this
replica writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence

from .cache import StateCache
from .domain.decisions import Decision, Subject, subject_of
from .domain.errors import Conflict, NotReady
from .domain.models import CooldownId, LimitId
from .writer import Change, StateWriter

log = logging.getLogger(__name__)

BATCH = 64  # subjects per transaction (at most MAX_WRITES_PER_COMMIT)
MAX_ATTEMPTS = 8  # lost guards in a row before a round gives up (retried after a backoff)
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0
PEER_DELAY_S = 2.0


class WriteBehind:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        *,
        peer_delay_s: float = PEER_DELAY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._view = cache.view
        self._pending = cache.pending
        self._writer = writer
        self._peer_delay_s = peer_delay_s
        self._now = monotonic
        self._wake = asyncio.Event()

    @property
    def backlog(self) -> int:
        """Subjects with a decision the store has not confirmed yet."""
        return len(self._pending)

    def decide(self, records: Sequence[Decision], *, own: bool = True) -> None:
        """Apply decisions to the view now; write them behind (a peer's after ``PEER_DELAY_S``)."""
        due = self._now() + (0.0 if own else self._peer_delay_s)
        for record in records:
            # A decision the view already holds and nothing pending covers is in the store: a replay, nothing to do.
            if self._cache.put_decided(record) or self._pending.get(subject_of(record)) is not None:
                self._pending.add(record, due)
        if own:
            self._wake.set()

    async def run(self) -> None:
        """Write pending decisions as they come due, retrying while the store is away (runs until cancelled)."""
        backoff = RETRY_MIN_S
        while True:
            await self._until_due()
            try:
                await self.flush(everything=False)
                backoff = RETRY_MIN_S
            except (NotReady, Conflict) as error:
                log.warning("%d decisions wait for the store (%s); retrying in %.2f s", self.backlog, error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    async def flush(self, *, everything: bool = True) -> None:
        """Write the pending decisions (all of them, or those due) now; raises ``NotReady`` while the store is away."""
        while subjects := self._pending.due(math.inf if everything else self._now(), BATCH):
            await self._write(subjects)

    async def drain(self, timeout_s: float) -> None:
        """Best effort before a shutdown: write what is pending within ``timeout_s``."""
        with contextlib.suppress(NotReady, Conflict, TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.flush()
        if self.backlog:
            log.warning("%d decisions not written before shutdown", self.backlog)

    async def _until_due(self) -> None:
        while True:
            self._wake.clear()
            next_due = self._pending.next_due()
            now = self._now()
            if next_due is not None and next_due <= now:
                return
            timeout = None if next_due is None else next_due - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _write(self, subjects: list[Subject]) -> None:
        for _ in range(MAX_ATTEMPTS):
            changes = [change for subject in subjects if (change := self._change(subject)) is not None]
            if not changes:
                return
            if await self._writer.commit(changes):
                return  # the cache applied the write: what it covers left the pending decisions
            await self._writer.refresh([change.path for change in changes])
        raise Conflict("the state changed concurrently too often; decisions stay pending")

    def _change(self, subject: Subject) -> Change | None:
        """The view's record of a pending subject (stored record and pending decisions merged), guarded."""
        if isinstance(subject, CooldownId):
            record: Decision | None = self._view.cooldowns.get(subject) or self._pending.get(subject)
        elif isinstance(subject, LimitId):
            record = self._view.limits.get(subject) or self._pending.get(subject)
        else:
            record = self._view.keys.get(subject)
        if record is None:  # the key is gone: its health goes with it
            self._pending.discard(subject)
            return None
        return self._writer.put(record)
