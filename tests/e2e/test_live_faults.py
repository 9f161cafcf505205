"""A killed edge's Live session leases return within their TTL (issue 20, acceptance): an edge started as its
container starts it (``python -m services.edge``), a session open through it, then SIGKILL. Nothing releases the
lease: the keyring replica reclaims it when its session TTL runs out unrenewed, and counts the session as a call of
unknown outcome (it may have reached Google).
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_auth_key
from services.simulator import start_simulator
from tests.e2e.conftest import eventually
from tests.e2e.test_shutdown import Process, _edge, processes  # noqa: F401
from tests.integration.conftest import StartReplica, make_pool

pytestmark = pytest.mark.etcd
MODEL = "gemini-3.1-flash-live-preview"
WS = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = f'{{"setup": {{"model": "models/{MODEL}", "generationConfig": {{"responseModalities": ["TEXT"]}}}}}}'
TTL_S = 1.5


async def test_a_killed_edges_session_lease_returns_within_its_ttl_as_an_unknown_outcome(
    start_replica: StartReplica,
    processes: list[Process],  # noqa: F811
    tmp_path: Path,
) -> None:
    # The stream grace (15 s by default) is far longer than the TTL: only the session TTL can free it in time.
    replica = await start_replica("live-kill", session_lease_ttl_s=TTL_S)
    await make_pool(replica)
    token = (await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="live"))).token
    sim_runner, sim_url, sim = await start_simulator()
    key = fake_auth_key("live-kill-0")
    sim.set_project(key, "live-kill")
    await replica.admin.AddKeys(pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=key, project="live-kill")]))
    edge, url = await _edge(replica, sim_url, 0.0, 1.0, processes, tmp_path / "edge.log")
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(url + WS, headers={"x-goog-api-key": token}) as ws,
        ):
            await ws.send_str(SETUP)
            assert "setupComplete" in (await ws.receive(timeout=5)).json(), edge.tail()
            assert len(replica.keyring.desk.book) == 1  # the session holds its lease
            edge.kill()  # SIGKILL: no release, no goAway
            killed = time.monotonic()
            await eventually(lambda: len(replica.keyring.desk.book) == 0, TTL_S + 1.0, "lease not reclaimed")
            reclaimed_after = time.monotonic() - killed
        assert reclaimed_after < TTL_S + 1.0
        usage = await replica.admin.GetUsage(pb.GetUsageRequest(pool="main"))
        [pool] = usage.pools
        assert (pool.figures.requests, pool.figures.unknown) == (1, 1)  # one call, outcome unknown
    finally:
        await sim_runner.cleanup()
