"""The simulator speaks the Live API to the official google-genai client, over TLS as that client requires.

google-genai opens Live sessions with wss:// whatever the base URL says (LIVE_API_NOTES.md section 1.1), so the
simulator gets a TLS listener with the session's https certificate and the client trusts its CA
(``async_client_args={"ssl": ...}``). The base URL ends in ``/``, so the path arrives as ``//ws/...``, as from
Google's own default. Raw frames (bad input) go through aiohttp's client on the plain listener.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, types

from services.simulator import Behaviour, SimulatorState, start_simulator
from services.simulator.app import add_tls_listener
from services.simulator.live import QUOTA_MESSAGE
from tests.pki import Pki

TEXT_MODEL = "gemini-3.1-flash-live-preview"
AUDIO_MODEL = "gemini-3.8-live"
WS_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
TEXT_SETUP = {"setup": {"model": f"models/{TEXT_MODEL}", "generationConfig": {"responseModalities": ["TEXT"]}}}


@dataclass
class Sim:
    state: SimulatorState
    url: str
    https_url: str
    ssl: ssl.SSLContext
    http: aiohttp.ClientSession

    def client(self, key: str = "key-a", version: str = "v1beta") -> genai.Client:
        options = types.HttpOptions(
            base_url=self.https_url + "/", api_version=version, async_client_args={"ssl": self.ssl}
        )
        return genai.Client(api_key=key, http_options=options)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.url + path, json=body) as answer:
            assert answer.status == 200, await answer.text()
            result: dict[str, Any] = await answer.json()
            return result

    async def raw(self, frame: str | bytes, query: str = "?key=key-a") -> aiohttp.WSMessage:
        """Send one frame on a raw socket; the server's answer (or close)."""
        async with self.http.ws_connect(self.url + WS_PATH + query) as ws:
            await (ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame))
            return await ws.receive(timeout=5)


@pytest.fixture
async def sim(pki: Pki) -> AsyncIterator[Sim]:
    runner, url, state = await start_simulator()
    https_url = await add_tls_listener(runner, "127.0.0.1", 0, pki.https.cert_file, pki.https.key_file)
    async with aiohttp.ClientSession() as http:
        yield Sim(state, url, https_url, ssl.create_default_context(cafile=pki.https.ca_file), http)
    await runner.cleanup()


async def eventually(condition: Callable[[], bool], within_s: float, message: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.01)


async def turn(session: Any) -> list[types.LiveServerMessage]:
    return [message async for message in session.receive()]


def text_of(messages: list[types.LiveServerMessage]) -> str:
    return "".join(
        part.text
        for m in messages
        if m.server_content and m.server_content.model_turn
        for part in m.server_content.model_turn.parts or []
        if part.text
    )


async def test_text_turn_over_wss_with_usage(sim: Sim) -> None:
    config = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])
    async with sim.client().aio.live.connect(model=TEXT_MODEL, config=config) as session:
        await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="Hello")]))
        messages = await turn(session)
    assert text_of(messages) == "Simulated answer to: Hello"
    last = messages[-1]
    assert last.server_content and last.server_content.turn_complete
    assert last.usage_metadata and (last.usage_metadata.prompt_token_count, last.usage_metadata.total_token_count) == (
        2,
        9,
    )
    listed = sim.state.live.sessions()[0]
    assert listed.path.startswith("//ws/") and listed.frames_in["text"] == 2 and not listed.open
    assert sim.state.requests[-1].headers["x-goog-api-key"] == "key-a"


async def test_audio_turn_transcribed(sim: Sim) -> None:
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
    )
    async with sim.client().aio.live.connect(model=AUDIO_MODEL, config=config) as session:
        await session.send_realtime_input(audio=types.Blob(data=bytes(16_000), mime_type="audio/pcm;rate=16000"))
        await session.send_realtime_input(audio_stream_end=True)
        messages = await turn(session)
    content = [m.server_content for m in messages if m.server_content]
    audio = [p.inline_data for c in content if c.model_turn for p in c.model_turn.parts or [] if p.inline_data]
    assert audio and all(blob.mime_type == "audio/pcm;rate=24000" and blob.data for blob in audio)
    heard = "".join(c.input_transcription.text or "" for c in content if c.input_transcription)
    said = "".join(c.output_transcription.text or "" for c in content if c.output_transcription)
    assert heard == "Simulated transcript of 0.50 s of audio" and said == f"Simulated answer to: {heard}"
    usage = messages[-1].usage_metadata
    assert usage and usage.prompt_tokens_details
    assert (usage.prompt_tokens_details[0].modality, usage.prompt_tokens_details[0].token_count) == ("AUDIO", 12)


