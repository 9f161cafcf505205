"""Issue 11's probes through real servers (real etcd, a real keyring replica, the edge, the simulator).

Each of these failed on the code before the issue:

- malformed paths went upstream with a pool key (now a 400 in the caller's dialect, no lease, no upstream call);
- ``access_token``, ``X-Goog-User-Project`` and friends were forwarded, and the upstream's 401/403 for them
  took keys out and failed over (now they are never forwarded, and a 401/403 that names no key-blaming reason
  blames no key and does not fail over);
- ``?%6Bey=<token>`` authenticated and was forwarded upstream (now one rule: it authenticates, it is never
  forwarded);
- a small gzip body was inflated in the edge's memory before the token was checked (now a 415, nothing read:
  measured on an edge running in its own process);
- a client trickling its request head held the connection as long as it liked (now closed after
  ``head_timeout_s``; admin's twin is tests/admin/test_slow_clients.py).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from yarl import URL

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.simulator import Behaviour

from .conftest import MakeStack, Stack

REPO = Path(__file__).resolve().parents[2]
GENERATE = "/v1beta/models/gemini-3.5-flash:generateContent"
NATIVE_BODY = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}'
CHAT_BODY = b'{"model": "gemini-3.5-flash", "messages": [{"role": "user", "content": "hi"}]}'


# -- a raw HTTP/1.1 client: aiohttp's would normalise the paths under test ---------------------------------


async def raw_request(
    base_url: str, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send ``method target`` exactly as written; (status, lower-cased headers, body)."""
    url = URL(base_url)
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {url.host}:{url.port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        payload = _unchunked(payload)
    return int(status_line.split()[1]), parsed, payload


def _unchunked(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


async def key_states(stack: Stack) -> dict[str, tuple[Any, ...]]:
    """Every key's state, failures, last error and running cooldowns, by key id."""
    states = {}
    for key_id in stack.key_ids.values():
        info = await stack.replica.admin.GetKey(pb.GetKeyRequest(key_id=key_id))
        cooldowns = tuple(sorted(c.SerializeToString() for c in info.cooldowns))
        states[key_id] = (info.state, info.consecutive_failures, info.last_error.SerializeToString(), cooldowns)
    return states


def assert_shape(dialect: str, status: int, payload: bytes) -> dict[str, Any]:
    error = orjson.loads(payload)["error"]
    if dialect == "openai":
        assert set(error) == {"message", "type", "param", "code"}, error
    else:
        assert {"code", "message", "status"} <= set(error) and error["code"] == status, error
    assert isinstance(error, dict)
    return error


# -- finding 3: raw client paths ---------------------------------------------------------------------------

# (method, raw request-target, dialect of the answer, auth): every variant of the review and its cousins.
MALFORMED = {
    "dot-dot": ("GET", "/v1beta/models/../files", "gemini", "header"),
    "dot-dot-action": ("POST", "/v1beta/models/x/../../files:generateContent", "gemini", "header"),
    "encoded-slashes-openai": ("GET", "/v1/models/..%2F..%2F..%2Fv1beta%2Ffiles", "openai", "bearer"),
    "encoded-slashes-gemini": ("GET", "/v1/models/..%2F..%2F..%2Fv1beta%2Ffiles", "gemini", "header"),
    "encoded-slashes-in-model": (
        "POST",
        "/v1beta/models/gemini-3.5-flash%2F..%2F..%2Ffiles:generateContent",
        "gemini",
        "header",
    ),
    "backslashes": ("GET", "/v1beta/models/..\\..\\files", "gemini", "header"),
    "encoded-backslashes": ("POST", "/v1beta/models/..%5C..%5Cfiles:generateContent", "gemini", "query"),
    "encoded-dots": ("GET", "/v1beta/models/%2e%2e/files", "gemini", "header"),
    "encoded-dots-openai": ("GET", "/v1/models/%2E%2E%2Ffiles", "openai", "bearer"),
    "dot-segment": ("POST", "/v1/models/./gemini-3.5-flash:generateContent", "gemini", "header"),
    "empty-segment": ("GET", "/v1beta/models//files", "gemini", "header"),
    "encoded-model-char": ("POST", "/v1beta/models/gemini%2D3.5-flash:generateContent", "gemini", "header"),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_paths_are_a_400_in_the_callers_dialect_with_no_lease_and_no_upstream_call(
    stack: Stack, case: tuple[str, str, str, str]
) -> None:
    method, target, dialect, auth = case
    before = await key_states(stack)
    headers = {"Content-Type": "application/json"}
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {stack.token}"
    elif auth == "header":
        headers["x-goog-api-key"] = stack.token
    else:
        target += f"?key={stack.token}"
    body = NATIVE_BODY if method == "POST" else b""
    status, _, payload = await raw_request(stack.edge_url, method, target, headers, body)
    assert status == 400, payload
    assert "malformed path" in assert_shape(dialect, status, payload)["message"]
    assert stack.sim.requests == []  # nothing reached the upstream
    assert stack.leases_held == 0
    assert await key_states(stack) == before


async def test_the_upstream_path_is_built_from_the_validated_parts(stack: Stack) -> None:
    headers = {"x-goog-api-key": stack.token, "Content-Type": "application/json"}
    target = "/v1beta/models/models/gemini-3.5-flash:generateContent?alt=json&upload_protocol=raw&$fields=x"
    status, _, _ = await raw_request(stack.edge_url, "POST", target, headers, NATIVE_BODY)
    assert status == 200
    [sent] = stack.sim.requests
    assert sent.path == GENERATE and sent.query == {"alt": "json"}


# -- finding 2: what reaches the upstream, and who is blamed for its 401/403 -----------------------------


async def test_client_credentials_and_billing_headers_never_reach_the_upstream(stack: Stack) -> None:
    before = await key_states(stack)
    headers = {
        "x-goog-api-key": stack.token,
        "Content-Type": "application/json",
        "X-Goog-User-Project": "someone-elses-project",
        "X-HTTP-Method-Override": "DELETE",
        "Referer": "https://blocked.example/",
        "X-Android-Package": "com.example.app",
        "Cookie": "SID=1",
    }
    target = f"{GENERATE}?access_token=garbage&alt=json&upload_protocol=raw"
    status, _, payload = await raw_request(stack.edge_url, "POST", target, headers, NATIVE_BODY)
    assert status == 200, payload
    [sent] = stack.sim.requests  # one upstream call: nothing failed over
    assert sent.query == {"alt": "json"}
    for header in ("x-goog-user-project", "x-http-method-override", "referer", "x-android-package", "cookie"):
        assert header not in sent.headers
    assert "authorization" not in sent.headers and sent.headers["x-goog-api-key"] in stack.keys  # one credential
    assert await key_states(stack) == before


@pytest.mark.parametrize("dialect", ["gemini", "openai"])
@pytest.mark.parametrize("status", [401, 403])
async def test_a_401_or_403_that_blames_no_key_takes_no_key_out_and_does_not_fail_over(
    stack: Stack, dialect: str, status: int
) -> None:
    for key in stack.keys:  # Google's answer to a bad OAuth token or a refused header: no ErrorInfo reason
        stack.sim.set_sticky(key, Behaviour(kind="unauthenticated", status=status))
    before = await key_states(stack)
    if dialect == "gemini":
        headers = {"x-goog-api-key": stack.token, "Content-Type": "application/json"}
        answer = await raw_request(stack.edge_url, "POST", GENERATE, headers, NATIVE_BODY)
    else:
        headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
        answer = await raw_request(stack.edge_url, "POST", "/v1/chat/completions", headers, CHAT_BODY)
    assert answer[0] == status
    assert_shape(dialect, status, answer[2])
    assert len(stack.sim.requests) == 1  # no failover
    await stack.no_lease_held()
    assert await key_states(stack) == before  # no key blamed


@pytest.mark.parametrize("kind", ["token_type_unsupported", "leaked_key", "permission_denied"])
async def test_answers_that_blame_the_key_still_take_it_out_and_fail_over(make_stack: MakeStack, kind: str) -> None:
    stack = await make_stack(keys=2)
    bad, good = stack.keys
    stack.sim.set_sticky(bad, Behaviour(kind=kind))  # type: ignore[arg-type]
    headers = {"x-goog-api-key": stack.token, "Content-Type": "application/json"}
    for _ in range(4):
        status, _, _ = await raw_request(stack.edge_url, "POST", GENERATE, headers, NATIVE_BODY)
        assert status == 200
    assert stack.sim.count(bad) == 1 and stack.sim.count(good) == 4
    await stack.no_lease_held()
    info = await stack.replica.admin.GetKey(pb.GetKeyRequest(key_id=stack.key_ids[bad]))
    assert info.state in (pb.INVALID, pb.SUSPENDED)


# -- the client's key, however spelt -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["%6Bey", "k%65y", "%6b%65%79"])
async def test_a_percent_encoded_key_parameter_authenticates_and_is_never_forwarded(stack: Stack, name: str) -> None:
    target = f"{GENERATE}?{name}={stack.token}&alt=json"
    status, _, payload = await raw_request(
        stack.edge_url, "POST", target, {"Content-Type": "application/json"}, NATIVE_BODY
    )
    assert status == 200, payload
    [sent] = stack.sim.requests
    assert sent.query == {"alt": "json"}
    assert stack.token not in sent.path + repr(sent.query) + repr(sent.headers)


async def test_key_in_capitals_is_not_a_credential_and_is_not_forwarded(stack: Stack) -> None:
    target = f"{GENERATE}?KEY={stack.token}"
    status, _, payload = await raw_request(
        stack.edge_url, "POST", target, {"Content-Type": "application/json"}, NATIVE_BODY
    )
    assert status == 401
    assert_shape("gemini", status, payload)
    assert stack.sim.requests == []


# -- finding 4: what a body may cost -----------------------------------------------------------------------


@functools.cache
def _bomb() -> bytes:
    """A gzip body of ~127 KB that inflates to 128 MiB (deflate cannot do much better than ~1000:1): made once."""
    return gzip.compress(b" " * (128 * 1024 * 1024), 9)


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def _edge_process(stack: Stack) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m services.edge`` against the stack's keyring and simulator; (process, base URL)."""
    env = {
        **os.environ,
        "EDGE_HOST": "127.0.0.1",
        "EDGE_PORT": "0",
        "EDGE_KEYRING_ADDRESSES": f"127.0.0.1:{stack.replica.server.port}",
        "EDGE_UPSTREAM_BASE_URL": stack.sim_url,
        "PYTHONPATH": str(REPO),
    }
    if not env.get("EDGE_KEYRING_TLS_CERT_FILE"):  # the stack's own TLS files when the session has them
        env["EDGE_KEYRING_INSECURE_PLAINTEXT"] = "true"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.edge"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
    if b"edge listening on " not in line:
        process.wait(10)
        assert process.stderr is not None
        raise AssertionError(process.stderr.read().decode()[-3000:])
    return process, line.decode().rsplit(" ", 1)[1].strip()


@pytest.mark.parametrize("dialect", ["gemini", "openai"])
async def test_a_gzip_bomb_is_refused_unread_and_costs_the_edge_under_20_mb(stack: Stack, dialect: str) -> None:
    bomb = _bomb()
    process, edge_url = await _edge_process(stack)
    try:
        # The stack's own token: a wrong one is now refused (401) before the encoding is even looked at
        # (tests/e2e/test_token_before_body.py); a client with a good token must not cost the memory either.
        if dialect == "gemini":
            target, auth = GENERATE, {"x-goog-api-key": stack.token}
        else:
            target, auth = "/v1/chat/completions", {"Authorization": f"Bearer {stack.token}"}
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **auth}
        await raw_request(edge_url, "POST", target, headers, gzip.compress(NATIVE_BODY))  # warm every code path once
        baseline = _peak_rss_kb(process.pid)
        status, _, payload = await raw_request(edge_url, "POST", target, headers, bomb)
        grown_mb = (_peak_rss_kb(process.pid) - baseline) / 1024
        assert grown_mb < 20, f"the edge's peak RSS grew by {grown_mb:.0f} MB ({status}: {payload[:100]!r})"
        assert status == 415, payload
        assert_shape(dialect, status, payload)
    finally:
        process.terminate()
        # Waited for off the event loop: the edge's last words go to the stack's replica, served by this loop.
        await asyncio.to_thread(process.communicate, timeout=10)
    assert stack.sim.requests == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "identity, gzip"])
