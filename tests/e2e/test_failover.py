"""Failover across keys, cooling pools and upstream errors that exhaust the retries."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.simulator import Behaviour

from .conftest import MakeStack, Stack

MODEL = "gemini-3.5-flash"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
NATIVE_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CHAT_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def test_failover_skips_rate_limited_and_invalid_keys(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=20)
    limited, invalid = stack.keys[:5], stack.keys[5:7]
    for key in limited:
        stack.sim.set_sticky(key, Behaviour(kind="rate_limit", retry_delay_s=600))
    for key in invalid:
        stack.sim.set_sticky(key, Behaviour(kind="invalid_key"))
    assert stack.http is not None
    url = stack.edge_url + GENERATE
    for _ in range(500):
        async with stack.http.post(url, json=NATIVE_BODY, headers=stack.gemini_headers()) as r:
            assert r.status == 200, await r.text()
            await r.read()
    for key in invalid:
        assert stack.sim.count(key) == 1  # invalid after one answer: never leased again
    for key in limited:
        assert stack.sim.count(key) <= 1  # cooling for 600 s: not tried again
    healthy = stack.keys[7:]
    assert sum(stack.sim.count(key) for key in healthy) == 500
    assert all(stack.sim.count(key) > 0 for key in healthy)
    await stack.no_lease_held()


@pytest.mark.parametrize("dialect", ["gemini", "openai"])
async def test_all_keys_cooling_gives_429_with_retry_after(make_stack: MakeStack, dialect: str) -> None:
    stack = await make_stack(keys=2)
    stack.sim.set_sticky(stack.keys[0], Behaviour(kind="rate_limit", retry_delay_s=40))
    stack.sim.set_sticky(stack.keys[1], Behaviour(kind="rate_limit", retry_delay_s=90))
    assert stack.http is not None
    for _attempt in range(2):  # first through both keys' 429s, then refused by keyring at once
        status, headers, payload = await _call(stack, dialect)
        assert status == 429
        assert 39 <= int(headers["Retry-After"]) <= 41, headers["Retry-After"]
        _assert_shape(dialect, payload)
    assert stack.sim.count(stack.keys[0]) == 1 and stack.sim.count(stack.keys[1]) == 1
    await stack.no_lease_held()


@pytest.mark.parametrize("dialect", ["gemini", "openai"])
@pytest.mark.parametrize(
    ("kind", "status", "google_status"),
    [
        ("rate_limit", 429, "RESOURCE_EXHAUSTED"),
        ("permission_denied", 403, "PERMISSION_DENIED"),
        ("server_error", 500, "INTERNAL"),
    ],
)
async def test_upstream_error_after_the_last_attempt_reaches_the_client(
    make_stack: MakeStack, dialect: str, kind: str, status: int, google_status: str
) -> None:
    stack = await make_stack(keys=3)
    for key in stack.keys:
        stack.sim.set_sticky(key, Behaviour(kind=kind, retry_delay_s=30))  # type: ignore[arg-type]
    got_status, _, payload = await _call(stack, dialect)
    assert got_status == status
    _assert_shape(dialect, payload)
    if dialect == "gemini":
        assert payload["error"]["status"] == google_status  # Google's own error object
        assert payload["error"]["code"] == status
    else:
        assert payload["error"]["code"] == google_status
    assert sum(stack.sim.count(key) for key in stack.keys) == 3  # max_attempts keys, each once
    await stack.no_lease_held()


async def test_client_errors_are_not_retried(stack: Stack, http: aiohttp.ClientSession) -> None:
    body = {"contents": []}  # the simulator (like Google) answers 400 INVALID_ARGUMENT
    async with http.post(stack.edge_url + GENERATE, json=body, headers=stack.gemini_headers()) as r:
        assert r.status == 400
        assert (await r.json())["error"]["status"] == "INVALID_ARGUMENT"
    assert len(stack.sim.requests) == 1
    await stack.no_lease_held()


async def test_overloaded_then_ok(stack: Stack, http: aiohttp.ClientSession) -> None:
    for key in stack.keys:
        stack.sim.script(key, Behaviour(kind="overloaded"))
    async with http.post(stack.edge_url + GENERATE, json=NATIVE_BODY, headers=stack.gemini_headers()) as r:
        assert r.status == 503  # every key said so: the model is busy for everyone
    async with http.post(stack.edge_url + GENERATE, json=NATIVE_BODY, headers=stack.gemini_headers()) as r:
        assert r.status == 200  # 503 puts no key aside


async def test_dropped_connection_fails_over(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=2)
    stack.sim.script(stack.keys[0], Behaviour(kind="drop"))
    assert stack.http is not None
    for _ in range(2):  # whichever key comes first, the dropped call is retried on the other
        async with stack.http.post(stack.edge_url + GENERATE, json=NATIVE_BODY, headers=stack.gemini_headers()) as r:
            assert r.status == 200
    assert stack.sim.count(stack.keys[0]) == 1 and stack.sim.count(stack.keys[1]) == 2
    await stack.no_lease_held()


async def test_read_timeout_fails_over(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=2, read_timeout_s=0.3)
    stack.sim.script(stack.keys[0], Behaviour(kind="ok", delay_s=5))
    stack.sim.script(stack.keys[1], Behaviour(kind="ok", delay_s=5))
    assert stack.http is not None
    async with stack.http.post(stack.edge_url + GENERATE, json=NATIVE_BODY, headers=stack.gemini_headers()) as r:
        assert r.status == 504
        assert (await r.json())["error"]["status"] == "DEADLINE_EXCEEDED"
    await stack.no_lease_held()


async def _call(stack: Stack, dialect: str) -> tuple[int, Any, Any]:
    assert stack.http is not None
    if dialect == "gemini":
        request = stack.http.post(stack.edge_url + GENERATE, json=NATIVE_BODY, headers=stack.gemini_headers())
    else:
        request = stack.http.post(
            f"{stack.edge_url}/v1/chat/completions", json=CHAT_BODY, headers=stack.bearer_headers()
        )
    async with request as r:
        return r.status, r.headers, await r.json()


def _assert_shape(dialect: str, payload: Any) -> None:
    error = payload["error"]
    if dialect == "gemini":
        assert {"code", "message", "status"} <= set(error)
    else:
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"]


async def test_an_upstream_error_quoting_the_key_reaches_neither_client_nor_keyring(make_stack: MakeStack) -> None:
    """Google quotes the full key in some 403s ("Consumer 'api_key:AIza...' has been suspended")."""
    stack = await make_stack(keys=1, max_attempts=1)
    assert stack.http is not None
    secret = stack.keys[0]
    quoting = f"Permission denied: Consumer 'api_key:{secret}' has been suspended."
    stack.sim.set_sticky(secret, Behaviour(kind="permission_denied", message=quoting))
    for url, headers in (
        (f"{stack.edge_url}{GENERATE}", stack.gemini_headers()),
        (f"{stack.edge_url}/v1/chat/completions", stack.bearer_headers()),
    ):
        body = (
            {"contents": [{"parts": [{"text": "hi"}]}]}
            if "v1beta" in url
            else {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        )
        async with stack.http.post(url, json=body, headers=headers) as answer:
            text = await answer.text()
        assert answer.status in (403, 429) and secret not in text
        if answer.status == 403:
            assert f"{secret[:4]}...{secret[-4:]}" in text  # the message survives, masked
    info = await stack.replica.admin.GetKey(pb.GetKeyRequest(key_id=stack.key_ids[secret]))
    assert info.last_error.http_status == 403 and secret not in info.last_error.message
    assert "api_key:AIza..." in info.last_error.message
