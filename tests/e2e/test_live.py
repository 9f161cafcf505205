"""The Live API through the edge (issue 20, acceptance): the official google-genai live client, changed only in base
URL (https to the edge, its CA trusted) and token, on a pool of two projects behind two keyring replicas and two
edges, the simulator as Google. Raw sockets (aiohttp's client, on the edges' plain listeners) send the bad input.

Every test ends with no lease held on either replica: a session's lease goes back whichever side ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google import genai
from google.genai import errors, types

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_auth_key
from services.edge.app import start_edge, stop_edge
from services.edge.config import EdgeSettings
from services.edge.context import EDGE
from services.edge.https import serve_https
from services.edge.live.protocol import INVALID_ARGUMENT, UNAUTHENTICATED, cut_reason
from services.simulator import SimulatorState, start_simulator
from services.simulator.live import QUOTA_MESSAGE
from tests.e2e.conftest import eventually
from tests.integration.conftest import Replica, StartReplica, kek, start_replica  # noqa: F401
from tests.pki import Pki

TEXT_MODEL = "gemini-3.1-flash-live-preview"
AUDIO_MODEL = "gemini-3.8-live"
PROJECTS = ("live-a", "live-b")
WS = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
CONSTRAINED = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
ROOT = Path(__file__).resolve().parents[2]
GENAI_JS = ROOT / ".tools/genai-js/node_modules"  # scripts/genai-js.sh
TEXT = types.LiveConnectConfig(response_modalities=[types.Modality.TEXT])
TEXT_SETUP = f'{{"setup": {{"model": "models/{TEXT_MODEL}", "generationConfig": {{"responseModalities": ["TEXT"]}}}}}}'


@dataclass
class Live:
    replicas: list[Replica]
    sim: SimulatorState
    edges: list[str]  # plain http
    https: list[str]
    trust: ssl.SSLContext
    token: str
    projects: dict[str, str]  # key -> project
    http: aiohttp.ClientSession
    sim_url: str
    runners: list[web.AppRunner]
    clients: list[genai.Client] = field(default_factory=list)

    def client(self, edge: int = 0, token: str | None = None, version: str | None = None) -> Any:
        options = types.HttpOptions(
            base_url=self.https[edge] + "/", api_version=version, async_client_args={"ssl": self.trust}
        )
        client = genai.Client(api_key=token or self.token, http_options=options)
        self.clients.append(client)
        return client.aio

    @property
    def leases_held(self) -> int:
        return sum(len(replica.keyring.desk.book) for replica in self.replicas)

    async def no_lease_held(self) -> None:
        await eventually(lambda: self.leases_held == 0, 5.0, "a lease is still held")

    async def raw(self, path: str, first: str | bytes, edge: int = 0) -> tuple[int | None, str]:
        """One raw socket to an edge's plain listener: the first frame sent, the close (code, reason) it gets."""
        async with self.http.ws_connect(self.edges[edge] + path, max_msg_size=0) as ws:
            await (ws.send_str(first) if isinstance(first, str) else ws.send_bytes(first))
            while (message := await ws.receive(timeout=5)).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                pass
            return ws.close_code, message.extra or ""


