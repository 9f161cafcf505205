"""Granting leases: token -> pool -> the best eligible key, from memory only.

A key is eligible for (pool, model) when it is not excluded by the caller,
its state allows leasing, no cooldown of its own or of its project runs for
that model, and this replica's share of its in-flight cap and per-minute
budget is not used up. Tiers are tried first choice first; the pool's
strategy picks within a tier.

A credit (``request.credit``, a lease asked ahead of need: issue 23) is
eligible only within the first half of each per-minute limit it counts
against (``leasing.credit_room``): the key's requests-per-minute share and
the project's per-minute pacing. Near a limit calls are leased for
themselves, so one tenant's idle credits never hold the last places another
tenant's call needs.

A call naming project-bound resources (``affinity``) is leased their owner
key first, else a key of the owner's project, never another (the rules:
``affinity.py``); ``exclude_projects`` skips whole projects. Both are looked
at only when given: a call without them costs what it always did.

A Live session (``request.session``, issue 20) is a lease held for the whole
session and renewed (``renew``); it counts against the pool's session caps
(per project, key and client token, all replicas together: each replica
holds its ``share``, as for in-flight caps) and not against the key's
in-flight count. A key whose project or itself holds its cap is passed
over for another with room; none left: ``NoKeyAvailable`` with the reason
``LIVE_SESSIONS`` (or ``LIVE_SESSIONS_PER_TOKEN``), which the edge renders
as a clear refusal.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .admissions import Published
from .affinity import BindingCaps, KeyFilter, Owner, check_room, key_filter, owner_of
from .budgets import BudgetMeter
from .demand import LeaseRequest
from .errors import NoKeyAvailable, NotFound, PermissionDenied, Unauthenticated
from .identity import TokenHasher
from .lease_ids import granting_instance
from .leasing import LeaseBook, LeaseRecord, SlidingWindow, credit_room, session_subjects, share
from .limits import QuotaCounter, class_limits, has_operator_limits
from .models import (
    ALL_MODELS,
    ClientToken,
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    Pool,
    UpstreamKey,
)
from .selection import Eligible, pick
from .served import ServedModels
from .tiers import FLEX, PRIORITY, STANDARD, class_model, counts_against_standard, service_class
from .view import KeyringView

# When only in-flight caps block, a slot usually frees within this long.
_IN_FLIGHT_RETRY_S = 1.0
# Sessions last minutes: a refusal for a session cap suggests trying again after this long.
_SESSION_RETRY_S = 5.0
SESSIONS_FULL = "LIVE_SESSIONS"  # every project or key of the pool holds its cap of sessions
SESSIONS_PER_TOKEN = "LIVE_SESSIONS_PER_TOKEN"  # the client token holds its cap
# This replica's share of a client token's rate limit or budget is spent (``budgets.py``: split over the live
# replicas): another replica may still have room, and the edge asks it before answering 429 (issue 19).
TOKEN_SHARE = "TOKEN_SHARE_SPENT"
DEFAULT_SESSION_TTL_S = 30.0
# A project's pacing for one call (``Allocator._pacing``).
_FITS, _SPENT, _TOO_LARGE = 0, 1, 2
# What of the model's own cooldowns keeps a flex call out: facts about the model, not standard's quota (tiers.py).
_MODEL_FACTS = frozenset({CooldownReason.NOT_ON_TIER, CooldownReason.MODEL_GONE})


class _Placement(NamedTuple):
    """Where a call's resources put it: their owner key (preferred) and the keys it may have at all."""

    owner: Owner | None
    only: KeyFilter | None


_ANYWHERE = _Placement(None, None)


@dataclass(frozen=True, slots=True)
class Grant:
    lease: LeaseRecord
    key: UpstreamKey
    pool: Pool


