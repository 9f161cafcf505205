"""Browser tokens for Live sessions, minted and redeemed (the rules: ``domain/live_tokens.py``).

A token is stored under a keyed hash of its SHA-256 (the client tokens'
``TokenHasher``), so the store holds no credential. A redeem reads the
record from the view (from the store when the view lacks it: another replica
may have just minted it) and spends a use in a transaction guarded by the
record's revision: of two redeems racing on two replicas, one loses its
guard, reads the record again and is refused. Expired records are dropped
when the next token is minted. A token the view lacks costs a store read
only within a budget (``MISS_READS_PER_MINUTE``): a flood of made-up tokens
from browsers is refused from memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import orjson

from services.common.naming import model_id, token_hash

from .codec import Layout
from .domain.allocator import Allocator
from .domain.blames import BlameBudget
from .domain.errors import Conflict, NoKeyAvailable, PermissionDenied, Unauthenticated
from .domain.identity import TokenHasher
from .domain.live_tokens import GRANT_TTL_S, Grants, LiveToken, mint_terms, new_live_token, redeemed, well_formed
from .domain.view import KeyringView
from .store import Write
from .writer import StateWriter

MAX_ATTEMPTS = 4
MAX_COLLECTED_PER_MINT = 64  # expired records dropped with one mint: bounds the commit
MISS_READS_PER_MINUTE = 600  # store reads for tokens the view lacks, per replica (a bucket refilled continuously)
MAX_OUTSTANDING = 10_000  # browser tokens stored at once (each lives 30 min at most): bounds etcd and the view


class Minted(NamedTuple):
    token: str  # shown once
    record: LiveToken


class Redeemed(NamedTuple):
    pool: str
    model: str
    grant: str
    expires_at: float


class LiveTokens:
    def __init__(
        self,
        view: KeyringView,
        layout: Layout,
        writer: StateWriter,
        allocator: Allocator,
        grants: Grants,
        hasher: TokenHasher | None,
        clock: Callable[[], float],
    ) -> None:
        self._view = view
        self._layout = layout
        self._writer = writer
        self._allocator = allocator
        self.grants = grants
        self._hasher = hasher
        self._clock = clock
        self._miss_reads = BlameBudget(MISS_READS_PER_MINUTE)  # the one token bucket of the domain, reused

    async def mint(self, client_token_hash: str, model: str, ttl_s: float, uses: int) -> Minted:
        """A new browser token for the client token's pool and one model it allows."""
        now = self._clock()
        token, pool = self._allocator.authenticate(client_token_hash, now)
        model = model_id(model)
        if not model or not pool.allows(model):
            raise PermissionDenied(f"model {model!r} is not allowed in this pool")
        ttl_s, uses = mint_terms(ttl_s, uses)
        expired = self._expired(now)
        if len(self._view.live_tokens) - len(expired) >= MAX_OUTSTANDING:
            raise NoKeyAvailable("too many browser tokens are outstanding; try again later", 60.0, pool.name)
        self._allocator.admit(token, pool, now)  # a mint counts against the client token's rate limit
        minted = new_live_token()
        hash_key, stored = self._stored_hash(token_hash(minted))
        record = LiveToken(pool.name, token.token_id, model, now + ttl_s, uses, 0, hash_key, now)
        writes = [Write(self._layout.live_token(stored), orjson.dumps(record.to_dict()), 0)]
        writes += [Write(path, None) for path in expired]
        if not await self._writer.commit_raw(writes):
            raise Conflict("a browser token collided with another; try again")
        return Minted(minted, record)

    async def redeem(self, presented: str, model: str, resumption: bool) -> Redeemed:
        """Spend one use of a browser token (none for a resumption) and grant its session's acquires."""
        if not well_formed(presented):
            raise Unauthenticated("not a browser token of this pool")
        model = model_id(model)
        path, hash_key = self._find(token_hash(presented))
        if not self._view.live_tokens.get(path) and self._miss_reads.allow("", self._clock()):
            await self._writer.refresh([path])  # minted on another replica a moment ago: the watch may lag
        for _ in range(MAX_ATTEMPTS):
            now = self._clock()
            stored = self._view.live_tokens.get(path)
            record = _decode(stored[0]) if stored else None
            if stored is None or record is None or record.hash_key != hash_key:
                raise Unauthenticated("unknown or expired browser token")
            spent = redeemed(record, model, now, resumption)
            self._allocator.authenticate_id(spent.token_id, now)  # the client token still holds
            if spent is record or await self._writer.commit_raw(
                [Write(path, orjson.dumps(spent.to_dict()), stored[1])]
            ):
                expires_at = min(spent.expires_at, now + GRANT_TTL_S)
                grant = self.grants.issue(spent.token_id, model, expires_at)
                return Redeemed(spent.pool, model, grant, expires_at)
            await self._writer.refresh([path])  # another replica redeemed it meanwhile: decide again
        raise Conflict("the browser token changed concurrently too often; try again")

    def grant_holder(self, grant: str, model: str) -> str:
        """The client token id a redeemed token's grant leases for (``AcquireRequest.session_grant``)."""
        return self.grants.check(grant, model_id(model), self._clock())

    def _stored_hash(self, presented: str) -> tuple[str, str]:
        if self._hasher is None:
            return "", presented
        return self._hasher.current, self._hasher.keyed(presented)

    def _find(self, presented: str) -> tuple[str, str]:
        """The path and KEK id of a presented token's record: the current key's unless an older one holds one."""
        if self._hasher is None:
            return self._layout.live_token(presented), ""
        for key_id, stored in self._hasher.candidates(presented):
            path = self._layout.live_token(stored)
            if path in self._view.live_tokens:
                return path, key_id
        return self._layout.live_token(self._hasher.keyed(presented)), self._hasher.current

    def _expired(self, now: float) -> list[str]:
        expired = []
        for path, (value, _) in self._view.live_tokens.items():
            record = _decode(value)
            if record is None or record.expires_at <= now:
                expired.append(path)
                if len(expired) == MAX_COLLECTED_PER_MINT:
                    break
        return expired


def _decode(value: bytes) -> LiveToken | None:
    try:
        return LiveToken.from_dict(orjson.loads(value))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return None
