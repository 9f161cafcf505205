"""HTTP control API (`/_sim/...`) so out-of-process users can script the simulator.

No API key is needed here: it is a test tool, never exposed beyond localhost.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from .pipeline import SIMULATOR_STATE, json_response
from .state import Behaviour, RecordedRequest

DEFAULT_REQUEST_LIMIT = 100


def _bad_request(message: str) -> web.Response:
    return json_response({"error": message}, status=400)


async def _json_body(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if not body:
        return {}
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


async def script(request: web.Request) -> web.Response:
    """`POST /_sim/script` `{"key", "model"?, "steps"?: [...], "sticky"?: {...}|null}`."""
    try:
        data = await _json_body(request)
        key = data.get("key")
        if not isinstance(key, str) or not key:
            raise ValueError("'key' must be a non-empty string")
        model = data.get("model")
        steps = [Behaviour.from_dict(step) for step in data.get("steps") or []]
        sticky_given = "sticky" in data
        sticky = Behaviour.from_dict(data["sticky"]) if data.get("sticky") is not None else None
    except (ValueError, TypeError) as exc:
        return _bad_request(str(exc))
    state = request.app[SIMULATOR_STATE]
    state.script(key, *steps, model=model)
    if sticky_given:
        state.set_sticky(key, sticky, model=model)
    return json_response({"ok": True, "key": key, "steps": len(steps)})


async def clear(request: web.Request) -> web.Response:
    """`POST /_sim/clear` `{"key"?}`: drop scripts of one key (or all), keep counts."""
    try:
        key = (await _json_body(request)).get("key")
    except ValueError as exc:
        return _bad_request(str(exc))
    request.app[SIMULATOR_STATE].clear(key)
    return json_response({"ok": True})


async def reset(request: web.Request) -> web.Response:
    """`POST /_sim/reset`: forget scripts, counts and recorded requests."""
    request.app[SIMULATOR_STATE].reset()
    return json_response({"ok": True})


async def counts(request: web.Request) -> web.Response:
    """`GET /_sim/counts` -> `{"counts": {key: n}}`."""
    return json_response({"counts": request.app[SIMULATOR_STATE].counts()})


def _recorded(r: RecordedRequest) -> dict[str, Any]:
    return {
        "key": r.key,
        "method": r.method,
        "path": r.path,
        "query": r.query,
        "headers": r.headers,
        "body": base64.b64encode(r.body).decode(),
        "model": r.model,
    }


async def requests(request: web.Request) -> web.Response:
    """`GET /_sim/requests?limit=100`: newest requests, oldest first, bodies base64."""
    try:
        limit = int(request.query.get("limit", DEFAULT_REQUEST_LIMIT))
    except ValueError:
        return _bad_request("'limit' must be an integer")
    recorded = request.app[SIMULATOR_STATE].last_requests(limit)
    return json_response({"requests": [_recorded(r) for r in recorded]})


async def config(request: web.Request) -> web.Response:
    """`GET|POST /_sim/config`: default chunk count and delays (POST sets the given ones)."""
    state = request.app[SIMULATOR_STATE]
    if request.method == "POST":
        try:
            data = await _json_body(request)
            if "default_chunks" in data:
                state.default_chunks = int(data["default_chunks"])
            if "default_delay_s" in data:
                state.default_delay_s = float(data["default_delay_s"])
            if "default_chunk_delay_s" in data:
                state.default_chunk_delay_s = float(data["default_chunk_delay_s"])
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
    return json_response(
        {
            "default_chunks": state.default_chunks,
            "default_delay_s": state.default_delay_s,
            "default_chunk_delay_s": state.default_chunk_delay_s,
        }
    )


def add_routes(app: web.Application) -> None:
    """Register the control API."""
    app.router.add_post("/_sim/script", script)
    app.router.add_post("/_sim/clear", clear)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_get("/_sim/counts", counts)
    app.router.add_get("/_sim/requests", requests)
    app.router.add_get("/_sim/config", config)
    app.router.add_post("/_sim/config", config)
