"""What the edge passes back to its client (issue 18, finding 11), through real servers: keyring on etcd, the
edge, the simulator as Google.

- the upstream's answer headers pass by allow-list: ``X-GUploader-UploadID`` (which Google's upload and media
  servers add to every answer) and the upstream's upload URLs never reach the client;
- upload URLs point at ``EDGE_PUBLIC_BASE_URL``, never at the Host a client sends, and an edge serving
  uploads without it refuses to start;
- a 2xx answer, whole or streamed, that carries the leased key reaches the client with the key masked;
- a download is relayed chunk by chunk as the upstream sends it, not held whole first;
- a 403 ``SERVICE_DISABLED``/``BILLING_DISABLED`` (the key's project lacks what the request asked) leaves the
  key healthy, however often a client asks.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common.masking import mask
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.simulator import Behaviour

from .conftest import MakeStack, Stack

REPO = Path(__file__).resolve().parents[2]
MODEL = "gemini-3.5-flash"
VIDEO_MODEL = "veo-3.1-generate-preview"
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
UPSTREAM_ONLY = ("x-guploader-uploadid", "x-goog-upload-control-url", "server-timing")


def _leaky(stack: Stack) -> None:
    """Every key's answers quote the key itself (an upstream or a relay that echoes its credential)."""
    for secret in stack.keys:
        stack.sim.set_sticky(secret, Behaviour(answer_text=f"your key is {secret}, keep it safe"))


async def test_upload_answers_carry_the_public_url_and_no_upstream_upload_header(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=1, allowed_models=())
    assert stack.http is not None
    start = {
        **stack.gemini_headers(),
        "Host": "attacker.example",  # a client's Host never names where upload bytes go
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "4",
        "X-Goog-Upload-Header-Content-Type": "text/plain",
    }
    async with stack.http.post(f"{stack.edge_url}/upload/v1beta/files", json={"file": {}}, headers=start) as resp:
        assert resp.status == 200, await resp.text()
        started = {name.lower() for name in resp.headers}
        upload_url = resp.headers["X-Goog-Upload-URL"]
    assert upload_url.startswith(f"{stack.edge_url}/upload/v1beta/files?upload_id="), upload_url
    assert started.isdisjoint(UPSTREAM_ONLY), started
    finish = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    async with stack.http.post(upload_url, data=b"data", headers=finish) as resp:
        assert resp.status == 200 and resp.headers["X-Goog-Upload-Status"] == "final"
        assert {name.lower() for name in resp.headers}.isdisjoint(UPSTREAM_ONLY), resp.headers
        assert (await resp.json())["file"]["sizeBytes"] == "4"
    await stack.no_lease_held()


async def test_a_whole_answer_and_a_stream_carrying_the_key_reach_the_client_masked(stack: Stack) -> None:
    assert stack.http is not None
    _leaky(stack)
    stack.sim.default_chunks = 1  # one event: a key cut between two events' texts is not looked for (docs)
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    for path in (GENERATE, f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"):
        async with stack.http.post(stack.edge_url + path, json=body, headers=stack.gemini_headers()) as resp:
            assert resp.status == 200
            text = await resp.text()
        assert "your key is " in text, text
        assert not any(secret in text for secret in stack.keys), text
        assert any(f"your key is {mask(secret)}" in text for secret in stack.keys), text
    # the OpenAI dialect's stream too (the key in a Bearer upstream)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with stack.http.post(f"{stack.edge_url}/v1/chat/completions", json=chat, headers=stack.bearer_headers()) as r:
        assert r.status == 200
        text = await r.text()
    assert "your key is " in text and not any(secret in text for secret in stack.keys), text
    await stack.no_lease_held()


async def test_a_download_is_relayed_chunk_by_chunk(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=1, allowed_models=(VIDEO_MODEL,))
    assert stack.http is not None
    headers = stack.gemini_headers()
    url = f"{stack.edge_url}/v1beta/models/{VIDEO_MODEL}:predictLongRunning"
    async with stack.http.post(url, json={"instances": [{"prompt": "a slow cat"}]}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        name = (await resp.json())["name"]
    async with stack.http.get(f"{stack.edge_url}/v1beta/{name}", headers=headers) as resp:
        operation = await resp.json()
    video_uri = operation["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
    file_id = video_uri.split("files/")[1].split(":")[0]
    stack.sim.default_chunks, stack.sim.default_chunk_delay_s = 3, 0.4  # the upstream sends it over 0.8 s
    arrivals: list[float] = []
    received = b""
    download = f"{stack.edge_url}/v1beta/files/{file_id}:download?alt=media"
    async with stack.http.get(download, headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
        assert {name.lower() for name in resp.headers}.isdisjoint(UPSTREAM_ONLY), resp.headers
        async for chunk in resp.content.iter_any():
            arrivals.append(time.monotonic())
            received += chunk
    assert received.startswith(b"\x00\x00\x00\x18ftypmp42") and b"a slow cat" in received
    # the first bytes reached the client while the upstream was still sending (held whole: all at once)
    assert arrivals[-1] - arrivals[0] >= 0.5, arrivals
    await stack.no_lease_held()


@pytest.mark.parametrize("kind", ["service_disabled", "billing_disabled"])
async def test_a_feature_the_project_lacks_leaves_the_key_healthy(make_stack: MakeStack, kind: str) -> None:
    stack = await make_stack(keys=1)
    assert stack.http is not None
    secret = stack.keys[0]
    stack.sim.set_sticky(secret, Behaviour(kind))  # type: ignore[arg-type]
    body = {"contents": [{"parts": [{"text": "a paid feature, please"}]}]}
    for _ in range(4):  # more than the pool's forbidden threshold (3): each would have been a strike
        async with stack.http.post(stack.edge_url + GENERATE, json=body, headers=stack.gemini_headers()) as resp:
            answer = await resp.json()
        assert resp.status == 403 and answer["error"]["details"][0]["reason"] == kind.upper(), answer
        await stack.no_lease_held()
    info = await stack.replica.admin.GetKey(pb.GetKeyRequest(key_id=stack.key_ids[secret]))
    assert info.state == pb.ACTIVE and info.consecutive_failures == 0, info
    stack.sim.set_sticky(secret, None)
    async with stack.http.post(stack.edge_url + GENERATE, json=body, headers=stack.gemini_headers()) as resp:
        assert resp.status == 200  # the key still serves what its project has


async def test_an_edge_serving_uploads_without_a_public_base_url_refuses_to_start() -> None:
    env = {name: value for name, value in os.environ.items() if name != "EDGE_PUBLIC_BASE_URL"}
    env.update({"EDGE_HOST": "127.0.0.1", "EDGE_PORT": "0", "PYTHONPATH": str(REPO)})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.edge", cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode not in (0, None)
    assert b"EDGE_PUBLIC_BASE_URL is required" in stderr, stderr[-2000:]
