"""Project-bound resource kinds as data: one row per kind drives routing, binding, unbinding and listing.

Files, caches, batches and the kinds Google adds every few months (agents,
environments, webhooks...) each live in the project of the key that created
them. A kind here is
a row (``Kind``): its collection (also its names' prefix: ``agents/{id}``),
the shape of its ids, how long a created one is routed to its key's project,
which calls it answers, its custom verbs, the body fields that reference one
(``references``: a call naming one goes to its project, wherever it goes:
``fileData.fileUri``, ``cachedContent``, ``fileSearchStoreNames``, an
interaction's ``environment``...; read by ``wire.named_resources`` through
``GENERATE_REFERENCES`` on model calls and ``BODY_REFERENCES`` on the table's
own) and, for a kind that lives under another (an environment's files, a
store's documents), its parent. The one generic handler
(``resources.generic``) serves every row:

- ``POST {collection}`` creates one: leased by whatever the body names
  (files, caches), for a child by its parent, and for a kind whose create
  names a ``model`` (decisions) for that model (the pool's allow-list); a top-level one is bound
  from the answer (``name``, else ``id``) for ``ttl_s``; refused (429) before
  the upstream when the pool's bindings are full.
- ``GET|PATCH {item}``, ``POST {item}:{verb}``: leased by affinity (a name
  the pool never bound is the edge's 404, nothing sent up); a PATCH of a kind
  whose answer tells its expiry (a cache) binds it again until then; a GET of
  a job (a batch) binds the files its answer names; ``GET {item}:{verb}``
  and ``?alt=media`` (a file's download) are relayed as streams.
- ``DELETE {item}``: leased by affinity; a top-level one is unbound.
- ``GET {collection}``: top level, the merged lists of the pool's projects
  filtered to what the pool bound (``listing``); a child's, its parent's
  project only.
- ``POST {collection}:{verb}`` (``files:register``): creates what the answer
  names.

A child is never bound itself: it lives in its parent's project, so its
parent's binding routes it; except an operation under a model (``own``:
models are nobody's), bound by its own name when its model action made it. Pure data and parsing (no aiohttp): tested
alone (tests/unit/test_edge_resources.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from .. import wire
from ..estimates import cache_input
from ..wire import FILE_ID, INTERACTION_ID, JOB_ID, MODEL_ID, VERSIONS, MalformedPath

HOUR: Final = 3600.0
DAY: Final = 24 * HOUR
KEPT_TTL_S: Final = 365 * DAY  # kept until deleted (agents, stores...): routed a year (keyring's cap: 400 days)
FILE_TTL_S: Final = 48 * HOUR  # Google keeps an uploaded or generated file 48 h
CACHE_TTL_S: Final = 1 * HOUR  # a cache's default ttl, when its answer tells none
JOB_TTL_S: Final = 30 * DAY  # batches, operations and executions: their records outlive their run
INTERACTION_TTL_S: Final = 55 * DAY  # stored interactions: 55 days on paid tiers (1 day on the free tier)
TOKEN_TTL_S: Final = 1 * DAY  # an interaction's auth token lives minutes to hours

GENERIC_ID: Final = r"[a-z0-9][a-z0-9_-]{0,62}"  # agents, environments, webhooks...: lower-case, Google's AIP-122
_PATH_SEGMENT: Final = r"(?!\.\.?(?:/|$))[A-Za-z0-9._-]{1,255}"  # no dot-segments
FILE_PATH: Final = _PATH_SEGMENT + r"(?:/" + _PATH_SEGMENT + r"){0,15}"  # an environment file's path
_VERB: Final = r"[A-Za-z]{1,64}"

USE: Final = frozenset({"GET"})
GET_DELETE: Final = frozenset({"GET", "DELETE"})
GET_PATCH_DELETE: Final = frozenset({"GET", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Ref:
    """A body field whose value (a string, or each string of a list) names a resource of its row's kind."""

    field: str
    bare: bool = False  # a bare id names one too (``environment_id``), not only ``{collection}/{id}``
    top: bool = False  # read at the body's top level only (an interaction's ``environment``; a tool's is an enum)


