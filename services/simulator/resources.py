"""Project-scoped resources of the simulated API: files, upload sessions, context caches,
batches, long-running operations, interactions and the newer kinds of ``TABLE`` (agents,
environments, webhooks, file search stores...).

Every resource belongs to the Google Cloud project of the key that created it, as on
Google: a key of another project does not see it (404/403, see each route). Plain
Python (no aiohttp), so tests can inspect it in process.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal


@dataclass(frozen=True, slots=True)
class TableKind:
    """A kind served by the simulator's one generic route (``kinds_api``), per project as Google does.

    Its store kind is its ``route`` (``environments.files``); a child's id is ``{parent id}/{own id}``.
    """

    collection: str  # "agents"; a child's own segment(s): "documents", "upload/operations"
    parent: str = ""  # the collection it lives under
    echo: Literal["id", "name"] = "id"  # how an answer names one: the bare id (``_gaos`` kinds) or ``name``
    create: bool = True  # POST {collection}
    list: bool = True  # GET {collection}
    methods: frozenset[str] = frozenset({"GET", "DELETE"})  # on an item
    verbs: frozenset[str] = frozenset()  # POST {item}:{verb}

    @property
    def route(self) -> str:
        return (f"{self.parent}." if self.parent else "") + self.collection.replace("/", ".")


_PATCHED: Final = frozenset({"GET", "PATCH", "DELETE"})
# Google's newer project-bound kinds (GEMINI_API_NOTES "December 2026"): the simulator's own table, not the edge's.
TABLE: Final[tuple[TableKind, ...]] = (
    TableKind("agents"),
    TableKind("environments"),
    TableKind("files", "environments", create=False, methods=frozenset({"GET"})),
    TableKind("triggers", methods=_PATCHED),
    TableKind("executions", "triggers", methods=frozenset({"GET"})),
    TableKind("webhooks", methods=_PATCHED, verbs=frozenset({"ping", "rotateSigningSecret"})),
    TableKind("credentials", methods=_PATCHED),
    TableKind("voices"),
    TableKind("decisions", list=False, methods=frozenset()),
    TableKind("auth_tokens", "interactions", list=False),
    TableKind("fileSearchStores", echo="name", verbs=frozenset({"importFile"})),
    TableKind("documents", "fileSearchStores", echo="name", create=False),
    TableKind("operations", "fileSearchStores", echo="name", create=False, list=False, methods=frozenset({"GET"})),
    TableKind(
        "upload/operations", "fileSearchStores", echo="name", create=False, list=False, methods=frozenset({"GET"})
    ),
    TableKind(
        "tunedModels",
        echo="name",
        methods=_PATCHED,
        verbs=frozenset({"generateContent", "streamGenerateContent", "countTokens"}),
    ),
    TableKind("operations", "tunedModels", echo="name", create=False, methods=frozenset({"GET"})),
)

Kind = str  # one of KINDS
KINDS: Final[tuple[Kind, ...]] = (
    "files", "uploads", "cachedContents", "batches", "operations", "interactions", *(kind.route for kind in TABLE)
)  # fmt: skip
_ID_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"


def default_project(key: str) -> str:
    """The project a key belongs to unless told otherwise: one project per key, derived from the key."""
    return "sim-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def new_id(length: int = 12) -> str:
    """A lower-case alphanumeric id, as Google's file, cache and batch ids are."""
    return "".join(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in os.urandom(length))


def rfc3339(at: float) -> str:
    """Timestamp in Google's JSON form (`2026-11-30T08:26:51.559123Z`)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Resource:
    """One stored resource: its served JSON (`data`), owner, and per-kind extras."""

    kind: Kind
    id: str
    project: str
    key: str
    data: dict[str, Any]
    created: float = field(default_factory=time.time)
    expires: float = float("inf")  # caches: expireTime as a Unix time
    content: bytes = b""  # file bytes, upload bytes so far
    events: list[dict[str, Any]] = field(default_factory=list)  # interaction SSE events, in order

    def summary(self) -> dict[str, Any]:
        """What the control API shows: owner and served JSON (keys masked)."""
        return {"kind": self.kind, "id": self.id, "project": self.project, "key": mask(self.key), "data": self.data}


class ResourceStore:
    """All resources, keyed by (kind, id); project checks are the callers' business via `get`."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Resource] = {}

    def add(self, kind: Kind, project: str, key: str, data: dict[str, Any], rid: str | None = None) -> Resource:
        """Store a new resource under a fresh id (or `rid`)."""
        rid = rid or new_id()
        resource = Resource(kind, rid, project, key, data)
        self._items[(kind, rid)] = resource
        return resource

    def exists(self, kind: Kind, rid: str) -> bool:
        """True when the id is taken, in any project."""
        return (kind, rid) in self._items

    def get(self, kind: Kind, rid: str, project: str) -> Resource | None:
        """The resource if it exists *in `project`*; None for unknown ids and other projects alike."""
        resource = self._items.get((kind, rid))
        return resource if resource is not None and resource.project == project else None

    def owner(self, kind: Kind, rid: str) -> str | None:
        """The project owning a resource, whoever asks (for the control API and tests)."""
        resource = self._items.get((kind, rid))
        return resource.project if resource is not None else None

    def delete(self, kind: Kind, rid: str, project: str) -> bool:
        """Remove a resource of `project`; False when it is not there for that project."""
        if self.get(kind, rid, project) is None:
            return False
        del self._items[(kind, rid)]
        return True

    def list(self, kind: Kind, project: str) -> list[Resource]:
        """Resources of one kind in a project, oldest first."""
        return [r for r in self._items.values() if r.kind == kind and r.project == project]

    def __iter__(self) -> Iterator[Resource]:
        return iter(list(self._items.values()))

    def clear(self) -> None:
        """Forget every resource."""
        self._items.clear()


def mask(secret: str) -> str:
    """Enough of a key to recognise it in an answer, never enough to use it."""
    return f"{secret[:4]}...{secret[-4:]}" if len(secret) >= 12 else "****"