class Allocator:
    def __init__(
        self,
        view: KeyringView,
        book: LeaseBook,
        replicas: Callable[[], int],
        rng: random.Random | None = None,
        hasher: TokenHasher | None = None,
        members: Callable[[], Collection[str]] = tuple,
    ) -> None:
        """``members``: the live instances (lease ids' instance part): budgets count what the others admitted."""
        self._view = view
        self._members = members
        self._hasher = hasher
        self._book = book
        self._replicas = replicas
        self._rng = rng or random.Random()
        self._key_minutes = SlidingWindow(60.0)
        self._token_minutes = SlidingWindow(60.0)
        self.budgets = BudgetMeter()
        # Requests and input tokens per (project, model) and window on this replica: pacing (domain/limits.py).
        self.quotas = QuotaCounter()
        # Asked name -> the model that answers it (issue 21): cooldowns and limits are the served model's.
        self.served = ServedModels()
        # Live affinity records a pool and a token may hold (KEYRING_AFFINITY_MAX_PER_POOL / _PER_TOKEN).
        self.binding_caps = BindingCaps()
        # A session lease's life without a renew (KEYRING_SESSION_LEASE_TTL_S).
        self.session_ttl_s = DEFAULT_SESSION_TTL_S
        self._granted = False  # since the last ``published``
        self._refused: set[str] = set()  # pools whose last ``_choose`` found nothing: a hint, never a verdict
        self._departed_from: tuple[int, Collection[str]] | None = None  # what departed admissions were read from

    def authenticate(self, token_hash: str, now: float) -> tuple[ClientToken, Pool]:
        token = self.find_token(token_hash)
        if token is None or not token.usable(now):
            raise Unauthenticated("unknown, expired or revoked client token")
        pool = self._view.pools.get(token.pool)
        if pool is None:
            raise Unauthenticated("the client token's pool no longer exists")
        return token, pool

    def find_token(self, presented: str) -> ClientToken | None:
        """The token a presented SHA-256 belongs to: its keyed hash looked up (one HMAC per configured KEK at most).

        A stored hash presented as it is never matches: it is hashed again, and
        a record matches only under the key it says it was keyed with. Records
        from before keyed hashes (``hash_key == ""``, a bare SHA-256 anyone who
        can write the store could forge) match only while the hasher accepts
        them (the migration switch, until the reseal command keys them), or
        without a hasher (a view with no KEK: the domain's own tests).
        """
        by_hash = self._view.tokens_by_hash
        if self._hasher is not None:
            for key_id, stored in self._hasher.candidates(presented):
                token = by_hash.get(stored)
                if token is not None and token.hash_key == key_id:
                    return token
            if not self._hasher.accept_unkeyed:
                return None
        token = by_hash.get(presented)
        return token if token is not None and not token.keyed else None

    def acquire(
        self,
        token_hash: str,
        model: str,
        exclude: Collection[str],
        now: float,
        affinity: Sequence[str] = (),
        exclude_projects: Collection[str] = (),
        input_tokens: int = 0,
        binds: bool = False,
    ) -> Grant:
        """``grant`` for callers holding the parts of a request (tests, the state machine)."""
        request = LeaseRequest(
            token_hash, model, frozenset(exclude), tuple(affinity), frozenset(exclude_projects), input_tokens, binds
        )
        return self.grant(request, now)

    def grant(self, request: LeaseRequest, now: float) -> Grant:
        """A lease for ``request``, or a domain error saying why not.

        ``request.binds``: refused (``BindingsFull``) when the pool or the token holds its cap
        of bindings, before any upstream call (``affinity.check_room``).
        """
        model = request.model
        if request.grant_token_id:
            token, pool = self.authenticate_id(request.grant_token_id, now)
        else:
            token, pool = self.authenticate(request.token_hash, now)
        if not pool.allows(model):
            raise PermissionDenied(f"model {model!r} is not allowed in this pool")
        if request.credit and (token.budgets or token.requests_per_minute or pool.policy.max_in_flight):
            # A tenant's rate and budgets and a pool's in-flight cap are exact promises: a credit would hold a
            # place in them until used or refunded (one tenant's shelves holding the slots another needs), and
            # one a replica granted before it died stays in what it published (issue 23).
            raise PermissionDenied("no credits for a client token with a rate limit or budgets, or in a capped pool")
        replicas = self._replicas()
        self._account_departed()
        token_minutes = self._token_minutes
        if token_minutes.has_departed:
            token_budget = token_minutes.limit_for(token.token_id, token.requests_per_minute, replicas, now)
        else:
            token_budget = share(token.requests_per_minute, replicas)
        if not token_minutes.allows(token.token_id, token_budget, now):
            retry = token_minutes.frees_at(token.token_id, token_budget, now) - now
            raise NoKeyAvailable("the client token's rate limit is reached", retry, pool.name, TOKEN_SHARE)
        if token.budgets:
            spent = self.budgets.spent(token.token_id, token.budgets, model, replicas, now)
            if spent is not None:
                raise NoKeyAvailable(
                    f"the client token's budget ({spent.what}) is spent, not the pool's keys; "
                    f"it resets in {math.ceil(spent.resets_at - now)} s",
                    spent.resets_at - now,
                    pool.name,
                    TOKEN_SHARE,
                )
        # Resources only once the token is within its rate and budget: a name this view lacks is read from
        # the store (``AffinityMiss``), and that read costs a token over its limits nothing (issue 18).
        place = _ANYWHERE
        if request.affinity or request.exclude_projects:
            owner = owner_of(self._view.affinity, pool.name, request.affinity, now) if request.affinity else None
            place = _Placement(owner, key_filter(owner, request.exclude_projects))
        if request.binds:
            check_room(self._view.bound, pool.name, token.token_id, 1, self.binding_caps)
        if request.session:
            cap = share(pool.policy.live_sessions_per_token, replicas)
            if cap and self._book.sessions(f"token:{token.token_id}") >= cap:
                raise NoKeyAvailable(
                    "the client token holds its cap of Live sessions", _SESSION_RETRY_S, pool.name, SESSIONS_PER_TOKEN
                )
        key = self._choose(pool, request, place, replicas, now, token.token_id)
        if key is None:
            if request.session and self._sessions_full(pool, request, replicas, now):
                raise NoKeyAvailable(
                    f"every project of pool {pool.name!r} holds its cap of Live sessions; try again later",
                    _SESSION_RETRY_S, pool.name, SESSIONS_FULL,
                )  # fmt: skip
            raise self._nothing_eligible(pool, request, place.only, replicas, now)
        self._token_minutes.add(token.token_id, now)
        if token.budgets:
            self.budgets.add_request(token.token_id, token.budgets, model, now)
        self._key_minutes.add(key.key_id, now)
        self._granted = True
        if request.session:
            lease = self._book.grant(
                key.key_id, pool.name, model, self.session_ttl_s, now, token.token_id, session=True, project=key.project
            )
        else:
            lease = self._book.grant(
                key.key_id, pool.name, model, pool.policy.lease_ttl_s, now, token.token_id, credit=request.credit
            )
        served = self.served.served_of(model)
        self.quotas.reserve(lease.lease_id, key.project, served, now, request.input_tokens, request.service_tier)
        return Grant(lease, key, pool)

    def authenticate_id(self, token_id: str, now: float) -> tuple[ClientToken, Pool]:
        """``authenticate`` for a client token known by its id (a redeemed browser token's, ``live_tokens.py``)."""
        token = self._view.tokens.get(token_id)
        if token is None or not token.usable(now):
            raise Unauthenticated("the browser token's client token is unknown, expired or revoked")
        pool = self._view.pools.get(token.pool)
        if pool is None:
            raise Unauthenticated("the client token's pool no longer exists")
        return token, pool

    def admit(self, token: ClientToken, pool: Pool, now: float) -> None:
        """A call that leases no key (a browser token's mint) within the token's rate limit, and counted in it."""
        budget = share(token.requests_per_minute, self._replicas())
        minutes = self._token_minutes
        if not minutes.allows(token.token_id, budget, now):
            retry = minutes.frees_at(token.token_id, budget, now) - now
            raise NoKeyAvailable("the client token's rate limit is reached", retry, pool.name)
        minutes.add(token.token_id, now)

    def renew(self, lease_id: str, now: float, key_id: str = "", model: str = "") -> LeaseRecord | None:
        """Keep a session lease another ``session_ttl_s``; None: no session lease of that id is held here.

        A lease another instance granted (this replica restarted: the edge renews where it was granted) is
        adopted when its id vouches for ``key_id`` and ``model`` and the key is still leasable; never one of
        this instance's own (released or reclaimed: ended).
        """
        renewed = self._book.renew(lease_id, now + self.session_ttl_s)
        if renewed is not None or not key_id or granting_instance(lease_id) == self._book.instance:
            return renewed
        key = self._view.keys.get(key_id)
        if key is None or not key.leasable_state(now) or not self._book.vouches(lease_id, key_id, model, now):
            return None
        return self._book.adopt(lease_id, key_id, key.pool, model, self.session_ttl_s, now, key.project)

    def _session_room(self, key: UpstreamKey, pool: Pool, token_id: str, replicas: int) -> bool:
        """Whether this replica's share of the pool's per-key and per-project session caps leaves room on ``key``."""
        policy = pool.policy
        key_subject, project_subject, _ = session_subjects(key.key_id, key.project, token_id)
        per_key = share(policy.live_sessions_per_key, replicas)
        if per_key and self._book.sessions(key_subject) >= per_key:
            return False
        per_project = share(policy.live_sessions_per_project, replicas)
        return not (per_project and self._book.sessions(project_subject) >= per_project)

    def _sessions_full(self, pool: Pool, request: LeaseRequest, replicas: int, now: float) -> bool:
        """Whether a session found no key because of session caps: some usable key of the pool has no room."""
        if not (pool.policy.live_sessions_per_key or pool.policy.live_sessions_per_project):
            return False
        return any(
            key.leasable_state(now) and key.key_id not in request.exclude
            and not self._session_room(key, pool, "", replicas)
            for key in self._view.keys_of(pool.name)
        )  # fmt: skip

    def _account_departed(self) -> None:
        """Take in what departed instances published they admitted; redone only when the records or members change."""
        view, members = self._view, self._members()
        source = (view.admitted_version, members)
        if source == self._departed_from:
            return
        self._departed_from = source
        own = self._book.instance
        departed = [record for instance, record in view.admitted.items() if instance != own and instance not in members]
        self.budgets.account_departed(departed)
        self._key_minutes.account_departed(record.key_minutes for record in departed)
        self._token_minutes.account_departed(record.token_minutes for record in departed)

    def published(self, now: float) -> Published | None:
        """What this replica admitted in the running windows, for the others to take off if it dies; None: no news.

        Only subjects with a cluster-wide limit are published (keys of pools with requests per minute, tokens
        with requests per minute or budgets): the record stays as small as the limits.
        """
        if not (self._granted or self.budgets.changed):
            return None
        self._granted = False
        view = self._view

        def key_limited(key_id: str) -> bool:
            key = view.keys.get(key_id)
            pool = view.pools.get(key.pool) if key is not None else None
            return pool is not None and pool.policy.requests_per_minute > 0

        def token_limited(token_id: str) -> bool:
            token = view.tokens.get(token_id)
            return token is not None and token.requests_per_minute > 0

        return Published(
            now,
            self.budgets.windows(now),
            self._key_minutes.published(now, key_limited),
            self._token_minutes.published(now, token_limited),
        )

    def not_published(self) -> None:
        """The publish failed (or may have): publish again next time."""
        self._granted = True

    def charge_miss(self, token_hash: str, now: float) -> None:
        """A call refused for naming resources the pool does not know still counts against its token's rate.

        Each such call cost a store read (``AffinityMiss``); uncounted, a token could ask for them unpaced.
        """
        token = self.find_token(token_hash)
        if token is not None:
            self._token_minutes.add(token.token_id, now)

    def release(self, lease_id: str) -> LeaseRecord | None:
        return self._book.release(lease_id)

    def refund(self, lease: LeaseRecord, now: float) -> None:
        """A credit released unused (``LeaseRequest.credit``): every count its grant made is taken back.

        The token's and the key's per-minute windows, the project's request and reserved input tokens (a
        token with budgets or a rate limit is granted no credit: ``grant``): no call was made, so none of them
        may stay spent (a refund in a window that has moved on takes nothing back: it limits nobody now).
        """
        self._token_minutes.remove(lease.token_id, lease.granted_at)
        self._key_minutes.remove(lease.key_id, lease.granted_at)
        self.quotas.refund(lease.lease_id, now)

    def spend_tokens(self, token_id: str, model: str, tokens: int, now: float) -> None:
        """Count a released call's input + output tokens against its client token's budgets (if it has any)."""
        token = self._view.tokens.get(token_id)
        if token is not None and token.budgets:
            self.budgets.add_tokens(token_id, token.budgets, model, tokens, now)

    def _choose(
        self, pool: Pool, request: LeaseRequest, place: _Placement, replicas: int, now: float, token_id: str = ""
    ) -> UpstreamKey | None:
        """The key to lease, or None.

        A project whose known tokens-per-minute limit the call's input alone
        exceeds (``QuotaCounter.too_large``) is passed over while another
        can take the call, and leased only when none can (the upstream then
        blames the request).
        """
        model, exclude = request.model, request.exclude
        owner, only = place
        keys = self._view.keys
        cooldowns = self._view.cooldowns
        cap = share(pool.policy.max_in_flight, replicas)
        rpm = pool.policy.requests_per_minute
        budget = share(rpm, replicas)
        credit = request.credit  # a credit never fills the last half of a per-minute limit (``credit_room``)
        if credit:
            budget = credit_room(budget)
        key_minutes = self._key_minutes
        departed = key_minutes.has_departed  # then each key's share is less what departed instances admitted
        limits = self._view.limits
        pacing = bool(limits) or has_operator_limits(pool.policy)
        paced: dict[str, int] = {}  # project -> _FITS, _SPENT or _TOO_LARGE (one look per project per acquire)
        lenient = False  # the second pass: projects too small for the call count as fitting
        session = request.session and bool(pool.policy.live_sessions_per_key or pool.policy.live_sessions_per_project)

        names = self.served.names(model)  # the name asked and the model that answers it
        tier = service_class(request.service_tier)
        priority = tier == PRIORITY
        # A flex or priority call: its class's cooldowns too, and of the model's all (priority) or facts (flex).
        class_names = tuple(class_model(name, tier) for name in names) if tier else ()
        facts_only = tier == FLEX

        view = self._view
        held: dict[tuple[str, str], bool] = {}  # (project, account) -> their cooldowns hold this call

        pairs = [(name, facts_only) for name in names] + [(name, False) for name in class_names]

        def own_cooled(key_id: str) -> bool:
            """Whether a running cooldown of the key's own keeps it from the call (no id built: the view's index)."""
            own = view.cooldowns_on(CooldownScope.KEY, key_id)
            return bool(own) and any(cooldown.until > now and _holds(cooldown, pairs) for cooldown in own.values())

        def group_cooled(key: UpstreamKey) -> bool:
            """Whether its project's or account's running cooldowns keep ``key`` from the call: one look per
            (project, account) per acquire."""
            group = (key.project, key.billing_account)
            verdict = held.get(group)
            if verdict is None:
                verdict = held[group] = _cooldowns_end(key, pairs, cooldowns, running_at=now) > now
            return verdict

        def pace(project: str) -> int:
            state = paced.get(project)
            if state is None:
                state = paced[project] = self._pacing(project, pool, request, replicas, now)
            return state

        def eligible(key_id: str) -> bool:
            key = keys[key_id]
            if key_id in exclude or not key.leasable_state(now) or (priority and not key.takes_priority()):
                return False
            if session and not self._session_room(key, pool, token_id, replicas):
                return False
            if key.project and pacing:
                state = pace(key.project)
                if state == _SPENT or (state == _TOO_LARGE and not lenient):
                    return False
            if cooldowns and (  # none anywhere (most of the time): no ids to build
                group_cooled(key) or own_cooled(key_id)
            ):
                return False
            if cap and not request.session and self._book.in_flight(key_id) >= cap:
                return False
            if departed:
                limit = key_minutes.limit_for(key_id, rpm, replicas, now)
                return key_minutes.allows(key_id, credit_room(limit) if credit else limit, now)
            return key_minutes.allows(key_id, budget, now)

        choosable: Eligible = eligible
        if only is not None:
            allowed = only

            def restricted(key_id: str) -> bool:
                return allowed(keys[key_id]) and eligible(key_id)

            choosable = restricted

        def search() -> UpstreamKey | None:
            if owner is not None:
                preferred = keys.get(owner.key_id)
                if preferred is not None and preferred.pool == pool.name and choosable(owner.key_id):
                    return preferred
            for ring in self._view.rings(pool.name):
                key_id = pick(pool.strategy, ring, choosable, self._book.in_flight, self._rng)
                if key_id is not None:
                    return keys[key_id]
            return None

        def all_held() -> bool:
            """Whether what each (project, account) shares (cooldowns, a spent window) holds every key of the pool."""
            for (project, _), members in view.groups(pool.name).items():
                if cooldowns and group_cooled(keys[next(iter(members))]):
                    continue
                if project and pacing and pace(project) == _SPENT:
                    continue
                return False
            return True

        # After a refusal (a pool-wide 429 storm, say) one look per project says whether any key could be
        # eligible, instead of a scan of every key: O(projects), not O(keys), for each refused call.
        if pool.name in self._refused and (cooldowns or pacing) and all_held():
            return None
        found = search()
        if found is None and _TOO_LARGE in paced.values():
            lenient = True
            found = search()
        if found is None:
            self._refused.add(pool.name)
        else:
            self._refused.discard(pool.name)
        return found

    def _pacing(self, project: str, pool: Pool, request: LeaseRequest, replicas: int, now: float) -> int:
        if self._spent_until(project, pool, request, replicas, now):
            return _SPENT
        model = class_model(self.served.served_of(request.model), request.service_tier)
        limits, policy = class_limits(project, model, self._view.limits, pool.policy)
        if self.quotas.too_large(project, model, limits, policy, request.input_tokens):
            return _TOO_LARGE
        return _FITS

    def _spent_until(self, project: str, pool: Pool, request: LeaseRequest, replicas: int, now: float) -> float:
        """When the project's spent window for this call's class resets (0: it may take the call).

        The class's own limit first (flex's, priority's: ``limits.class_limits``), then standard's for the
        classes counted against it (standard, priority). A credit: their per-minute limits' first halves.
        """
        served, tier = self.served.served_of(request.model), service_class(request.service_tier)
        view_limits, input_tokens, credit = self._view.limits, request.input_tokens, request.credit
        if tier != STANDARD:
            model = class_model(served, tier)
            limits, policy = class_limits(project, model, view_limits, pool.policy)
            spent = self.quotas.spent_until(project, model, limits, policy, replicas, now, input_tokens, credit)
            if spent or not counts_against_standard(tier):
                return spent
        return self.quotas.spent_until(project, served, view_limits, pool.policy, replicas, now, input_tokens, credit)

    def _nothing_eligible(
        self, pool: Pool, request: LeaseRequest, only: KeyFilter | None, replicas: int, now: float
    ) -> NoKeyAvailable:
        """Say when the soonest key frees up, so the caller can wait exactly that long.

        Keys the caller excluded count too: they were excluded for this one
        request, and the caller's next request may use them. Keys the call may
        not have at all (``only``: another project than its resources') do not.
        """
        model = request.model
        rpm = pool.policy.requests_per_minute
        soonest = math.inf
        tier = service_class(request.service_tier)
        priority = tier == PRIORITY
        names = [(name, tier == FLEX) for name in self.served.names(model)]
        names += [(class_model(name, tier), False) for name in self.served.names(model) if tier]
        view = self._view
        cooldowns = view.cooldowns
        # By (project, account): what they share (cooldowns, the project's spent window) ends at one time for all
        # their keys, so while it runs the group frees then unless a key of its own frees later; a pool-wide
        # 429 storm costs one look per project, not per key (100,000 keys: seconds of a replica's only core).
        for (project, _), members in view.groups(pool.name).items():
            shared = -math.inf  # not looked at yet
            for key_id in members:
                key = view.keys[key_id]
                if key.state in (KeyState.INVALID, KeyState.DISABLED) or (only is not None and not only(key)):
                    continue
                if priority and not key.takes_priority():  # Google opens priority to Tier 2/3 accounts only
                    continue
                if shared == -math.inf:
                    shared = _cooldowns_end(key, names, cooldowns) if cooldowns else 0.0
                    shared = max(shared, self._spent_until(project, pool, request, replicas, now))
                own = key.state_until if key.state is KeyState.SUSPENDED else now
                for cooldown in view.cooldowns_on(CooldownScope.KEY, key_id).values():
                    if _holds(cooldown, names):
                        own = max(own, cooldown.until)
                if rpm:
                    budget = self._key_minutes.limit_for(key_id, rpm, replicas, now)
                    own = max(own, self._key_minutes.frees_at(key_id, budget, now))
                frees = max(own, shared)
                if frees <= now:  # blocked only by its in-flight cap
                    frees = now + _IN_FLIGHT_RETRY_S
                soonest = min(soonest, frees)
                if now < shared and own <= shared:  # no key of the group frees before ``shared``
                    break
        if math.isinf(soonest):
            what = "for this call" if only is None else "of the project this call's resources or projects allow"
            if priority:
                what += " on a Tier 2 or 3 billing account (service_tier priority)"
            return NoKeyAvailable(
                f"pool {pool.name!r} has no usable key {what}", pool.policy.rate_limit_cooldown_s, pool.name
            )
        return NoKeyAvailable(f"no key of pool {pool.name!r} is free for model {model!r}", soonest - now, pool.name)