def _refs(*fields: str, bare: bool = False) -> tuple[Ref, ...]:
    return tuple(Ref(field, bare) for field in fields)


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of project-bound resource (module docstring)."""

    collection: str  # the path segment(s) after its parent's item, or the version: "agents", "upload/operations"
    id: str  # a regular expression of one id
    ttl_s: float = KEPT_TTL_S  # how long a created one is routed to its key's project
    parent: str = ""  # the collection of the kind this one lives under ("" for a top-level kind)
    create: bool = True  # POST {collection} makes one
    list: bool = True  # GET {collection}
    item: frozenset[str] = GET_DELETE  # methods on an item
    verbs: frozenset[str] = frozenset()  # POST {item}:{verb}
    collection_verbs: frozenset[str] = frozenset()  # POST {collection}:{verb}, creating what its answer names
    streams: frozenset[str] = frozenset()  # verbs whose answer is a stream
    list_field: str = ""  # the list answer's field ("" for the collection's last segment)
    model: bool = False  # a create names its ``model``: leased for it (the pool's allow-list applies)
    # A resumable upload under ``/upload/{version}``: to an item's own path ("item": an environment's file) or
    # to a verb of an item (``uploadToFileSearchStore``); "" for none. The sealed-session path of files.
    upload: str = ""
    get_verbs: frozenset[str] = frozenset()  # GET {item}:{verb}, relayed as a stream (a file's ``download``)
    expiry: str = ""  # the answer's field telling when the resource ends (bound until then; again on a PATCH)
    results: bool = False  # a GET's answer may name files (a finished job's): bound to the key's project
    estimate: Callable[[object, bytes | None], int] | None = None  # a create's input tokens (budgets)
    metric: str = ""  # the metrics' route prefix when not ``route`` (``caches``)
    sep: str = ":"  # between an item and its verb (an interaction's: ``/cancel``)
    stream_get: bool = False  # a GET with ``stream=true`` is relayed as a stream (an interaction's events)
    plan: str = ""  # a create whose body has rules of its own: the planner ``generic`` names (interactions)
    own: bool = False  # a child bound by its own name (an operation under a model: models are nobody's)
    # The body fields naming one (its calls' affinity, wherever the body goes: ``references``); () for a kind
    # only a path names (a batch, a webhook) and for a child (its parent's binding routes it).
    references: tuple[Ref, ...] = ()
    # A referenced name may be Google's own (an agent, a voice): routed to its project only when the pool bound it.
    soft: bool = False

    @property
    def field(self) -> str:
        """The field of a list answer holding the items."""
        return self.list_field or self.collection.rpartition("/")[2]

    @property
    def route(self) -> str:
        """The metrics' route prefix: ``agents``, ``environments.files``."""
        parent = f"{self.parent}." if self.parent else ""
        return self.metric or parent + self.collection.replace("/", ".")


# Google's project-bound kinds, google-genai 3.6 and GEMINI_API_NOTES "December 2026". Not a row: the start of
# a file's upload (``uploads``: its own protocol).
KINDS: Final[tuple[Kind, ...]] = (
    Kind(
        "interactions",
        INTERACTION_ID,
        INTERACTION_TTL_S,
        list=False,
        verbs=frozenset({"cancel"}),
        sep="/",
        stream_get=True,
        plan="interactions",
        references=_refs("previous_interaction_id", bare=True),
    ),
    Kind(
        "files",
        FILE_ID,
        FILE_TTL_S,
        create=False,
        collection_verbs=frozenset({"register"}),
        get_verbs=frozenset({"download"}),
        expiry="expirationTime",
        references=_refs("fileUri", "file_uri", "uri", "fileName", "file_name", "responsesFile", "responses_file"),
    ),
    Kind(
        "cachedContents",
        JOB_ID,
        CACHE_TTL_S,
        item=GET_PATCH_DELETE,
        expiry="expireTime",
        model=True,
        estimate=cache_input,
        metric="caches",
        references=_refs("cachedContent", "cached_content"),
    ),
    Kind(
        "batches", JOB_ID, JOB_TTL_S, create=False, verbs=frozenset({"cancel"}), results=True, list_field="operations"
    ),
    Kind(
        "operations",
        JOB_ID,
        JOB_TTL_S,
        parent="models",
        create=False,
        list=False,
        item=USE,
        results=True,
        own=True,
        metric="operations",
    ),
    Kind("agents", GENERIC_ID, references=_refs("agent", "base_agent", bare=True), soft=True),
    Kind(
        "environments",
        GENERIC_ID,
        references=(*_refs("environment_id", "from_environment", bare=True), Ref("environment", bare=True, top=True)),
    ),
    Kind("files", FILE_PATH, parent="environments", create=False, item=USE, list_field="files", upload="item"),
    Kind("triggers", GENERIC_ID, item=GET_PATCH_DELETE),
    Kind("executions", GENERIC_ID, JOB_TTL_S, parent="triggers", item=USE),
    Kind("webhooks", GENERIC_ID, item=GET_PATCH_DELETE, verbs=frozenset({"ping", "rotateSigningSecret"})),
    Kind("credentials", GENERIC_ID, item=GET_PATCH_DELETE, references=_refs("credential", bare=True)),
    Kind("voices", GENERIC_ID, references=_refs("voice", "base_voice", bare=True), soft=True),
    Kind("decisions", GENERIC_ID, list=False, item=frozenset(), model=True),
    Kind("auth_tokens", GENERIC_ID, TOKEN_TTL_S, parent="interactions", list=False),
    Kind(
        "fileSearchStores",
        JOB_ID,
        verbs=frozenset({"importFile"}),
        upload="uploadToFileSearchStore",
        references=_refs("fileSearchStoreNames", "file_search_store_names"),
    ),
    Kind("documents", JOB_ID, parent="fileSearchStores", create=False),
    Kind("operations", JOB_ID, JOB_TTL_S, parent="fileSearchStores", create=False, list=False, item=USE),
    Kind("upload/operations", JOB_ID, JOB_TTL_S, parent="fileSearchStores", create=False, list=False, item=USE),
    Kind(
        "tunedModels",
        MODEL_ID,
        item=GET_PATCH_DELETE,
        verbs=frozenset({"generateContent", "streamGenerateContent", "countTokens"}),
        streams=frozenset({"streamGenerateContent"}),
    ),
    Kind("operations", JOB_ID, JOB_TTL_S, parent="tunedModels", create=False, item=USE),
)
_BY_COLLECTION: Final = {kind.collection: kind for kind in KINDS if not kind.parent}


