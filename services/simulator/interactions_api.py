"""Interactions API: `POST /v1beta/interactions`, `GET|DELETE /v1beta/interactions/{id}`,
`POST /v1beta/interactions/{id}/cancel`.

Shapes as google-genai's `_gaos` client parses them (snake_case): an Interaction
`{id, object, status, model|agent, created, updated, steps: [user_input, model_output |
function_call], usage{total_input_tokens...}, previous_interaction_id?}`; a stream is SSE
`event: <type>` / `data: {..., "event_type", "event_id"}` with interaction.created,
interaction.status_update, step.start, step.delta (text), step.stop, interaction.completed.
A stored interaction (store defaults to true) keeps its events: `GET ?stream=true&last_event_id=`
replays those after the given one. It lives in the creating key's project: any other
project gets 404, for a get, a delete, a cancel or a `previous_interaction_id` alike.
`background: true` answers `in_progress` at once; it completes after `job_duration_s`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from .content import answer_for, count_tokens, names_function, random_id, split_text
from .errors import failed_precondition, invalid_argument, not_found
from .pipeline import Call, admit, chunk_count, endpoint, json_response, parse_json_object, stream_frames
from .resources import Resource, new_id, rfc3339
from .schema import instance

_ID: Final = re.compile(r"[A-Za-z0-9_\-]{1,128}")


def _input_text(value: Any) -> str:
    """The text of an interaction `input`: a string, a content, a list of contents or of steps."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        return _input_text(value.get("content"))
    if isinstance(value, list):
        return " ".join(t for t in (_input_text(v) for v in value) if t)
    return ""


def _function_call(data: dict[str, Any], text: str) -> dict[str, Any] | None:
    """The simulator's rule (see content.py): call a declared function only when the input names it."""
    if any(isinstance(i, dict) and i.get("type") == "function_result" for i in data.get("input") or []):
        return None
    for tool in data.get("tools") or []:
        name = tool.get("name") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if isinstance(name, str) and names_function(text, name):
            args = instance(tool.get("parameters") or {}, text[:40]) or {}
            return {"type": "function_call", "id": f"call_{random_id(9)}", "name": name, "arguments": args}
    return None


def _interaction(call: Call, data: dict[str, Any], rid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the completed Interaction, its output step)."""
    text = _input_text(data.get("input"))
    now = rfc3339(time.time())
    output = _function_call(data, text) or {
        "type": "model_output",
        "content": [{"type": "text", "text": answer_for(text)}],
    }
    tokens_in, tokens_out = count_tokens(text), count_tokens(orjson.dumps(output).decode())
    served: dict[str, Any] = {"id": rid, "object": "interaction", "status": "completed"}
    served.update({k: data[k] for k in ("model", "agent", "previous_interaction_id") if data.get(k)})
    served.update({"created": now, "updated": now})
    served["steps"] = [{"type": "user_input", "content": [{"type": "text", "text": text}]}, output]
    if output["type"] == "function_call":
        served["status"] = "requires_action"
    served["usage"] = {
        "total_input_tokens": tokens_in,
        "total_output_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }
    return served, output


def _events(served: dict[str, Any], output: dict[str, Any], pieces: int) -> list[dict[str, Any]]:
    """The SSE events of an interaction, each with its `event_id`."""
    head: dict[str, Any] = {k: served[k] for k in ("id", "object", "model", "agent", "created") if k in served}
    events: list[dict[str, Any]] = [
        {"event_type": "interaction.created", "interaction": {**head, "status": "in_progress"}},
        {"event_type": "interaction.status_update", "interaction_id": served["id"], "status": "in_progress"},
        {"event_type": "step.start", "index": 1, "step": {"type": output["type"]}},
    ]
    deltas: list[dict[str, Any]]
    if output["type"] == "model_output":
        deltas = [{"type": "text", "text": piece} for piece in split_text(output["content"][0]["text"], pieces)]
    else:
        deltas = [{"type": "arguments", "arguments": orjson.dumps(output["arguments"]).decode()}]
        events[-1]["step"] = {k: v for k, v in output.items() if k != "arguments"}
    events += [{"event_type": "step.delta", "index": 1, "delta": d} for d in deltas]
    events.append({"event_type": "step.stop", "index": 1})
    done: dict[str, Any] = {**head, "status": served["status"], "usage": served["usage"], "updated": served["updated"]}
    events.append({"event_type": "interaction.completed", "interaction": done})
    for i, event in enumerate(events):
        event["event_id"] = f"{served['id']}:{i}"
    return events


def _sse(events: list[dict[str, Any]]) -> Iterator[bytes]:
    for event in events:
        yield b"event: " + event["event_type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def _interaction_of(call: Call, rid: str) -> Resource:
    if not _ID.fullmatch(rid):
        raise invalid_argument(f"Invalid interaction id: {rid}")
    stored = call.state.resources.get("interactions", rid, call.project)
    if stored is None:
        raise not_found(f"Interaction {rid} not found.")
    return stored


def _check_environment(call: Call, environment: object) -> None:
    """An existing environment the interaction names (``"environment": "<id>"`` or a remote one's
    ``environment_id``) must be the caller's project's, as on Google: another project's is NOT_FOUND."""
    named = environment.get("environment_id") if isinstance(environment, dict) else environment
    if isinstance(named, str) and named:
        env_id = named.removeprefix("environments/")
        if call.state.resources.get("environments", env_id, call.project) is None:
            raise not_found(f"Environment {env_id} not found.")