async def test_tool_call_and_response(sim: Sim) -> None:
    weather = types.FunctionDeclaration(
        name="get_weather",
        parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}),
    )
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], tools=[types.Tool(function_declarations=[weather])]
    )
    async with sim.client().aio.live.connect(model=TEXT_MODEL, config=config) as session:
        await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="get weather")]))
        calls: list[types.FunctionCall] = []
        messages = []
        async for message in session.receive():
            messages.append(message)
            if message.tool_call and message.tool_call.function_calls:
                calls += message.tool_call.function_calls
                answer = types.FunctionResponse(id=calls[0].id, name=calls[0].name, response={"result": "sunny"})
                await session.send_tool_response(function_responses=[answer])
    assert [call.name for call in calls] == ["get_weather"] and calls[0].id
    assert text_of(messages) == 'Simulated answer to: [{"result":"sunny"}]'


async def test_resumption_same_project_only(sim: Sim) -> None:
    sim.state.set_project("key-a", "p1")
    sim.state.set_project("key-b", "p1")
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], session_resumption=types.SessionResumptionConfig()
    )
    hello = types.Content(role="user", parts=[types.Part(text="Hello there")])
    async with sim.client("key-a").aio.live.connect(model=TEXT_MODEL, config=config) as session:
        await session.send_client_content(turns=hello)
        first = await turn(session)
        async for update in session.receive():  # the handle comes after turnComplete
            assert update.session_resumption_update is not None
            handle = update.session_resumption_update.new_handle
            break
    assert handle and first[-1].usage_metadata
    resume = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], session_resumption=types.SessionResumptionConfig(handle=handle)
    )
    async with sim.client("key-b").aio.live.connect(model=TEXT_MODEL, config=resume) as session:
        await session.send_client_content(turns=hello)
        resumed = await turn(session)
    assert resumed[-1].usage_metadata and first[-1].usage_metadata.prompt_token_count
    assert resumed[-1].usage_metadata.prompt_token_count > first[-1].usage_metadata.prompt_token_count  # history
    assert sim.state.live.sessions(key="key-b")[0].resumed_from == sim.state.live.sessions(key="key-a")[0].id
    with pytest.raises(errors.APIError) as refused:  # another project's key
        async with sim.client("key-c").aio.live.connect(model=TEXT_MODEL, config=resume):
            pass
    assert refused.value.code == 1007
    sim.state.live.expire_handles()  # two hours later
    with pytest.raises(errors.APIError) as expired:
        async with sim.client("key-a").aio.live.connect(model=TEXT_MODEL, config=resume):
            pass
    assert expired.value.code == 1007


@pytest.mark.filterwarnings("ignore::google.genai._common.ExperimentalWarning")
async def test_ephemeral_token_on_the_constrained_path(sim: Sim) -> None:
    """A token minted with a key (the client's auth_tokens.create) opens one session on the Constrained path as that
    key, with the model it locks; a second session with it is refused."""
    config = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])
    minted = await sim.client("key-a", "v1alpha").aio.auth_tokens.create(
        config=types.CreateAuthTokenConfig(
            uses=1, live_connect_constraints=types.LiveConnectConstraints(model=TEXT_MODEL, config=config)
        )
    )
    assert minted.name and minted.name.startswith("auth_tokens/")
    browser = sim.client(minted.name, "v1alpha")
    async with browser.aio.live.connect(model="gemini-other-live", config=config) as session:
        await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="Hi")]))
        assert text_of(await turn(session)) == "Simulated answer to: Hi"
    used = sim.state.live.sessions()[0]
    assert (used.key, used.model) == ("key-a", TEXT_MODEL) and used.path.endswith("BidiGenerateContentConstrained")
    with pytest.raises(errors.APIError) as again:
        async with browser.aio.live.connect(model=TEXT_MODEL, config=config):
            pass
    assert again.value.code == 1008


@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("invalid_key", 1007, "API key not valid. Please pass a valid API key."),
        ("leaked_key", 1008, "Your API key was reported as leaked. Please use another API key."),
        ("server_error", 1011, "Internal error encountered."),
    ],
)
async def test_key_faults_close_at_setup(sim: Sim, kind: str, code: int, reason: str) -> None:
    await sim.post("/_sim/script", {"key": "key-a", "steps": [{"kind": kind}]})
    with pytest.raises(errors.APIError) as closed:
        async with sim.client().aio.live.connect(model=TEXT_MODEL):
            pass
    assert closed.value.code == code and reason in str(closed.value)


async def test_quota_close_after_setup_complete_and_session_cap(sim: Sim) -> None:
    sim.state.set_project("key-a", "p1")
    sim.state.set_project("key-b", "p1")
    await sim.post("/_sim/live", {"quota_close_delay_s": 0.3, "max_sessions_by_project": {"p1": 1}})
    sim.state.script("key-a", Behaviour("rate_limit"))
    config = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])
    async with sim.client("key-a").aio.live.connect(model=TEXT_MODEL, config=config) as session:  # setupComplete
        with pytest.raises(errors.APIError) as quota:  # the project's one slot is taken meanwhile
            async with sim.client("key-b").aio.live.connect(model=TEXT_MODEL, config=config):
                pass
        with pytest.raises(Exception) as later:
            await turn(session)
    assert quota.value.code == 1011 and "Maximum concurrent sessions" in str(quota.value)
    closed = sim.state.live.sessions(key="key-a")[0]
    assert (closed.close_code, closed.close_reason) == (1011, QUOTA_MESSAGE.encode()[:123].decode())
    assert "1011" in str(later.value)


