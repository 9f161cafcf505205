"""The Live API (`BidiGenerateContent` over WebSocket), spoken the way Google speaks it to the official clients.

Path `[/]/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent` (the SDKs' base URLs end
in `/`, so the path often starts with `//`); the key from `x-goog-api-key` or `?key=`. Its `...Constrained` twin
takes an ephemeral `auth_tokens/...` (minted here by `POST /v1alpha/auth_tokens`) from `?access_token=` or
`Authorization: Token`. Server frames are binary
UTF-8 JSON, client frames text or binary, camelCase or snake_case (LIVE_API_NOTES.md sections 2 and 7).

Errors are close codes with Google's reasons (section 3.1): a malformed message 1007, an unknown model or a
refused key 1008, quota and server trouble 1011 (the quota close comes after `setupComplete`). Faults come from the
key's script (`/_sim/script`, drawn at `setup` for the setup's model): `rate_limit` closes 1011 after
`setupComplete`, `invalid_key` 1007, `leaked_key` 1008, `drop` cuts the connection without a close frame,
`drop_mid_stream` after the first model frame; `server_error`, `overloaded`, `timeout` 1011. The per-project
session cap, the connection's life (`goAway`) and resumption handles are `live_sessions.py`'s.
"""

from __future__ import annotations

import asyncio
import binascii
import time
from base64 import b64decode, b64encode
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson
from aiohttp import WSMsgType, web

from .catalog import model_info
from .content import answer_for, count_tokens, gemini_function_call, parts_text, random_id
from .errors import (
    CANONICAL_STATUS,
    INVALID_KEY_MESSAGE,
    RATE_LIMIT_DOCS,
    UNREGISTERED_MESSAGE,
    SimError,
    behaviour_error,
    error_response,
    invalid_argument,
)
from .live_sessions import EphemeralToken, LiveSession
from .pipeline import (
    SIMULATOR_STATE,
    admit,
    credentials,
    endpoint,
    json_response,
    parse_json_object,
    record,
    unknown_path,
)
from .resources import rfc3339
from .state import Behaviour, SimulatorState, normalize_model

PATH: Final = (
    "/{lead:/?}ws/google.ai.generativelanguage.{version:v1|v1beta|v1alpha}.GenerativeService"
    ".{method:BidiGenerateContent(?:Constrained)?}"
)
#: Ephemeral tokens (section 4.1): 30 min of life, 60 s to start a session, unless the request says otherwise.
TOKEN_LIFE_S: Final = 30 * 60.0
TOKEN_NEW_SESSION_S: Final = 60.0
TOKEN_MAX_LIFE_S: Final = 20 * 3600.0
#: A close frame carries at most 123 bytes of reason; Google cuts its reasons there.
MAX_REASON_BYTES: Final = 123
INVALID_ARGUMENT: Final = "Request contains an invalid argument."
QUOTA_MESSAGE: Final = (
    "You exceeded your current quota, please check your plan and billing details."
    f" For more information on this error, head to: {RATE_LIMIT_DOCS}."
)
SESSION_CAP_MESSAGE: Final = (
    "[ORIGINAL ERROR] generic::resource_exhausted: RESOURCE_EXHAUSTED: Maximum concurrent sessions"
)
INTERNAL_MESSAGE: Final = "Internal error encountered."
UNAVAILABLE_MESSAGE: Final = "The service is currently unavailable."
MULTIPLE_CREDENTIALS_MESSAGE: Final = "Multiple authentication credentials received. Please pass only one."
UNAUTHENTICATED_MESSAGE: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie"
    " or other valid authentication credential."
)
#: Close code per Google status: a bad request 1007, refused or not found 1008, the rest 1011.
CLOSE_CODE: Final[dict[str, int]] = {
    "INVALID_ARGUMENT": 1007,
    "FAILED_PRECONDITION": 1007,
    "PERMISSION_DENIED": 1008,
    "UNAUTHENTICATED": 1008,
    "NOT_FOUND": 1008,
}
CLIENT_MESSAGES: Final = ("setup", "clientContent", "realtimeInput", "toolResponse", "contextUpdate")
#: Models that answer in audio only (section 5).
AUDIO_ONLY: Final = ("native-audio", "gemini-3.8-live")
IN_RATE: Final = 16_000  # input PCM16 mono, bytes per second: 2 x rate
OUT_RATE: Final = 24_000
OUT_MIME: Final = f"audio/pcm;rate={OUT_RATE}"
AUDIO_TOKENS_PER_S: Final = 25
OUT_CHUNK_S: Final = 0.04


