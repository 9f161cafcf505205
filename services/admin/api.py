"""REST routes under /api/: each validates its whole request, then calls keyring's AdminService.

Handlers hold no state. Every call carries the caller as its audit actor.
Keys are shown by id and mask only (keyring never sends a secret to admin,
except in an export that asks for secrets in clear).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web
from google.protobuf.message import Message

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from . import overview as ov
from . import schemas as s
from .auth import KEYRING, identity_of
from .bodies import large_limit
from .config import AdminSettings
from .errors import ApiError, bad_gateway, bad_request, json_response

SETTINGS: Final = web.AppKey("settings", AdminSettings)

BULK_CONCURRENCY: Final = 16
LIST_PAGE_MAX: Final = 1000
_SET_STATE: Final = {
    "enable": pb.SetKeyStateRequest.ENABLE,
    "disable": pb.SetKeyStateRequest.DISABLE,
    "revive": pb.SetKeyStateRequest.REVIVE,
}
_WINDOWS: Final = {"hour": 3600, "day": 86400}
Handler = Callable[[web.Request], Awaitable[web.Response]]


async def _call(request: web.Request, method: str, message: Message, timeout_s: float | None = None) -> Any:
    return await request.app[KEYRING].call(method, message, identity_of(request).actor, timeout_s)


def _verify_timeout(request: web.Request) -> float:
    return request.app[SETTINGS].verify_timeout_s


# -- pools ------------------------------------------------------------------


async def list_pools(request: web.Request) -> web.Response:
    s.Query(request, set())
    reply = await _call(request, "ListPools", pb.ListPoolsRequest())
    return json_response({"pools": [s.pool_json(pool) for pool in reply.pools]})


async def create_pool(request: web.Request) -> web.Response:
    body = await s.parse_body(request, s.PoolCreate)
    pool = pb.Pool(
        name=body.name,
        description=body.description,
        allowed_models=body.allowed_models,
        strategy=s.strategy_pb(body.strategy),
        policy=s.policy_pb(body.policy),
    )
    created = await _call(request, "CreatePool", pb.CreatePoolRequest(pool=pool))
    return json_response(s.pool_json(created), status=201)


async def get_pool(request: web.Request) -> web.Response:
    s.Query(request, set())
    pool = await _call(request, "GetPool", pb.GetPoolRequest(name=request.match_info["name"]))
    return json_response(s.pool_json(pool))


async def update_pool(request: web.Request) -> web.Response:
    body = await s.parse_body(request, s.PoolUpdate)
    changeable = ("description", "allowed_models", "strategy", "policy")
    fields = [name for name in changeable if getattr(body, name) is not None]
    if not fields:
        raise bad_request("nothing to change: give description, allowed_models, strategy or policy")
    pool = pb.Pool(
        name=request.match_info["name"],
        description=body.description or "",
        allowed_models=body.allowed_models or [],
        strategy=s.strategy_pb(body.strategy or s.Strategy.round_robin),
        policy=s.policy_pb(body.policy),
    )
    updated = await _call(request, "UpdatePool", pb.UpdatePoolRequest(pool=pool, update_fields=fields))
    return json_response(s.pool_json(updated))


async def delete_pool(request: web.Request) -> web.Response:
    query = s.Query(request, {"force"})
    force = query.boolean("force")
    reply = await _call(request, "DeletePool", pb.DeletePoolRequest(name=request.match_info["name"], force=force))
    return json_response({"deleted": True, "keys_deleted": reply.keys_deleted, "tokens_deleted": reply.tokens_deleted})


async def overview(request: web.Request) -> web.Response:
    """Per pool: keys by state, keys cooling now, tokens, and the last hour's usage when keyring has it."""
    s.Query(request, set())
    pools = (await _call(request, "ListPools", pb.ListPoolsRequest())).pools
    keys = await _all_keys(request, pb.KeyFilter())
    tokens = (await _call(request, "ListTokens", pb.ListTokensRequest())).tokens
    usage: dict[str, Any] = {}
    usage_available = True
    try:
        reply = await _call(request, "GetUsage", pb.GetUsageRequest(window_s=3600))
        usage = {row.pool or row.id: row.figures for row in reply.pools}
    except ApiError as error:
        if error.http_status != 501:
            raise
        usage_available = False
    rows = []
    for pool in pools:
        own = [key for key in keys if key.pool == pool.name]
        states = Counter(s.key_json(key, 0)["state"] for key in own)
        figures = usage.get(pool.name)
        rows.append(
            {
                "name": pool.name,
                "strategy": s.pool_json(pool)["strategy"],
                "keys": {
                    "total": len(own),
                    **{state.value: states.get(state.value, 0) for state in s.KeyStateName},
                    "cooling": sum(1 for key in own if key.cooldowns),
                },
                "tokens": sum(1 for token in tokens if token.pool == pool.name and not token.revoked),
                "requests_last_hour": figures.requests if figures else 0,
                "errors_last_hour": figures.errors if figures else 0,
            }
        )
    return json_response({"pools": rows, "usage_available": usage_available})