@pytest.fixture
async def live(start_replica: StartReplica, pki: Pki) -> AsyncIterator[Live]:  # noqa: F811
    # Session leases live 1.5 s unrenewed here (30 s by default): a session past that proves the edge renews.
    replicas = [await start_replica(name, session_lease_ttl_s=1.5) for name in ("live-a", "live-b")]
    sim_runner, sim_url, sim = await start_simulator()
    keys = {fake_auth_key(f"live-{project}-{i}"): project for project in PROJECTS for i in range(2)}
    for key, project in keys.items():
        sim.set_project(key, project)
    admin = replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main", strategy=pb.ROUND_ROBIN)))
    await admin.AddKeys(
        pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=k, project=p) for k, p in keys.items()])
    )
    token = (await admin.CreateToken(pb.CreateTokenRequest(pool="main", name="live"))).token
    addresses = [replica.address for replica in replicas]
    runners: list[web.AppRunner] = []
    edges, https = [], []
    for order in (addresses, addresses[::-1]):
        settings = EdgeSettings(
            keyring_addresses=",".join(order),
            upstream_base_url=sim_url,
            uploads=False,
            shutdown_timeout_s=1.0,
            https_cert_file=pki.https.cert_file,
            https_key_file=pki.https.key_file,
            live_max_frame_bytes=64 * 1024,
        )
        runner, url = await start_edge(settings, host="127.0.0.1", port=0)
        runners.append(runner)
        edges.append(url)
        https.append(await serve_https(runner, settings, host="127.0.0.1", port=0) or "")
    http = aiohttp.ClientSession()
    trust = ssl.create_default_context(cafile=pki.https.ca_file)
    pool = Live(replicas, sim, edges, https, trust, token, keys, http, sim_url, runners)
    try:
        for edge in edges:  # both replicas' views know the token before the tests start
            async with http.get(f"{edge}/v1beta/models", headers={"x-goog-api-key": token}) as answer:
                assert answer.status == 200, await answer.text()
        yield pool
    finally:
        for client in pool.clients:
            await client.aio.aclose()
        await http.close()
        for runner in (*runners, sim_runner):
            await runner.cleanup()


def narrow_known(replica: Replica, pool: str) -> bool:
    """Whether the replica's view has the pool and a token of it (created on another replica)."""
    view = replica.keyring.cache.view
    return pool in view.pools and any(token.pool == pool for token in view.tokens.values())


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


def say(text: str) -> types.Content:
    return types.Content(role="user", parts=[types.Part(text=text)])


async def test_text_audio_and_tool_turns_through_the_edge(live: Live) -> None:
    """google-genai 3.x's defaults (api v1, key in x-goog-api-key, base URL ending in "/": `//ws/...`)."""
    async with live.client().live.connect(model=TEXT_MODEL, config=TEXT) as session:
        await session.send_client_content(turns=say("Hello"))
        messages = await turn(session)
    assert text_of(messages) == "Simulated answer to: Hello"
    assert messages[-1].usage_metadata and messages[-1].usage_metadata.total_token_count

    audio = types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO], output_audio_transcription=types.AudioTranscriptionConfig()
    )
    async with live.client(1).live.connect(model=AUDIO_MODEL, config=audio) as session:
        await session.send_realtime_input(audio=types.Blob(data=bytes(16_000), mime_type="audio/pcm;rate=16000"))
        await session.send_realtime_input(audio_stream_end=True)
        spoken = await turn(session)
    chunks = [
        part.inline_data
        for m in spoken
        if m.server_content and m.server_content.model_turn
        for part in m.server_content.model_turn.parts or []
        if part.inline_data
    ]
    assert chunks and all(blob.mime_type == "audio/pcm;rate=24000" and blob.data for blob in chunks)

    weather = types.FunctionDeclaration(
        name="get_weather",
        parameters=types.Schema(type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}),
    )
    tools = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], tools=[types.Tool(function_declarations=[weather])]
    )
    answered: list[types.LiveServerMessage] = []
    async with live.client(version="v1beta").live.connect(model=TEXT_MODEL, config=tools) as session:
        await session.send_client_content(turns=say("get weather"))
        async for message in session.receive():
            answered.append(message)
            if message.tool_call and message.tool_call.function_calls:
                call = message.tool_call.function_calls[0]
                reply = types.FunctionResponse(id=call.id, name=call.name, response={"result": "sunny"})
                await session.send_tool_response(function_responses=[reply])
    assert text_of(answered) == 'Simulated answer to: [{"result":"sunny"}]'

    sessions = live.sim.live.sessions()
    assert len(sessions) == 3 and all(s.version == "v1beta" and s.key in live.projects for s in sessions)
    # frames kept their type: the SDK's text frames arrived as text
    assert all(s.frames_in["binary"] == 0 and s.frames_in["text"] >= 2 for s in sessions)
    upgrades = [r for r in live.sim.requests if "/ws/" in r.path]
    assert upgrades and all(r.query == {} and r.headers["x-goog-api-key"] in live.projects for r in upgrades)
    assert all(live.token not in str(r.headers) for r in upgrades)  # the client token went nowhere upstream
    await live.no_lease_held()