class Closing(Exception):
    """End the session with this close code and reason (`code` None: cut the connection, no close frame)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def field_of(data: dict[str, Any], camel: str) -> Any:
    """A field by its camelCase name or its snake_case one (proto3 JSON accepts both)."""
    if camel in data:
        return data[camel]
    return data.get(_snake(camel))


def cut_reason(reason: str) -> str:
    """`reason` cut to what a close frame holds (123 bytes), never inside a UTF-8 character."""
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


def invalid(message: str = INVALID_ARGUMENT) -> Closing:
    return Closing(1007, message)


def live_model(model: str, version: str, missing: set[str]) -> str:
    """The model a setup names, without `models/`; 1008 as Google words it when it serves no Live for it."""
    name = normalize_model(model) or ""
    if model_info(name, missing) is None or not ("live" in name or "native-audio" in name):
        raise Closing(
            1008, f"models/{name} is not found for API version {version}, or is not supported for bidiGenerateContent"
        )
    return name


def b64_bytes(data: Any) -> int:
    """Length of base64 `data`, standard or URL-safe alphabet (the Python SDK sends URL-safe); 1007 if it is not."""
    if not isinstance(data, str):
        raise invalid()
    try:
        return len(b64decode(data.translate(str.maketrans("-_", "+/")) + "=" * (-len(data) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise invalid("Invalid value (TYPE_BYTES), Base64 decoding failed.") from None


def behaviour_close(behaviour: Behaviour, key: str, model: str) -> Closing | None:
    """The close a scripted error kind stands for at setup (quota and mid-stream faults are played later)."""
    if behaviour.kind == "drop":
        return Closing(None)
    if behaviour.kind in ("rate_limit", "drop_mid_stream", "ok"):
        return None
    error = behaviour_error(behaviour, key, model)
    if error is None:
        return None
    message = {
        "invalid_key": INVALID_KEY_MESSAGE,
        "server_error": INTERNAL_MESSAGE,
        "overloaded": UNAVAILABLE_MESSAGE,
    }.get(behaviour.kind, error.message)
    return Closing(CLOSE_CODE.get(error.status, 1011), behaviour.message or message)


@dataclass(frozen=True, slots=True)
class _Setup:
    """What a session's `setup` asked for."""

    model: str
    audio_out: bool
    tools: Any
    input_transcription: bool
    output_transcription: bool
    resumption: bool
    handle: str | None
    vad: bool


