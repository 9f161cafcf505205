"""The newer project-bound kinds (``resources.TABLE``: agents, environments, webhooks, file search stores...),
served by one route from the table, per project as Google does.

A resource belongs to the project of the key that created it; any other
project's key gets 404 NOT_FOUND ("Requested entity was not found."), as for
an id that never existed; a child's parent must be the caller's project's
too. An answer names a resource by its bare ``id`` (the ``_gaos`` kinds) or
its ``name`` (``fileSearchStores/{id}``). Verbs answer the shapes
google-genai reads, minimally: ``webhooks:ping``, ``:rotateSigningSecret``,
``fileSearchStores:importFile`` (the file must be the project's; a document
and a finished operation are made), ``tunedModels:generateContent`` and
``:streamGenerateContent`` (answered as a model answers, named by its
``modelVersion``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from .answers import answer_chunks, gemini_response
from .content import random_id
from .errors import SimError, invalid_argument, not_found
from .files_api import page, resumable
from .native import stream_answer
from .pipeline import Call, admit, chunk_count, endpoint, json_response, parse_json_object
from .references import check_references, file_denied
from .resources import TABLE, Resource, ResourceStore, TableKind, new_id, rfc3339

VERSIONS: Final = ("v1alpha", "v1beta", "v1")
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PATH: Final = re.compile(r"(?!\.\.?(?:/|$))[A-Za-z0-9._-]{1,255}(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._-]{1,255}){0,15}")
NOT_FOUND: Final = "Requested entity was not found."
_BY_ROUTE: Final = {kind.route: kind for kind in TABLE}
_GENERATE: Final = frozenset({"generateContent", "streamGenerateContent"})  # a tuned model's
KindHandler = Callable[[web.Request, TableKind], Awaitable[web.StreamResponse]]


def _parent_id(request: web.Request, kind: TableKind, call: Call) -> str:
    """A child's parent's id, checked to be the caller's project's (404 otherwise); "" for a top-level kind."""
    if not kind.parent:
        return ""
    pid = request.match_info["parent"]
    if call.state.resources.get(kind.parent, pid, call.project) is None:
        raise not_found(NOT_FOUND)
    return pid


def _served(kind: TableKind, pid: str, rid: str, data: dict[str, Any]) -> dict[str, Any]:
    name = f"{kind.parent}/{pid}/{kind.collection}/{rid}" if kind.parent else f"{kind.collection}/{rid}"
    now = rfc3339(time.time())
    named = {"id": rid} if kind.echo == "id" else {"name": name}
    return {**data, **named, "createTime": now, "updateTime": now}


def _store_id(pid: str, rid: str) -> str:
    return f"{pid}/{rid}" if pid else rid


async def collection(request: web.Request, kind: TableKind) -> web.StreamResponse:
    """``POST`` (create) and ``GET`` (the project's list, oldest first, paged) of a collection."""
    body = await request.read()
    call = await admit(request, "native", None, body)
    pid = _parent_id(request, kind, call)
    store = call.state.resources
    if request.method == "GET":
        prefix = f"{pid}/" if pid else ""
        items = [r.data for r in store.list(kind.route, call.project) if r.id.startswith(prefix)]
        return page(request, items, kind.collection.rpartition("/")[2])
    data = parse_json_object(body) if body else {}
    if kind.collection == "decisions":  # nothing stored: an answer to questions
        questions = data.get("questions")
        return json_response({"answers": {name: {"score": 1.0} for name in questions or {}}})
    if kind.collection == "voices" and isinstance(data.get("voice"), dict):
        data = data["voice"]
    wanted = data.get("id")
    rid = wanted if isinstance(wanted, str) and _ID.fullmatch(wanted) else new_id()
    if store.exists(kind.route, _store_id(pid, rid)):
        raise SimError(409, "ALREADY_EXISTS", f"{kind.collection}/{rid} already exists")
    served = _served(kind, pid, rid, {k: v for k, v in data.items() if k not in ("id", "name")})
    if kind.collection == "tunedModels":
        served["state"] = "ACTIVE"
    store.add(kind.route, call.project, call.key, served, _store_id(pid, rid))
    if kind.collection == "tunedModels":  # a long-running create: its operation, done at once
        return json_response(_operation(f"tunedModels/{rid}", {"tunedModel": f"tunedModels/{rid}"}, served))
    return json_response(served)


async def item(request: web.Request, kind: TableKind) -> web.StreamResponse:
    """``GET|PATCH|DELETE`` of one (``alt=media``: an environment file's bytes); ``POST {item}:{verb}``."""
    body = await request.read()
    call = await admit(request, "native", None, body)
    pid = _parent_id(request, kind, call)
    raw, _, verb = request.match_info["tail"].partition(":")
    if not (_PATH if kind.route == "environments.files" else _ID).fullmatch(raw):
        raise invalid_argument(f"Invalid {kind.collection} name: {raw}")
    resource = call.state.resources.get(kind.route, _store_id(pid, raw), call.project)
    if resource is None:
        raise not_found(NOT_FOUND)
    if verb or request.method == "POST":
        if verb not in kind.verbs or request.method != "POST":
            raise not_found(f"The requested URL {request.path} was not found on this server.")
        data = parse_json_object(body) if body else {}
        if verb in _GENERATE:
            return await _tuned_generate(request, call, str(resource.data["name"]), verb, data)
        return _verb(call, resource, verb, data)
    if request.method == "DELETE":
        call.state.resources.delete(kind.route, resource.id, call.project)
        return json_response({})
    if request.method == "PATCH":
        resource.data.update({k: v for k, v in parse_json_object(body).items() if k not in ("id", "name")})
        resource.data["updateTime"] = rfc3339(time.time())
    if request.query.get("alt") == "media":
        return web.Response(body=resource.content, content_type="application/octet-stream")
    return json_response(resource.data)


def _verb(call: Call, resource: Resource, verb: str, data: dict[str, Any]) -> web.Response:
    name = str(resource.data.get("name") or resource.id)
    if verb == "ping":
        return json_response({})
    if verb == "rotateSigningSecret":
        return json_response({"signingSecret": {"secret": secrets.token_urlsafe(24)}})
    if verb == "importFile":
        file = str(data.get("fileName") or data.get("file_name") or "")
        rid = file.removeprefix("files/")
        if not file.startswith("files/") or call.state.resources.get("files", rid, call.project) is None:
            raise file_denied(rid)
        document = _add_child(call, resource, "documents", {"displayName": file})
        operation = _add_child(call, resource, "operations", {"done": True})
        operation.data["response"] = {"documentName": document.data["name"]}
        return json_response(operation.data)
    text = f"Simulated answer from {name}"  # tunedModels:countTokens
    return json_response({"totalTokens": len(text.split())})


async def _tuned_generate(
    request: web.Request, call: Call, name: str, verb: str, data: dict[str, Any]
) -> web.StreamResponse:
    """A tuned model answers as a model does (its project's files and caches only; ``modelVersion`` its name):
    whole, or streamed (SSE with ``alt=sse``, else one JSON array)."""
    streamed = verb == "streamGenerateContent"
    chunks, usage = answer_chunks(
        data, chunk_count(call) if streamed else 1, check_references(call, data), call.behaviour.answer_text
    )
    response_id = random_id()
    if not streamed:
        parts = [part for chunk in chunks for part in chunk]
        return json_response(gemini_response(parts, name, response_id, usage))
    last = len(chunks) - 1
    payloads = (
        orjson.dumps(gemini_response(parts, name, response_id, usage if i == last else None))
        for i, parts in enumerate(chunks)
    )
    return await stream_answer(request, call, payloads)


def _add_child(call: Call, parent: Resource, collection: str, data: dict[str, Any]) -> Resource:
    kind = _BY_ROUTE[f"{parent.kind}.{collection}"]
    rid = new_id()
    return call.state.resources.add(kind.route, call.project, call.key, _served(kind, parent.id, rid, data),
                                    _store_id(parent.id, rid))  # fmt: skip


def _operation(owner: str, metadata: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    op = new_id()
    return {"name": f"{owner}/operations/{op}", "metadata": metadata, "done": True, "response": response}


@endpoint("native")
async def upload_to(request: web.Request) -> web.StreamResponse:
    """``POST /upload/{v}/environments/{id}/files/{path}`` and ``/upload/{v}/fileSearchStores/{id}:uploadTo
    FileSearchStore``: the resumable protocol of files; the environment or store must be the caller's project's."""
    parts = request.path.split("/")  # "", "upload", version, collection, ...
    if parts[3] == "environments":
        parent_kind, pid, rest = "environments", request.match_info["parent"], request.match_info["tail"]
        if not _PATH.fullmatch(rest):
            raise invalid_argument(f"Invalid file path: {rest}")
    else:
        pid, _, verb = request.match_info["tail"].partition(":")
        parent_kind, rest = "fileSearchStores", ""
        if verb != "uploadToFileSearchStore":
            raise not_found(f"The requested URL {request.path} was not found on this server.")

    def check(call: Call) -> None:
        if call.state.resources.get(parent_kind, pid, call.project) is None:
            raise not_found(NOT_FOUND)

    def finish(store: ResourceStore, session: Resource) -> dict[str, Any]:
        parent = store.get(parent_kind, pid, session.project)
        if parent is None:
            raise not_found(NOT_FOUND)
        if parent_kind == "environments":
            kind = _BY_ROUTE["environments.files"]
            data = _served(kind, pid, rest, {"path": rest, "sizeBytes": str(len(session.content))})
            made = store.add(kind.route, session.project, session.key, data, _store_id(pid, rest))
            made.content = session.content
            return data
        name = f"fileSearchStores/{pid}"
        display = session.data.get("displayName") or "upload"
        document = _add(store, session, _BY_ROUTE["fileSearchStores.documents"], pid, {"displayName": display})
        operation = _add(store, session, _BY_ROUTE["fileSearchStores.upload.operations"], pid, {"done": True})
        operation.data["response"] = {"documentName": document.data["name"], "parent": name}
        return operation.data

    return await resumable(request, check, finish)


def _add(store: ResourceStore, owner: Resource, kind: TableKind, pid: str, data: dict[str, Any]) -> Resource:
    rid = new_id()
    return store.add(kind.route, owner.project, owner.key, _served(kind, pid, rid, data), _store_id(pid, rid))


def _serving(handler: KindHandler, kind: TableKind) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    @endpoint("native")
    async def serve(request: web.Request) -> web.StreamResponse:
        return await handler(request, kind)

    return serve


def add_routes(app: web.Application) -> None:
    """Every row of the table under every version (before the interactions' routes: ``auth_tokens`` is ours);
    children first, so that a parent's ``{tail}`` does not take their paths."""
    for kind in sorted(TABLE, key=lambda kind: not kind.parent):
        base = f"{kind.parent}/{{parent}}/{kind.collection}" if kind.parent else kind.collection
        on_collection, on_item = _serving(collection, kind), _serving(item, kind)
        for version in VERSIONS:
            prefix = f"/{version}/{base}"
            if kind.create:
                app.router.add_route("POST", prefix, on_collection)
            if kind.list:
                app.router.add_route("GET", prefix, on_collection)
            for method in sorted({*kind.methods, *(("POST",) if kind.verbs else ())}):
                app.router.add_route(method, prefix + "/{tail:.+}", on_item)
    for version in VERSIONS:
        app.router.add_post(f"/upload/{version}/environments/{{parent}}/files/{{tail:.+}}", upload_to)
        app.router.add_post(f"/upload/{version}/fileSearchStores/{{tail:.+}}", upload_to)
