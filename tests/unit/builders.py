"""Small builders for domain records, so tests say only what matters to them."""

from __future__ import annotations

import random

from services.common.naming import token_hash
from services.keyring.domain.allocator import Allocator
from services.keyring.domain.leasing import LeaseBook
from services.keyring.domain.models import ClientToken, Outcome, Policy, Pool, Strategy, UpstreamKey
from services.keyring.domain.view import KeyringView

TOKEN = "kr-test-token"
TOKEN_HASH = token_hash(TOKEN)


def key(key_id: str, pool: str = "p", **fields: object) -> UpstreamKey:
    return UpstreamKey(key_id=key_id, pool=pool, sealed_secret="sealed", mask="AIza...test", **fields)  # type: ignore[arg-type]


class World:
    """A view with one pool and one token, and an allocator over it."""

    def __init__(
        self,
        keys: list[UpstreamKey],
        strategy: Strategy = Strategy.ROUND_ROBIN,
        policy: Policy | None = None,
        allowed_models: tuple[str, ...] = (),
        replicas: int = 1,
        seed: int = 7,
    ) -> None:
        self.view = KeyringView()
        self.view.put_pool(Pool("p", allowed_models, strategy, policy or Policy()))
        self.view.put_token(ClientToken("t-1", TOKEN_HASH, "p"))
        for item in keys:
            self.view.put_key(item)
        self.book = LeaseBook("r1")
        self.replicas = replicas
        self.allocator = Allocator(self.view, self.book, lambda: self.replicas, random.Random(seed))

    def lease(self, model: str = "m", now: float = 1000.0, exclude: frozenset[str] = frozenset()) -> str:
        grant = self.allocator.acquire(TOKEN_HASH, model, exclude, now)
        self.allocator.release(grant.lease.lease_id)
        return grant.key.key_id


# Fakes for the keyring rooms on MemoryStore: a clock tests move, a checker that answers as told.
class FakeClock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeChecker:
    """Answers every check with ``answer``."""

    def __init__(self) -> None:
        self.answer = Outcome(200)

    async def check(self, secret: str) -> Outcome:
        return self.answer

    async def close(self) -> None:
        pass
