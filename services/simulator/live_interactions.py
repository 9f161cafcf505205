"""The Interactions API's live socket: `GET /{version}/interactions/live` with an upgrade, as google-genai 3.6
speaks it (`_interactions_websocket.py`, its tests; GEMINI_API_NOTES "December 2026").

Not a Live `setup`: the first frame opens an interaction, either `interaction.create` (`model`, optional
`previous_interaction_id`, `store`, `tools`...), answered `interaction.created {interaction_id}`, or
`interaction.connect {id}` (what the official client's `interactions.connect(id)` sends), answered
`interaction.connected {interaction_id}`; either may come first in a batch `{"events": [...]}`. Then:

- `input {content: [...]}`: a model turn, `step.start`, `step.delta` (text), `step.stop` with the turn's
  `step_usage` and the interaction's cumulative `usage`;
- `interaction.complete`: `interaction.completed {status, usage}`, then a 1000 close;
- `interaction.cancel`: `interaction.cancelled {usage}`, then a 1000 close;
- `interaction.disconnect`: a 1000 close; the interaction stays open for a later `interaction.connect`.

An interaction lives in the project of the key that made it, as the REST ones do (`interactions_api.py`, the same
store): another project's key connecting to it gets the 1008 "not found" close. Connecting to one that is over
replays nothing: `interaction.connected`, its `interaction.completed`, the close. Server events are text frames
of JSON. Errors are closes with Google's Live conventions (`live.py`): a first frame that opens nothing 1007, an
unknown interaction or model 1008, the key's quota 1011 (after an `error` event); a bad event later is an `error`
event (`invalid_argument`) and the socket stays open. Sessions count in the Live book (the per-project cap, the
control API's `/_sim/live`). Not served: the per-interaction `auth_tokens/...` credentials (refused 1008).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import WSMsgType, web

from .catalog import model_info
from .content import answer_for, count_tokens, split_text
from .errors import CANONICAL_STATUS, INVALID_KEY_MESSAGE, SimError, error_response
from .live import QUOTA_MESSAGE, SESSION_CAP_MESSAGE, UNAUTHENTICATED_MESSAGE, Closing, behaviour_close, cut_reason
from .live import invalid as invalid_frame
from .live_sessions import LiveSession
from .pipeline import SIMULATOR_STATE, credentials, record
from .resources import Resource, new_id, rfc3339
from .state import Behaviour, SimulatorState, normalize_model

VERSIONS: Final = ("v1", "v1beta", "v1alpha")
OPENERS: Final = frozenset({"interaction.create", "interaction.connect"})
ENDED: Final = frozenset({"completed", "cancelled"})
UNREGISTERED: Final = (
    "Method doesn't allow unregistered callers (callers without established identity)."
    " Please use API key or other form of API consumer identity to call this API."
)


def opening_event(data: Any) -> dict[str, Any]:
    """The event that opens the socket (a lone event or a batch's first), or 1007."""
    if isinstance(data, dict) and isinstance(data.get("events"), list) and data["events"]:
        data = data["events"][0]
    if not isinstance(data, dict) or data.get("event_type") not in OPENERS:
        raise invalid_frame()
    return data


def _events_of(data: Any) -> list[Any]:
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        return list(data["events"])
    return [data]


def _input_text(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    texts = [str(part.get("text")) for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    audio = sum(1 for part in content if isinstance(part, dict) and part.get("type") == "audio")
    return " ".join([*texts, *(["Simulated transcript of the audio"] if audio else [])])


@dataclass(slots=True)
class _Socket:
    """One connection to one interaction."""

    ws: web.WebSocketResponse
    state: SimulatorState
    session: LiveSession
    stored: Resource | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_str(orjson.dumps(event).decode())
        self.session.frames_out += 1

    async def error(self, code: str, message: str) -> None:
        """An `error` event: the client yields it (it does not end the connection)."""
        await self.send({"event_type": "error", "error": {"code": code, "message": message}})

    async def receive(self) -> Any | None:
        """The next client frame's JSON (None: the client closed); 1007 when it is not JSON, 1009 when too big."""
        message = await self.ws.receive()
        if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            if message.type is WSMsgType.ERROR:
                raise Closing(self.ws.close_code or 1009, "")
            return None
        self.session.frames_in["text" if message.type is WSMsgType.TEXT else "binary"] += 1
        raw = message.data.encode() if isinstance(message.data, str) else message.data
        limit = self.state.live.settings.max_frame_bytes
        if len(raw) > limit:
            raise Closing(1009, f"Request payload size exceeds the limit: {limit} bytes.")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise invalid_frame("Invalid JSON payload received. Unexpected token.") from None

    # -- opening -----------------------------------------------------------

    async def open(self, event: dict[str, Any]) -> bool:
        """Create or connect (1008 for a model or interaction this project lacks); False when it is already over."""
        state, session = self.state, self.session
        if event["event_type"] == "interaction.create":
            model = self._model(event.get("model"))
            previous = event.get("previous_interaction_id")
            if previous is not None and self._interaction(previous) is None:
                raise Closing(1008, f"Interaction {previous} not found.")
            now = rfc3339(time.time())
            data: dict[str, Any] = {"id": "v1_" + new_id(24), "object": "interaction", "status": "in_progress"}
            data.update({"model": model, "created": now, "updated": now, "steps": []})
            data["usage"] = {"total_input_tokens": 0, "total_output_tokens": 0, "total_tokens": 0}
            if previous is not None:
                data["previous_interaction_id"] = previous
            self._admit(model)
            self.stored = state.resources.add("interactions", session.project, session.key, data, data["id"])
            await self.send({"event_type": "interaction.created", "interaction_id": data["id"]})
            return True
        stored = self._interaction(event.get("id"))
        if stored is None:
            raise Closing(1008, f"Interaction {event.get('id')} not found.")
        self.stored = stored
        self._admit(str(stored.data.get("model") or ""))
        await self.send({"event_type": "interaction.connected", "interaction_id": stored.id})
        if stored.data.get("status") in ENDED:
            await self.send({"event_type": "interaction.completed", **self._summary()})
            return False
        return True

    def _model(self, value: Any) -> str:
        name = normalize_model(value) if isinstance(value, str) else None
        if not name or model_info(name, self.state.missing_models) is None:
            raise Closing(
                1008,
                f"models/{name or ''} is not found for API version {self.session.version},"
                " or is not supported for interactions.live",
            )
        return name

    def _interaction(self, rid: Any) -> Resource | None:
        if not isinstance(rid, str) or not rid:
            raise invalid_frame()
        return self.state.resources.get("interactions", rid, self.session.project)

    def _admit(self, model: str) -> None:
        """The key's script for the model (a refused key closes now), then the project's session cap."""
        state, session = self.state, self.session
        session.model = model or None
        self.behaviour = state.next_behaviour(session.key, model or None)
        refused = behaviour_close(self.behaviour, session.key, model)
        if refused is not None:
            raise refused
        if state.live.at_cap(session.project):
            raise Closing(1011, SESSION_CAP_MESSAGE)
        state.live.admit(session)

    # -- events ------------------------------------------------------------

    async def run(self, pending: list[Any]) -> None:
        """Serve events (the opening frame's rest first) until the interaction or the connection ends."""
        while True:
            for event in pending:
                if not await self.on_event(event):
                    return
            frame = await self.receive()
            if frame is None:
                return
            pending = _events_of(frame)

    async def on_event(self, event: Any) -> bool:
        """One client event; False when the connection ends with it."""
        kind = event.get("event_type") if isinstance(event, dict) else None
        if kind == "input":
            await self.turn(event.get("content"))
            return True
        if kind == "interaction.complete":
            await self.end("completed", "interaction.completed")
            return False
        if kind == "interaction.cancel":
            await self.end("cancelled", "interaction.cancelled")
            return False
        if kind == "interaction.disconnect":
            return False
        message = f"Unexpected event_type {kind!r} on an open interaction." if kind else "An event needs an event_type."
        await self.error("invalid_argument", message)
        return True

    async def turn(self, content: Any) -> None:
        """A model turn for the input; the key's quota first (an `error` event, then the 1011 close)."""
        assert self.stored is not None
        data, session = self.stored.data, self.session
        text = _input_text(content)
        if not text:
            await self.error("invalid_argument", "input needs content.")
            return
        model = str(data.get("model") or "")
        tokens_in = count_tokens(text)
        spent = self.state.quotas.admit(session.project, model, tokens_in) is not None
        if spent or self.behaviour.kind == "rate_limit":
            await self.error("resource_exhausted", QUOTA_MESSAGE)
            raise Closing(1011, QUOTA_MESSAGE)
        answer = answer_for(text)
        tokens_out = count_tokens(answer)
        index = len(data["steps"]) + 1
        data["steps"] += [{"type": "user_input", "content": [{"type": "text", "text": text}]},
                          {"type": "model_output", "content": [{"type": "text", "text": answer}]}]  # fmt: skip
        usage = data["usage"]
        usage["total_input_tokens"] += tokens_in
        usage["total_output_tokens"] += tokens_out
        usage["total_tokens"] = usage["total_input_tokens"] + usage["total_output_tokens"]
        data["updated"] = rfc3339(time.time())
        session.turns += 1
        await self.send({"event_type": "step.start", "index": index, "step": {"type": "model_output"}})
        for piece in split_text(answer, max(1, self.state.default_chunks)):
            await self.send({"event_type": "step.delta", "index": index, "delta": {"type": "text", "text": piece}})
        step_usage = {"total_input_tokens": tokens_in, "total_output_tokens": tokens_out,
                      "total_tokens": tokens_in + tokens_out}  # fmt: skip
        await self.send({"event_type": "step.stop", "index": index, "step_usage": step_usage, "usage": dict(usage)})

    async def end(self, status: str, event_type: str) -> None:
        assert self.stored is not None
        self.stored.data["status"] = status
        self.stored.data["updated"] = rfc3339(time.time())
        await self.send({"event_type": event_type, **self._summary()})

    def _summary(self) -> dict[str, Any]:
        assert self.stored is not None
        data = self.stored.data
        code = 0 if data.get("status") == "completed" else 1
        return {"status": {"code": code}, "usage": dict(data.get("usage") or {}), "updated": data.get("updated")}


def _credential(request: web.Request) -> tuple[str, Closing | None]:
    """The key (`x-goog-api-key` or `?key=`); none 1008, several 1007, an `auth_tokens/...` 1008 (not served)."""
    found = credentials(request)
    if not found:
        return "", Closing(1008, UNREGISTERED)
    if len(set(found)) > 1:
        return "", invalid_frame("Multiple authentication credentials received. Please pass only one.")
    if found[0].startswith("auth_tokens/") or "Authorization" in request.headers:
        return "", Closing(1008, UNAUTHENTICATED_MESSAGE)
    return found[0], None


async def interactions_live(request: web.Request) -> web.StreamResponse:
    """`GET /{version}/interactions/live` with an upgrade: one connection to one interaction."""
    state = request.app[SIMULATOR_STATE]
    version = request.path.split("/")[1]
    record(request, b"", None)
    key, refused = _credential(request)
    status = state.live.settings.reject_upgrade.get(key)
    if status:  # the handshake-failure path of a client
        return error_response(SimError(status, CANONICAL_STATUS.get(status, "UNKNOWN"), INVALID_KEY_MESSAGE), "native")
    ws = web.WebSocketResponse(max_msg_size=2 * state.live.settings.max_frame_bytes + 1024, autoping=True)
    await ws.prepare(request)
    session = state.live.start(key, state.project_of(key) if key else "", request.path, version)
    socket = _Socket(ws, state, session)
    code: int | None = 1000
    reason = ""
    try:
        if refused is not None:
            raise refused
        first = await socket.receive()
        if first is None:
            raise Closing(1000, "")
        events = _events_of(first)
        if await socket.open(opening_event(first)):
            await socket.run(events[1:])
        if not ws.closed:
            await ws.close(code=1000)
        code = ws.close_code or 1000
    except Closing as closing:
        code, reason = closing.code, cut_reason(closing.reason)
        if code is None:
            if request.transport is not None:
                request.transport.abort()
            code = 1006
        else:
            await ws.close(code=code, message=reason.encode())
    except ConnectionError:
        code = ws.close_code or 1006
    finally:
        state.live.end(session, code, reason)
    return ws


def add_routes(app: web.Application) -> None:
    """Register the socket under each version (plain paths: they win over `interactions/{id}` in any order)."""
    for version in VERSIONS:
        app.router.add_get(f"/{version}/interactions/live", interactions_live)
