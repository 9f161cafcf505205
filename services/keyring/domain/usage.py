"""Usage counters: requests, errors and tokens per key, client token and pool.

Each replica counts what it sees in time buckets and flushes them to the
store under its own name, so every replica can sum the figures of all of
them: usage stays correct with several replicas and edges.

Exactly once: a bucket stays dirty until its write is confirmed
(``take_dirty`` hands it out, ``not_written`` puts it back after a failed
write, and a finished bucket is forgotten only once written: ``forget_written``),
so a store that stalls across a bucket boundary loses no count; a bucket is
written whole each time, so writing it twice counts nothing twice.

Epochs: each count goes into the current epoch; ``take_dirty`` closes it and
stamps the buckets it hands out, so a bucket in the store says which epochs
its replica has written, and ``written`` (the write confirmed) makes them
``durable``.

Large buckets: a bucket holds a line per key used in its five minutes, and
etcd refuses a request over 1.5 MiB (about 15,000 keys' lines): a bucket
with more than ``KEYS_PER_SHARD`` keys is stored as a head record (pools,
tokens, errors, its epoch) that names ``shards`` of its per-key lines, each a
record of its own written before the head and named by the epoch that wrote
it (``split``; ``joined`` puts them back). A head names only a shard set
written whole, so a replica killed mid-flush leaves the previous head and
its shards, and the exactly-once rules (epochs) hold as for one record.

Unknown outcomes: a lease reclaimed unreleased (its edge died or lost it)
may have reached the upstream, which billed it: it counts as a request of
unknown outcome (``Call.unknown``). A release that comes after that tells
the outcome: ``resolve`` takes the call out of unknown and adds what it
tells, in the bucket of the moment (the request stays counted once; a bucket
may then hold a negative ``unknown``, and sums over a window covering both
are right). Which release counts a call at all is the usage ledger's rule
(``keyring/ledger.py``), with ``RecentIds`` remembering the lease ids it must
not count again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

BUCKET_S = 300  # five minutes: fine enough for "last hour", small enough to keep a day
# A bucket with more keys than this is stored in shards of this many keys (~600 KB of JSON each: one per commit
# under etcd's 1.5 MiB request limit; 100,000 keys are 20 shards).
KEYS_PER_SHARD = 5_000


@dataclass(slots=True)
class Figures:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    unknown: int = 0  # requests whose lease was reclaimed unreleased: outcome unknown (in requests too)

    def add(self, other: Figures) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.unknown += other.unknown

    def as_list(self) -> list[int]:
        return [self.requests, self.errors, self.input_tokens, self.output_tokens, self.unknown]

    @classmethod
    def from_list(cls, values: list[int]) -> Figures:
        return cls(*values[:5])  # four before unknown outcomes were counted


@dataclass(slots=True)
class Bucket:
    """One replica's counts for one time bucket."""

    start: int
    epoch: int = 0  # the epoch closed by the flush that last wrote it
    keys: dict[str, Figures] = field(default_factory=lambda: defaultdict(Figures))
    tokens: dict[str, Figures] = field(default_factory=lambda: defaultdict(Figures))
    pools: dict[str, Figures] = field(default_factory=lambda: defaultdict(Figures))
    key_pools: dict[str, str] = field(default_factory=dict)
    token_pools: dict[str, str] = field(default_factory=dict)
    last_used: dict[str, float] = field(default_factory=dict)  # key ids and token ids
    errors: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> a failed call's kind -> calls
    tiers: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> service class (not standard) -> calls

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "epoch": self.epoch,
            "keys": {k: v.as_list() for k, v in self.keys.items()},
            "tokens": {k: v.as_list() for k, v in self.tokens.items()},
            "pools": {k: v.as_list() for k, v in self.pools.items()},
            "key_pools": self.key_pools,
            "token_pools": self.token_pools,
            "last_used": self.last_used,
            "errors": self.errors,
            "tiers": self.tiers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Bucket:
        bucket = cls(int(data["start"]), int(data.get("epoch", 0)))  # type: ignore[call-overload]
        for name in ("keys", "tokens", "pools"):
            target = getattr(bucket, name)
            for subject, values in data.get(name, {}).items():  # type: ignore[attr-defined]
                target[subject] = Figures.from_list(values)
        bucket.key_pools = dict(data.get("key_pools", {}))  # type: ignore[call-overload]
        bucket.token_pools = dict(data.get("token_pools", {}))  # type: ignore[call-overload]
        bucket.last_used = dict(data.get("last_used", {}))  # type: ignore[call-overload]
        bucket.errors = {pool: dict(kinds) for pool, kinds in data.get("errors", {}).items()}  # type: ignore[attr-defined]
        bucket.tiers = {pool: dict(tiers) for pool, tiers in data.get("tiers", {}).items()}  # type: ignore[attr-defined]
        return bucket