def _namer(kind: Kind, bare: bool) -> wire.Namer:
    """A reference's value -> the name it gives (``{collection}/{id}``; a bare id when ``bare``), or None."""
    if kind.collection == "files":  # a file is named by its Google URI too
        return wire.file_name
    pattern = re.compile(f"(?:{re.escape(kind.collection)}/){'?' if bare else ''}({kind.id})")

    def namer(value: str) -> str | None:
        match = pattern.fullmatch(value)
        return f"{kind.collection}/{match.group(1)}" if match else None

    return namer


def references(rows: Iterable[Kind]) -> wire.References:
    """What a body may name of these kinds (their ``references``), for ``wire.named_resources``."""
    namers: dict[str, wire.Namer] = {}
    top: list[str] = []
    hints: list[bytes] = []
    for kind in rows:
        for ref in kind.references:
            assert ref.field not in namers, f"{ref.field} names two kinds"
            namers[ref.field] = _namer(kind, ref.bare)
            top += [ref.field] if ref.top else []
            hints.append(f'"{ref.field}"'.encode() if ref.bare else f"{kind.collection}/".encode())
    return wire.References.of(namers, top, hints)


# What a body names, read on every call that carries one: a generate call's (its files, cache, file search
# stores: the hot path, three bytes searches) and a resource call's (every row's references).
_GENERATE_REFERRED: Final = ("files", "cachedContents", "fileSearchStores")
GENERATE_REFERENCES: Final = references(_BY_COLLECTION[collection] for collection in _GENERATE_REFERRED)
BODY_REFERENCES: Final = references(KINDS)
# Names of a soft reference (``Kind.soft``): routed only when the pool bound them.
SOFT_PREFIXES: Final = tuple(f"{kind.collection}/" for kind in KINDS if kind.soft and not kind.parent)
_PARENT_IDS: Final = {"models": MODEL_ID}  # parents that are nobody's resources


def top_level(collection: str) -> Kind:
    """The top-level kind of a collection."""
    return _BY_COLLECTION[collection]


def parent_id(kind: Kind) -> str:
    """The regular expression of the ids of a child kind's parent."""
    return _PARENT_IDS.get(kind.parent) or _BY_COLLECTION[kind.parent].id


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed path of one kind: its collection (no ``id``), an item, a verb on either."""

    kind: Kind
    version: str
    parent_id: str = ""  # a child's parent's id
    id: str = ""  # "" for the collection
    verb: str = ""  # a custom verb (``ping``; ``register`` on a collection)

    @property
    def collection_path(self) -> str:
        """``agents``, ``environments/e1/files``: the collection's path after the version."""
        parent = f"{self.kind.parent}/{self.parent_id}/" if self.kind.parent else ""
        return parent + self.kind.collection

    @property
    def name(self) -> str:
        """The resource's name as Google spells it: ``agents/a1``, ``fileSearchStores/s/documents/d``."""
        return f"{self.collection_path}/{self.id}" if self.id else self.collection_path

    @property
    def owner(self) -> str:
        """What routes the call (its affinity): a child's parent, a top-level item itself, a collection nothing."""
        if self.kind.parent and not self.kind.own:
            return f"{self.kind.parent}/{self.parent_id}"
        return self.name if self.id else ""

    @property
    def tail(self) -> str:
        """The path after the version, from validated parts only."""
        return self.name + (f"{self.kind.sep}{self.verb}" if self.verb else "")