async def test_resumed_session_lands_on_the_same_key_from_the_other_edge(live: Live) -> None:
    live.sim.live.settings.handle_scope = "key"  # the simulator refuses a handle on any other key
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], session_resumption=types.SessionResumptionConfig()
    )
    async with live.client(0).live.connect(model=TEXT_MODEL, config=config) as session:
        await session.send_client_content(turns=say("Hello there"))
        await turn(session)
        async for update in session.receive():
            assert update.session_resumption_update is not None
            handle = update.session_resumption_update.new_handle
            break
    assert handle
    await live.no_lease_held()  # released, its handle bound
    resume = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], session_resumption=types.SessionResumptionConfig(handle=handle)
    )
    for _ in range(2):  # round robin would otherwise move the second session to another key
        async with live.client(1).live.connect(model=TEXT_MODEL, config=resume) as session:
            await session.send_client_content(turns=say("And then?"))
            assert text_of(await turn(session)) == "Simulated answer to: And then?"
    first, *resumed = live.sim.live.sessions()[::-1]
    assert [s.resumed_from for s in resumed] == [first.id, first.id] and {s.key for s in resumed} == {first.key}

    unknown = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], session_resumption=types.SessionResumptionConfig(handle="nope")
    )
    with pytest.raises(errors.APIError) as refused:
        async with live.client(1).live.connect(model=TEXT_MODEL, config=unknown):
            pass
    assert refused.value.code == 1007 and INVALID_ARGUMENT in str(refused.value)
    assert len(live.sim.live.sessions()) == 3  # refused at the edge: nothing went upstream
    await live.no_lease_held()


async def test_upstream_closes_reach_the_client_and_a_quota_close_cools_the_project(live: Live) -> None:
    refused = list(live.projects)[::2]  # a key of each project refused at the upgrade (HTTP 400): another is tried
    live.sim.live.settings.reject_upgrade = dict.fromkeys(refused, 400)
    for _ in range(3):  # three picks of four keys: a refused one among them
        async with live.client().live.connect(model=TEXT_MODEL, config=TEXT):
            assert live.sim.live.open_sessions()[0].key not in refused
    assert {r.key for r in live.sim.requests if "/ws/" in r.path} & set(refused)  # tried, then another key
    live.sim.live.settings.reject_upgrade = {}
    await live.no_lease_held()
    with pytest.raises(errors.APIError) as quota:
        async with live.client().live.connect(model=TEXT_MODEL, config=TEXT) as session:
            cooled = live.sim.live.open_sessions()[0]
            close = {"key": cooled.key, "code": 1011, "reason": QUOTA_MESSAGE}
            async with live.http.post(f"{live.sim_url}/_sim/live/close", json=close) as answer:
                assert answer.status == 200
            await turn(session)
    assert quota.value.code == 1011 and str(quota.value).endswith(QUOTA_MESSAGE[:123])  # verbatim
    await live.no_lease_held()
    for _ in range(2):  # the quota close cooled that project for the model: both next sessions go to the other
        async with live.client(1).live.connect(model=TEXT_MODEL, config=TEXT) as session:
            await session.send_client_content(turns=say("Hi"))
            await turn(session)
    assert {live.projects[s.key] for s in live.sim.live.sessions()[:2]} == set(PROJECTS) - {live.projects[cooled.key]}

    with pytest.raises(errors.APIError) as cut:  # an abrupt drop upstream: the client is cut too
        async with live.client().live.connect(model=TEXT_MODEL, config=TEXT) as session:
            dropped = live.sim.live.open_sessions()[0]
            async with live.http.post(f"{live.sim_url}/_sim/live/close", json={"key": dropped.key, "drop": True}):
                pass
            await turn(session)
    assert cut.value.code == 1006
    await live.no_lease_held()


