"""The one handler of every row of ``kinds.KINDS``: routing, binding and unbinding read from the row.

The path is parsed against the table (``kinds.parse``: a path off every
row's pattern is a 400 before any lease); a method or verb the row does not
name is a 404 in the caller's dialect; a body must be a JSON object. The
upstream URL is composed from the parsed parts only. What the call refers to
is its affinity: a child's parent, an item itself, and whatever a body
references by the table's ``references`` column (files, caches, stores, an
interaction's environment, credentials; agents and voices only when the pool
bound them: they may be Google's own); a name the pool never bound is the
edge's 404, nothing sent up.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from yarl import URL

from .. import wire
from ..context import EDGE
from ..dialects import authenticated, check_json_object, json_object, named_resources, read_body
from ..errors import EdgeError, bad_request
from ..forwarding import forward
from ..keyring import Binding
from ..upstream import NOTHING, Call, Settle, Settlement
from . import bindings, interactions, kinds, listing
from .common import client_token, hashed_token

# Creates whose body has rules of their own (``kinds.Kind.plan``).
_PLANS: Final = {"interactions": interactions.plan}


async def serve(request: web.Request) -> web.StreamResponse:
    """Any call on a kind of the table (module docstring)."""
    try:
        target = kinds.parse(request.raw_path)
    except wire.MalformedPath as error:
        raise bad_request(str(error)) from None
    kind, method = target.kind, request.method
    if target.id and target.verb:
        allowed = target.verb in (kind.verbs if method == "POST" else kind.get_verbs if method == "GET" else ())
    elif target.id:
        allowed = method in kind.item
    elif target.verb:
        allowed = method == "POST" and target.verb in kind.collection_verbs
    else:
        allowed = (method == "POST" and kind.create) or (method == "GET" and kind.list)
    if not allowed:
        what = f"{method} {target.tail}" if not target.verb else f"{method} :{target.verb}"
        raise EdgeError(404, f"no such route: {what} is not a call of {kind.route}", openai_code="not_found")
    if method == "GET" and not target.id and not kind.parent:
        return await listing.list_merged(request, _listed(request, target))
    if method in ("POST", "PATCH"):
        return await _with_body(request, target)
    settle: Settle | None = None
    if method == "DELETE":
        route, settle = f"{kind.route}.delete", bindings.deleted(target.name) if not kind.parent else None
    elif target.verb or request.query.get("alt") == "media":  # a download: relayed as it comes, never held
        route = f"{kind.route}.download"
    else:
        route = f"{kind.route}.{'get' if target.id else 'list'}"
        settle = bindings.job_results if kind.results else None
    stream = route.endswith(".download") or (kind.stream_get and request.query.get("stream") == "true")
    call = _call(request, target, hashed_token(request), route, settle=settle, stream=stream)
    return await forward(request, call)


async def _with_body(request: web.Request, target: kinds.Target) -> web.StreamResponse:
    """A create, an update or a verb: the token first, then the body (a JSON object), leased by what it names."""
    kind = target.kind
    hashed = await authenticated(request, client_token(request))
    body = await read_body(request)
    creates = not target.id and request.method == "POST"
    reads = creates and (kind.model or bool(kind.plan))
    data = json_object(request, body) if reads else check_json_object(request, body) if body else {}
    affinity = await _referenced(request, hashed, named_resources(body, data, kinds.BODY_REFERENCES))
    model = _model(data) if creates and kind.model else ""
    binds = creates and not kind.parent and (bool(kind.item) or bool(target.verb))  # decisions: nothing to bind
    settle: Settle | None = None
    if binds or (request.method == "PATCH" and kind.expiry):  # created, or its expiry moved: bound (again)
        settle = created(kind, kind.collection_verbs if target.verb else frozenset())
    route = f"{kind.route}.{target.verb or ('update' if request.method == 'PATCH' else 'create')}"
    tokens = kind.estimate(data, body) if creates and kind.estimate else 0
    stream = target.verb in kind.streams
    if creates and kind.plan and isinstance(data, dict):  # a body with rules of its own (an interaction's)
        planned = _PLANS[kind.plan](data, body)
        model, affinity, binds, settle = planned.model, planned.affinity + affinity, planned.binds, planned.settle
        stream, tokens = planned.stream, planned.input_tokens
    call = _call(request, target, hashed, route, body=body, model=model, affinity=affinity, settle=settle,
                 binds=binds, stream=stream, input_tokens=tokens)  # fmt: skip
    return await forward(request, call)


async def _referenced(request: web.Request, hashed: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """What a body names, as its call's affinity: a soft reference (``kinds.Kind.soft``: an agent or a voice,
    maybe Google's own) only when the pool bound it, asked of keyring only when the body names one."""
    soft = [name for name in names if name.startswith(kinds.SOFT_PREFIXES)]
    if not soft:
        return names
    bound = await request.app[EDGE].keyring.bound_names(hashed, soft)
    return tuple(name for name in names if name in bound or not name.startswith(kinds.SOFT_PREFIXES))


def _call(
    request: web.Request,
    target: kinds.Target,
    hashed: str,
    route: str,
    *,
    body: bytes | None = None,
    model: str = "",
    affinity: tuple[str, ...] = (),
    settle: Settle | None = None,
    binds: bool = False,
    stream: bool = False,
    input_tokens: int = 0,
) -> Call:
    owner = (target.owner,) if target.owner else ()
    return Call(
        method=request.method,
        url=_url(request, target, wire.forward_query(request.query.items(), wire.RESOURCE_QUERY)),
        headers=wire.forward_headers(request.headers.items()),
        body=body,
        token_hash=hashed,
        model=model,
        stream=stream,
        route=route,
        affinity=tuple(dict.fromkeys(owner + affinity)),
        settle=settle,
        binds=binds,
        input_tokens=input_tokens,
    )


def _model(data: dict[str, object] | None) -> str:
    """The model a create names (``models/{id}`` or the bare id): what its lease is for."""
    named = (data or {}).get("model")
    model = wire.valid_model(named) if isinstance(named, str) else None
    if not model:
        raise bad_request("this call needs a model: models/{model id}")
    return model


def _url(request: web.Request, target: kinds.Target, query: list[tuple[str, str]]) -> URL:
    url = URL(f"{request.app[EDGE].base_url}/{target.version}/{target.tail}", encoded=True)
    return url.with_query(query) if query else url


def _listed(request: web.Request, target: kinds.Target) -> listing.Listed:
    kind = target.kind

    def name_of(item: Any) -> str | None:
        if not isinstance(item, dict):
            return None
        return kinds.named(kind, item.get("name") or item.get("id"))

    def url(query: list[tuple[str, str]]) -> URL:
        return _url(request, target, query)

    return listing.Listed(url, kind.field, f"{kind.route}.list", name_of)


def created(kind: kinds.Kind, verbs: frozenset[str]) -> Settle:
    """A create's answer: the resource it names (``name``, else ``id``) bound for the kind's lifetime; a
    collection verb's (``files:register``): every item of its list."""

    def settle(body: bytes, response: web.StreamResponse) -> Settlement:
        data = bindings.answer_object(body)
        items = data.get(kind.field) if verbs else [data]
        if not isinstance(items, list):
            return NOTHING
        found: dict[str, float] = {}
        for item in items:
            name = kinds.named(kind, item.get("name") or item.get("id")) if isinstance(item, dict) else None
            if name is not None:
                expiry = item.get(kind.expiry) if kind.expiry else None
                found[name] = bindings.ttl_until(expiry, kind.ttl_s)
        return Settlement(bind=tuple(Binding(name, ttl_s) for name, ttl_s in found.items()))

    return settle