def _view(call: Call, stored: Resource) -> dict[str, Any]:
    """A stored interaction as of now: a background one completes when its time has come."""
    pending = stored.data.get("_final")
    if pending is not None and time.time() >= stored.created + call.state.job_duration_s:
        stored.data = pending
    return {k: v for k, v in stored.data.items() if not k.startswith("_")}


@endpoint("native")
async def create(request: web.Request) -> web.StreamResponse:
    """`POST /interactions`: plain, streamed (`stream`), or in the background (`background`)."""
    body = await request.read()
    data = parse_json_object(body)
    model = data.get("model") if isinstance(data.get("model"), str) else None
    tokens = count_tokens(_input_text(data.get("input"))) if model else None
    call = await admit(request, "native", model, body, streaming=bool(data.get("stream")), tokens=tokens)
    if bool(data.get("model")) == bool(data.get("agent")):
        raise invalid_argument("Exactly one of model or agent must be set.")
    if data.get("input") in (None, "", []):
        raise invalid_argument("input is required.")
    store, background = data.get("store", True) is not False, bool(data.get("background"))
    if background and not store:
        raise invalid_argument("background requires store to be true.")
    previous = data.get("previous_interaction_id")
    if previous is not None:
        _interaction_of(call, str(previous))
    _check_environment(call, data.get("environment"))
    served, output = _interaction(call, data, "v1_" + new_id(24))
    events = _events(served, output, chunk_count(call))
    if store:
        stored = call.state.resources.add("interactions", call.project, call.key, served, served["id"])
        stored.events = events
        if background:
            stored.data = {**{k: v for k, v in served.items() if k not in ("steps", "usage")}, "status": "in_progress"}
            stored.data["_final"] = served
            return json_response(_view(call, stored))
    if data.get("stream"):
        return await stream_frames(request, call, _sse(events), "text/event-stream")
    return json_response(served)


@endpoint("native")
async def item(request: web.Request) -> web.StreamResponse:
    """`GET|DELETE /interactions/{id}` (GET with `stream=true[&last_event_id=]` replays its events)."""
    streaming = request.query.get("stream") == "true"
    call = await admit(request, "native", None, b"", streaming=streaming)
    stored = _interaction_of(call, request.match_info["id"])
    if request.method == "DELETE":
        call.state.resources.delete("interactions", stored.id, call.project)
        return json_response({})
    view = _view(call, stored)
    if not streaming:
        return json_response(view)
    events = stored.events
    last = request.query.get("last_event_id")
    if last:
        ids = [e["event_id"] for e in events]
        if last not in ids:
            raise invalid_argument(f"Unknown last_event_id: {last}")
        events = events[ids.index(last) + 1 :]
    return await stream_frames(request, call, _sse(events), "text/event-stream")


@endpoint("native")
async def cancel(request: web.Request) -> web.StreamResponse:
    """`POST /interactions/{id}/cancel`: only a background interaction still in progress."""
    call = await admit(request, "native", None, await request.read())
    stored = _interaction_of(call, request.match_info["id"])
    view = _view(call, stored)
    if view["status"] not in ("in_progress", "queued"):
        raise failed_precondition(
            f"Interaction {stored.id} is {view['status']}: only one in progress can be cancelled."
        )
    stored.data = {**view, "status": "cancelled", "updated": rfc3339(time.time())}
    stored.events = stored.events[:2]
    return json_response(stored.data)


def add_routes(app: web.Application) -> None:
    """Register the Interactions API under both versions."""
    for version in ("v1beta", "v1", "v1alpha"):
        app.router.add_post(f"/{version}/interactions", create)
        app.router.add_route("GET", f"/{version}/interactions/{{id}}", item)
        app.router.add_route("DELETE", f"/{version}/interactions/{{id}}", item)
        app.router.add_post(f"/{version}/interactions/{{id}}/cancel", cancel)
