"""Issue 11, "authenticate before reading a body", through real servers (etcd, a keyring replica, the edge).

A client whose token is shaped right but is no token of keyring's declares a
10 MB body and sends a few bytes of it: the edge answers 401 in the caller's
dialect at once, with the body unread (on the code before the token check, the
edge waited for the rest of the body until its body timeout). A good token is
checked once and then remembered: its next request makes no check round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from yarl import URL

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.config import EdgeSettings
from services.edge.keyring import KeyringClient

from .conftest import MakeStack
from .test_trust_boundary import CHAT_BODY, GENERATE, NATIVE_BODY, assert_shape, raw_request

WRONG_TOKEN = "kr-wellShapedButNotATokenOfKeyringsAtAll0123456"
DECLARED = 10_000_000
ANSWER_WITHIN_S = 5.0  # far below the body timeout the stack is given


async def body_never_sent(
    base_url: str, target: str, headers: dict[str, str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """POST declaring ``Content-Length: 10000000`` and send a few bytes of it; the connection, left open."""
    url = URL(base_url)
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    lines = [f"POST {target} HTTP/1.1", f"Host: {url.host}:{url.port}", f"Content-Length: {DECLARED}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + b'{"contents": [')
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of the answer on ``reader``, which must come within ``ANSWER_WITHIN_S``."""
    try:
        async with asyncio.timeout(ANSWER_WITHIN_S):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            payload = await reader.readexactly(length)
    except TimeoutError:
        pytest.fail(f"no answer within {ANSWER_WITHIN_S} s: the edge is waiting for a body")
    return int(status_line.split()[1]), payload


async def answer_to_a_body_never_sent(base_url: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST declaring ``Content-Length: 10000000``, send a few bytes of it, and read the answer (bounded wait)."""
    reader, writer = await body_never_sent(base_url, target, headers)
    try:
        return await answer(reader)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("dialect", "target", "auth"),
    [
        ("openai", "/v1/chat/completions", {"Authorization": f"Bearer {WRONG_TOKEN}"}),
        ("gemini", GENERATE, {"x-goog-api-key": WRONG_TOKEN}),
        ("gemini", f"{GENERATE}?key={WRONG_TOKEN}", {}),
    ],
    ids=["openai-chat-completions", "gemini-generate-content", "gemini-key-parameter"],
)
async def test_a_wrong_token_is_a_401_at_once_without_the_body_being_read(
    make_stack: MakeStack, dialect: str, target: str, auth: dict[str, str]
) -> None:
    stack = await make_stack(body_timeout_s=60.0)
    started = time.monotonic()
    status, payload = await answer_to_a_body_never_sent(
        stack.edge_url, target, {"Content-Type": "application/json", **auth}
    )
    assert status == 401, payload
    assert time.monotonic() - started < ANSWER_WITHIN_S
    error = assert_shape(dialect, status, payload)
    if dialect == "openai":
        assert error["code"] == "invalid_api_key"
    else:
        assert error["status"] == "UNAUTHENTICATED"
    assert stack.sim.requests == [] and stack.leases_held == 0


def counting_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every CheckToken round trip a KeyringClient makes (the token hashes asked about), in order."""
    asked: list[str] = []
    real: Callable[[KeyringClient, str], Awaitable[None]] = KeyringClient._check_remote

    async def counting(self: KeyringClient, token_hash: str) -> None:
        asked.append(token_hash)
        await real(self, token_hash)

    monkeypatch.setattr(KeyringClient, "_check_remote", counting)
    return asked


async def test_a_good_token_is_checked_once_then_remembered_and_wrong_ones_every_time(
    make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = await make_stack()
    asked = counting_checks(monkeypatch)
    native: dict[str, Any] = {"x-goog-api-key": stack.token, "Content-Type": "application/json"}
    for _ in range(2):
        status, _, payload = await raw_request(stack.edge_url, "POST", GENERATE, native, NATIVE_BODY)
        assert status == 200, payload
    bearer = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
    status, _, payload = await raw_request(stack.edge_url, "POST", "/v1/chat/completions", bearer, CHAT_BODY)
    assert status == 200, payload
    assert len(asked) == 1  # the first request asked; the next two found the token remembered
    assert len(stack.sim.requests) == 3
    wrong = {"x-goog-api-key": WRONG_TOKEN, "Content-Type": "application/json"}
    for _ in range(2):
        status, _, payload = await raw_request(stack.edge_url, "POST", GENERATE, wrong, NATIVE_BODY)
        assert status == 401
        assert orjson.loads(payload)["error"]["status"] == "UNAUTHENTICATED"
    assert len(asked) == 3  # a refusal is never remembered: one round trip each, and no body read
    assert len(stack.sim.requests) == 3


@pytest.mark.parametrize(
    ("dialect", "target", "body"),
    [("openai", "/v1/chat/completions", CHAT_BODY), ("gemini", GENERATE, NATIVE_BODY)],
    ids=["openai", "gemini"],
)
async def test_a_token_whose_bodies_never_come_stalls_only_itself(
    make_stack: MakeStack, dialect: str, target: str, body: bytes
) -> None:
    """Issue 18, finding 8: token A fills its body-read slots (and more) with bodies that never come; token B's
    POST is answered at once, A's reads past its slots are a 429 in the dialect at once (before: four slots
    for the whole edge, held by A until the body timeout, and B waited for one). A's own body that came whole
    is answered too: it waits for nothing, so it takes no slot (issue 23: before, a 429)."""
    stack = await make_stack(body_timeout_s=60.0)
    other = await stack.replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="tenant-b"))

    def auth(token: str) -> dict[str, str]:
        scheme = {"Authorization": f"Bearer {token}"} if dialect == "openai" else {"x-goog-api-key": token}
        return {"Content-Type": "application/json", **scheme}

    per_token, old_slots = EdgeSettings.model_fields["max_bodies_per_token"].default, 4
    opened = [await body_never_sent(stack.edge_url, target, auth(stack.token)) for _ in range(per_token + old_slots)]
    waiting = [asyncio.create_task(answer(reader)) for reader, _ in opened]
    try:
        refused = []  # A's reads past its slots (whichever of its connections came last) are answered at once
        for answered in asyncio.as_completed(waiting, timeout=ANSWER_WITHIN_S):
            refused.append(await answered)
            if len(refused) == old_slots:
                break
        for status, payload in refused:
            assert status == 429, payload
            error = assert_shape(dialect, status, payload)
            assert error.get("code") == "rate_limit_exceeded" or error.get("status") == "RESOURCE_EXHAUSTED"
        started = time.monotonic()  # A still holds its slots, with bodies that never come
        status, _, payload = await raw_request(stack.edge_url, "POST", target, auth(other.token), body)
        assert status == 200, payload
        assert time.monotonic() - started < ANSWER_WITHIN_S
        # A body that came whole with its head waits for nothing: it takes no slot, even A's (issue 23).
        status, _, payload = await raw_request(stack.edge_url, "POST", target, auth(stack.token), body)
        assert status == 200, payload
        assert sum(not task.done() for task in waiting) == per_token
    finally:
        for task in waiting:
            task.cancel()
        for _, writer in opened:
            writer.close()
    assert len(stack.sim.requests) == 2
