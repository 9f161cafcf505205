"""Bad input answered in the caller's dialect, with no lease left behind."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .conftest import MakeStack, Stack

CHAT = "/v1/chat/completions"
GENERATE = "/v1beta/models/gemini-3.5-flash:generateContent"
CHAT_BODY = b'{"model": "gemini-3.5-flash", "messages": [{"role": "user", "content": "hi"}]}'
NATIVE_BODY = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}'
MAX_BODY = 4096
DEEP = b"[" * 600 + b"]" * 600


@dataclass(frozen=True)
class Case:
    dialect: str
    method: str
    path: str
    body: bytes | None
    token: str  # "valid", "missing", "unknown", "revoked"
    status: int


CASES = {
    "openai-malformed-json": Case("openai", "POST", CHAT, b'{"model": "gemini-3.5-flash", ', "valid", 400),
    "gemini-malformed-json": Case("gemini", "POST", GENERATE, b"{contents: nope", "valid", 400),
    "openai-body-not-an-object": Case("openai", "POST", CHAT, b"[1, 2]", "valid", 400),
    "openai-missing-model": Case("openai", "POST", CHAT, b'{"messages": []}', "valid", 400),
    "openai-missing-token": Case("openai", "POST", CHAT, CHAT_BODY, "missing", 401),
    "gemini-missing-token": Case("gemini", "POST", GENERATE, NATIVE_BODY, "missing", 401),
    "openai-unknown-token": Case("openai", "POST", CHAT, CHAT_BODY, "unknown", 401),
    "gemini-unknown-token": Case("gemini", "POST", GENERATE, NATIVE_BODY, "unknown", 401),
    "openai-revoked-token": Case("openai", "POST", CHAT, CHAT_BODY, "revoked", 401),
    "gemini-revoked-token": Case("gemini", "POST", GENERATE, NATIVE_BODY, "revoked", 401),
    "openai-unknown-model": Case(
        "openai", "POST", CHAT, CHAT_BODY.replace(b"gemini-3.5-flash", b"gemini-no-such-model"), "valid", 404
    ),
    "gemini-unknown-model": Case(
        "gemini", "POST", "/v1beta/models/gemini-no-such-model:generateContent", NATIVE_BODY, "valid", 404
    ),
    "gemini-get-unknown-model": Case("gemini", "GET", "/v1beta/models/gemini-no-such-model", None, "valid", 404),
    "gemini-unknown-action": Case(
        "gemini", "POST", "/v1beta/models/gemini-3.5-flash:explode", NATIVE_BODY, "valid", 404
    ),
    "openai-model-not-allowed": Case(
        "openai", "POST", CHAT, CHAT_BODY.replace(b"gemini-3.5-flash", b"gemini-3.1-pro-preview"), "valid", 403
    ),
    "gemini-model-not-allowed": Case(
        "gemini", "POST", "/v1beta/models/gemini-3.1-pro-preview:generateContent", NATIVE_BODY, "valid", 403
    ),
    "openai-oversized-body": Case("openai", "POST", CHAT, b'{"model": "' + b"x" * MAX_BODY + b'"}', "valid", 413),
    "gemini-oversized-body": Case(
        "gemini", "POST", GENERATE, b'{"contents": "' + b"x" * MAX_BODY + b'"}', "valid", 413
    ),
    # issue 18: 600 deep (a 500 with a traceback before: recursion), and a field the edge decides on given twice
    "openai-nested-600-deep": Case("openai", "POST", CHAT, CHAT_BODY[:-1] + b', "x": ' + DEEP + b"}", "valid", 400),
    "gemini-nested-600-deep": Case(
        "gemini", "POST", GENERATE, NATIVE_BODY[:-1] + b', "x": ' + DEEP + b"}", "valid", 400
    ),
    "openai-model-given-twice": Case(
        "openai", "POST", CHAT, CHAT_BODY[:-1] + b', "model": "gemini-3.1-pro-preview"}', "valid", 400
    ),
    "openai-model-given-twice-escaped": Case(
        "openai", "POST", CHAT, CHAT_BODY[:-1] + b', "mod\\u0065l": "gemini-3.1-pro-preview"}', "valid", 400
    ),
    "gemini-contents-given-twice": Case(
        "gemini", "POST", GENERATE, NATIVE_BODY[:-1] + b', "contents": []}', "valid", 400
    ),
    "openai-wrong-method": Case("openai", "PUT", CHAT, CHAT_BODY, "valid", 405),
    "gemini-wrong-method": Case("gemini", "DELETE", "/v1beta/models/gemini-3.5-flash", None, "valid", 405),
    "gemini-unknown-route": Case("gemini", "GET", "/v1beta/corpora", None, "valid", 404),  # tunedModels: a kind
}


@pytest.fixture
async def small_stack(make_stack: MakeStack) -> Stack:
    return await make_stack(max_body_bytes=MAX_BODY)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_bad_input(small_stack: Stack, case: Case) -> None:
    stack = small_stack
    assert stack.http is not None
    token = stack.token
    if case.token == "unknown":
        token = "kr-this-token-does-not-exist"
    elif case.token == "revoked":
        await stack.replica.admin.RevokeToken(pb.RevokeTokenRequest(token_id=stack.token_id))
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if case.token != "missing":
        headers.update(stack.bearer_headers(token) if case.dialect == "openai" else stack.gemini_headers(token))
    async with stack.http.request(case.method, stack.edge_url + case.path, data=case.body, headers=headers) as r:
        assert r.status == case.status, await r.text()
        assert r.headers["Content-Type"].startswith("application/json")
        payload: Any = await r.json()
    error = payload["error"]
    if case.dialect == "openai":
        assert set(error) == {"message", "type", "param", "code"}, payload
        assert isinstance(error["message"], str) and isinstance(error["type"], str)
    else:
        assert {"code", "message", "status"} <= set(error), payload
        assert error["code"] == case.status
    if case.status in (400, 401, 405, 413) or "action" in case.path or "route" in case.path:
        assert stack.sim.requests == []  # refused before any upstream call
    await stack.no_lease_held()
    assert stack.leases_held == 0


@pytest.mark.parametrize(
    "case", [CASES["openai-nested-600-deep"], CASES["gemini-nested-600-deep"]], ids=["openai", "gemini"]
)
async def test_a_deeply_nested_body_is_a_400_without_a_traceback(
    small_stack: Stack, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: a body 600 deep was a 500 and a logged traceback per request (the estimate's recursion)."""
    assert small_stack.http is not None
    headers = small_stack.bearer_headers() if case.dialect == "openai" else small_stack.gemini_headers()
    with caplog.at_level(logging.INFO):
        async with small_stack.http.post(small_stack.edge_url + case.path, data=case.body, headers=headers) as r:
            assert r.status == 400
            payload: Any = await r.json()
    assert "deeper than" in payload["error"]["message"]
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]


async def test_wrong_method_lists_the_allowed_ones(stack: Stack) -> None:
    assert stack.http is not None
    async with stack.http.get(stack.edge_url + CHAT, headers=stack.bearer_headers()) as r:
        assert r.status == 405
        assert "POST" in r.headers["Allow"]
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_keyring_unreachable_is_503(make_stack: MakeStack) -> None:
    stack = await make_stack(keyring_timeout_s=0.5)
    assert stack.http is not None
    async with stack.http.get(stack.edge_url + "/readyz") as r:
        assert r.status == 200
    await stack.replica.stop()
    async with stack.http.post(stack.edge_url + GENERATE, data=NATIVE_BODY, headers=stack.gemini_headers()) as r:
        assert r.status == 503
        assert (await r.json())["error"]["status"] == "UNAVAILABLE"
    async with stack.http.get(stack.edge_url + "/readyz") as r:
        assert r.status == 503
    async with stack.http.get(stack.edge_url + "/healthz") as r:
        assert r.status == 200
