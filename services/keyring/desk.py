"""The lease desk: leases granted and given back, and what their outcomes teach.

Leases are granted from memory (the allocator over the state cache's view)
and the key's secret is opened once and kept, sealed value beside it, until
the key changes or goes: opened ahead of need once the replica serves, and
for each key added or resealed as the view learns of it (``open_secrets``, a
few hundred keys between two yields to the event loop), else on the key's
first lease (one leased before the warm-up reached it).

An outcome is judged once per replica (``learn``), on the view of the moment
it comes back; what the policy decides (a cooldown, a key's health) is
stamped with the lease id (the decision's id) and a strictly increasing time,
applied to the view at once and written behind (``write_behind.py``): a
release never waits for the store. The edge also sends a news outcome (not a
2xx) to every other replica as a report (``report``: no slot, no usage), so
the decision holds everywhere within a round trip; each replica judges it
once (``RecentIds`` of judged lease ids) and the merges are idempotent
(``domain/decisions.py``), so two replicas judging one 429 converge on one
cooldown and one strike.

Usage is counted exactly once per lease (``release_slot``), by the rules of
the usage ledger (``ledger.py``): by the replica holding the lease, else by
the one a release reaches once its granting instance has left, and only when
that instance never flushed the count. So a release retried on the same or
another replica counts once, and a killed replica's unflushed counts are
counted again from the releases the edge kept.

The routine success (most releases) touches no store, awaits nothing and
allocates nothing beyond the usage count.

Project-bound resources (``domain/affinity.py``): a release carrying
bindings writes their records (``bind``) before it answers, so its reply
means "committed"; an acquire naming a resource this replica's view does not
hold yet reads that record from the store once (``read_affinity``) before
the caller is told NOT_FOUND: another replica may have just written it. Only
a token within its rate and budget gets that far (the allocator checks them
first), and a NOT_FOUND counts against the token's rate like a call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from .cache import StateCache
from .domain.affinity import AffinityMiss, bindings, bound_in, check_room, unbound
from .domain.allocator import Allocator, Grant
from .domain.blames import BlameBudget
from .domain.decisions import Decision
from .domain.demand import LeaseRequest
from .domain.errors import FailedPrecondition, KeyringError, NotReady
from .domain.lease_ids import LeaseSigner
from .domain.leasing import LeaseBook, LeaseRecord
from .domain.limits import QuotaRow, quota_rows
from .domain.limits import learnt as learnt_limits
from .domain.live_tokens import Grants
from .domain.models import Cooldown, Outcome, Policy, Transport, UpstreamKey
from .domain.policy import blames_key, is_routine_success, judge
from .domain.served import served_model
from .domain.tiers import class_model, service_class
from .domain.usage import Call, RecentIds
from .ledger import UsageLedger
from .live_tokens import LiveTokens
from .sealing import SealingError, SecretBox
from .write_behind import WriteBehind
from .writer import StateWriter

Clock = Callable[[], float]

log = logging.getLogger(__name__)


class Released(NamedTuple):
    known: bool  # the lease was this replica's
    key_id: str  # empty: an unknown or forged lease, nothing to judge
    model: str
    counted_epoch: int  # the usage epoch the call was counted in here (0: not counted here)
    token_id: str = ""  # the lease's client token when held here: whose cap its bindings count against
    granter_alive: bool = False  # a handover whose granting instance is a member: nothing counted here


class Observer:
    """What the desk tells the outside world (metrics); every method is a no-op here."""

    def lease_granted(self, pool: str) -> None: ...

    def lease_denied(self, pool: str, reason: str) -> None: ...

    def lease_released(self, pool: str, key_id: str, held_s: float, failed: bool) -> None: ...

    def lease_expired(self, pool: str) -> None: ...

    def credit_unused(self, pool: str) -> None: ...

    def release_refused(self) -> None: ...

    def estimate_clamped(self) -> None: ...

    def cooldown_started(self, reason: str) -> None: ...

    def key_blamed(self, identity: str, accepted: bool) -> None: ...


DEFAULT_KEY_BLAMES_PER_MINUTE = 300
# Keys whose secrets ``open_secrets`` opens between two yields to the event loop: about 1 ms at 4-5 us a key.
SECRETS_PER_CHUNK = 200
UNOPENED_NAMED = 20  # key ids the warm-up's warning names at most


class HeldCredit(NamedTuple):
    """A credit a lease stream granted and the edge has not released: what a revocation matches on."""

    key_id: str
    project: str
    token_id: str
    pool: str


CreditMatch = Callable[[HeldCredit], bool]


class LeaseDesk:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        box: SecretBox,
        *,
        instance: str,
        clock: Clock,
        rng: random.Random | None = None,
        signer: LeaseSigner | None = None,
        decisions: WriteBehind | None = None,
    ) -> None:
        self.book = LeaseBook(instance, signer)
        self.decisions = decisions or WriteBehind(cache, writer)
        self.allocator = Allocator(cache.view, self.book, cache.replica_count, rng, box.tokens, cache.instances)
        self.ledger = UsageLedger(cache.view, cache.layout, instance, clock)  # counted here, flushed by housekeeping
        self.observer = Observer()
        self.accepting = False  # new leases are refused until the replica serves
        self._view = cache.view
        self._replica_count = cache.replica_count
        self.members = cache.instances  # the live instances, told to the edges (LeaseStreamResponse.members)
        self._layout = cache.layout
        self._last_used = cache.last_used
        self._writer = writer
        self._box = box
        self._clock = clock
        self._secrets: dict[str, tuple[str, str]] = {}  # key id -> (sealed, clear)
        # Keys put in the view while ``open_secrets`` runs whose secret is not open (added, resealed): its next turns.
        self._to_open: dict[str, None] = {}
        self._more_to_open: asyncio.Event | None = None  # set by ``_key_put``; None: no warm-up running
        cache.on_key_put.append(self._key_put)
        cache.on_key_removed.append(self._forget_secret)
        # A token or pool edited (revoked, limited, its models changed) or removed: its credits may not be used.
        cache.on_token_changed.append(lambda token_id: self._revoke_credits(lambda held: held.token_id == token_id))
        cache.on_pool_changed.append(lambda pool: self._revoke_credits(lambda held: held.pool == pool))
        self._instance = instance
        self._judged = RecentIds()  # lease ids whose outcome this replica judged (release, report, retry)
        self._credit_watchers: set[Callable[[CreditMatch], None]] = set()  # ``watch_credits``
        # Outcomes blaming a key judged per caller identity and minute (KEYRING_KEY_BLAMES_PER_MINUTE, server.py).
        self.blames = BlameBudget(DEFAULT_KEY_BLAMES_PER_MINUTE)
        self._last_stamp = 0.0
        # Browser tokens for Live sessions; their grants are checked by any replica sharing the signing key.
        grants = Grants(signer or LeaseSigner(secrets.token_bytes(32)))
        self.live_tokens = LiveTokens(cache.view, cache.layout, writer, self.allocator, grants, box.tokens, clock)

    @property
    def leases_in_flight(self) -> int:
        return len(self.book)

    def acquire(
        self,
        token_hash: str,
        model: str,
        exclude: frozenset[str] = frozenset(),
        affinity: Sequence[str] = (),
        exclude_projects: frozenset[str] = frozenset(),
        *,
        final: bool = True,
        input_tokens: int = 0,
        binds: bool = False,
    ) -> tuple[Grant, str]:
        """``lease`` for callers holding the parts of a request (tests, checks)."""
        request = LeaseRequest(token_hash, model, exclude, tuple(affinity), exclude_projects, input_tokens, binds)
        return self.lease(request, final=final)

    def lease(self, request: LeaseRequest, *, final: bool = True) -> tuple[Grant, str]:
        """A lease and the key's secret in clear; raises a domain error when refused.

        ``final=False``: an ``AffinityMiss`` is not a refusal yet (not counted):
        the caller reads the missing records (``read_affinity``) and asks again.
        """
        if not self.accepting:
            raise NotReady("this keyring replica is not serving leases")
        try:
            grant = self.allocator.grant(request, self._clock())
        except KeyringError as error:
            if request.credit:  # a credit refused is no caller refused: the edge simply holds none
                raise
            if final or not isinstance(error, AffinityMiss):
                self.observer.lease_denied(getattr(error, "pool", ""), type(error).__name__)
            if final and isinstance(error, AffinityMiss):  # a name nobody bound: it counts, like a call
                self.allocator.charge_miss(request.token_hash, self._clock())
            raise
        self.observer.lease_granted(grant.pool.name)
        return grant, self.secret_of(grant.key.key_id, grant.key.sealed_secret)

    def more_credits(self, request: LeaseRequest, count: int) -> list[tuple[Grant, str]]:
        """Up to ``count`` more credits of ``request`` (one acquire asking several), each granted as ``lease``
        grants one, until the first refusal: fewer than asked is an answer, not an error."""
        granted: list[tuple[Grant, str]] = []
        for _ in range(count):
            try:
                granted.append(self.lease(request))
            except KeyringError:
                break
        return granted

    def renew(self, lease_id: str, key_id: str = "", model: str = "") -> LeaseRecord | None:
        """Keep a Live session's lease (``Allocator.renew``); None: not held here, the edge ends the session.

        Renewed while draining too: a stopping replica grants nothing new but keeps what it holds.
        """
        return self.allocator.renew(lease_id, self._clock(), key_id, model)

    async def read_affinity(self, miss: AffinityMiss) -> None:
        """Read the records an acquire missed from the store into the view (the watch may not have brought them)."""
        await self._writer.refresh([self._layout.affinity(miss.pool, name) for name in miss.names])

    async def bind(
        self, key_id: str, bind: Sequence[tuple[str, float]], unbind: Sequence[str], token_id: str = ""
    ) -> None:
        """Record the resources a call created under ``key_id`` (name, lifetime in s) and forget those it deleted.

        One commit, unguarded (a resource has one owner: the last write wins).
        The key must be known: a release no replica vouches for (``key_id``
        empty) binds nothing and says so. ``token_id``: the lease's client token
        (``LeaseBook.holder``); new names past the pool's or the token's cap of
        bindings are refused and nothing is written (``affinity.check_room``).
        """
        key = self._view.keys.get(key_id) if key_id else None
        if key is None:
            raise FailedPrecondition("the lease is unknown or long expired, or its key is gone: nothing was bound")
        records, forgotten = bindings(key, bind, unbind, self._clock(), token_id)
        if records:  # net of what the release forgets (a finished upload: its file bound, its session unbound)
            new = unbound(self._view.affinity, key.pool, (record.name for record in records))
            new -= sum(1 for name in forgotten if (key.pool, name) in self._view.affinity)
            check_room(self._view.bound, key.pool, token_id, new, self.allocator.binding_caps)
        changes = [self._writer.overwrite(record) for record in records]
        changes += [self._writer.erase(self._layout.affinity(key.pool, name)) for name in forgotten]
        if changes:
            await self._writer.commit(changes)

    def bound_names(self, token_hash: str, names: Sequence[str]) -> list[str]:
        """Those of ``names`` the token's pool bound (``affinity.bound_in``); the token is checked as Acquire does."""
        if not self.accepting:
            raise NotReady("this keyring replica is not serving leases")
        now = self._clock()
        _, pool = self.allocator.authenticate(token_hash, now)
        return bound_in(self._view.affinity, pool.name, names, now)

    def check_token(self, token_hash: str) -> str:
        """The pool a presented token hash leases from, from memory; raises ``Unauthenticated`` when refused.

        The same lookup as ``acquire`` (``Allocator.authenticate``: the keyed hash,
        revocation, expiry, the pool's existence), without a model, a key or a
        lease. A refusal is counted as Acquire's is (``lease_denied``): the
        request it answers will never ask for a lease. A replica not serving yet
        answers ``NotReady`` (its view may not hold the token), so the caller
        asks another.
        """
        if not self.accepting:
            raise NotReady("this keyring replica is not serving leases")
        try:
            _, pool = self.allocator.authenticate(token_hash, self._clock())
        except KeyringError as error:
            self.observer.lease_denied("", type(error).__name__)
            raise
        return pool.name

    def release_slot(
        self,
        lease_id: str,
        key_id: str,
        model: str,
        outcome: Outcome,
        counted_epoch: int = 0,
        kept_for_granter: bool = False,
        handover: bool = False,
        claimed_token_id: str = "",
        token_tag: str = "",
    ) -> Released:
        """Give the slot back and count the call (exactly once, ``ledger.py``).

        A lease this replica does not hold counts only when its id vouches for the
        key and model named (granted by a replica that went away); an unknown or
        forged one changes nothing: the key id returned is empty, so nothing is judged.
        ``counted_epoch``, ``kept_for_granter``, ``handover``: what the edge says of the release
        (``ledger.py``); a handover whose granter is still a member counts nothing (``granter_alive``).
        ``claimed_token_id``, ``token_tag``: the lease's client token as granted (``Lease.token_tag``): such a
        release counts for that token too when the tag holds.
        """
        lease = self.allocator.release(lease_id)
        token_id = ""
        if lease is not None:
            key_id, model, token_id = lease.key_id, lease.model, lease.token_id
        elif not self.book.vouches(lease_id, key_id, model, self._clock()):
            self.observer.release_refused()
            return Released(False, "", model, 0)
        else:
            token_id = self.book.vouched_token(lease_id, claimed_token_id, token_tag)
        unused = outcome.transport is Transport.UNUSED
        if unused and lease is not None and lease.credit:  # no call was made: the grant's counts taken back
            self.allocator.refund(lease, self._clock())
            self.observer.credit_unused(lease.pool)
            return Released(True, key_id, model, 0, token_id)
        key = self._view.keys.get(key_id)
        epoch = 0
        if lease is not None:  # a cancel too: the project's input tokens, reserved at lease, settled (limits.py)
            self.allocator.quotas.settle(lease_id, key.project if key else "", model, outcome, self._clock())
        elif handover and self.ledger.granter_alive(lease_id):
            return Released(False, key_id, model, 0, granter_alive=True)
        if key is not None and outcome.transport is not Transport.CANCELLED and not unused:
            failed = not outcome.succeeded
            kind = outcome.kind.value if failed else ""  # errors by class (the console's chart)
            call = Call(
                key.pool, key_id, token_id, failed, outcome.input_tokens, outcome.output_tokens, kind=kind,
                service_tier=service_class(outcome.service_tier),
            )  # fmt: skip
            if lease is None:
                epoch = self.ledger.count_late(lease_id, call, counted_epoch, kept_for_granter and not handover)
                return Released(False, key_id, model, epoch)
            now = self._clock()
            epoch = self.ledger.count(call)
            self._last_used[key_id] = now
            if token_id:
                self._last_used[token_id] = now
                self.allocator.spend_tokens(token_id, model, outcome.input_tokens + outcome.output_tokens, now)
            self.observer.lease_released(key.pool, key_id, now - lease.granted_at, failed)
        return Released(lease is not None, key_id, model, epoch, token_id)

    def settle(
        self,
        lease_id: str,
        key_id: str,
        model: str,
        outcome: Outcome,
        *,
        counted_epoch: int = 0,
        kept_for_granter: bool = False,
        handover: bool = False,
        caller: str | None = None,
        token_id: str = "",
        token_tag: str = "",
    ) -> Released:
        """The release, from memory: the slot given back, the call counted once, the outcome learnt.

        Every release comes through here (a lease stream's and a unary one);
        its bindings, if any, follow with ``bind`` (``Released.key_id`` and
        ``token_id`` name whose they are). ``caller``: as for ``learn``.
        """
        released = self.release_slot(
            lease_id, key_id, model, outcome, counted_epoch, kept_for_granter, handover, token_id, token_tag
        )
        if outcome.transport is not Transport.UNUSED:  # an unused credit made no call: nothing to learn
            self.learn(lease_id, released.key_id, released.model, outcome, caller=caller)
        return released

    def learn(
        self, lease_id: str, key_id: str, model: str, outcome: Outcome, *, own: bool = True, caller: str | None = None
    ) -> None:
        """Judge an outcome once; what it decides holds in the view now and is written behind.

        ``own=False``: a peer's outcome (a report): judged the same way, written
        only if the deciding replica's write does not arrive (``write_behind.py``).
        ``caller``: the identity that sent it (``authorization.caller``); an outcome blaming the key past
        the caller's budget (``domain/blames.py``) is not judged. None: not from a caller (tests).
        """
        key = self._view.keys.get(key_id) if key_id else None
        cooldowns = self._view.cooldowns
        # Decisions are the served model's (a retired name served by another, a -latest alias: issue 21), and
        # a flex or priority call's are its class's (domain/tiers.py): they never cool standard traffic.
        asked, served = model, served_model(outcome, model)
        self.allocator.served.learn(asked, served)
        model = class_model(served, outcome.service_tier)
        if key is None or is_routine_success(outcome, key, model, cooldowns) or not self._judged.add(lease_id):
            return
        if caller is not None and blames_key(outcome):
            accepted = self.blames.allow(caller, self._clock())
            self.observer.key_blamed(caller, accepted)
            if not accepted:
                return
        pool = self._view.pools.get(key.pool)
        policy = pool.policy if pool else Policy()
        verdict = judge(outcome, key, model, policy, self._clock(), cooldowns)
        decided: list[Decision] = []
        stamp = self.stamp()
        if verdict.cooldown is not None:
            shown = asked if asked != served and verdict.cooldown.id.model == model else verdict.cooldown.asked
            decided.append(dataclasses.replace(verdict.cooldown, decision=lease_id, decided_at=stamp, asked=shown))
            if own:
                self.observer.cooldown_started(verdict.cooldown.reason.value)
            if log.isEnabledFor(logging.DEBUG):
                _log_cooling(key.key_id, outcome, verdict.cooldown, cooldowns.get(verdict.cooldown.id), stamp, own)
        if verdict.key is not None:
            decided.append(dataclasses.replace(verdict.key, health_id=lease_id, health_at=stamp))
        told = learnt_limits(outcome, key.project, served, self._clock(), self._view.limits, outcome.service_tier)
        for limit in told:
            decided.append(dataclasses.replace(limit, decision=lease_id, decided_at=stamp))
        if decided:
            self.decisions.decide(decided, own=own)
            if verdict.cooldown is not None or verdict.key is not None:
                key_id, project = key.key_id, key.project
                self._revoke_credits(lambda held: held.key_id == key_id or (bool(project) and held.project == project))

    def watch_credits(self, revoke: Callable[[CreditMatch], None]) -> Callable[[], None]:
        """Call ``revoke(matches)`` whenever credits may no longer be used: an outcome cooled their key or its
        project, their client token or pool was edited or removed (a lease stream revokes the credits it granted
        that ``matches``, ``lease_servicer.py``); returns the function that stops it."""
        self._credit_watchers.add(revoke)
        return lambda: self._credit_watchers.discard(revoke)

    def _revoke_credits(self, matches: CreditMatch) -> None:
        for revoke in tuple(self._credit_watchers):
            revoke(matches)

    def report(self, lease_id: str, key_id: str, model: str, outcome: Outcome, caller: str | None = None) -> bool:
        """A peer's outcome (another replica's lease; no slot, no usage): learnt when the lease id vouches for it."""
        if not self.book.vouches(lease_id, key_id, model, self._clock()):
            self.observer.release_refused()
            return False
        self.learn(lease_id, key_id, model, outcome, own=False, caller=caller)
        return True

    def quota_rows(self, pool: str = "", project: str = "") -> list[QuotaRow]:
        """Every known quota limit of the projects' keys, with this replica's use in the current window."""
        view = self._view
        return quota_rows(
            view.pools, view.keys.values(), view.limits, self.allocator.quotas, self._replica_count(), self._clock(),
            pool, project,
        )  # fmt: skip

    def stamp(self) -> float:
        """A decision's time: the clock, strictly increasing on this replica."""
        self._last_stamp = max(self._clock(), self._last_stamp + 1e-6)
        return self._last_stamp

    async def release(
        self,
        lease_id: str,
        key_id: str,
        model: str,
        outcome: Outcome,
        bind: Sequence[tuple[str, float]] = (),
        unbind: Sequence[str] = (),
        caller: str | None = None,
    ) -> bool:
        """Give the slot back, learn from the outcome, record bindings; False when the lease was not ours.

        The slot is given back and the outcome learnt first whatever follows:
        a refused binding leaks no lease and loses no decision. Only bindings
        wait for the store.
        """
        released = self.settle(lease_id, key_id, model, outcome, caller=caller)
        if bind or unbind:
            await self.bind(released.key_id, bind, unbind, released.token_id)
        return released.known

    def orphan(self, lease_ids: Iterable[str], grace_s: float) -> None:
        """Leases granted on a lease stream that ended: reclaimed ``grace_s`` from now unless released first.

        The edge re-sends a release it could not deliver once its stream is back;
        a grant whose reply never reached it is only freed this way.
        """
        self.book.shorten(lease_ids, self._clock() + grace_s)

    def reclaim_expired(self, now: float) -> None:
        """Take back leases whose holder never released them."""
        for lease in self.book.reclaim_expired(now):
            self.ledger.reclaimed(lease)  # counted, outcome unknown: the call may have reached the upstream
            self.allocator.quotas.expired(lease.lease_id)
            self.observer.lease_expired(lease.pool)

    def secret_of(self, key_id: str, sealed: str) -> str:
        """The key's secret in clear, opened once per sealed value."""
        cached = self._secrets.get(key_id)
        if cached is not None and cached[0] == sealed:
            return cached[1]
        clear = self._box.open(sealed, key_id)
        self._secrets[key_id] = (sealed, clear)
        return clear

    async def open_secrets(self, chunk: int = SECRETS_PER_CHUNK) -> None:
        """Open the secret of every key in the view not opened yet, ``chunk`` keys at a time (the warm-up), then
        those of keys put in the view later (added, resealed), until cancelled (the replica stops).

        Run once the replica serves (``core.py``), so the first lease of each
        key finds its secret open: with 100,000 keys, opening on first lease was
        4 % of a fresh replica's lease path (and an import of many keys brings as
        many first leases). Leases go on between chunks. A key gone before its
        turn is passed over; a secret that does not open is skipped (its lease
        fails as it always did) and told by key id, once per round.
        """
        self._more_to_open = more = asyncio.Event()
        try:
            await self._open_chunked(list(self._view.keys), chunk)
            while True:
                await more.wait()
                more.clear()
                key_ids, self._to_open = list(self._to_open), {}
                await self._open_chunked(key_ids, chunk)
        finally:
            self._more_to_open = None
            self._to_open = {}

    async def _open_chunked(self, key_ids: list[str], chunk: int) -> None:
        unopened: list[str] = []
        for start in range(0, len(key_ids), chunk):
            for key_id in key_ids[start : start + chunk]:
                key = self._view.keys.get(key_id)
                if key is None:
                    continue
                try:
                    self.secret_of(key_id, key.sealed_secret)
                except SealingError:
                    unopened.append(key_id)
            await asyncio.sleep(0)
        if unopened:
            named = ", ".join(unopened[:UNOPENED_NAMED])
            more = f" and {len(unopened) - UNOPENED_NAMED} more" if len(unopened) > UNOPENED_NAMED else ""
            log.warning(
                "%d key secrets do not open with the configured key-encryption keys (their leases fail): %s%s",
                len(unopened), named, more,
            )  # fmt: skip

    def _key_put(self, key: UpstreamKey) -> None:
        """A key record read from the store: its secret queued for the warm-up if not open (a dict lookup)."""
        if self._more_to_open is None:
            return
        cached = self._secrets.get(key.key_id)
        if cached is None or cached[0] != key.sealed_secret:
            self._to_open[key.key_id] = None
            self._more_to_open.set()

    def _forget_secret(self, key_id: str) -> None:
        self._secrets.pop(key_id, None)


def _log_cooling(
    key_id: str, outcome: Outcome, cooldown: Cooldown, previous: Cooldown | None, now: float, own: bool
) -> None:
    """DEBUG: why a pair cools (or cools longer): the answer's send time against the record it was judged on.

    Ids only (key id, project, model): no secret, no client token.
    """
    fields = {
        "key_id": key_id,
        "scope": cooldown.id.scope.value,
        "subject": cooldown.id.subject,
        "model": cooldown.id.model,
        "reason": cooldown.reason.value,
        "strikes": cooldown.strikes,
        "until": round(cooldown.until, 3),
        "now": round(now, 3),
        "sent": round(now - max(outcome.latency_s, 0.0), 3),
        "http_status": outcome.http_status,
        "own": own,
        "previous_until": round(previous.until, 3) if previous else None,
        "previous_strikes": previous.strikes if previous else None,
    }
    log.debug("cooldown decided", extra={"fields": fields})