async def test_compressed_bodies_are_refused_in_the_callers_dialect(stack: Stack, encoding: str) -> None:
    body = gzip.compress(NATIVE_BODY)
    headers = {"x-goog-api-key": stack.token, "Content-Type": "application/json", "Content-Encoding": encoding}
    status, _, payload = await raw_request(stack.edge_url, "POST", GENERATE, headers, body)
    assert status == 415
    assert_shape("gemini", status, payload)
    headers = {
        "Authorization": f"Bearer {stack.token}",
        "Content-Type": "application/json",
        "Content-Encoding": encoding,
    }
    status, _, payload = await raw_request(stack.edge_url, "POST", "/v1/chat/completions", headers, body)
    assert status == 415
    assert_shape("openai", status, payload)
    assert stack.sim.requests == [] and stack.leases_held == 0


async def test_no_body_is_read_without_a_token(make_stack: MakeStack) -> None:
    stack = await make_stack(max_body_bytes=1024)
    big = b'{"contents": "' + b"x" * 4096 + b'"}'
    for target, dialect in ((GENERATE, "gemini"), ("/v1/chat/completions", "openai")):
        status, _, payload = await raw_request(
            stack.edge_url, "POST", target, {"Content-Type": "application/json"}, big
        )
        assert status == 401, payload  # not 413: the body was never looked at
        assert_shape(dialect, status, payload)
    status, _, _ = await raw_request(stack.edge_url, "POST", GENERATE, {"x-goog-api-key": "short"}, big)
    assert status == 401  # a token that cannot be one: refused before the body, without asking keyring
    assert stack.sim.requests == []


