"""Resources that live in one upstream project: who owns them, and which keys may serve a call naming them.

Files, context caches, batches, long-running operations, stored interactions
and upload sessions are created under the Google Cloud project of the key
that made them; only keys of that project can use them afterwards. A release
``bind``s the resources its call created to the lease's key (an ``Affinity``
record per name, kept until the resource's lifetime ends); an acquire naming
resources (``affinity``) is then leased:

1. the owner key, when it is eligible for the call by every usual rule;
2. else another key of the owner's project in the pool (tiers, strategy,
   cooldowns, caps, budgets and excluded keys as usual);
3. else nothing: ``NoKeyAvailable`` with the time until the soonest of those
   keys frees up. Never a key of another project: it would answer 404.

Bindings are bounded (issue 18): a release binds at most ``MAX_BINDS``
names (a call creates one resource; a finished job names a few files), and a
pool, and each client token in it, holds at most ``BindingCaps`` live
records (``KEYRING_AFFINITY_MAX_PER_POOL``, ``KEYRING_AFFINITY_MAX_PER_TOKEN``).
A call that would create a resource (``AcquireRequest.binds``) is refused
before it reaches the upstream when either is full (``BindingsFull``, a
``NoKeyAvailable``: 429 at the edge), so no resource is made that keyring
could not route to; a release binding new names past a cap is refused too
(``check_room``) and writes nothing. Names bound again (a cache's new expiry)
take no room. Replicas count from their views, so two racing on the last
room may pass a cap by the calls in flight.

A key without a project is its own project: only that key serves. Several
names must share one project (or one key), else ``InvalidArgument``. A name
the pool does not know (or whose record expired, or that belongs to another
pool) is an ``AffinityMiss`` (a ``NotFound``): the desk reads those records
from the store once before answering NOT_FOUND, as the watch may lag
another replica's write.

``exclude_projects`` (list calls fanning out over a pool's projects) names
projects by ``project_label``: the project, or ``key:<key id>`` for a key
without one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import InvalidArgument, NoKeyAvailable, NotFound
from .models import Affinity, UpstreamKey

MAX_NAME = 512  # characters of one resource name
MAX_NAMES = 32  # resources named by one acquire
MAX_EXCLUDED_PROJECTS = 1000
MAX_LISTED_NAMES = 1000  # names one bound-names question may ask about (a list answer's, in batches)
MAX_CHANGES = 64  # bindings and unbindings carried by one release (one store commit)
MAX_BINDS = 16  # resources bound by one release: a lease is trusted with that many, no more
BINDINGS_FULL_RETRY_S = 60.0  # what a refused bind tells the caller to wait (records expire or are deleted)
MAX_TTL_S = 400 * 24 * 3600.0  # the longest routing a binding may ask for

KeyFilter = Callable[[UpstreamKey], bool]


def project_label(key: UpstreamKey) -> str:
    """What ``exclude_projects`` names a key's project by: its project, or ``key:<id>`` when it has none."""
    return key.project or f"key:{key.key_id}"


class AffinityMiss(NotFound):
    """Some named resources are not in this replica's view (yet): read them from the store, then decide."""

    def __init__(self, pool: str, names: Sequence[str]) -> None:
        shown = ", ".join(repr(name[:80]) for name in names[:3])
        super().__init__(f"no resource {shown} is known in this pool")
        self.pool = pool
        self.names = tuple(names)


class BindingsFull(NoKeyAvailable):
    """The pool, or the client token, holds its cap of live bindings: nothing more is bound until some go."""


@dataclass(frozen=True, slots=True)
class BindingCaps:
    """Live affinity records a pool, and a client token in it, may hold (0: no cap)."""

    per_pool: int = 100_000
    per_token: int = 10_000


def check_room(bound: Mapping[str, int], pool: str, token_id: str, new: int, caps: BindingCaps) -> None:
    """Refuse (``BindingsFull``) ``new`` more records in ``pool`` for ``token_id`` past a cap.

    ``bound``: records per pool and per token (``KeyringView.bound``).
    """
    if caps.per_pool and bound.get(pool_subject(pool), 0) + new > caps.per_pool:
        raise BindingsFull(
            f"pool {pool!r} holds {caps.per_pool} resource bindings, its cap (KEYRING_AFFINITY_MAX_PER_POOL): "
            "delete files, caches or interactions, or wait for some to expire",
            BINDINGS_FULL_RETRY_S,
            pool,
        )
    if token_id and caps.per_token and bound.get(token_subject(token_id), 0) + new > caps.per_token:
        raise BindingsFull(
            f"this client token holds {caps.per_token} resource bindings, its cap (KEYRING_AFFINITY_MAX_PER_TOKEN): "
            "delete files, caches or interactions, or wait for some to expire",
            BINDINGS_FULL_RETRY_S,
            pool,
        )


