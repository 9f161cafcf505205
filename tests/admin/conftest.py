"""Admin service fixtures: a real keyring replica on the session's real etcd, the admin app on port 0.

``api`` records every answer body; at teardown it checks that no upstream
secret a test added (``api.secrets``) appears in any of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from services.admin.app import start_admin
from services.admin.config import AdminSettings
from tests.integration.conftest import Replica, StartReplica, kek, start_replica  # noqa: F401

ADMIN_NAME = "ops"
ADMIN_TOKEN = "ops-token-0123456789abcdef"
OTHER_NAME = "ci"
OTHER_TOKEN = "ci-token-fedcba9876543210"
MAX_BODY = 256 * 1024


@dataclass
class Answer:
    status: int
    body: Any
    text: str
    headers: Any


@dataclass
class Api:
    """A small HTTP client for the admin API that keeps every answer body for the secret check."""

    base_url: str
    session: aiohttp.ClientSession
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    bodies: list[str] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    async def call(self, method: str, path: str, *, json: Any = None, data: Any = None,
                   headers: dict[str, str] | None = None, exempt: bool = False) -> Answer:
        merged = {**self.headers, **(headers or {})}
        async with self.session.request(method, self.base_url + path, json=json, data=data, headers=merged) as response:
            text = await response.text()
            if not exempt:
                self.bodies.append(text)
            body = None
            if response.content_type == "application/json" and text:
                import orjson

                body = orjson.loads(text)
            return Answer(response.status, body, text, response.headers)

    async def get(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Answer:
        return await self.call("POST", path, json=json, **kwargs)

    async def patch(self, path: str, json: Any = None, **kwargs: Any) -> Answer:
        return await self.call("PATCH", path, json=json, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Answer:
        return await self.call("DELETE", path, **kwargs)


@dataclass
class AdminStack:
    replica: Replica
    base_url: str
    settings: AdminSettings


@pytest.fixture
async def replica(start_replica: StartReplica) -> Replica:  # noqa: F811
    return await start_replica()


@pytest.fixture
async def admin(replica: Replica) -> AsyncIterator[AdminStack]:
    settings = AdminSettings(
        keyring_addresses=f"127.0.0.1:{replica.server.port}",
        # ops may export secrets in clear (+export); ci is written the old way (name:token): an operator.
        admin_tokens=f"{ADMIN_NAME}:operator+export:{ADMIN_TOKEN},{OTHER_NAME}:{OTHER_TOKEN}",
        max_body_bytes=MAX_BODY,
        keyring_timeout_s=10,
        # Fuzzing (test_openapi.py) fails many logins, malformed ones included (they count, issue 18): the
        # throttle has its own tests (test_security.py), with their own settings.
        login_max_failures=10_000,
    )
    runner, base_url = await start_admin(settings, host="127.0.0.1", port=0)
    try:
        yield AdminStack(replica, base_url, settings)
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(admin: AdminStack) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        client = Api(admin.base_url, session)
        yield client
    leaked = [secret for secret in client.secrets if any(secret in body for body in client.bodies)]
    assert not leaked, f"{len(leaked)} upstream secrets appeared in admin answers"


async def rpc_pending(replica: Replica, method: str, request: Any) -> bool:
    """True while keyring answers this admin RPC with UNIMPLEMENTED."""
    import grpc

    try:
        await getattr(replica.admin, method)(request, metadata=(("x-keyring-actor", "tests"),))
    except grpc.aio.AioRpcError as error:
        return error.code() is grpc.StatusCode.UNIMPLEMENTED
    return False