def split(bucket: Bucket, keys_per_shard: int = KEYS_PER_SHARD) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The bucket as stored: its head record and its key shards (none when its keys fit the head).

    A head with shards names them by the epoch that writes them (``{"epoch": e, "count": n}``); a key's
    figures, pool and last use travel in its shard, a token's stay in the head.
    """
    if len(bucket.keys) <= keys_per_shard:
        return bucket.to_dict(), []
    key_ids = sorted(bucket.keys)
    shards: list[dict[str, object]] = []
    for first in range(0, len(key_ids), keys_per_shard):
        chunk = key_ids[first : first + keys_per_shard]
        shards.append(
            {
                "keys": {key_id: bucket.keys[key_id].as_list() for key_id in chunk},
                "key_pools": {key_id: bucket.key_pools[key_id] for key_id in chunk if key_id in bucket.key_pools},
                "last_used": {key_id: bucket.last_used[key_id] for key_id in chunk if key_id in bucket.last_used},
            }
        )
    head: dict[str, object] = {
        "start": bucket.start,
        "epoch": bucket.epoch,
        "keys": {},
        "tokens": {k: v.as_list() for k, v in bucket.tokens.items()},
        "pools": {k: v.as_list() for k, v in bucket.pools.items()},
        "key_pools": {},
        "token_pools": bucket.token_pools,
        "last_used": {subject: at for subject, at in bucket.last_used.items() if subject not in bucket.keys},
        "errors": bucket.errors,
        "tiers": bucket.tiers,
        "shards": {"epoch": bucket.epoch, "count": len(shards)},
    }
    return head, shards


def shard_set(head: dict[str, object]) -> tuple[int, int] | None:
    """(epoch, count) of the shards a head record names; None for a bucket stored whole."""
    named = head.get("shards")
    if not isinstance(named, dict):
        return None
    return int(named.get("epoch", 0)), int(named.get("count", 0))


def joined(head: dict[str, object], shards: list[dict[str, object]]) -> Bucket:
    """A bucket from its head record and the shards it names (``split``'s inverse)."""
    bucket = Bucket.from_dict(head)
    for shard in shards:
        for key_id, values in shard.get("keys", {}).items():  # type: ignore[attr-defined]
            bucket.keys[key_id] = Figures.from_list(values)
        bucket.key_pools.update(shard.get("key_pools", {}))  # type: ignore[call-overload]
        bucket.last_used.update(shard.get("last_used", {}))  # type: ignore[call-overload]
    return bucket


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream call's figures, as its release reports them."""

    pool: str
    key_id: str
    token_id: str  # "" when not known (a release of another replica's lease whose token tag did not hold)
    failed: bool
    input_tokens: int
    output_tokens: int
    unknown: bool = False  # a lease reclaimed unreleased: it may have reached the upstream, outcome unknown
    kind: str = ""  # a failed call's kind (the shared classifier's AnswerKind value): errors by class
    service_tier: str = ""  # "flex" or "priority" (domain/tiers.py): calls by service class; "": standard


def bucket_start(now: float) -> int:
    return int(now // BUCKET_S) * BUCKET_S


class UsageCounter:
    """This replica's counts not yet flushed, by bucket."""

    def __init__(self) -> None:
        self.buckets: dict[int, Bucket] = {}
        self.dirty: set[int] = set()
        self.epoch = 1  # counts go into this epoch
        self.durable = 0  # every epoch up to this one is written

    def resolve(self, now: float, call: Call) -> int:
        """A call counted unknown gets its outcome: out of unknown, its figures added, no new request; the epoch."""
        return self.count(now, call, requests=0)

    def count(self, now: float, call: Call, requests: int = 1) -> int:
        """Count one call (``requests=0``: resolve one counted unknown, ``resolve``); the epoch it went into."""
        pool, key_id, token_id = call.pool, call.key_id, call.token_id
        start = bucket_start(now)
        bucket = self.buckets.get(start)
        if bucket is None:
            bucket = self.buckets[start] = Bucket(start)
        subjects = [bucket.keys[key_id], bucket.pools[pool]]
        bucket.last_used[key_id] = now
        if key_id not in bucket.key_pools:
            bucket.key_pools[key_id] = pool
        if token_id:
            bucket.last_used[token_id] = now
            subjects.append(bucket.tokens[token_id])
            if token_id not in bucket.token_pools:
                bucket.token_pools[token_id] = pool
        unknown = 1 if call.unknown else -1 if not requests else 0
        for figures in subjects:
            figures.requests += requests
            figures.unknown += unknown
            figures.errors += call.failed
            figures.input_tokens += call.input_tokens
            figures.output_tokens += call.output_tokens
        if call.failed and call.kind:
            kinds = bucket.errors.setdefault(pool, {})
            kinds[call.kind] = kinds.get(call.kind, 0) + 1
        if call.service_tier and requests:
            tiers = bucket.tiers.setdefault(pool, {})
            tiers[call.service_tier] = tiers.get(call.service_tier, 0) + requests
        self.dirty.add(start)
        return self.epoch

    def take_dirty(self) -> tuple[list[Bucket], int]:
        """Buckets to write now, taken as clean, and the epoch they close (stamped on them).

        Serialise them before anything else runs: a count that comes in later
        belongs to the next epoch (and makes its bucket dirty again).
        """
        taken = [self.buckets[start] for start in sorted(self.dirty)]
        self.dirty.clear()
        if not taken:
            return [], self.durable
        closed, self.epoch = self.epoch, self.epoch + 1
        for bucket in taken:
            bucket.epoch = closed
        return taken, closed

    def written(self, epoch: int) -> None:
        """The write of ``take_dirty``'s buckets is confirmed: their epoch and every earlier one are durable."""
        self.durable = max(self.durable, epoch)

    def not_written(self, buckets: list[Bucket]) -> None:
        """Their write failed (or may have): dirty again, written whole next time."""
        self.dirty.update(bucket.start for bucket in buckets)

    def forget_written(self, now: float) -> None:
        """Forget finished buckets whose last counts are written (dirty ones stay until they are)."""
        current = bucket_start(now)
        for start in [start for start in self.buckets if start < current and start not in self.dirty]:
            del self.buckets[start]


class RecentIds:
    """A bounded set of ids, the oldest forgotten first (lease ids already counted or judged)."""

    def __init__(self, limit: int = 65536) -> None:
        self._limit = limit
        self._ids: dict[str, None] = {}

    def __contains__(self, item: str) -> bool:
        return item in self._ids

    def add(self, item: str) -> bool:
        """Remember ``item``; False when it was already there."""
        if item in self._ids:
            return False
        self._ids[item] = None
        if len(self._ids) > self._limit:
            del self._ids[next(iter(self._ids))]
        return True

    def take(self, item: str) -> bool:
        """Forget ``item``; whether it was there."""
        return self._ids.pop(item, 0) is None


@dataclass
class UsageSummary:
    keys: dict[str, tuple[str, Figures]]
    tokens: dict[str, tuple[str, Figures]]
    pools: dict[str, Figures]
    # (bucket start, pool) -> every replica's figures in that bucket: the series over time (the console's chart)
    series: dict[tuple[int, str], Figures] = field(default_factory=dict)
    series_errors: dict[tuple[int, str], dict[str, int]] = field(default_factory=dict)  # the same, failed calls by kind
    series_tiers: dict[tuple[int, str], dict[str, int]] = field(default_factory=dict)  # the same, calls by class


def summarise(buckets: list[Bucket], since: float, pool: str = "") -> UsageSummary:
    """Sum every replica's buckets that start at or after ``since`` (bucket-aligned)."""
    keys: dict[str, tuple[str, Figures]] = {}
    tokens: dict[str, tuple[str, Figures]] = {}
    pools: dict[str, Figures] = defaultdict(Figures)
    series: dict[tuple[int, str], Figures] = defaultdict(Figures)
    series_errors: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    series_tiers: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    for bucket in buckets:
        if bucket.start < bucket_start(since):
            continue
        for key_id, figures in bucket.keys.items():
            key_pool = bucket.key_pools.get(key_id, "")
            if not pool or key_pool == pool:
                keys.setdefault(key_id, (key_pool, Figures()))[1].add(figures)
        for token_id, figures in bucket.tokens.items():
            token_pool = bucket.token_pools.get(token_id, "")
            if not pool or token_pool == pool:
                tokens.setdefault(token_id, (token_pool, Figures()))[1].add(figures)
        for pool_name, figures in bucket.pools.items():
            if not pool or pool_name == pool:
                pools[pool_name].add(figures)
                series[(bucket.start, pool_name)].add(figures)
        for pool_name, kinds in bucket.errors.items():
            if not pool or pool_name == pool:
                series_errors[(bucket.start, pool_name)].update(kinds)
        for pool_name, classes in bucket.tiers.items():
            if not pool or pool_name == pool:
                series_tiers[(bucket.start, pool_name)].update(classes)
    errors = {point: dict(kinds) for point, kinds in series_errors.items()}
    tiers = {point: dict(classes) for point, classes in series_tiers.items()}
    return UsageSummary(keys, tokens, dict(pools), dict(sorted(series.items())), errors, tiers)