def _pattern(kind: Kind) -> re.Pattern[str]:
    parent = f"{re.escape(kind.parent)}/(?P<parent>{parent_id(kind)})/" if kind.parent else ""
    verb = f":(?P<verb>{_VERB})" if kind.sep == ":" else f"/(?P<verb>{'|'.join(sorted(kind.verbs))})"
    item = f"(?:/(?P<id>{kind.id})(?:{verb})?)?"
    return re.compile(f"{parent}{re.escape(kind.collection)}(?:{item}|:(?P<collection_verb>{_VERB}))")


_PATTERNS: Final = tuple((kind, _pattern(kind)) for kind in KINDS)


def parse(raw_path: str) -> Target:
    """The kind and parts of a raw request path (``/{version}/...``; any query is ignored), or ``MalformedPath``."""
    path = raw_path.partition("?")[0]
    version, _, rest = path.removeprefix("/").partition("/")
    if version in VERSIONS:
        for kind, pattern in _PATTERNS:
            match = pattern.fullmatch(rest)
            if match is not None:
                parts = match.groupdict()
                verb = parts["verb"] or parts["collection_verb"] or ""
                return Target(kind, version, parts.get("parent") or "", parts["id"] or "", verb)
    raise MalformedPath(
        f"malformed path: expected /{{version}}/{{collection}}[/{{id}}[:{{verb}}]] of a known kind"
        f" ({', '.join(sorted({kind.route for kind in KINDS}))}), version one of {', '.join(VERSIONS)},"
        " ids of letters, digits, '-' and '_' of bounded length (no dot-segments, encoded or empty segments)"
    )


def parse_upload(raw_path: str) -> Target:
    """An upload's target (``/upload/{version}/...`` of a row with ``upload``), or ``MalformedPath``."""
    path = raw_path.partition("?")[0]
    if path.startswith("/upload/"):
        target = parse(path.removeprefix("/upload"))
        upload = target.kind.upload
        if target.id and upload and target.verb == ("" if upload == "item" else upload):
            return target
    raise MalformedPath(
        "malformed upload path: expected /upload/{version}/environments/{id}/files/{path} or"
        " /upload/{version}/fileSearchStores/{id}:uploadToFileSearchStore"
    )


def upload_routes() -> list[str]:
    """The aiohttp paths of every row's uploads, under every version (POST: a start or its bytes)."""
    found: dict[str, None] = {}
    for kind in KINDS:
        if kind.upload:
            base = f"{kind.parent}/{{parent}}/{kind.collection}" if kind.parent else kind.collection
            for version in VERSIONS:
                found[f"/upload/{version}/{base}/{{tail:.+}}"] = None
    return list(found)


def named(kind: Kind, value: object) -> str | None:
    """A top-level kind's name from an answer's ``name`` (``agents/a1``, or a longer name under it:
    ``tunedModels/t/operations/o``) or ``id``; None when it is neither."""
    if not isinstance(value, str):
        return None
    prefix = f"{kind.collection}/"
    rid = value.removeprefix(prefix).partition("/")[0] if value.startswith(prefix) else value
    return f"{prefix}{rid}" if re.fullmatch(kind.id, rid) else None


def routes() -> list[tuple[str, str]]:
    """(method, aiohttp path) of every row, under every version: what ``app`` registers for the generic handler."""
    found: dict[tuple[str, str], None] = {}
    for kind in sorted(KINDS, key=lambda kind: not kind.parent):  # children first: a parent's {tail} is greedy
        base = f"{kind.parent}/{{parent}}/{kind.collection}" if kind.parent else kind.collection
        for version in VERSIONS:
            prefix = f"/{version}/{base}"
            if kind.create:
                found[("POST", prefix)] = None
            if kind.list:
                found[("GET", prefix)] = None
            if kind.collection_verbs:
                found[("POST", prefix + ":{verb}")] = None
            for method in kind.item:
                found[(method, prefix + "/{tail:.+}")] = None
            if kind.verbs:
                found[("POST", prefix + "/{tail:.+}")] = None
            if kind.get_verbs:
                found[("GET", prefix + "/{tail:.+}")] = None
    return list(found)
