"""The whole stack for end-to-end tests: real etcd, a real keyring replica, the
edge on 127.0.0.1:0 and the Gemini simulator as the upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.etcd_server import free_port
from services.devstack.fake_keys import fake_gemini_key
from services.edge.app import start_edge
from services.edge.config import EdgeSettings
from services.edge.https import serve_https
from services.simulator import SimulatorState, start_simulator
from tests.integration.conftest import Replica, StartReplica, kek, start_replica  # noqa: F401

# Models the default pool allows; "gemini-3.1-pro-preview" stays outside, and one unknown
# model is allowed so that its 404 comes from the upstream.
ALLOWED_MODELS = (
    "gemini-3.5-flash",
    "gemini-2.0-flash",
    "text-embedding-004",
    "gemini-embedding-001",
    "gemini-no-such-model",
)


@dataclass
class Stack:
    replica: Replica
    sim: SimulatorState
    sim_url: str
    edge_url: str
    token: str
    token_id: str
    keys: list[str]
    key_ids: dict[str, str] = field(default_factory=dict)  # secret -> key id
    https_url: str | None = None  # with https_cert_file/https_key_file: the edge's https listener (port 0)
    http: aiohttp.ClientSession | None = None

    @property
    def leases_held(self) -> int:
        return len(self.replica.keyring.desk.book)

    async def no_lease_held(self, within_s: float = 2.0) -> None:
        await eventually(lambda: self.leases_held == 0, within_s, "a lease is still held")

    def gemini_headers(self, token: str | None = None) -> dict[str, str]:
        return {"x-goog-api-key": token if token is not None else self.token}

    def bearer_headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token if token is not None else self.token}"}


async def eventually(condition: Callable[[], bool], within_s: float, message: str) -> None:
    """Poll ``condition`` until it holds or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} after {within_s} s")
        await asyncio.sleep(0.01)


MakeStack = Callable[..., Awaitable[Stack]]


async def start_edges_crosswise(
    addresses: Sequence[str], sim_url: str, **edge_settings: Any
) -> tuple[list[web.AppRunner], list[str]]:
    """Two edges over the same replicas, the second asking them in the reverse order (so each replica grants)."""
    runners, edges = [], []
    for order in (addresses, addresses[::-1]):
        settings = {"shutdown_timeout_s": 2.0, **edge_settings}
        runner, url = await start_edge(
            EdgeSettings(keyring_addresses=",".join(order), upstream_base_url=sim_url, **settings),
            host="127.0.0.1",
            port=0,
        )
        runners.append(runner)
        edges.append(url)
    return runners, edges


@pytest.fixture(scope="session")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span of this process goes to memory (the global provider can be set once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


@pytest.fixture
async def make_stack(start_replica: StartReplica) -> AsyncIterator[MakeStack]:  # noqa: F811
    """Build a stack: ``await make_stack(keys=3, allowed_models=..., key_maker=fake_auth_key, **edge_settings)``."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(
        keys: int = 3,
        allowed_models: Sequence[str] = ALLOWED_MODELS,
        pool_policy: pb.Policy | None = None,
        sim_state: SimulatorState | None = None,
        key_maker: Callable[[str], str] = fake_gemini_key,
        **edge_settings: Any,
    ) -> Stack:
        replica = await start_replica()
        sim_runner, sim_url, sim = await start_simulator(state=sim_state)
        runners.append(sim_runner)
        await replica.admin.CreatePool(
            pb.CreatePoolRequest(pool=pb.Pool(name="main", allowed_models=list(allowed_models), policy=pool_policy))
        )
        secrets = [key_maker(f"e2e-{i}") for i in range(keys)]
        added = await replica.admin.AddKeys(
            pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=secret) for secret in secrets])
        )
        assert added.added == keys
        created = await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="e2e"))
        port = free_port()  # known before the start: the edge's upload URLs point at it (EDGE_PUBLIC_BASE_URL)
        settings = EdgeSettings(
            keyring_addresses=f"127.0.0.1:{replica.server.port}",
            upstream_base_url=sim_url,
            **{"shutdown_timeout_s": 2.0, "public_base_url": f"http://127.0.0.1:{port}", **edge_settings},
        )
        edge_runner, edge_url = await start_edge(settings, host="127.0.0.1", port=port)
        runners.insert(0, edge_runner)  # the edge stops before its upstream
        https_url = await serve_https(edge_runner, settings, host="127.0.0.1", port=0)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Stack(
            replica=replica,
            sim=sim,
            sim_url=sim_url,
            edge_url=edge_url,
            https_url=https_url,
            token=created.token,
            token_id=created.info.token_id,
            keys=secrets,
            key_ids={secret: result.key_id for secret, result in zip(secrets, added.results, strict=True)},
            http=http,
        )

    yield make
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def stack(make_stack: MakeStack) -> Stack:
    """Three healthy keys, the default allow-list, default edge settings."""
    return await make_stack()


@pytest.fixture
def http(stack: Stack) -> aiohttp.ClientSession:
    assert stack.http is not None
    return stack.http
