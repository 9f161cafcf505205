"""List calls of the kinds of ``kinds`` (files, caches, batches, agents...) through a pool: the merged lists
of its projects (``list_merged``, called by ``generic``).

A pool spans several Google Cloud projects, each with its own files, caches
and batches. ``GET /{version}/files`` (and ``cachedContents``, ``batches``)
answers what the whole pool owns:

1. one key per project: Acquire with ``exclude_projects`` naming the
   projects already visited (a key with no project counts as its own
   project, ``key:{key id}``), until keyring has no other project to offer,
   at most ``EDGE_LIST_MAX_PROJECTS`` projects;
2. from each, the upstream's pages of 100, in order, while the merged list
   holds fewer than ``EDGE_LIST_MAX_ITEMS`` items (the rest is left out);
3. the merged list (the projects in the order of their names, each in the
   upstream's order: the same order for every page) is paged by the edge: ``pageSize`` (default 10, at most 100) and a
   ``pageToken`` of the edge's own (``kr.{offset}``: the position in the
   merged list). Each page is computed again from the upstream, so the list
   is as fresh as the page (a resource created or deleted meanwhile may shift
   the later pages, as with any offset).

4. only what the pool owns: the items whose names the pool bound (keyring's
   affinity records, asked in one round trip per 1000 names): a project's
   list holds every resource of the project, and two pools may share a
   project keyring does not know of (keys without one). A resource made
   outside the pool (another tool with the same key, a job result nobody
   polled through the edge) is not listed, and, unbound, not served either.

Each project is read through the one attempt loop (``forwarding.attempts``),
one lease for all its pages. A project whose keys are all cooling or busy is
left out of that answer (a list is a view, not a transaction); an upstream
error that blames the key is failed over like any call; any other upstream
error is the answer. When no project can be visited at all, keyring's
refusal is the answer (401, 429...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from aiohttp import web
from yarl import URL

from services.common.answers import UpstreamError
from services.common.web import json_response

from .. import wire
from ..context import EDGE, Edge
from ..errors import KeyringUnavailable, LeaseRefused, UpstreamFailed, bad_request
from ..forwarding import attempts
from ..observability import MODEL, ROUTE, STREAM
from ..upstream import Attempt, Call
from .bindings import answer_object
from .common import hashed_token

DEFAULT_PAGE_SIZE: Final = 10
MAX_PAGE_SIZE: Final = 100
_UPSTREAM_PAGE: Final = "100"
_TOKEN_PREFIX: Final = "kr."
# Upstream pages read from one project at most (each of 100 items).
_MAX_PAGES_PER_PROJECT: Final = 100


def _page_request(request: web.Request) -> tuple[int, int]:
    """(offset, page size) from the client's ``pageToken`` and ``pageSize``."""
    raw_size, token = request.query.get("pageSize", ""), request.query.get("pageToken", "")
    size = DEFAULT_PAGE_SIZE
    if raw_size:
        if not raw_size.isdigit() or len(raw_size) > 6:
            raise bad_request("pageSize must be a positive number")
        size = min(int(raw_size), MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
    offset = 0
    if token:
        digits = token.removeprefix(_TOKEN_PREFIX)
        if not token.startswith(_TOKEN_PREFIX) or not digits.isdigit() or len(digits) > 9:
            raise bad_request("invalid pageToken: pass the nextPageToken of the previous page as it came")
        offset = int(digits)
    return offset, size


@dataclass(frozen=True, slots=True)
class Listed:
    """What a merged list reads: the collection's upstream URL (given a query), its answer's field, and each
    item's name as the pool bound it (None: not one)."""

    url: Callable[[list[tuple[str, str]]], URL]
    field: str
    route: str
    name_of: Callable[[Any], str | None]


async def list_merged(request: web.Request, listed: Listed) -> web.StreamResponse:
    """A page of the merged lists of the pool's projects, only what the pool bound (module docstring)."""
    offset, size = _page_request(request)
    request[ROUTE], request[STREAM] = listed.route, False
    items = await _merged(request, listed, hashed_token(request))
    request[MODEL] = request.app[EDGE].metrics.model_label("")
    chosen = items[offset : offset + size]
    answer: dict[str, Any] = {listed.field: chosen} if chosen else {}
    if offset + size < len(items):
        answer["nextPageToken"] = f"{_TOKEN_PREFIX}{offset + size}"
    return json_response(answer)


async def _merged(request: web.Request, listed: Listed, hashed: str) -> list[Any]:
    edge = request.app[EDGE]
    route = listed.route
    settings = edge.settings
    covered: list[str] = []
    tried: list[str] = []
    items: list[Any] = []
    by_project: dict[str, list[Any]] = {}
    headers = {**wire.forward_headers(request.headers.items()), "accept-encoding": "identity"}
    while len(covered) < settings.list_max_projects and len(items) < settings.list_max_items:
        probe = Call(method="GET", url=listed.url([]), headers=headers, body=None,
                     token_hash=hashed, model="", route=route, exclude_projects=tuple(covered))  # fmt: skip
        read = partial(_project, listed=listed, limit=settings.list_max_items - len(items))
        try:
            project, found = await attempts(request, probe, read, tried)
        except LeaseRefused as refused:
            if not covered or (isinstance(refused, KeyringUnavailable) and refused.reason == "UNAVAILABLE"):
                edge.metrics.child(edge.metrics.denied, refused.reason).inc()
                raise
            break  # no other project to visit (or none usable now)
        except UpstreamFailed as failed:
            if failed.refused is None or not covered:
                raise
            break  # the project failed over and keyring had no other key: left out (a list is a view)
        covered.append(project)
        by_project[project] = found
        items.extend(found)
    # In the order of the projects' names, not of the visits (keyring's choice): every page sees one order.
    merged = [item for project in sorted(by_project) for item in by_project[project]][: settings.list_max_items]
    return await _owned(edge, hashed, merged, listed.name_of)


async def _owned(edge: Edge, hashed: str, items: list[Any], name_of: Callable[[Any], str | None]) -> list[Any]:
    """The items the token's pool bound (keyring's affinity records): a project's list holds the project's all."""
    named = [(name_of(item), item) for item in items]
    names = [name for name, _ in named if name is not None]
    if not names:
        return []
    bound = await edge.keyring.bound_names(hashed, names)
    return [item for name, item in named if name is not None and name in bound]


async def _project(
    attempt: Attempt, request: web.Request, *, listed: Listed, limit: int
) -> tuple[str, list[Any]] | UpstreamError:
    """One project's pages with one lease (an attempt of the loop): (the project, its items), or the error."""
    probe, lease = attempt.call, attempt.held.lease
    field = listed.field
    page_token = ""
    found: list[Any] = []
    for _ in range(_MAX_PAGES_PER_PROJECT):
        query = [("pageSize", _UPSTREAM_PAGE)] + ([("pageToken", page_token)] if page_token else [])
        attempt.call = dataclasses.replace(probe, url=listed.url(query))
        result = await attempt.run(request)
        if isinstance(result, UpstreamError):
            return result
        data = answer_object(result.body if isinstance(result, web.Response) else b"")
        page = data.get(field)
        if isinstance(page, list):
            found.extend(page)
        token = data.get("nextPageToken")
        if not isinstance(token, str) or not token or len(found) >= limit:
            break
        page_token = token
    return lease.project or f"key:{lease.key_id}", found