async def test_bad_input_gets_googles_close_and_takes_no_lease(live: Live) -> None:
    setup = '{"setup": {"model": "models/%s", "generationConfig": {"responseModalities": ["TEXT"]}}}'
    query = f"?key={live.token}"
    assert await live.raw(WS + query, '{"clientContent": {"turnComplete": true}}') == (1007, INVALID_ARGUMENT)
    assert await live.raw(WS + query, "not json") == (1007, "Invalid JSON payload received. Unexpected token.")
    code, reason = await live.raw(WS + query, setup % "gemini-3.5-flash", edge=1)
    assert (code, reason.startswith("models/gemini-3.5-flash is not found for API version")) == (1008, True)
    code, _ = await live.raw(WS + query, "x" * (64 * 1024 + 1))
    assert code == 1009
    assert await live.raw(WS + "?key=kr-not-a-token-of-this-pool", setup % TEXT_MODEL) == (
        1007,
        "API key not valid. Please pass a valid API key.",
    )
    code, _ = await live.raw(CONSTRAINED + "?access_token=auth_tokens/forged", setup % TEXT_MODEL)
    assert code == 1008
    assert await live.raw(WS + query + "&key=kr-another-token-entirely-000000", setup % TEXT_MODEL) == (
        1007,
        "Multiple authentication credentials received. Please pass only one.",
    )
    admin = live.replicas[0].admin  # a pool whose allow-list leaves the audio model out: Google's words for it
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="text-only", allowed_models=[TEXT_MODEL])))
    await admin.AddKeys(pb.AddKeysRequest(pool="text-only", keys=[pb.KeyInput(secret=fake_auth_key("text-only"))]))
    narrow = (await admin.CreateToken(pb.CreateTokenRequest(pool="text-only", name="narrow"))).token
    await eventually(lambda: all(narrow_known(r, "text-only") for r in live.replicas), 3.0, "pool not seen")
    assert await live.raw(WS + f"?key={narrow}", setup % AUDIO_MODEL) == (
        1008,
        f"models/{AUDIO_MODEL} is not found for API version v1beta, or is not supported for bidiGenerateContent",
    )
    # only the unknown model went upstream (Google's answer about it is the one passed on): nothing else did
    assert [s.close_code for s in live.sim.live.sessions()] == [1008]
    await live.no_lease_held()


@pytest.mark.filterwarnings("ignore::google.genai._common.ExperimentalWarning")
async def test_a_browser_token_minted_by_the_pool_opens_one_session_for_its_model(live: Live) -> None:
    """The backend mints with google-genai's own auth_tokens.create (the edge answers as Google); the browser's
    client, given only that token, takes the Constrained path; the edge redeems it and leases a pool key."""
    minted = await live.client(0, version="v1alpha").auth_tokens.create(
        config=types.CreateAuthTokenConfig(
            uses=1, live_connect_constraints=types.LiveConnectConstraints(model=TEXT_MODEL, config=TEXT)
        )
    )
    assert minted.name and minted.name.startswith("auth_tokens/")
    browser = live.client(1, token=minted.name, version="v1alpha")
    async with browser.live.connect(model=TEXT_MODEL, config=TEXT) as session:
        await session.send_client_content(turns=say("Hi"))
        assert text_of(await turn(session)) == "Simulated answer to: Hi"
    used = live.sim.live.sessions()[0]
    assert used.key in live.projects and used.path.endswith(".BidiGenerateContent")  # a normal session upstream
    assert used.version == "v1beta"  # the Constrained path is v1alpha for the clients; Google serves Live on v1beta
    with pytest.raises(errors.APIError) as again:  # single use
        async with browser.live.connect(model=TEXT_MODEL, config=TEXT):
            pass
    assert again.value.code == 1008

    other = await live.client(0, version="v1alpha").auth_tokens.create(
        config=types.CreateAuthTokenConfig(live_connect_constraints=types.LiveConnectConstraints(model=TEXT_MODEL))
    )
    assert other.name
    with pytest.raises(errors.APIError) as wrong_model:
        async with live.client(0, token=other.name, version="v1alpha").live.connect(model=AUDIO_MODEL):
            pass
    assert wrong_model.value.code == 1008
    mint = f"{live.edges[0]}/v1alpha/auth_tokens"
    soon = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    body = {"bidiGenerateContentSetup": {"model": f"models/{TEXT_MODEL}"}, "newSessionExpireTime": soon}
    async with live.http.post(mint, headers={"x-goog-api-key": live.token}, json=body) as short:
        assert short.status == 200, await short.text()
        expiring = (await short.json())["name"]
    for bad, status in (({"uses": 1}, 400), ({**body, "uses": 11}, 400), ({**body, "uses": True}, 400)):
        async with live.http.post(mint, headers={"x-goog-api-key": live.token}, json=bad) as refused_mint:
            assert (
                refused_mint.status == status and (await refused_mint.json())["error"]["status"] == "INVALID_ARGUMENT"
            )
    async with live.http.post(mint, headers={"x-goog-api-key": "kr-" + "x" * 43}, json=body) as stranger:
        assert stranger.status == 401
    await eventually(lambda: datetime.now(UTC).isoformat() > soon, 2.0, "")  # its redeem window has passed
    assert await live.raw(CONSTRAINED + f"?access_token={expiring}", TEXT_SETUP) == (1008, cut_reason(UNAUTHENTICATED))
    assert len(live.sim.live.sessions()) == 1  # the refused ones never went upstream
    await live.no_lease_held()


