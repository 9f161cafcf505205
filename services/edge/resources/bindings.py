"""What a successful answer created or deleted, and for how long keyring routes to its key.

Pure functions (``upstream.Settle``): each reads an answer (a whole body, or
a stream's first bytes) and returns the ``Settlement`` its release carries.
The names are Google's spelling, the one ``AcquireRequest.affinity`` uses.

Lifetimes: the answer's own when it tells one (a file's ``expirationTime``, a
cache's ``expireTime``), else Google's documented retention, rounded up: a
binding that outlives its resource only sends a call to the owner's project,
which answers 404 as Google would; one that expires too early would turn a
live resource into the edge's 404.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from .. import wire
from ..keyring import Binding
from ..upstream import NOTHING, Settle, Settlement
from .kinds import FILE_TTL_S, GENERATE_REFERENCES, INTERACTION_TTL_S, JOB_TTL_S

# Lifetimes: the rows' (``kinds``), one source.
# An upload session lives EDGE_UPLOAD_SESSION_TTL_S (hours: resources.uploads), not Google's week.


def answer_object(body: object) -> dict[str, Any]:
    """An upstream answer's JSON object, read leniently: {} for anything else (not bytes, not JSON, not an object)."""
    if not isinstance(body, bytes | bytearray):
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def ttl_until(timestamp: object, default_s: float, now: float | None = None) -> float:
    """Seconds until an RFC 3339 ``timestamp`` (at least one), or ``default_s`` when it is not one."""
    if not isinstance(timestamp, str) or not timestamp:
        return default_s
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default_s
    return max(1.0, when - (time.time() if now is None else now))


def _named(name: object, *kinds: str) -> str | None:
    """``name`` as a valid resource name of one of ``kinds`` (an item, no action), else None."""
    if not isinstance(name, str):
        return None
    try:
        path = wire.resource_path(f"/v1beta/{name}")
    except wire.MalformedPath:
        return None
    return path.name if path.kind in kinds and path.id and not path.action else None


def created_file(body: bytes, response: web.StreamResponse) -> Settlement:
    """An upload's last answer, ``{"file": {...}}``: the file, for its ``expirationTime``."""
    file = answer_object(body).get("file")
    if not isinstance(file, dict):
        return NOTHING
    name = _named(file.get("name"), "files")
    if name is None:
        return NOTHING
    return Settlement(bind=(Binding(name, ttl_until(file.get("expirationTime"), FILE_TTL_S)),))


def created_job(body: bytes, response: web.StreamResponse) -> Settlement:
    """``batchGenerateContent`` (``batches/{id}``) or ``predictLongRunning`` (``models/{m}/operations/{id}``)."""
    name = _named(answer_object(body).get("name"), "batches", "operations")
    if name is None:
        return NOTHING
    return Settlement(bind=(Binding(name, JOB_TTL_S),))


def job_results(body: bytes, response: web.StreamResponse) -> Settlement:
    """A polled batch or operation: the files its results name (a video, a batch's responses file) are its project's.

    Only a finished job names files, so a poll of a running one binds nothing.
    """
    if not wire.may_name_resources(body, GENERATE_REFERENCES):
        return NOTHING
    named = wire.named_resources(body, answer_object(body), GENERATE_REFERENCES)
    files = [name for name in named if name.startswith("files/")]
    return Settlement(bind=tuple(Binding(name, FILE_TTL_S) for name in files))


def created_interaction(body: bytes, response: web.StreamResponse) -> Settlement:
    """A stored interaction: its ``id`` from a whole answer, or from a stream's first event."""
    data = answer_object(body)
    if not data:
        data = _first_event(body)
        interaction = data.get("interaction")
        data = interaction if isinstance(interaction, dict) else data
    name = _named(f"interactions/{data.get('id')}", "interactions") if isinstance(data.get("id"), str) else None
    if name is None:
        return NOTHING
    return Settlement(bind=(Binding(name, INTERACTION_TTL_S),))


def _first_event(head: bytes) -> dict[str, Any]:
    """The JSON of a stream's first ``data:`` line."""
    for line in head.splitlines():
        if line.startswith(b"data:"):
            return answer_object(line[5:].strip())
    return {}


def deleted(name: str) -> Settle:
    """A successful delete: the resource's routing is forgotten."""
    settlement = Settlement(unbind=(name,))

    def settle(body: bytes, response: web.StreamResponse) -> Settlement:
        return settlement

    return settle