def _cooldowns_end(
    key: UpstreamKey,
    names: Sequence[tuple[str, bool]],
    cooldowns: Mapping[CooldownId, Cooldown],
    running_at: float = -math.inf,
) -> float:
    """When the cooldowns of ``key``'s project and billing account (the same for all their keys) keeping it from
    the call's ``names`` (name, flex: facts only) end (0: none); ``running_at``: only those running then."""
    ends = 0.0
    for name, facts_only in names:
        for subject in key.cooldown_subjects(name):
            if subject.scope is not CooldownScope.KEY:
                cooldown = cooldowns.get(subject)
                if cooldown is not None and cooldown.until > running_at and not (facts_only and _not_a_fact(cooldown)):
                    ends = max(ends, cooldown.until)
    return ends


def _holds(cooldown: Cooldown, names: Sequence[tuple[str, bool]]) -> bool:
    """Whether a key's own cooldown is for one of the call's ``names`` (name, flex: facts only)."""
    model = cooldown.id.model
    return any(model == name and not (facts and _not_a_fact(cooldown)) for name, facts in names)


def _not_a_fact(cooldown: Cooldown) -> bool:
    """A cooldown of the model's standard traffic that says nothing of flex (its quota, not the model's absence):
    project- and account-wide ones (model ``*``) hold for every class."""
    return cooldown.reason not in _MODEL_FACTS and cooldown.id.model != ALL_MODELS


def require_pool(view: KeyringView, name: str) -> Pool:
    pool = view.pools.get(name)
    if pool is None:
        raise NotFound(f"pool {name!r} does not exist")
    return pool