def parse_setup(setup: dict[str, Any], version: str, missing: set[str]) -> _Setup:
    """Check a `setup` message as Google does (1007 malformed, 1008 a model without Live) and read it."""
    model_field = setup.get("model")
    config = field_of(setup, "generationConfig") or {}
    resumption = field_of(setup, "sessionResumption")
    if not isinstance(model_field, str) or not isinstance(config, dict) or not isinstance(resumption or {}, dict):
        raise invalid()
    model = live_model(model_field, version, missing)
    for misplaced in ("inputAudioTranscription", "outputAudioTranscription"):
        if field_of(config, misplaced) is not None:
            raise invalid(
                f"Invalid JSON payload received. Unknown name \"{misplaced}\" at 'setup.generation_config':"
                " Cannot find field."
            )
    modalities = [str(m).upper() for m in field_of(config, "responseModalities") or ["AUDIO"]]
    audio_only = any(mark in model for mark in AUDIO_ONLY)
    if modalities not in (["TEXT"], ["AUDIO"]) or (audio_only and modalities == ["TEXT"]):
        raise invalid()
    detection = field_of(field_of(setup, "realtimeInputConfig") or {}, "automaticActivityDetection") or {}
    handle = (resumption or {}).get("handle")
    return _Setup(
        model=model,
        audio_out=modalities == ["AUDIO"],
        tools=setup.get("tools"),
        input_transcription=field_of(setup, "inputAudioTranscription") is not None,
        output_transcription=field_of(setup, "outputAudioTranscription") is not None,
        resumption=resumption is not None,
        handle=str(handle) if handle else None,
        vad=not (isinstance(detection, dict) and detection.get("disabled") is True),
    )