async def pool_overview(request: web.Request) -> web.Response:
    """One pool at a glance (the console's Overview): the hour per five minutes, keys, cooldowns, quotas, tokens,
    billing accounts."""
    s.Query(request, set())
    name = request.match_info["name"]
    await _call(request, "GetPool", pb.GetPoolRequest(name=name))  # 404 for an unknown pool
    reply = await _call(request, "GetUsage", pb.GetUsageRequest(pool=name, window_s=ov.WINDOW_S))
    keys = await _all_keys(request, pb.KeyFilter(pool=name))
    quota_rows = (await _call(request, "ListQuotas", pb.ListQuotasRequest(pool=name))).quotas
    tokens = (await _call(request, "ListTokens", pb.ListTokensRequest(pool=name))).tokens
    series = ov.series_json(reply, name, s.now_ms())
    return json_response(
        {
            "pool": name,
            "window_s": ov.WINDOW_S,
            "bucket_s": reply.bucket_s or 300,
            "requests": sum(point["requests"] for point in series),
            "errors": sum(point["errors"] for point in series),
            "series": series,
            **ov.keys_json(keys),
            "quotas": ov.headroom_json(quota_rows),
            "busiest_tokens": ov.busiest_tokens_json(reply, list(tokens)),
            "billing_accounts": ov.billing_json(keys, s.now_ms()),
        }
    )


async def _all_keys(request: web.Request, key_filter: pb.KeyFilter) -> list[pb.KeyInfo]:
    keys: list[pb.KeyInfo] = []
    token = ""
    while True:
        page_filter = pb.KeyFilter()
        page_filter.CopyFrom(key_filter)
        page_filter.page_size, page_filter.page_token = LIST_PAGE_MAX, token
        reply = await _call(request, "ListKeys", pb.ListKeysRequest(filter=page_filter))
        keys.extend(reply.keys)
        token = reply.next_page_token
        if not token:
            return keys


# -- keys -------------------------------------------------------------------


async def add_keys(request: web.Request) -> web.Response:
    body = await s.parse_body(request, s.KeysAdd)
    if body.text is not None:
        secrets = s.split_pasted(body.text)
        if not secrets:
            raise bad_request("no keys found in text")
        items = [pb.KeyInput(secret=secret) for secret in secrets]
    else:
        assert body.keys is not None
        if not body.keys:
            raise bad_request("keys is empty")
        items = [
            pb.KeyInput(
                secret=item.secret.strip(), project=item.project, tier=item.tier,
                weight=item.weight, tags=item.tags, note=item.note, billing_account=item.billing_account,
                billing_tier=item.billing_tier,
            )
            for item in body.keys
        ]
    reply = await _call(request, "AddKeys", pb.AddKeysRequest(pool=request.match_info["name"], keys=items))
    results = [s.add_result_json(result) for result in reply.results]
    counts = Counter(result["status"] for result in results)
    return json_response(
        {
            "added": counts.get("added", 0),
            "duplicate": counts.get("duplicate", 0),
            "malformed": counts.get("malformed", 0),
            "results": results,
        }
    )


_KEY_QUERY: Final = {"pool", "state", "cooling_model", "project", "tier", "tag", "q", "page_size", "page_token"}