async def test_a_project_at_its_session_cap_sends_the_next_session_elsewhere_then_the_pool_refuses(live: Live) -> None:
    admin = live.replicas[0].admin
    policy = pb.Policy(live_sessions_per_project=2)  # split over the two replicas: one each
    await admin.UpdatePool(pb.UpdatePoolRequest(pool=pb.Pool(name="main", policy=policy), update_fields=["policy"]))
    await eventually(
        lambda: all(r.keyring.cache.view.pools["main"].policy.live_sessions_per_project == 2 for r in live.replicas),
        3.0,
        "the policy did not reach both replicas",
    )
    async with contextlib.AsyncExitStack() as sessions:
        for i in range(4):  # each replica's share: one session per project
            await sessions.enter_async_context(live.client(i % 2).live.connect(model=TEXT_MODEL, config=TEXT))
        opened = [live.projects[s.key] for s in live.sim.live.open_sessions()]
        assert sorted(opened) == sorted(PROJECTS * 2)  # a project at its cap passed over for the other
        code, reason = await live.raw(WS + f"?key={live.token}", TEXT_SETUP)
        assert code == 1013 and "session" in reason.lower()  # keyring's reason, readable by a browser
        assert len(live.sim.live.sessions()) == 4  # the refused one never went upstream
    async with live.http.get(f"{live.edges[0]}/metrics") as scraped:
        exposition = await scraped.text()
    assert 'edge_live_sessions_refused_total{reason="LIVE_SESSIONS"} 1.0' in exposition
    assert 'edge_live_closes_total{cause="refused",code="1013"} 1.0' in exposition
    await live.no_lease_held()


async def test_a_long_session_keeps_its_lease_and_the_limits_end_sessions(live: Live) -> None:
    async with live.client().live.connect(model=TEXT_MODEL, config=TEXT) as session:
        (granted,) = leases = [lease for r in live.replicas for lease in r.keyring.desk.book._leases.values()]
        book = next(r.keyring.desk.book for r in live.replicas if len(r.keyring.desk.book))

        def renewed_past_its_ttl() -> bool:
            held = book._leases.get(granted.lease_id)
            return held is not None and held.expires_at > granted.granted_at + 2.0  # its first life was 1.5 s

        await eventually(renewed_past_its_ttl, 5.0, "the session's lease was not renewed past its TTL")
        assert live.leases_held == 1 and leases
        await session.send_client_content(turns=say("Still there?"))
        assert text_of(await turn(session)) == "Simulated answer to: Still there?"
    await live.no_lease_held()

    live.sim.live.settings.connection_s, live.sim.live.settings.go_away_s = 0.5, 0.3
    async with live.http.ws_connect(live.edges[1] + WS, headers={"x-goog-api-key": live.token}) as ws:
        await ws.send_str(TEXT_SETUP)
        frames = [await ws.receive(timeout=5) for _ in range(3)]
    assert [f.type for f in frames] == [aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.CLOSE]
    assert "goAway" in frames[1].json() and ws.close_code == 1008  # Google's goAway and end of life, passed on
    live.sim.live.settings.connection_s = 600.0

    live.runners[0].app[EDGE].settings.live_idle_timeout_s = 0.3
    assert await live.raw(WS + f"?key={live.token}", TEXT_SETUP) == (1008, "The session was idle for too long.")
    await live.no_lease_held()