@dataclass(slots=True)
class Conversation:
    """One connection: its session record, the setup, and the turn being built."""

    ws: web.WebSocketResponse
    request: web.Request
    state: SimulatorState
    session: LiveSession
    setup: _Setup | None = None
    token: EphemeralToken | None = None  # the Constrained path's
    behaviour: Behaviour = field(default_factory=Behaviour)
    pending: list[dict[str, Any]] = field(default_factory=list)  # user turns not answered yet
    audio_bytes: int = 0  # user audio of the turn being spoken
    last_audio: float = 0.0
    tool_calls: dict[str, str] = field(default_factory=dict)  # id -> function name, awaiting toolResponse
    deadlines: dict[str, float] = field(default_factory=dict)  # what -> monotonic time
    commanded: Closing | None = None  # a close ordered through the control API
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def interrupt(self, code: int | None, reason: str) -> None:
        """End the connection now, on command: a close frame with `code`, or (None) a cut."""
        self.commanded = Closing(code, reason)
        if code is None:
            if self.request.transport is not None:
                self.request.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self.ws.close(code=code, message=cut_reason(reason).encode()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- frames ------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """One server message, as Google sends them: a binary frame of UTF-8 JSON."""
        await self.ws.send_bytes(orjson.dumps(message))
        self.session.frames_out += 1
        if self.behaviour.kind == "drop_mid_stream" and "serverContent" in message:
            raise Closing(None)

    async def receive(self) -> dict[str, Any] | None:
        """The next client message (None: the client closed); deadlines fire while waiting."""
        while True:
            due = min(self.deadlines.values(), default=None)
            timeout = None if due is None else max(due - time.monotonic(), 0.001)
            try:
                msg = await self.ws.receive(timeout=timeout)
            except TimeoutError:
                await self.on_deadline()
                continue
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                kind = "text" if msg.type == WSMsgType.TEXT else "binary"
                self.session.frames_in[kind] += 1
                raw = msg.data.encode() if isinstance(msg.data, str) else msg.data
                if len(raw) > self.state.live.settings.max_frame_bytes:
                    raise Closing(
                        1009,
                        f"Request payload size exceeds the limit: {self.state.live.settings.max_frame_bytes} bytes.",
                    )
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise invalid("Invalid JSON payload received. Unexpected token.") from None
                if not isinstance(data, dict):
                    raise invalid()
                return data
            if msg.type == WSMsgType.ERROR:
                raise Closing(self.ws.close_code or 1011, "")
            return None  # close, closing, closed

    async def on_deadline(self) -> None:
        now = time.monotonic()
        for what, at in sorted(self.deadlines.items(), key=lambda item: item[1]):
            if at > now:
                continue
            del self.deadlines[what]
            if what == "quota":
                raise Closing(1011, QUOTA_MESSAGE)
            if what == "go_away":
                left = max(0.0, self.deadlines.get("end", now) - now)
                await self.send({"goAway": {"timeLeft": f"{left:.3f}".rstrip("0").rstrip(".") + "s"}})
            elif what == "end":
                settings = self.state.live.settings
                raise Closing(settings.lifetime_close_code, settings.lifetime_close_reason)
            elif what == "vad":
                await self.end_audio_turn()

    # -- setup -------------------------------------------------------------

    async def open(self) -> None:
        """Read and check the first message (it must be `setup`), play the key's script, send `setupComplete`."""
        first = await self.receive()
        if first is None:
            raise Closing(1000, "")
        setup = first.get("setup")
        if set(first) != {"setup"} or not isinstance(setup, dict):
            raise invalid()
        if self.token is not None:
            setup = self.constrained(setup)
        book, session = self.state.live, self.session
        self.setup = parse_setup(setup, session.version, self.state.missing_models)
        model = session.model = self.setup.model
        if self.setup.handle:
            resumed = book.resume(self.setup.handle, session.key, session.project)
            if resumed is None or resumed.model != model:
                raise invalid()
            session.resumed_from = resumed.id
            session.history = list(resumed.history)
        self.behaviour = self.state.next_behaviour(session.key, model)
        delay = self.state.default_delay_s if self.behaviour.delay_s is None else self.behaviour.delay_s
        if delay > 0:
            await asyncio.sleep(delay)  # a slow setup, scripted
        refused = behaviour_close(self.behaviour, session.key, model)
        if refused is not None:
            raise refused
        if book.at_cap(session.project):
            raise Closing(1011, SESSION_CAP_MESSAGE)
        book.admit(session)
        if self.token is not None and session.resumed_from is None:
            book.spend(self.token)
        await self.send({"setupComplete": {"sessionId": session.id}})
        now, settings = time.monotonic(), book.settings
        self.deadlines["end"] = now + settings.connection_s
        self.deadlines["go_away"] = now + max(0.0, settings.connection_s - settings.go_away_s)
        if self.behaviour.kind == "rate_limit":
            self.deadlines["quota"] = now + settings.quota_close_delay_s

    def constrained(self, setup: dict[str, Any]) -> dict[str, Any]:
        """The setup as the ephemeral token allows it: its locked fields win; an expired or spent token is refused."""
        assert self.token is not None
        resuming = bool((field_of(setup, "sessionResumption") or {}).get("handle"))
        if self.token.refusal(time.time(), resuming) is not None:
            raise Closing(1008, UNAUTHENTICATED_MESSAGE)
        return {**setup, **self.token.setup}

    # -- turns -------------------------------------------------------------

    async def run(self) -> None:
        """Serve client messages until the client closes or a close is due."""
        while (message := await self.receive()) is not None:
            if len(message) != 1 or next(iter(message)) not in {*CLIENT_MESSAGES, *map(_snake, CLIENT_MESSAGES)}:
                unknown = next((k for k in message if k not in CLIENT_MESSAGES), "")
                raise invalid(f'Invalid JSON payload received. Unknown name "{unknown}": Cannot find field.')
            name, body = next(iter(message.items()))
            if not isinstance(body, dict):
                raise invalid()
            if name == "setup":
                raise invalid()
            if name in ("clientContent", "client_content"):
                await self.client_content(body)
            elif name in ("realtimeInput", "realtime_input"):
                await self.realtime_input(body)
            elif name in ("toolResponse", "tool_response"):
                await self.tool_response(body)

    async def client_content(self, body: dict[str, Any]) -> None:
        turns = field_of(body, "turns") or []
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise invalid()
        self.pending += turns
        if field_of(body, "turnComplete"):
            prompt = next(
                (parts_text(t.get("parts")) for t in reversed(self.pending) if t.get("role", "user") == "user"), ""
            )
            await self.answer_turn(prompt, "TEXT", count_tokens(prompt))

    async def realtime_input(self, body: dict[str, Any]) -> None:
        audio = field_of(body, "audio")
        chunks = [audio] if isinstance(audio, dict) else []
        chunks += [c for c in field_of(body, "mediaChunks") or [] if isinstance(c, dict)]
        for chunk in chunks:
            size = b64_bytes(chunk.get("data"))
            if str(field_of(chunk, "mimeType") or "").startswith("audio/"):
                self.audio_bytes += size
                self.last_audio = time.monotonic()
        assert self.setup is not None
        if chunks and self.setup.vad and self.audio_bytes:
            self.deadlines["vad"] = self.last_audio + self.state.live.settings.vad_silence_s
        text = field_of(body, "text")
        if isinstance(text, str) and text:
            self.pending.append({"role": "user", "parts": [{"text": text}]})
            await self.answer_turn(text, "TEXT", count_tokens(text))
        if field_of(body, "audioStreamEnd") or field_of(body, "activityEnd") is not None:
            await self.end_audio_turn()

    async def end_audio_turn(self) -> None:
        """The user stopped speaking: transcribe what was heard, then answer it."""
        self.deadlines.pop("vad", None)
        if not self.audio_bytes:
            return
        seconds = self.audio_bytes / (2 * IN_RATE)
        self.audio_bytes = 0
        heard = f"Simulated transcript of {seconds:.2f} s of audio"
        assert self.setup is not None
        if self.setup.input_transcription:
            await self.send({"serverContent": {"inputTranscription": {"text": heard, "finished": True}}})
        self.pending.append({"role": "user", "parts": [{"text": heard}]})
        await self.answer_turn(heard, "AUDIO", max(1, round(seconds * AUDIO_TOKENS_PER_S)))

    async def tool_response(self, body: dict[str, Any]) -> None:
        responses = field_of(body, "functionResponses")
        if not isinstance(responses, list) or not responses:
            raise invalid()
        ids = [r.get("id") for r in responses if isinstance(r, dict)]
        if not ids or any(not isinstance(i, str) or i not in self.tool_calls for i in ids):
            raise invalid()
        for i in ids:
            self.tool_calls.pop(str(i), None)
        result = orjson.dumps([r.get("response") for r in responses]).decode()
        earlier = self.context_tokens()
        self.session.remember({"role": "user", "parts": [{"functionResponse": r} for r in responses]})
        if not self.tool_calls:
            await self.answer(answer_for(result), "TEXT", count_tokens(result), earlier)

    async def answer_turn(self, prompt: str, modality: str, tokens: int) -> None:
        """Answer the user's turn: a tool call when the prompt asks for a declared function, else the answer."""
        assert self.setup is not None
        earlier = self.context_tokens()
        self.session.remember(*self.pending)
        self.pending = []
        call = gemini_function_call(
            {"tools": self.setup.tools, "contents": [{"role": "user", "parts": [{"text": prompt}]}]}, prompt
        )
        if call is None:
            await self.answer(answer_for(prompt), modality, tokens, earlier)
            return
        call_id = "fc-" + random_id(8)
        self.tool_calls[call_id] = call["name"]
        self.admit_tokens(tokens + earlier)
        self.session.remember({"role": "model", "parts": [{"functionCall": {**call, "id": call_id}}]})
        await self.send({"toolCall": {"functionCalls": [{"id": call_id, **call}]}})

    def context_tokens(self) -> int:
        """Tokens of the conversation so far (what a turn's prompt carries besides the new input)."""
        text = " ".join(parts_text(c.get("parts")) for c in self.session.history)
        return count_tokens(text) if text.strip() else 0

    def admit_tokens(self, tokens: int) -> None:
        """Count a generation's input (context included) against the project's quota; 1011 when it is spent."""
        assert self.setup is not None
        if self.state.quotas.admit(self.session.project, self.setup.model, tokens) is not None:
            raise Closing(1011, QUOTA_MESSAGE)

    async def answer(self, text: str, modality: str, tokens: int, history: int) -> None:
        """The model's turn: text parts, or audio chunks (with their transcription), then the turn's usage."""
        assert self.setup is not None
        self.admit_tokens(tokens + history)
        self.session.turns += 1
        self.session.remember({"role": "model", "parts": [{"text": text}]})
        pieces = max(1, self.state.default_chunks)
        delay = (
            self.state.default_chunk_delay_s if self.behaviour.chunk_delay_s is None else self.behaviour.chunk_delay_s
        )
        if self.setup.audio_out:
            chunk = b64encode(bytes(int(OUT_RATE * OUT_CHUNK_S) * 2)).decode()
            for i in range(pieces):
                if i and delay:
                    await asyncio.sleep(delay)
                part = {"inlineData": {"mimeType": OUT_MIME, "data": chunk}}
                await self.send({"serverContent": {"modelTurn": {"role": "model", "parts": [part]}}})
            if self.setup.output_transcription:
                await self.send({"serverContent": {"outputTranscription": {"text": text, "finished": True}}})
            out_tokens, out_modality = max(1, round(pieces * OUT_CHUNK_S * AUDIO_TOKENS_PER_S)), "AUDIO"
        else:
            size = -(-len(text) // pieces)
            for i, start in enumerate(range(0, len(text), size)):
                if i and delay:
                    await asyncio.sleep(delay)
                piece = {"text": text[start : start + size]}
                await self.send({"serverContent": {"modelTurn": {"role": "model", "parts": [piece]}}})
            out_tokens, out_modality = count_tokens(text), "TEXT"
        await self.send({"serverContent": {"generationComplete": True}})
        prompt_tokens = tokens + history
        details: list[dict[str, Any]] = [{"modality": modality, "tokenCount": tokens}]
        if history:
            details.append({"modality": "TEXT", "tokenCount": history})
        usage = {
            "promptTokenCount": prompt_tokens,
            "responseTokenCount": out_tokens,
            "totalTokenCount": prompt_tokens + out_tokens,
            "promptTokensDetails": details,
            "responseTokensDetails": [{"modality": out_modality, "tokenCount": out_tokens}],
        }
        await self.send({"serverContent": {"turnComplete": True}, "usageMetadata": usage})
        if self.setup.resumption:
            handle = self.state.live.issue_handle(self.session)
            await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def query_refusal(request: web.Request) -> Closing | None:
    """Google binds every query parameter to the request message: only `key` (and `access_token`) exist."""
    for name in request.query:
        if name not in ("key", "access_token"):
            return invalid(
                f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter.'
                f" Field '{name}' could not be found in request."
            )
    return None


def credential_refusal(found: list[str], request: web.Request) -> Closing | None:
    """No key (1008), several (1007), or an OAuth-style credential this path does not take (1008)."""
    if not found:
        return Closing(1008, UNREGISTERED_MESSAGE)
    if len(found) > 1:
        return invalid(MULTIPLE_CREDENTIALS_MESSAGE)
    if "access_token" in request.query or "Authorization" in request.headers:
        return Closing(1008, UNAUTHENTICATED_MESSAGE)
    if found[0].startswith("auth_tokens/"):  # an ephemeral token on the key path (LIVE_API_NOTES.md 4.1)
        return invalid(INVALID_KEY_MESSAGE)
    return None


def token_credential(request: web.Request) -> tuple[str, Closing | None]:
    """The Constrained path's credential: `?access_token=` (JS) or `Authorization: Token` (Python, which sends the
    same string in `x-goog-api-key` too); (token name, refusal)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    authorization = value.strip() if scheme == "Token" else request.headers.get("Authorization")
    carried = (request.query.get("access_token"), authorization, request.headers.get("x-goog-api-key"))
    found = {c for c in (*carried, request.query.get("key")) if c}
    if not found:
        return "", Closing(1008, UNREGISTERED_MESSAGE)
    if len(found) > 1:
        return "", invalid(MULTIPLE_CREDENTIALS_MESSAGE)
    return found.pop(), None


async def bidi_generate_content(request: web.Request) -> web.StreamResponse:
    """`GET .../GenerativeService.BidiGenerateContent` with an upgrade: one Live session."""
    state = request.app[SIMULATOR_STATE]
    version = request.match_info["version"]
    if version not in state.live.settings.versions:
        return await unknown_path(request)
    record(request, b"", None)
    found = credentials(request)
    key = found[0] if found else ""
    token: EphemeralToken | None = None
    refused = query_refusal(request)
    if request.match_info["method"].endswith("Constrained"):
        name, refused_token = token_credential(request)
        token = state.live.token(name)
        refused = refused or refused_token or (Closing(1008, UNAUTHENTICATED_MESSAGE) if token is None else None)
        key = token.key if token is not None else ""
    else:
        refused = refused or credential_refusal(found, request)
    status = state.live.settings.reject_upgrade.get(key)
    if status:
        error = SimError(status, CANONICAL_STATUS.get(status, "UNKNOWN"), INVALID_KEY_MESSAGE)
        return error_response(error, "native")
    limit = state.live.settings.max_frame_bytes
    ws = web.WebSocketResponse(max_msg_size=2 * limit + 1024, autoping=True)
    await ws.prepare(request)
    session = state.live.start(key, state.project_of(key) if key else "", request.path, version)
    conversation = Conversation(ws, request, state, session, token=token)
    session.interrupt = conversation.interrupt
    code: int | None = None
    reason = ""
    try:
        if refused is not None:
            raise refused
        await conversation.open()
        await conversation.run()
        code = ws.close_code
        if conversation.commanded is not None:
            code, reason = conversation.commanded.code or 1006, cut_reason(conversation.commanded.reason)
    except Closing as closing:
        code, reason = closing.code, cut_reason(closing.reason)
        if code is None:
            if request.transport is not None:
                request.transport.abort()  # no close frame: the client sees 1006
            code = 1006
        else:
            await ws.close(code=code, message=reason.encode())
    except ConnectionError:  # the client went away while a frame was being sent
        code = ws.close_code or 1006
    finally:
        session.interrupt = None
        state.live.end(session, code, reason)
    return ws


def _time(data: dict[str, Any], name: str, default: float, now: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise invalid_argument(f"Invalid value at '{name}' (type.googleapis.com/google.protobuf.Timestamp)") from None
    if not now < at <= now + TOKEN_MAX_LIFE_S:
        raise invalid_argument(f"{name} must be in the future and less than 20 hours from now.")
    return at


@endpoint("native")
async def create_auth_token(request: web.Request) -> web.StreamResponse:
    """`POST /v1alpha/auth_tokens` with a key: an ephemeral `auth_tokens/...` for the Constrained Live path
    (`bidiGenerateContentSetup` locked: its fields override the client's setup; `fieldMask` is not read)."""
    body = await request.read()
    data = parse_json_object(body)
    call = await admit(request, "native", None, body)
    now = time.time()
    expires = _time(data, "expireTime", now + TOKEN_LIFE_S, now)
    new_sessions_until = _time(data, "newSessionExpireTime", min(expires, now + TOKEN_NEW_SESSION_S), now)
    uses = data.get("uses", 1)
    setup = data.get("bidiGenerateContentSetup") or {}
    if isinstance(uses, bool) or not isinstance(uses, int) or uses < 0 or not isinstance(setup, dict):
        raise invalid_argument(INVALID_ARGUMENT)
    name = call.state.live.mint(call.key, expires, new_sessions_until, uses, setup)
    return json_response(
        {"name": name, "expireTime": rfc3339(expires), "newSessionExpireTime": rfc3339(new_sessions_until)}
    )


def add_routes(app: web.Application) -> None:
    """Register the Live path (before the simulator's catch-all) and ephemeral-token minting."""
    app.router.add_get(PATH, bidi_generate_content)
    for version in ("v1alpha", "v1beta"):
        app.router.add_post(f"/{version}/auth_tokens", create_auth_token)