async def list_keys(request: web.Request) -> web.Response:
    query = s.Query(request, _KEY_QUERY)
    state = query.choice("state", tuple(state.value for state in s.KeyStateName))
    key_filter = pb.KeyFilter(
        pool=query.text("pool"),
        state=s.STATE_TO_PB[s.KeyStateName(state)] if state else pb.KEY_STATE_UNSPECIFIED,
        cooling_model=query.text("cooling_model"),
        project=query.text("project"),
        tier=query.integer("tier", 0, 0, 100),
        tag=query.text("tag"),
        text=query.text("q"),
        page_size=query.integer("page_size", 100, 1, LIST_PAGE_MAX),
        page_token=query.text("page_token"),
    )
    reply = await _call(request, "ListKeys", pb.ListKeysRequest(filter=key_filter))
    now = s.now_ms()
    return json_response(
        {
            "keys": [s.key_json(key, now) for key in reply.keys],
            "next_page_token": reply.next_page_token or None,
            "total": reply.total,
        }
    )


async def get_key(request: web.Request) -> web.Response:
    s.Query(request, set())
    key = await _call(request, "GetKey", pb.GetKeyRequest(key_id=request.match_info["key_id"]))
    return json_response(s.key_json(key, s.now_ms()))


async def update_key(request: web.Request) -> web.Response:
    body = await s.parse_body(request, s.KeyUpdate)
    names = ("project", "tier", "weight", "tags", "note", "billing_account", "billing_tier")
    fields = [name for name in names if getattr(body, name) is not None]
    if not fields:
        raise bad_request("nothing to change: give project, tier, weight, tags, note, billing_account or billing_tier")
    changes = pb.KeyInput(
        project=body.project or "", tier=body.tier or 0, weight=body.weight or 0,
        tags=body.tags or [], note=body.note or "", billing_account=body.billing_account or "",
        billing_tier=body.billing_tier or 0,
    )
    message = pb.UpdateKeyRequest(key_id=request.match_info["key_id"], changes=changes, update_fields=fields)
    key = await _call(request, "UpdateKey", message)
    return json_response(s.key_json(key, s.now_ms()))


async def delete_key(request: web.Request) -> web.Response:
    s.Query(request, set())
    await _call(request, "DeleteKey", pb.DeleteKeyRequest(key_id=request.match_info["key_id"]))
    return json_response({"deleted": True, "key_id": request.match_info["key_id"]})


def for_action(handle: Callable[[web.Request, str], Awaitable[web.Response]], action: str) -> Handler:
    """The route handler of one ``POST .../{id}/<action>`` (one function serves every action of a resource)."""

    async def handler(request: web.Request) -> web.Response:
        return await handle(request, action)

    return handler


async def _key_action(request: web.Request, action: str) -> web.Response:
    s.Query(request, set())
    await s.empty_body(request)
    key_id = request.match_info["key_id"]
    if action == "verify":
        reply = await _call(request, "VerifyKeys", pb.VerifyKeysRequest(key_ids=[key_id]), _verify_timeout(request))
        found = [s.verify_result_json(result) for result in reply.results if result.key_id == key_id]
        if not found:
            raise bad_gateway("keyring gave no verification result for the key")
        return json_response(found[0])
    message = pb.SetKeyStateRequest(key_id=key_id, action=_SET_STATE[action])
    key = await _call(request, "SetKeyState", message)
    return json_response(s.key_json(key, s.now_ms()))


async def bulk(request: web.Request) -> web.Response:
    """One action on many keys; every id must exist first, then each key is done and reported."""
    body = await s.parse_body(request, s.BulkRequest)
    key_ids = list(dict.fromkeys(body.key_ids))
    await _require_keys(request, key_ids)
    if body.action is s.BulkAction.verify:
        reply = await _call(request, "VerifyKeys", pb.VerifyKeysRequest(key_ids=key_ids), _verify_timeout(request))
        results = [s.verify_result_json(result) for result in reply.results]
        return json_response({"action": "verify", "results": results, "succeeded": sum(r["ok"] for r in results),
                              "failed": sum(not r["ok"] for r in results)})
    limit = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(key_id: str) -> dict[str, Any]:
        async with limit:
            try:
                if body.action is s.BulkAction.delete:
                    await _call(request, "DeleteKey", pb.DeleteKeyRequest(key_id=key_id))
                    return {"key_id": key_id, "ok": True, "state": None, "error": None}
                message = pb.SetKeyStateRequest(key_id=key_id, action=_SET_STATE[body.action.value])
                key = await _call(request, "SetKeyState", message)
                return {"key_id": key_id, "ok": True, "state": s.key_json(key, 0)["state"], "error": None}
            except ApiError as error:
                if error.http_status >= 500:
                    raise
                failure = {"code": error.http_status, "status": error.status, "message": error.message}
                return {"key_id": key_id, "ok": False, "state": None, "error": failure}

    results = await asyncio.gather(*(one(key_id) for key_id in key_ids))
    succeeded = sum(result["ok"] for result in results)
    return json_response(
        {"action": body.action.value, "results": results, "succeeded": succeeded, "failed": len(results) - succeeded}
    )


