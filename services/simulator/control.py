"""HTTP control API (`/_sim/...`) so out-of-process users can script the simulator.

No API key is needed here: it is a test tool, never exposed beyond localhost.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from .pipeline import SIMULATOR_STATE, json_response
from .quotas import QuotaRule
from .resources import KINDS
from .state import Behaviour, RecordedRequest, normalize_model

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
    """`GET /_sim/requests?limit=100[&key=K][&project=P]`: newest requests (of one key, or of the keys
    of one project), oldest first, bodies base64."""
    try:
        limit = int(request.query.get("limit", DEFAULT_REQUEST_LIMIT))
    except ValueError:
        return _bad_request("'limit' must be an integer")
    state = request.app[SIMULATOR_STATE]
    key, project = request.query.get("key"), request.query.get("project")
    recorded = state.requests if key or project else state.last_requests(limit)
    if key:
        recorded = [r for r in recorded if r.key == key]
    if project:
        recorded = [r for r in recorded if r.key is not None and state.project_of(r.key) == project]
    recorded = recorded[-limit:] if limit > 0 else []
    return json_response({"requests": [_recorded(r) for r in recorded]})


async def projects(request: web.Request) -> web.Response:
    """`GET /_sim/projects[?key=K]` -> `{"projects": {key: project}}` (set ones, plus K's);
    `POST /_sim/projects` `{"key", "project"|null}` or `{"projects": {key: project|null}}` sets them."""
    state = request.app[SIMULATOR_STATE]
    if request.method == "POST":
        try:
            data = await _json_body(request)
            wanted = data["projects"] if "projects" in data else {data["key"]: data.get("project")}
            if not isinstance(wanted, dict) or not all(isinstance(k, str) and k for k in wanted):
                raise ValueError("'projects' must map keys to projects")
            if not all(p is None or (isinstance(p, str) and p) for p in wanted.values()):
                raise ValueError("a project must be a non-empty string or null")
        except (KeyError, ValueError) as exc:
            return _bad_request(f"expected {{'key', 'project'}} or {{'projects': {{...}}}}: {exc}")
        for key, project in wanted.items():
            state.set_project(key, project)
    shown = state.projects()
    if "key" in request.query:
        shown[request.query["key"]] = state.project_of(request.query["key"])
    return json_response({"projects": shown})


async def resources(request: web.Request) -> web.Response:
    """`GET /_sim/resources[?project=P][&kind=files|uploads|cachedContents|batches|operations|interactions]`."""
    state = request.app[SIMULATOR_STATE]
    project, kind = request.query.get("project"), request.query.get("kind")
    if kind is not None and kind not in KINDS:
        return _bad_request(f"'kind' must be one of {list(KINDS)}")
    chosen = [
        r for r in state.resources if (project is None or r.project == project) and (kind is None or r.kind == kind)
    ]
    return json_response({"resources": [r.summary() for r in chosen]})


async def config(request: web.Request) -> web.Response:
    """`GET|POST /_sim/config`: chunk count, delays, job duration, missing models, `served_as` (a name -> the model
    that answers it: retired names and -latest aliases; POST sets the given ones)."""
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
            if "job_duration_s" in data:
                state.job_duration_s = float(data["job_duration_s"])
            if "missing_models" in data:
                state.missing_models = {str(m) for m in data["missing_models"]}
            if "served_as" in data:
                served = data["served_as"]
                if not isinstance(served, dict) or not all(isinstance(v, str) and v for v in served.values()):
                    raise ValueError("'served_as' must map model names to the model that answers them")
                state.served_as = {str(k): v for k, v in served.items()}
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
    return json_response(
        {
            "default_chunks": state.default_chunks,
            "default_delay_s": state.default_delay_s,
            "default_chunk_delay_s": state.default_chunk_delay_s,
            "job_duration_s": state.job_duration_s,
            "missing_models": sorted(state.missing_models),
            "served_as": state.served_as,
        }
    )


async def quotas(request: web.Request) -> web.Response:
    """`GET /_sim/quotas[?project=P]`: rules, window sizes, the quota clock and usage per (project, model).

    `POST /_sim/quotas` `{project?, model?, rpm?, tpm?, rpd?, retry_info?, available?, spend_budget_usd?,
    usd_per_mtok?}` sets the rule of a scope (no project/model: the default; null clears a field);
    `window_s`, `spend_window_s` size the windows, `advance_s` moves the quota clock, `clear: true`
    forgets every rule and count first. Billing accounts (issue 21): `accounts: {project: account}` names
    each project's account (spend limits are then the account's), `depleted: [account]` spends those
    accounts' prepay (every project of them answers 402; `[]` tops every account up); `tiers: {account: 1-3}`
    (priority is served on Tier 2/3 only, else downgraded), `priority_capacity: false` downgrades every
    priority call (the answer's `x-gemini-service-tier` says standard); `gone: [{project, model}]` answers those
    pairs 404 "no longer available to new users"."""
    book = request.app[SIMULATOR_STATE].quotas
    if request.method == "POST":
        try:
            data = await _json_body(request)
            project, model = data.get("project"), normalize_model(data.get("model"))
            served = request.app[SIMULATOR_STATE].served_as
            model = served.get(model, model) if model else model  # a rule of a served name is its model's
            if not all(v is None or (isinstance(v, str) and v) for v in (project, model)):
                raise ValueError("'project' and 'model' must be non-empty strings or null")
            for name in ("window_s", "spend_window_s"):
                if name in data and not (isinstance(data[name], int | float) and data[name] > 0):
                    raise ValueError(f"{name!r} must be a positive number")
            if "advance_s" in data and not isinstance(data["advance_s"], int | float):
                raise ValueError("'advance_s' must be a number")
            accounts, depleted = data.get("accounts", {}), data.get("depleted", [])
            if not isinstance(accounts, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and k and v for k, v in accounts.items()
            ):
                raise ValueError("'accounts' must map project ids to billing account names")
            if not isinstance(depleted, list) or not all(isinstance(a, str) and a for a in depleted):
                raise ValueError("'depleted' must be a list of billing account names")
            if data.get("clear"):
                book.clear()
            book.accounts.update(accounts)
            if "depleted" in data:
                book.depleted = set(depleted)
            tiers = data.get("tiers", {})
            if not isinstance(tiers, dict) or not all(isinstance(t, int) and 1 <= t <= 3 for t in tiers.values()):
                raise ValueError("'tiers' must map billing accounts (or projects) to 1, 2 or 3")
            book.tiers.update({str(k): v for k, v in tiers.items()})
            gone = data.get("gone", [])
            if not isinstance(gone, list) or not all(
                isinstance(g, dict) and isinstance(g.get("project"), str) and isinstance(g.get("model"), str)
                for g in gone
            ):
                raise ValueError("'gone' must list {project, model} pairs")
            book.gone.update((g["project"], g["model"]) for g in gone)
            if "priority_capacity" in data:
                book.priority_capacity = data["priority_capacity"] is not False
            if any(name in data for name in QuotaRule.FIELDS):
                book.set_rule(project, model, data)
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
        book.window_s = float(data.get("window_s", book.window_s))
        book.spend_window_s = float(data.get("spend_window_s", book.spend_window_s))
        book.advance(float(data.get("advance_s", 0)))
    return json_response(book.snapshot(request.query.get("project")))


async def live(request: web.Request) -> web.Response:
    """`GET|POST /_sim/live[?project=P][&key=K]`: the Live settings (POST sets the given ones:
    `live_sessions.LiveSettings`), the sessions (open ones first, then recently closed ones, with their close code
    and reason) and the handles."""
    book = request.app[SIMULATOR_STATE].live
    if request.method == "POST":
        try:
            book.settings.update(await _json_body(request))
        except (ValueError, TypeError) as exc:
            return _bad_request(str(exc))
    project, key = request.query.get("project"), request.query.get("key")
    return json_response(
        {
            "settings": book.settings.to_dict(),
            "sessions": [s.summary() for s in book.sessions(project, key)],
            "handles": book.handles_of(project),
        }
    )


async def live_close(request: web.Request) -> web.Response:
    """`POST /_sim/live/close` `{"project"?, "key"?, "code"?: 1011, "reason"?: "...", "drop"?: false}`: end the open
    sessions (of a project or a key) now, with a close frame, or (`drop`) cut without one;
    `{"expire_handles": true}`: every handle of an ended session expires (its 2 hours have passed)."""
    book = request.app[SIMULATOR_STATE].live
    try:
        data = await _json_body(request)
        code = data.get("code", 1011)
        reason = data.get("reason", "Internal error encountered.")
        if (
            isinstance(code, bool)
            or not isinstance(code, int)
            or not 1000 <= code <= 4999
            or not isinstance(reason, str)
        ):
            raise ValueError("'code' must be a close code (1000-4999) and 'reason' a string")
    except ValueError as exc:
        return _bad_request(str(exc))
    if data.get("expire_handles"):
        book.expire_handles()
    ended = 0
    if "project" in data or "key" in data or "code" in data or data.get("drop"):
        for session in book.open_sessions(data.get("project"), data.get("key")):
            if session.interrupt is not None:
                session.interrupt(None if data.get("drop") else code, reason)
                ended += 1
    return json_response({"ok": True, "ended": ended})


def add_routes(app: web.Application) -> None:
    """Register the control API."""
    app.router.add_post("/_sim/script", script)
    app.router.add_post("/_sim/clear", clear)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_get("/_sim/counts", counts)
    app.router.add_get("/_sim/requests", requests)
    app.router.add_get("/_sim/config", config)
    app.router.add_post("/_sim/config", config)
    app.router.add_get("/_sim/projects", projects)
    app.router.add_post("/_sim/projects", projects)
    app.router.add_get("/_sim/resources", resources)
    app.router.add_get("/_sim/quotas", quotas)
    app.router.add_post("/_sim/quotas", quotas)
    app.router.add_get("/_sim/live", live)
    app.router.add_post("/_sim/live", live)
    app.router.add_post("/_sim/live/close", live_close)
