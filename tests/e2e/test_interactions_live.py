"""The Interactions API's live socket (``/{version}/interactions/live``, issue 21) through two edges over two keyring
replicas, keys in three projects, the simulator as Google.

google-genai 3.6 connects to an existing interaction (``client.aio.interactions.connect(id)``, its first frame
``interaction.connect``); it has no call that sends ``interaction.create``, so the create goes through a raw socket
(aiohttp's client) speaking the same events. The official client is changed only in base URL and token: its socket is
``ws://`` for an ``http://`` base URL (``_interactions_websocket._websocket_url``), so the edges' plain listeners serve.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai.interactions import APIWebSocketError

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key
from services.simulator import SimulatorState, start_simulator
from tests.e2e.conftest import eventually, start_edges_crosswise
from tests.integration.conftest import Replica, StartReplica, kek, start_replica  # noqa: F401

MODEL = "gemini-3.8-live"
PROJECTS = ("ilive-a", "ilive-b", "ilive-c")
REVISION = "2026-05-20"
# google-genai warns once that its live interactions are experimental.
pytestmark = pytest.mark.filterwarnings("ignore:Live Interactions usage:UserWarning")


@dataclass
class Pool:
    replicas: list[Replica]
    sim: SimulatorState
    edges: list[str]
    token: str
    keys: dict[str, str]  # key -> project
    http: aiohttp.ClientSession
    sim_url: str

    @property
    def leases_held(self) -> int:
        return sum(len(replica.keyring.desk.book) for replica in self.replicas)

    def socket(self, edge: int, token: str | None = None) -> Any:
        headers = {"x-goog-api-key": token or self.token, "api-revision": REVISION}
        return self.http.ws_connect(
            self.edges[edge].replace("http", "ws", 1) + "/v1/interactions/live", headers=headers
        )


@pytest.fixture
async def pool(start_replica: StartReplica) -> AsyncIterator[Pool]:  # noqa: F811
    replicas = [await start_replica(name) for name in ("ilive-a", "ilive-b")]
    sim_runner, sim_url, sim = await start_simulator()
    keys = {fake_gemini_key(f"ilive-{project}"): project for project in PROJECTS}
    for key, project in keys.items():
        sim.set_project(key, project)
    admin = replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main", strategy=pb.ROUND_ROBIN)))
    await admin.AddKeys(
        pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=k, project=p) for k, p in keys.items()])
    )
    token = (await admin.CreateToken(pb.CreateTokenRequest(pool="main", name="ilive"))).token
    runners, edges = await start_edges_crosswise([replica.address for replica in replicas], sim_url)
    http = aiohttp.ClientSession()
    try:
        for edge in edges:  # both replicas' views know the token before the test starts
            async with http.get(f"{edge}/v1beta/models", headers={"x-goog-api-key": token}) as answer:
                assert answer.status == 200, await answer.text()
        yield Pool(replicas, sim, edges, token, keys, http, sim_url)
    finally:
        await http.close()
        for runner in (*runners, sim_runner):
            await runner.cleanup()


async def _until_closed(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every event the socket gets until its close, and the close's code and reason."""
    events: list[dict[str, Any]] = []
    while (message := await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        events.append(json.loads(message.data))
    return events, ws.close_code, message.extra or ""


async def _usage(replicas: list[Replica]) -> pb.UsageFigures:
    """The pool's usage, every replica's counts in: each GetUsage flushes its replica's counts first."""
    for replica in replicas:
        answer = await replica.admin.GetUsage(pb.GetUsageRequest(pool="main"))
    [row] = answer.pools
    return row.figures


async def test_created_on_one_edge_continued_with_the_official_client_on_the_other(pool: Pool) -> None:
    async with pool.socket(0) as ws:
        await ws.send_str(json.dumps({"event_type": "interaction.create", "model": f"models/{MODEL}"}))
        created = json.loads((await ws.receive(timeout=5)).data)
        assert created["event_type"] == "interaction.created", created
        await ws.send_str(json.dumps({"event_type": "input", "content": [{"type": "text", "text": "Hello there"}]}))
        first: list[dict[str, Any]] = []
        while not first or first[-1]["event_type"] != "step.stop":
            first.append(json.loads((await ws.receive(timeout=5)).data))
        await ws.send_str(json.dumps({"event_type": "interaction.disconnect"}))
        _, code, _ = await _until_closed(ws)
    assert code == 1000
    interaction = created["interaction_id"]
    owner = pool.sim.resources.owner("interactions", interaction)
    # Bound to its key (on the granting replica) before the socket's close reached the client.
    subject = ("main", f"interactions/{interaction}")
    assert any(subject in replica.keyring.cache.view.affinity for replica in pool.replicas)

    # At once on the other edge (no polling: the binding was committed before the first socket's close).
    client = genai.Client(api_key=pool.token, http_options={"base_url": pool.edges[1]})
    try:
        async with client.aio.interactions.connect(interaction) as connection:
            await connection.send("And again")
            turn = []
            async for event in connection.receive():
                turn.append(event)
                if event.event_type == "step.stop":
                    break
            await connection.complete()
            [completed] = [event async for event in connection.receive()]
    finally:
        await client.aio.aclose()
    assert [event.event_type for event in turn][:2] == ["interaction.connected", "step.start"]
    assert completed.event_type == "interaction.completed" and completed.usage is not None
    assert pool.sim.resources.get("interactions", interaction, owner or "").data["status"] == "completed"

    # Both sockets reached Google with a key of the interaction's project, the revision passed on, no client token.
    sockets = [r for r in pool.sim.requests if r.path == "/v1/interactions/live"]
    assert len(sockets) == 2 and all(pool.keys.get(r.key or "") == owner for r in sockets)
    assert all(r.headers.get("api-revision") == REVISION and pool.token not in str(r.headers) for r in sockets)
    assert not any(key in json.dumps(first) for key in pool.keys)
    # Google's scoping, which the binding spares the client: another project's key does not find it.
    stranger = next(key for key, project in pool.keys.items() if project != owner)
    url = pool.sim_url.replace("http", "ws", 1) + "/v1/interactions/live"
    async with pool.http.ws_connect(url, headers={"x-goog-api-key": stranger}) as ws:
        await ws.send_str(json.dumps({"event_type": "interaction.connect", "id": interaction}))
        assert (await _until_closed(ws))[1:] == (1008, f"Interaction {interaction} not found.")
    # One session lease each, released; usage counted once per session from the steps' usage.
    await eventually(lambda: pool.leases_held == 0, 5.0, "a session lease is still held")
    steps = [first[-1]["step_usage"], turn[-1].step_usage.model_dump()]
    tokens = tuple(sum(step[f"total_{kind}_tokens"] for step in steps) for kind in ("input", "output"))
    figures = await _usage(pool.replicas)  # the fixture's two model lists, the two sessions
    assert (figures.requests, figures.errors, figures.input_tokens, figures.output_tokens) == (4, 0, *tokens)


async def test_a_first_frame_that_opens_nothing_is_closed_1007_before_any_lease(pool: Pool) -> None:
    for first in (
        {"setup": {"model": f"models/{MODEL}"}},  # a Live setup: not this socket's
        {"event_type": "input", "content": [{"type": "text", "text": "hi"}]},
        {"event_type": "interaction.create"},  # no model
        {"event_type": "interaction.connect", "id": "../files/x"},
    ):
        async with pool.socket(0) as ws:
            await ws.send_str(json.dumps(first))
            events, code, reason = await _until_closed(ws)
        assert (events, code) == ([], 1007) and reason, first
    # An interaction the pool never made: Google's "not found", nothing sent up.
    async with pool.socket(1) as ws:
        await ws.send_str(json.dumps({"event_type": "interaction.connect", "id": "v1_neverboundhere"}))
        assert (await _until_closed(ws))[1:] == (1008, "Interaction v1_neverboundhere not found.")
    assert pool.leases_held == 0
    assert not [r for r in pool.sim.requests if r.path.endswith("/interactions/live")]


async def test_a_wrong_token_is_refused_before_the_upgrade_with_the_official_client(pool: Pool) -> None:
    client = genai.Client(api_key="kr-not-a-token-of-this-pool", http_options={"base_url": pool.edges[0]})
    try:
        with pytest.raises(APIWebSocketError) as refused:
            async with client.aio.interactions.connect("v1_anything") as connection:
                async for _ in connection.receive():
                    pass
    finally:
        await client.aio.aclose()
    assert refused.value.close_code == 1007
    assert pool.leases_held == 0
    assert not [r for r in pool.sim.requests if r.path.endswith("/interactions/live")]
    async with pool.socket(1, token="auth_tokens/someone-elses") as ws:  # an interaction's token: not ours to serve
        await ws.send_str(json.dumps({"event_type": "interaction.connect", "id": "v1_x"}))
        assert (await _until_closed(ws))[1] == 1008