async def _require_keys(request: web.Request, key_ids: list[str]) -> None:
    """404 naming the unknown ids before anything is changed."""
    limit = asyncio.Semaphore(BULK_CONCURRENCY)

    async def exists(key_id: str) -> bool:
        async with limit:
            try:
                await _call(request, "GetKey", pb.GetKeyRequest(key_id=key_id))
            except ApiError as error:
                if error.http_status == 404:
                    return False
                raise
            return True

    found = await asyncio.gather(*(exists(key_id) for key_id in key_ids))
    missing = [key_id for key_id, ok in zip(key_ids, found, strict=True) if not ok]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise ApiError(404, f"unknown key ids (nothing was changed): {shown}")


async def verify_unhealthy(request: web.Request) -> web.Response:
    body = await s.parse_body(request, s.VerifyUnhealthyRequest)
    message = pb.VerifyKeysRequest(all_unhealthy=True, pool=body.pool or "")
    reply = await _call(request, "VerifyKeys", message, _verify_timeout(request))
    results = [s.verify_result_json(result) for result in reply.results]
    return json_response({"results": results, "checked": len(results), "ok": sum(r["ok"] for r in results)})


# -- usage, tokens, export/import, audit ---------------------------------------


async def usage(request: web.Request) -> web.Response:
    query = s.Query(request, {"pool", "window"})
    window = query.choice("window", tuple(_WINDOWS), "hour")
    reply = await _call(request, "GetUsage", pb.GetUsageRequest(pool=query.text("pool"), window_s=_WINDOWS[window]))
    return json_response(
        {
            "window": window,
            "window_s": reply.window_s or _WINDOWS[window],
            "pools": s.usage_rows_json(reply.pools),
            "keys": s.usage_rows_json(reply.keys),
            "tokens": s.usage_rows_json(reply.tokens),
        }
    )


async def quotas(request: web.Request) -> web.Response:
    """Quota limits per project (learnt from 429s or the pool's), used in the current window, remaining, next reset."""
    query = s.Query(request, {"pool", "project"})
    message = pb.ListQuotasRequest(pool=query.text("pool"), project=query.text("project"))
    reply = await _call(request, "ListQuotas", message)
    return json_response({"quotas": s.quota_rows_json(reply.quotas)})


async def list_tokens(request: web.Request) -> web.Response:
    query = s.Query(request, {"pool"})
    reply = await _call(request, "ListTokens", pb.ListTokensRequest(pool=query.text("pool")))
    return json_response({"tokens": [s.token_json(token) for token in reply.tokens]})


async def create_token(request: web.Request) -> web.Response:
    body = await s.parse_body(request, s.TokenCreate)
    message = pb.CreateTokenRequest(
        pool=body.pool, name=body.name, expires_at_ms=s.expires_ms(body.expires_at),
        requests_per_minute=body.requests_per_minute or 0, budgets=s.budgets_pb(body.budgets),
    )
    reply = await _call(request, "CreateToken", message)
    return json_response({"token": reply.token, "info": s.token_json(reply.info)}, status=201)


async def update_token(request: web.Request) -> web.Response:
    body = await s.parse_body(request, s.TokenUpdate)
    if body.name is None and body.requests_per_minute is None and body.budgets is None:
        raise bad_request("nothing to change: give name, requests_per_minute or budgets")
    message = pb.UpdateTokenRequest(token_id=request.match_info["token_id"], name=body.name,
                                    requests_per_minute=body.requests_per_minute,
                                    replace_budgets=body.budgets is not None, budgets=s.budgets_pb(body.budgets or []))
    return json_response(s.token_json(await _call(request, "UpdateToken", message)))