async def test_a_body_of_countless_tiny_json_values_is_not_parsed(make_stack: MakeStack) -> None:
    stack = await make_stack(max_json_elements=1000)
    tiny = b'{"model": "gemini-3.5-flash", "messages": [' + b"{}," * 5000 + b'{"role": "user", "content": "hi"}]}'
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
    status, _, payload = await raw_request(stack.edge_url, "POST", "/v1/chat/completions", headers, tiny)
    assert status == 413
    assert_shape("openai", status, payload)
    assert stack.sim.requests == []
    # A Gemini body the edge only forwards is checked by its shape, and the upstream judges the rest.
    native = b'{"contents": [' + b"{}," * 5000 + b'{"role": "user", "parts": [{"text": "hi"}]}]}'
    headers = {"x-goog-api-key": stack.token, "Content-Type": "application/json"}
    status, _, _ = await raw_request(stack.edge_url, "POST", GENERATE, headers, native)
    assert status in (200, 400)
    assert [r.body for r in stack.sim.requests] == [native]


# -- slow clients ------------------------------------------------------------------------------------------


async def trickled_head_lasts(base_url: str, limit_s: float) -> float:
    """Open a connection, trickle a request head one byte at a time, and time how long the server keeps it."""
    url = URL(base_url)
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000

    async def trickle() -> None:
        for byte in head:  # the client's pace is the scenario: a byte every 100 ms
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    try:
        closed = await asyncio.wait_for(reader.read(), limit_s)
        assert closed == b""  # closed without an answer
    except (ConnectionError, TimeoutError):
        if time.monotonic() - started >= limit_s:
            return time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()
    return time.monotonic() - started


async def test_a_slow_request_head_is_cut_after_the_head_timeout(make_stack: MakeStack) -> None:
    stack = await make_stack(head_timeout_s=1.0)
    lasted = await trickled_head_lasts(stack.edge_url, limit_s=5.0)
    assert 0.9 <= lasted < 2.5, f"the connection lasted {lasted:.1f} s"


async def test_a_silent_connection_is_cut_after_the_head_timeout_and_kept_alive_ones_are_not(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(head_timeout_s=1.0, keepalive_timeout_s=30.0)
    url = URL(stack.edge_url)
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5.0) == b""
    assert 0.9 <= time.monotonic() - started < 2.5
    writer.close()
    # A kept-alive connection between two complete requests is idle, not slow: keepalive_timeout_s applies.
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        for request in range(2):
            if request:
                await asyncio.sleep(1.5)  # idle longer than the head timeout (the scenario, not a synchronisation)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 5.0)
            assert status.startswith(b"HTTP/1.1 200"), status
            await asyncio.wait_for(reader.readuntil(b'{"status": "ok"}'), 5.0)
    finally:
        writer.close()
