"""Request bodies being read at once: a cap per client token and a memory budget for the process.

A body being read costs memory while it arrives and while it is checked
(``worst_cost``: docs/configuration.md's arithmetic), and a body that never comes
holds what it took until the body timeout. One pool of a few slots for every
tenant let one tenant's stalled bodies stall every POST of the edge (issue
18). So:

- one client token reads at most ``per_token`` bodies at once; one more is
  refused at once (``TooManyReads``, a 429): a tenant whose bodies stall
  holds its own reads, never another tenant's;
- all tokens together reserve at most ``budget`` bytes, each read its worst
  case for the length it declares (an undeclared, chunked, length: the
  largest body); a read waits for room, first come first served (within the
  body timeout, the caller's). A chat request of a few KiB reserves a few
  hundred KiB, so thousands fit where four bodies of 20 MiB do.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


def worst_cost(length: int, max_json_elements: int) -> int:
    """The most memory reading and checking a body of ``length`` bytes may take.

    aiohttp's buffer and the bytes made of it (2 x length), the parse's copy
    (``dialects.json_body``: length) and the parsed values: about 36 B a byte
    for a body of ``{},{},...``, at most 72 B for each of ``max_json_elements``
    (a body with more is not parsed).
    """
    return 3 * length + min(36 * length, 72 * max_json_elements)


class TooManyReads(Exception):
    """The token already has ``per_token`` bodies being read."""


class BodyReads:
    """The reads in progress: ``async with reads.reading(token_hash, cost):`` around one body's read and check."""

    def __init__(self, budget: int, per_token: int) -> None:
        self._budget = budget
        self._free = budget
        self._per_token = per_token
        self._by_token: dict[str, int] = {}
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def free(self) -> int:
        """Bytes of the budget no read holds (a gauge's worth; tests read it)."""
        return self._free

    def reading_for(self, token_hash: str) -> int:
        return self._by_token.get(token_hash, 0)

    @asynccontextmanager
    async def reading(self, token_hash: str, cost: int) -> AsyncIterator[None]:
        """Hold one of the token's reads and ``cost`` bytes of the budget (waiting for them) while the body is read."""
        held = self._by_token.get(token_hash, 0)
        if held >= self._per_token:
            raise TooManyReads()
        self._by_token[token_hash] = held + 1
        cost = min(cost, self._budget)  # one read alone always fits, or it would wait forever
        try:
            await self._reserve(cost)
            try:
                yield
            finally:
                self._give_back(cost)
        finally:
            left = self._by_token[token_hash] - 1
            if left:
                self._by_token[token_hash] = left
            else:
                del self._by_token[token_hash]

    async def _reserve(self, cost: int) -> None:
        if not self._waiting and self._free >= cost:
            self._free -= cost
            return
        entry = (cost, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self._give_back(cost)  # granted, then cancelled before it could be used
            else:
                self._waiting.remove(entry)
                self._grant()  # the reads queued behind this one may fit now
            raise

    def _give_back(self, cost: int) -> None:
        self._free += cost
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self._waiting[0][0] <= self._free:
            cost, waiter = self._waiting.popleft()
            self._free -= cost
            waiter.set_result(None)