async def _token_action(request: web.Request, action: str) -> web.Response:
    s.Query(request, set())
    await s.empty_body(request)
    token_id = request.match_info["token_id"]
    if action == "rotate":
        reply = await _call(request, "RotateToken", pb.RotateTokenRequest(token_id=token_id))
        return json_response({"token": reply.token, "info": s.token_json(reply.info)})
    info = await _call(request, "RevokeToken", pb.RevokeTokenRequest(token_id=token_id))
    return json_response(s.token_json(info))


async def export_config(request: web.Request) -> web.Response:
    """Operators export; secrets in clear also need the export permission (``+export``, off by default).

    ``viewer+export`` exports nothing: the permission adds to an operator's export, never to a viewer's reads.
    """
    query = s.Query(request, {"include_secrets"})
    clear = query.boolean("include_secrets")
    identity = identity_of(request)
    if not identity.can_change:
        raise ApiError(403, f"the {identity.role} role may not export; export needs an operator token")
    if clear and not identity.can_export:
        raise ApiError(403, "exporting secrets in clear needs an operator token with the export permission (+export)")
    reply = await _call(request, "ExportConfig", pb.ExportConfigRequest(include_secrets_in_clear=clear))
    return web.Response(
        body=reply.document,
        content_type="application/json",
        headers={"Cache-Control": "no-store", "Content-Disposition": 'attachment; filename="keyring-export.json"'},
    )


async def import_config(request: web.Request) -> web.Response:
    """Keyring validates every record; client tokens only with ``keep_client_tokens=true``."""
    query = s.Query(request, {"keep_client_tokens"})
    keep_tokens = query.boolean("keep_client_tokens")
    raw = await s.read_json_bytes(request, large_limit(request))
    if not isinstance(orjson.loads(raw), dict):
        raise bad_request("the document must be a JSON object (as GET /api/export gives it)")
    message = pb.ImportConfigRequest(document=raw, keep_client_tokens=keep_tokens)
    reply = await _call(request, "ImportConfig", message)
    return json_response({"pools": reply.pools, "keys": reply.keys, "tokens": reply.tokens})


async def audit(request: web.Request) -> web.Response:
    query = s.Query(request, {"limit"})
    reply = await _call(request, "ListAudit", pb.ListAuditRequest(limit=query.integer("limit", 100, 1, 1000)))
    return json_response({"entries": [s.audit_json(entry) for entry in reply.entries]})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/overview", overview)
    router.add_get("/api/pools", list_pools)
    router.add_post("/api/pools", create_pool)
    router.add_get("/api/pools/{name}", get_pool)
    router.add_patch("/api/pools/{name}", update_pool)
    router.add_delete("/api/pools/{name}", delete_pool)
    router.add_get("/api/pools/{name}/overview", pool_overview)
    router.add_post("/api/pools/{name}/keys", add_keys)
    router.add_get("/api/keys", list_keys)
    router.add_post("/api/keys/bulk", bulk)
    router.add_post("/api/keys/verify-unhealthy", verify_unhealthy)
    router.add_get("/api/keys/{key_id}", get_key)
    router.add_patch("/api/keys/{key_id}", update_key)
    router.add_delete("/api/keys/{key_id}", delete_key)
    for action in ("enable", "disable", "revive", "verify"):
        router.add_post(f"/api/keys/{{key_id}}/{action}", for_action(_key_action, action))
    router.add_get("/api/usage", usage)
    router.add_get("/api/quotas", quotas)
    router.add_get("/api/tokens", list_tokens)
    router.add_post("/api/tokens", create_token)
    router.add_patch("/api/tokens/{token_id}", update_token)
    for action in ("rotate", "revoke"):
        router.add_post(f"/api/tokens/{{token_id}}/{action}", for_action(_token_action, action))
    router.add_get("/api/export", export_config)
    router.add_post("/api/import", import_config)
    router.add_get("/api/audit", audit)
