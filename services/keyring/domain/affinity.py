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

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from .errors import InvalidArgument, NotFound
from .models import Affinity, UpstreamKey

MAX_NAME = 512  # characters of one resource name
MAX_NAMES = 32  # resources named by one acquire
MAX_EXCLUDED_PROJECTS = 1000
MAX_CHANGES = 64  # bindings and unbindings carried by one release (one store commit)
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
    key: UpstreamKey, bind: Sequence[tuple[str, float]], unbind: Sequence[str], now: float
) -> tuple[list[Affinity], list[str]]:
    """The records a release writes (``bind``: name and lifetime in seconds) and the names it forgets.

    A name bound twice keeps its last lifetime; a name both bound and unbound
    is refused (which one did the call mean?).
    """
    if len(bind) + len(unbind) > MAX_CHANGES:
        raise InvalidArgument(f"at most {MAX_CHANGES} bindings and unbindings in one release")
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
        Affinity(name, key.pool, key.key_id, key.project, expires_at=now + ttl_s, created_at=now)
        for name, ttl_s in lifetimes.items()
    ]
    return records, forgotten
