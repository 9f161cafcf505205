"""The in-memory view of all state: what every lease decision reads.

Each replica holds a full view, fed from the store (range read + watch) and
updated at once by this replica's own writes. It only stores records; it
knows nothing of the store's encoding.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from types import MappingProxyType

from .admissions import Published
from .affinity import pool_subject, token_subject
from .models import Affinity, ClientToken, Cooldown, CooldownId, CooldownScope, LimitId, Pool, QuotaLimit, UpstreamKey
from .selection import TierRing, ring_add, ring_remove

_NONE: Mapping[CooldownId, Cooldown] = MappingProxyType({})


class KeyringView:
    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {}
        self.keys: dict[str, UpstreamKey] = {}
        self.tokens: dict[str, ClientToken] = {}  # by token id
        self.tokens_by_hash: dict[str, ClientToken] = {}
        self.cooldowns: dict[CooldownId, Cooldown] = {}
        self.members: dict[str, bytes] = {}
        # Who owns each project-bound resource, by (pool, resource name); expired ones until collected.
        self.affinity: dict[tuple[str, str], Affinity] = {}
        # Records held per "pool:{pool}" and "token:{token id}" (expired ones until collected): their caps.
        self.bound: dict[str, int] = {}
        # Quota limits learnt from 429s (domain/limits.py), by (project, model, metric).
        self.limits: dict[LimitId, QuotaLimit] = {}
        # Raw records nobody leases from: decoded only when asked for.
        self.usage: dict[str, bytes] = {}  # by store path: one replica's bucket
        self.usage_keys: dict[str, bytes] = {}  # by store path: a large bucket's key shard (domain/usage.py split)
        self.audit: dict[str, bytes] = {}  # by store path: sorts by time
        self.sessions: dict[str, bytes] = {}  # by store path: admin sessions ended early
        # By store path: minted browser tokens (domain/live_tokens.py), with their revision (a redeem's guard).
        self.live_tokens: dict[str, tuple[bytes, int]] = {}
        # What each instance published it admitted (domain/admissions.py), by instance; and a change count.
        self.admitted: dict[str, Published] = {}
        self.admitted_version = 0
        self.revision = 0
        self._rings: dict[str, list[TierRing]] = {}
        self._keys_by_pool: dict[str, set[str]] = defaultdict(set)
        # A pool's keys by (project, billing account): the keys their project's and account's cooldowns hold alike.
        self._groups: dict[str, dict[tuple[str, str], set[str]]] = defaultdict(dict)
        # Cooldowns by (scope, subject): a key's cooldowns without scanning them all.
        self._cooldowns_by_subject: dict[tuple[CooldownScope, str], dict[CooldownId, Cooldown]] = defaultdict(dict)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    # -- writes ---------------------------------------------------------

    def put_pool(self, pool: Pool) -> None:
        self.pools[pool.name] = pool

    def remove_pool(self, name: str) -> None:
        self.pools.pop(name, None)

    def put_key(self, key: UpstreamKey) -> None:
        previous = self.keys.get(key.key_id)
        self.keys[key.key_id] = key
        if previous is None or _group_of(previous) != _group_of(key):
            if previous is not None:
                self._leave_group(previous)
            self._groups[key.pool].setdefault(_group_of(key)[1:], set()).add(key.key_id)
        if previous is None or (previous.pool, previous.tier, previous.weight) != (key.pool, key.tier, key.weight):
            if previous is not None:
                self._forget_key_in_pool(previous)
            self._keys_by_pool[key.pool].add(key.key_id)
            rings = self._rings.get(key.pool)
            if rings is not None:
                ring_add(rings, key.tier, key.key_id, key.weight)

    def remove_key(self, key_id: str) -> None:
        previous = self.keys.pop(key_id, None)
        if previous is not None:
            self._forget_key_in_pool(previous)
            self._leave_group(previous)

    def put_token(self, token: ClientToken) -> None:
        previous = self.tokens.get(token.token_id)
        if previous is not None and previous.token_hash != token.token_hash:
            self.tokens_by_hash.pop(previous.token_hash, None)
        self.tokens[token.token_id] = token
        self.tokens_by_hash[token.token_hash] = token

    def remove_token(self, token_id: str) -> None:
        previous = self.tokens.pop(token_id, None)
        if previous is not None:
            self.tokens_by_hash.pop(previous.token_hash, None)

    def put_cooldown(self, cooldown: Cooldown) -> None:
        self.cooldowns[cooldown.id] = cooldown
        self._cooldowns_by_subject[(cooldown.id.scope, cooldown.id.subject)][cooldown.id] = cooldown

    def remove_cooldown(self, cooldown_id: CooldownId) -> None:
        if self.cooldowns.pop(cooldown_id, None) is not None:
            subject = (cooldown_id.scope, cooldown_id.subject)
            self._cooldowns_by_subject[subject].pop(cooldown_id, None)
            if not self._cooldowns_by_subject[subject]:
                del self._cooldowns_by_subject[subject]

    def put_limit(self, record: QuotaLimit) -> None:
        self.limits[record.id] = record

    def remove_limit(self, limit_id: LimitId) -> None:
        self.limits.pop(limit_id, None)

    def put_affinity(self, record: Affinity) -> None:
        subject = (record.pool, record.name)
        self._count_affinity(self.affinity.get(subject), -1)
        self.affinity[subject] = record
        self._count_affinity(record, 1)

    def remove_affinity(self, pool: str, name: str) -> None:
        self._count_affinity(self.affinity.pop((pool, name), None), -1)

    def _count_affinity(self, record: Affinity | None, step: int) -> None:
        """``bound``: records per pool and per client token (their caps, ``affinity.check_room``)."""
        if record is None:
            return
        for subject in (pool_subject(record.pool), token_subject(record.token_id) if record.token_id else ""):
            if subject:
                count = self.bound.get(subject, 0) + step
                if count > 0:
                    self.bound[subject] = count
                else:
                    self.bound.pop(subject, None)

    # -- reads ----------------------------------------------------------

    def keys_of(self, pool: str) -> list[UpstreamKey]:
        return [self.keys[key_id] for key_id in self._keys_by_pool.get(pool, ())]

    def tokens_of(self, pool: str) -> list[ClientToken]:
        return [token for token in self.tokens.values() if token.pool == pool]

    def rings(self, pool: str) -> list[TierRing]:
        """The pool's keys by tier, first choice first; built once, then kept up to date key by key."""
        rings = self._rings.get(pool)
        if rings is None:
            by_tier: dict[int, list[UpstreamKey]] = defaultdict(list)
            for key in sorted(self.keys_of(pool), key=lambda k: k.key_id):
                by_tier[key.tier].append(key)
            rings = [
                TierRing(tier, [k.key_id for k in keys], [k.weight for k in keys])
                for tier, keys in sorted(by_tier.items())
            ]
            self._rings[pool] = rings
        return rings

    def groups(self, pool: str) -> dict[tuple[str, str], set[str]]:
        """The pool's key ids by (project, billing account); kept key by key, never to be changed by the caller."""
        return self._groups.get(pool, {})

    def cooldowns_on(self, scope: CooldownScope, subject: str) -> Mapping[CooldownId, Cooldown]:
        """The cooldowns (running or not collected yet) naming this subject, any model; not to be changed."""
        return self._cooldowns_by_subject.get((scope, subject), _NONE)

    def cooldowns_of(self, key: UpstreamKey, now: float) -> list[Cooldown]:
        """Running cooldowns that keep this key from some model."""
        subjects = [(CooldownScope.KEY, key.key_id)]
        if key.project:
            subjects.append((CooldownScope.PROJECT, key.project))
        if key.billing_account:
            subjects.append((CooldownScope.ACCOUNT, key.billing_account))
        return [
            cooldown
            for subject in subjects
            for cooldown in self._cooldowns_by_subject.get(subject, {}).values()
            if cooldown.active(now)
        ]

    def _leave_group(self, key: UpstreamKey) -> None:
        groups = self._groups.get(key.pool, {})
        members = groups.get(_group_of(key)[1:])
        if members is not None:
            members.discard(key.key_id)
            if not members:
                del groups[_group_of(key)[1:]]

    def _forget_key_in_pool(self, key: UpstreamKey) -> None:
        self._keys_by_pool[key.pool].discard(key.key_id)
        rings = self._rings.get(key.pool)
        if rings is not None:
            ring_remove(rings, key.tier, key.key_id)


def _group_of(key: UpstreamKey) -> tuple[str, str, str]:
    """(pool, project, billing account): what decides a key's group (``KeyringView.groups``)."""
    return key.pool, key.project, key.billing_account