async def js_turns(
    tmp_path: Path, edge_url: str, token: str, version: str, prompt: str, turns: str = "text"
) -> dict[str, Any]:
    """Live turns with @google/genai in one Node process (tests/e2e/js/live_turn.mjs): what it printed, by turn."""
    script = tmp_path / "live_turn.mjs"
    shutil.copyfile(ROOT / "tests/e2e/js/live_turn.mjs", script)
    if not (tmp_path / "node_modules").exists():
        (tmp_path / "node_modules").symlink_to(GENAI_JS)
    env = {**os.environ, "EDGE_URL": edge_url, "TOKEN": token, "MODEL": TEXT_MODEL, "API_VERSION": version}
    node = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        env={**env, "AUDIO_MODEL": AUDIO_MODEL, "PROMPT": prompt, "TURNS": turns},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(node.communicate(), 20)
    printed: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return printed


@pytest.mark.skipif(
    not GENAI_JS.exists() or shutil.which("node") is None, reason="@google/genai not installed (scripts/genai-js.sh)"
)
async def test_the_js_client_over_its_own_carriers(live: Live, tmp_path: Path) -> None:
    """@google/genai follows the base URL's scheme (plain ws://), sends the token as ?key= (a browser token as
    ?access_token= on the Constrained path), and the path with a double slash: a text turn, an audio turn (its
    realtimeInput frames) and a tool call answered with sendToolResponse, one session each."""
    answered = await js_turns(tmp_path, live.edges[0] + "/", live.token, "v1beta", "Hello from Node", "text,audio,tool")
    done = {"toolCalls": [], "turnComplete": True}
    assert answered["text"] == {"text": "Simulated answer to: Hello from Node", "audio": [], **done}
    spoken = answered["audio"]
    assert spoken["audio"] and set(spoken["audio"]) == {"audio/pcm;rate=24000"}, answered  # audio chunks, no text
    assert {"text": spoken["text"], "toolCalls": spoken["toolCalls"], "turnComplete": spoken["turnComplete"]} == {
        "text": "",
        **done,
    }
    assert answered["tool"] == {
        "text": 'Simulated answer to: [{"result":"sunny"}]',
        "audio": [],
        "toolCalls": ["get_weather"],
        "turnComplete": True,
    }
    async with live.http.post(
        f"{live.edges[1]}/v1alpha/auth_tokens",
        headers={"x-goog-api-key": live.token},
        json={"uses": 1, "bidiGenerateContentSetup": {"model": f"models/{TEXT_MODEL}"}},
    ) as minted:
        assert minted.status == 200, await minted.text()
        browser_token = (await minted.json())["name"]
    answered = await js_turns(tmp_path, live.edges[1], browser_token, "v1alpha", "Hello from a browser")
    assert answered["text"] == {"text": "Simulated answer to: Hello from a browser", "audio": [], **done}
    sessions = live.sim.live.sessions()
    assert [s.path.count("//ws/") for s in sessions] == [0, 0, 0, 0]  # the edge normalises the path
    assert sessions[1].frames_in["text"] >= 3  # setup, the audio chunk and audioStreamEnd reached Google
    upgrades = [r for r in live.sim.requests if "/ws/" in r.path]
    assert len(upgrades) == 4 and all(r.query == {} for r in upgrades)  # neither ?key= nor ?access_token= went up
    await live.no_lease_held()


async def test_an_edge_shutting_down_tells_its_sessions_to_go_away(live: Live) -> None:
    """A rolling restart: Google's goAway first (clients resume on another edge), a 1001 close before the drain's
    end, the lease released; the session's client never sees a cut."""
    runner = live.runners[1]
    settings = runner.app[EDGE].settings
    settings.shutdown_delay_s, settings.shutdown_timeout_s = 0.0, 1.5
    async with live.http.ws_connect(live.edges[1] + WS, headers={"x-goog-api-key": live.token}) as ws:
        await ws.send_str(TEXT_SETUP)
        assert "setupComplete" in (await ws.receive(timeout=5)).json()
        stopping = asyncio.ensure_future(stop_edge(runner, settings))
        go_away = await ws.receive(timeout=5)
        closed = await ws.receive(timeout=5)
    await stopping
    assert go_away.type is aiohttp.WSMsgType.BINARY and go_away.json() == {"goAway": {"timeLeft": "1s"}}
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    await live.no_lease_held()
