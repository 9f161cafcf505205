"""Context caches: `POST/GET /v1beta/cachedContents`, `GET/PATCH/DELETE /v1beta/cachedContents/{id}`.

A cache belongs to the project of the key that created it; for any other project it
answers 403 "CachedContent not found (or permission denied)", Google's words for a
cache that does not exist too. Shapes as google-genai's caches.py reads them. Google's
minimum token count for a cache is not simulated.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any, Final

from aiohttp import web

from .answers import prompt_texts
from .catalog import supports
from .content import count_tokens
from .errors import SimError, invalid_argument, model_not_found, permission_denied
from .files_api import page
from .pipeline import admit, endpoint, json_response, parse_json_object
from .references import CACHE_NOT_FOUND, check_files
from .resources import Resource, new_id, rfc3339
from .state import normalize_model

DEFAULT_TTL_S: Final = 3600.0
_CACHE_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)s")


def _expiry(data: dict[str, Any], default: float | None) -> float | None:
    """Unix expiry from `ttl` ("300s") or `expireTime` (RFC 3339); `default` when neither is given."""
    ttl, expire = data.get("ttl"), data.get("expireTime") or data.get("expire_time")
    if ttl is not None:
        match = _DURATION.fullmatch(str(ttl))
        if match is None:
            raise invalid_argument(
                f"Invalid value at 'cached_content.ttl' (type.googleapis.com/google.protobuf.Duration), \"{ttl}\""
            )
        return time.time() + float(match.group(1))
    if expire is not None:
        try:
            return datetime.fromisoformat(str(expire).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise invalid_argument(
                "Invalid value at 'cached_content.expire_time'"
                f' (type.googleapis.com/google.protobuf.Timestamp), "{expire}"'
            ) from None
    return default


def _touch(cache: Resource, expires: float) -> None:
    cache.expires = expires
    cache.data["expireTime"] = rfc3339(expires)
    cache.data["updateTime"] = rfc3339(time.time())


@endpoint("native")
async def caches(request: web.Request) -> web.StreamResponse:
    """`POST /cachedContents` (create) and `GET /cachedContents` (list the project's live caches)."""
    body = await request.read()
    if request.method == "GET":
        call = await admit(request, "native", None, body)
        now = time.time()
        live = [c.data for c in call.state.resources.list("cachedContents", call.project) if c.expires >= now]
        return page(request, live, "cachedContents")
    data = parse_json_object(body)
    model = normalize_model(data.get("model") if isinstance(data.get("model"), str) else None)
    call = await admit(request, "native", model, body)
    if not model:
        raise invalid_argument("* CreateCachedContentRequest.cached_content.model: model is required\n")
    if not supports(model, "createCachedContent", call.state.missing_models):
        raise model_not_found(model, "v1beta", "createCachedContent")
    check_files(call.state.resources, call.project, data.get("contents"))
    tokens = (
        count_tokens(prompt_texts(data)[0])
        if data.get("contents")
        else count_tokens(str(data.get("systemInstruction", "")))
    )
    now = time.time()
    served: dict[str, Any] = {}
    rid = new_id()
    served["name"] = f"cachedContents/{rid}"
    if data.get("displayName"):
        served["displayName"] = data["displayName"]
    served.update({"model": f"models/{model}", "createTime": rfc3339(now), "updateTime": rfc3339(now)})
    served["usageMetadata"] = {"totalTokenCount": tokens}
    cache = call.state.resources.add("cachedContents", call.project, call.key, served, rid)
    _touch(cache, _expiry(data, now + DEFAULT_TTL_S) or now + DEFAULT_TTL_S)
    return json_response(served)


@endpoint("native")
async def cache_item(request: web.Request) -> web.StreamResponse:
    """`GET|PATCH|DELETE /cachedContents/{id}`."""
    body = await request.read()
    call = await admit(request, "native", None, body)
    rid = request.match_info["cache"]
    if not _CACHE_ID.fullmatch(rid):
        raise invalid_argument(f"Invalid cached content name: cachedContents/{rid}")
    cache = call.state.resources.get("cachedContents", rid, call.project)
    if cache is None or cache.expires < time.time():
        raise permission_denied(CACHE_NOT_FOUND)
    if request.method == "DELETE":
        call.state.resources.delete("cachedContents", rid, call.project)
        return json_response({})
    if request.method == "PATCH":
        expires = _expiry(parse_json_object(body) if body else {}, None)
        if expires is None:
            raise SimError(400, "INVALID_ARGUMENT", "Only ttl or expire_time can be updated.")
        _touch(cache, expires)
    return json_response(cache.data)


def add_routes(app: web.Application) -> None:
    """Register the caches API under both versions."""
    for version in ("v1beta", "v1", "v1alpha"):
        app.router.add_route("GET", f"/{version}/cachedContents", caches)
        app.router.add_route("POST", f"/{version}/cachedContents", caches)
        for method in ("GET", "PATCH", "DELETE"):
            app.router.add_route(method, f"/{version}/cachedContents/{{cache}}", cache_item)