def unbound(records: Mapping[tuple[str, str], Affinity], pool: str, names: Iterable[str]) -> int:
    """How many of ``names`` the pool has no record of (bound again, a name takes no more room)."""
    return sum(1 for name in dict.fromkeys(names) if (pool, name) not in records)


def pool_subject(pool: str) -> str:
    """What ``KeyringView.bound`` counts a pool's records under."""
    return f"pool:{pool}"


def token_subject(token_id: str) -> str:
    """What ``KeyringView.bound`` counts a client token's records under."""
    return f"token:{token_id}"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who may serve a call naming some resources: ``key_id`` first, then keys of ``project`` ("": that key only)."""

    key_id: str
    project: str

    def accepts(self, key: UpstreamKey) -> bool:
        if not self.project:
            return key.key_id == self.key_id
        return key.project == self.project


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not name.isprintable() or any(c.isspace() for c in name):
        raise InvalidArgument(f"a resource name is 1 to {MAX_NAME} printable characters without spaces")
    return name


def check_names(names: Sequence[str]) -> Sequence[str]:
    if len(names) > MAX_NAMES:
        raise InvalidArgument(f"at most {MAX_NAMES} resources in one call")
    for name in names:
        check_name(name)
    return names


def owner_of(records: Mapping[tuple[str, str], Affinity], pool: str, names: Sequence[str], now: float) -> Owner:
    """The owner of every named resource of ``pool``; ``AffinityMiss`` for names unknown (or expired)."""
    found: list[Affinity] = []
    missing: list[str] = []
    for name in check_names(names):
        record = records.get((pool, name))
        if record is None or not record.active(now):
            missing.append(name)
        else:
            found.append(record)
    if missing:
        raise AffinityMiss(pool, missing)
    first = found[0]
    for record in found[1:]:
        same = record.project == first.project if first.project else record.key_id == first.key_id
        if not same:
            raise InvalidArgument("the named resources belong to different projects: no key can serve them all")
    return Owner(first.key_id, first.project)


def bound_in(records: Mapping[tuple[str, str], Affinity], pool: str, names: Sequence[str], now: float) -> list[str]:
    """Those of ``names`` ``pool`` bound (live records), in order: what a list call through the pool may show.

    The pool is the isolation unit: a project's list holds every resource of
    the project, and a key whose project keyring does not know may share one
    with another pool; only what this pool's calls made (or found in their
    jobs' results) is its own.
    """
    if len(names) > MAX_LISTED_NAMES:
        raise InvalidArgument(f"at most {MAX_LISTED_NAMES} names in one question")
    found: list[str] = []
    for name in names:
        record = records.get((pool, check_name(name)))
        if record is not None and record.active(now):
            found.append(name)
    return found


def key_filter(owner: Owner | None, exclude_projects: Collection[str]) -> KeyFilter | None:
    """Which keys a call may be leased (None: any key, the hot path's answer)."""
    if exclude_projects and len(exclude_projects) > MAX_EXCLUDED_PROJECTS:
        raise InvalidArgument(f"at most {MAX_EXCLUDED_PROJECTS} excluded projects")
    if owner is None:
        if not exclude_projects:
            return None
        return lambda key: project_label(key) not in exclude_projects
    if not exclude_projects:
        return owner.accepts
    return lambda key: owner.accepts(key) and project_label(key) not in exclude_projects


def bindings(
    key: UpstreamKey, bind: Sequence[tuple[str, float]], unbind: Sequence[str], now: float, token_id: str = ""
) -> tuple[list[Affinity], list[str]]:
    """The records a release writes (``bind``: name and lifetime in seconds) and the names it forgets.

    A name bound twice keeps its last lifetime; a name both bound and unbound
    is refused (which one did the call mean?). ``token_id``: the lease's
    client token, which the records are counted against.
    """
    if len(bind) + len(unbind) > MAX_CHANGES:
        raise InvalidArgument(f"at most {MAX_CHANGES} bindings and unbindings in one release")
    if len(bind) > MAX_BINDS:
        raise InvalidArgument(f"at most {MAX_BINDS} bindings in one release: a lease creates no more resources")
    lifetimes: dict[str, float] = {}
    for name, ttl_s in bind:
        check_name(name)
        if not 0 < ttl_s <= MAX_TTL_S:
            raise InvalidArgument(f"a binding's ttl_ms must be positive, at most {int(MAX_TTL_S * 1000)}")
        lifetimes[name] = ttl_s
    forgotten = list(dict.fromkeys(check_name(name) for name in unbind))
    if any(name in lifetimes for name in forgotten):
        raise InvalidArgument("a resource is both bound and unbound in one release")
    records = [
        Affinity(name, key.pool, key.key_id, key.project, expires_at=now + ttl_s, created_at=now, token_id=token_id)
        for name, ttl_s in lifetimes.items()
    ]
    return records, forgotten