async def test_turn_over_the_project_token_quota_closes_1011(sim: Sim) -> None:
    await sim.post("/_sim/quotas", {"project": sim.state.project_of("key-a"), "model": TEXT_MODEL, "tpm": 3})
    async with sim.http.ws_connect(sim.url + WS_PATH + "?key=key-a") as ws:
        await ws.send_json(TEXT_SETUP)
        assert "setupComplete" in (await ws.receive(timeout=5)).json()
        await ws.send_json(
            {"clientContent": {"turns": [{"parts": [{"text": "a sentence of many tokens"}]}], "turnComplete": True}}
        )
        closed = await ws.receive(timeout=5)
    assert (closed.type, closed.data, closed.extra) == (aiohttp.WSMsgType.CLOSE, 1011, QUOTA_MESSAGE[:123])


async def test_drops_without_close_frame(sim: Sim) -> None:
    sim.state.script("key-a", Behaviour("drop"))
    with pytest.raises(errors.APIError) as dropped:
        async with sim.client().aio.live.connect(model=TEXT_MODEL):
            pass
    assert dropped.value.code == 1006
    async with sim.http.ws_connect(sim.url + WS_PATH + "?key=key-b") as ws:  # on command, mid-session
        await ws.send_json(TEXT_SETUP)
        assert "setupComplete" in (await ws.receive(timeout=5)).json()
        ended = await sim.post("/_sim/live/close", {"key": "key-b", "drop": True})
        assert ended["ended"] == 1
        message = await ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR) and ws.close_code == 1006


async def test_go_away_then_close(sim: Sim) -> None:
    await sim.post("/_sim/live", {"connection_s": 0.3, "go_away_s": 0.2})
    async with sim.http.ws_connect(sim.url + "/" + WS_PATH, headers={"x-goog-api-key": "key-a"}) as ws:
        await ws.send_json(TEXT_SETUP)
        setup = await ws.receive(timeout=5)
        go_away = await ws.receive(timeout=5)
        closed = await ws.receive(timeout=5)
    assert setup.type == aiohttp.WSMsgType.BINARY  # Google's frames are binary
    assert go_away.type == aiohttp.WSMsgType.BINARY and go_away.json()["goAway"]["timeLeft"].endswith("s")
    assert closed.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008


@pytest.mark.parametrize(
    ("frame", "query", "code", "reason"),
    [
        ('{"client_content": {"turn_complete": true}}', "?key=key-a", 1007, "Request contains an invalid argument."),
        (
            '{"setup": {"model": "models/gemini-3.5-flash"}}',
            "?key=key-a",
            1008,
            "models/gemini-3.5-flash is not found for API version v1beta, or is not supported for bidiGenerateContent",
        ),
        ("{", "?key=key-a", 1007, "Invalid JSON payload received. Unexpected token."),
        (
            '{"setup": {}}',
            "?key=key-a&model=x",
            1007,
            'Invalid JSON payload received. Unknown name "model": Cannot bind query parameter.'
            " Field 'model' could not be found in request.",
        ),
    ],
)
async def test_bad_first_frames(sim: Sim, frame: str, query: str, code: int, reason: str) -> None:
    closed = await sim.raw(frame, query)
    assert (closed.type, closed.data, closed.extra) == (aiohttp.WSMsgType.CLOSE, code, reason[:123])
    await eventually(lambda: not sim.state.live.open_sessions(), 2, "a refused session stays open")
    assert not sim.state.live.sessions()[0].admitted


async def test_oversized_frame(sim: Sim) -> None:
    async with sim.http.post(sim.url + "/_sim/live", json={"connection_s": 5, "max_frame_bytes": -1}) as bad:
        assert bad.status == 400 and "max_frame_bytes" in (await bad.json())["error"]
    assert sim.state.live.settings.connection_s == 600  # a bad setting changes nothing
    await sim.post("/_sim/live", {"max_frame_bytes": 1024})
    closed = await sim.raw(b'{"setup": {"model": "' + b"x" * 2000 + b'"}}')
    assert (closed.data, closed.extra) == (1009, "Request payload size exceeds the limit: 1024 bytes.")


async def test_v1_path_served_only_when_enabled(sim: Sim) -> None:
    """google-genai 3.x defaults to v1, which the notes say Google does not serve for Live: a 404 at the upgrade,
    unless a test enables it."""
    v1_path = sim.url + WS_PATH.replace("v1beta", "v1") + "?key=key-a"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await sim.http.ws_connect(v1_path)
    assert refused.value.status == 404
    await sim.post("/_sim/live", {"versions": ["v1", "v1beta"]})
    async with sim.http.ws_connect(v1_path) as ws:
        await ws.send_json(TEXT_SETUP)
        assert "setupComplete" in (await ws.receive(timeout=5)).json()
