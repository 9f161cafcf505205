"""Project-bound resources through a pool spread over three projects (issue 12, acceptance).

Real servers: etcd, two keyring replicas, two edges (A and B, each talking to
both replicas), the simulator (which scopes every resource to the project of
the key that made it: another project's key gets 403/404, as from Google).
The official google-genai client, changed only in base URL and token, makes
a resource through one edge and uses it through the other. Every test also
checks, from the simulator's request log, that each upstream request naming
a resource went with a key of the resource's project: a wrong-project key
would fail the call (and the check) even when the SDK does not show it.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_auth_key
from services.edge.app import METRICS, start_edge
from services.edge.config import EdgeSettings
from services.keyring.domain.affinity import BindingCaps
from services.simulator import SimulatorState, start_simulator
from services.simulator.state import Behaviour
from tests.e2e.conftest import MakeStack, eventually
from tests.integration.conftest import Replica, StartReplica, kek, start_replica  # noqa: F401

PROJECTS = ("project-a", "project-b", "project-c")
MODEL = "gemini-3.5-flash-lite"
VIDEO_MODEL = "veo-3.1-generate-preview"
UPLOAD_SESSION_KEY = "e2e-upload-session-key"


@dataclass
class Pool:
    replicas: list[Replica]
    sim: SimulatorState
    sim_url: str
    edge_a: str
    edge_b: str
    apps: dict[str, web.Application]
    token: str
    projects: dict[str, str]  # key -> project
    http: aiohttp.ClientSession
    clients: list[genai.Client] = field(default_factory=list)

    def client(self, edge_url: str) -> Any:
        client = genai.Client(api_key=self.token, http_options=types.HttpOptions(base_url=edge_url))
        self.clients.append(client)
        return client.aio

    @property
    def leases_held(self) -> int:
        return sum(len(replica.keyring.desk.book) for replica in self.replicas)

    async def no_lease_held(self) -> None:
        await eventually(lambda: self.leases_held == 0, 3.0, "a lease is still held")

    def projects_naming(self, needle: str) -> set[str]:
        """The projects of the keys of every upstream request whose path, query or body names ``needle``."""
        used = set()
        for recorded in self.sim.requests:
            text = recorded.path + str(recorded.query) + recorded.body.decode("utf-8", "replace")
            if needle in text:
                assert recorded.key is not None, f"{recorded.path} went up without a key"
                used.add(self.projects[recorded.key])
        return used

    def owner(self, kind: str, rid: str) -> str:
        owner = self.sim.resources.owner(kind, rid)
        assert owner is not None, f"{kind}/{rid} does not exist upstream"
        return owner

    def routed(self, edge: str, route: str) -> float:
        registry = self.apps[edge][METRICS].registry
        return sum(
            sample.value
            for metric in registry.collect()
            if metric.name == "edge_requests"
            for sample in metric.samples
            if sample.name == "edge_requests_total" and sample.labels.get("route") == route
        )


@pytest.fixture
async def pool(start_replica: StartReplica) -> AsyncIterator[Pool]:  # noqa: F811
    replicas = [await start_replica("replica-a"), await start_replica("replica-b")]
    sim_runner, sim_url, sim = await start_simulator()
    keys = {fake_auth_key(f"resources-{project}-{i}"): project for project in PROJECTS for i in range(2)}
    for key, project in keys.items():
        sim.set_project(key, project)
    admin = replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
    added = await admin.AddKeys(
        pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=key, project=p) for key, p in keys.items()])
    )
    assert added.added == len(keys)
    token = (await admin.CreateToken(pb.CreateTokenRequest(pool="main", name="resources"))).token
    addresses = [replica.address for replica in replicas]

    def settings(order: list[str], **extra: Any) -> EdgeSettings:
        return EdgeSettings(
            keyring_addresses=",".join(order),
            upstream_base_url=sim_url,
            upload_session_key=UPLOAD_SESSION_KEY,
            shutdown_timeout_s=2.0,
            **extra,
        )

    runner_b, edge_b = await start_edge(settings(addresses[::-1]), host="127.0.0.1", port=0)
    # Edge A hands out upload URLs pointing at edge B (its "public base"): the bytes of an upload started on A
    # go through B, as behind a load balancer that sends them to another replica.
    runner_a, edge_a = await start_edge(settings(addresses, public_base_url=edge_b), host="127.0.0.1", port=0)
    http = aiohttp.ClientSession()
    pool = Pool(replicas, sim, sim_url, edge_a, edge_b, {"a": runner_a.app, "b": runner_b.app}, token, keys, http)
    try:
        # both replicas' views know the token before the tests start
        for edge in (edge_a, edge_b, edge_a, edge_b):
            async with http.get(f"{edge}/v1beta/models", headers={"x-goog-api-key": token}) as resp:
                assert resp.status == 200, await resp.text()
        yield pool
    finally:
        for client in pool.clients:
            await client.aio.aclose()
        await http.close()
        for runner in (runner_a, runner_b, sim_runner):
            await runner.cleanup()


async def refused(code: int, call: Callable[[], Any]) -> Exception:
    """The SDK's error for a refused call (genai APIError or the interactions client's), with its status."""
    with pytest.raises(Exception) as caught:
        await call()
    error = caught.value
    status = getattr(error, "code", None) if isinstance(error, genai_errors.APIError) else None
    status = status or getattr(error, "status_code", None)
    assert status == code, error
    return error


# ---------------------------------------------------------------- interactions


async def test_interactions_across_edges(pool: Pool) -> None:
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    first = await a.interactions.create(model=MODEL, input="Hello there")
    assert first.output_text == "Simulated answer to: Hello there"
    owner = pool.owner("interactions", first.id)
    follow = await b.interactions.create(model=MODEL, input="And then?", previous_interaction_id=first.id)
    assert follow.previous_interaction_id == first.id and follow.output_text == "Simulated answer to: And then?"
    assert pool.owner("interactions", follow.id) == owner  # the follow-up was made in the first one's project
    got = await b.interactions.get(first.id)
    assert got.id == first.id and got.output_text == first.output_text

    stream = await a.interactions.create(model=MODEL, input="Count to three", stream=True)
    events = [event async for event in stream]
    streamed_id = events[0].interaction.id
    assert events[-1].event_type == "interaction.completed"
    # bound before the stream's end reached the client: the other edge finds it at once
    assert (await b.interactions.get(streamed_id)).status == "completed"
    resumed = await b.interactions.get(streamed_id, stream=True, last_event_id=events[3].event_id)
    assert [e.event_id async for e in resumed] == [e.event_id for e in events[4:]]

    pool.sim.job_duration_s = 3600
    background = await b.interactions.create(model=MODEL, input="Think long", background=True)
    assert background.status == "in_progress"
    assert (await a.interactions.cancel(background.id)).status == "cancelled"

    await b.interactions.delete(first.id)
    await refused(404, lambda: a.interactions.get(first.id))  # unbound: the edge's own 404, nothing sent up
    assert pool.projects_naming(first.id) == {owner}
    for rid in (streamed_id, background.id):
        assert pool.projects_naming(rid) == {pool.owner("interactions", rid)}
    assert pool.routed("b", "interactions.create") == 2 and pool.routed("a", "interactions.get") == 1
    await pool.no_lease_held()


# ---------------------------------------------------------------- files


async def test_file_upload_started_on_a_bytes_through_b(pool: Pool) -> None:
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    uploaded = await a.files.upload(file=io.BytesIO(b"hello file"), config={"mime_type": "text/plain"})
    assert uploaded.name and uploaded.size_bytes == 10 and uploaded.state == types.FileState.ACTIVE
    # the start went through A, the bytes through B (A's upload URL points at B)
    assert pool.routed("a", "files.upload") == 1 and pool.routed("b", "files.upload") == 1
    owner = pool.owner("files", uploaded.name.removeprefix("files/"))

    part = types.Part.from_uri(file_uri=uploaded.uri, mime_type="text/plain")
    answer = await b.models.generate_content(model=MODEL, contents=[part, "Summarise"])
    assert answer.text == "Simulated answer to: Summarise"
    got = await b.files.get(name=uploaded.name)
    assert got.size_bytes == 10 and got.mime_type == "text/plain"
    listed = [f.name async for f in await a.files.list(config={"page_size": 1})]
    assert listed == [uploaded.name]
    await a.files.delete(name=uploaded.name)
    await refused(404, lambda: b.files.get(name=uploaded.name))
    assert pool.projects_naming(uploaded.name.removeprefix("files/")) == {owner}
    upload_keys = {r.key for r in pool.sim.requests if r.path.startswith("/upload/")}
    assert {pool.projects[key] for key in upload_keys if key} == {owner}  # the bytes used the session's project
    await pool.no_lease_held()


async def test_lists_merge_every_project(pool: Pool) -> None:
    """Files made in all three projects: the list through the pool shows them all, paged by the edge."""
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    made: list[str] = []
    while {pool.owner("files", name.removeprefix("files/")) for name in made} != set(PROJECTS):
        file = await a.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})
        assert file.name
        made.append(file.name)
        assert len(made) < 40, "the pool never leased a key of some project"
    listed = [f.name async for f in await b.files.list(config={"page_size": 2})]
    assert sorted(listed) == sorted(made) and len(listed) == len(set(listed)), (listed, made)
    async with pool.http.get(
        f"{pool.edge_b}/v1beta/files?pageSize=2&pageToken=nonsense", headers={"x-goog-api-key": pool.token}
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"
    await pool.no_lease_held()


# ---------------------------------------------------------------- caches


async def test_caches_create_generate_update_delete(pool: Pool) -> None:
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    config = types.CreateCachedContentConfig(contents=["A long document " * 20], ttl="600s", display_name="doc")
    cache = await a.caches.create(model=MODEL, config=config)
    assert cache.name and cache.usage_metadata and cache.usage_metadata.total_token_count
    owner = pool.owner("cachedContents", cache.name.removeprefix("cachedContents/"))
    for _ in range(3):  # several calls: a key of another project would be picked sooner or later without affinity
        answer = await b.models.generate_content(
            model=MODEL, contents="Question", config=types.GenerateContentConfig(cached_content=cache.name)
        )
        assert answer.usage_metadata and answer.usage_metadata.cached_content_token_count
    updated = await b.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="7200s"))
    assert updated.expire_time and cache.expire_time and updated.expire_time > cache.expire_time
    assert [c.name async for c in await b.caches.list()] == [cache.name]
    await b.caches.delete(name=cache.name)
    await refused(404, lambda: a.caches.get(name=cache.name))
    await refused(
        404,
        lambda: a.models.generate_content(
            model=MODEL, contents="Q", config=types.GenerateContentConfig(cached_content=cache.name)
        ),
    )
    assert pool.projects_naming(cache.name) == {owner}
    await pool.no_lease_held()


async def test_owner_project_cooling_is_a_429_never_another_projects_key(pool: Pool) -> None:
    a = pool.client(pool.edge_a)
    config = types.CreateCachedContentConfig(contents=["A long document " * 20], ttl="600s")
    cache = await a.caches.create(model=MODEL, config=config)
    assert cache.name
    owner = pool.owner("cachedContents", cache.name.removeprefix("cachedContents/"))
    for key, project in pool.projects.items():
        if project == owner:
            pool.sim.set_sticky(key, Behaviour(kind="rate_limit", retry_delay_s=120))
    body = {"contents": [{"parts": [{"text": "Q"}]}], "cachedContent": cache.name}
    for edge in (pool.edge_a, pool.edge_b):
        async with pool.http.post(
            f"{edge}/v1beta/models/{MODEL}:generateContent", json=body, headers={"x-goog-api-key": pool.token}
        ) as resp:
            answer = await resp.json()
            assert resp.status == 429 and answer["error"]["status"] == "RESOURCE_EXHAUSTED", answer
            assert 0 < float(resp.headers["Retry-After"]) <= 120
    assert pool.projects_naming(cache.name) == {owner}  # every attempt stayed in the cache's project
    # the rest of the pool still serves calls that name nothing
    answer = await a.models.generate_content(model=MODEL, contents="Anyone?")
    assert answer.text == "Simulated answer to: Anyone?"
    await pool.no_lease_held()


# ---------------------------------------------------------------- batches and operations


async def test_batches_inline_create_get_list_cancel_delete(pool: Pool) -> None:
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    src = [{"contents": [{"parts": [{"text": "first"}], "role": "user"}]}, {"contents": [{"parts": [{"text": "2"}]}]}]
    job = await a.batches.create(model=MODEL, src=src, config={"display_name": "nightly"})
    assert job.name and job.state == types.JobState.JOB_STATE_PENDING
    owner = pool.owner("batches", job.name.removeprefix("batches/"))
    done = await b.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.dest and done.dest.inlined_responses
    assert [r.response.text for r in done.dest.inlined_responses if r.response] == [
        "Simulated answer to: first",
        "Simulated answer to: 2",
    ]
    assert [j.name async for j in await a.batches.list()] == [job.name]
    pool.sim.job_duration_s = 3600
    slow = await b.batches.create(model=MODEL, src=src)
    assert slow.name
    await a.batches.cancel(name=slow.name)
    assert (await b.batches.get(name=slow.name)).state == types.JobState.JOB_STATE_CANCELLED
    slow_owner = pool.owner("batches", slow.name.removeprefix("batches/"))
    await a.batches.delete(name=slow.name)
    await refused(404, lambda: b.batches.get(name=slow.name))
    assert pool.projects_naming(job.name) == {owner}
    assert pool.projects_naming(slow.name) == {slow_owner}
    await pool.no_lease_held()


async def test_video_operation_polled_to_completion_and_downloaded(pool: Pool) -> None:
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    pool.sim.job_duration_s = 0.3
    # google-genai 3.6's generate_videos is Vertex-only: started as the REST docs show, polled by the SDK
    url = f"{pool.edge_a}/v1beta/models/{VIDEO_MODEL}:predictLongRunning"
    body = {"instances": [{"prompt": "a cat on a skateboard"}]}
    async with pool.http.post(url, json=body, headers={"x-goog-api-key": pool.token}) as resp:
        assert resp.status == 200, await resp.text()
        started = await resp.json()
    operation = types.GenerateVideosOperation(name=started["name"])
    owner = pool.owner("operations", started["name"].rsplit("/", 1)[-1])
    polls = 0
    while not operation.done:
        await asyncio.sleep(0.05)
        operation = await (b if polls % 2 else a).operations.get(operation)
        polls += 1
    assert operation.response and operation.response.generated_videos
    video = operation.response.generated_videos[0].video
    assert video is not None and video.uri
    data = await b.files.download(file=video)
    assert data.startswith(b"\x00\x00\x00\x18ftypmp42") and b"a cat on a skateboard" in data
    assert pool.projects_naming(started["name"]) == {owner}
    video_id = video.uri.split("files/")[1].split(":")[0]
    assert pool.owner("files", video_id) == owner and pool.projects_naming(video_id) == {owner}
    await pool.no_lease_held()


# ---------------------------------------------------------------- bad input


async def test_bad_input_is_refused_in_the_callers_dialect_with_nothing_changed(pool: Pool) -> None:
    headers = {"x-goog-api-key": pool.token}
    before = len(pool.sim.requests)
    resources_before = len(list(pool.sim.resources))

    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any], Any]:
        async with pool.http.request(method, pool.edge_a + path, **kwargs) as resp:
            return resp.status, dict(resp.headers), await resp.json(content_type=None)

    upload = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    # an unknown (or forged) upload session: 404, and the upload is over for the client
    for upload_id in ("nosuchsession", secrets.token_urlsafe(90)):
        status, answer_headers, answer = await call(
            "POST", f"/upload/v1beta/files?upload_id={upload_id}&upload_protocol=resumable", data=b"x", headers=upload
        )
        assert status == 404 and answer["error"]["status"] == "NOT_FOUND", answer
        assert answer_headers["X-Goog-Upload-Status"] == "final"
    # resource ids of the wrong shape: 400 before any lease
    for method, path in (
        ("GET", "/v1beta/files/UPPER"),
        ("GET", "/v1beta/files/-dash"),
        ("DELETE", "/v1beta/files/" + "a" * 41),
        ("GET", "/v1beta/cachedContents/x%2Fy"),
        ("GET", "/v1beta/interactions/" + "i" * 129),
        ("GET", f"/v1beta/models/{VIDEO_MODEL}/operations/op%2E1"),
    ):
        status, _, answer = await call(method, path, headers=headers)
        assert status in (400, 404) and answer["error"]["code"] == status, (path, answer)
    status, _, answer = await call("GET", "/v1beta/files/UPPER", headers=headers)
    assert status == 400 and "malformed path" in answer["error"]["message"]
    # names nobody made: the edge's 404, nothing sent upstream
    for method, path in (("GET", "/v1beta/files/nosuchfile"), ("DELETE", "/v1/cachedContents/nosuchcache")):
        status, _, answer = await call(method, path, headers=headers)
        assert status == 404 and answer["error"]["status"] == "NOT_FOUND", answer
    interaction = {"model": MODEL, "input": "hi", "previous_interaction_id": "v1_nobodyknowsthisone"}
    status, _, answer = await call("POST", "/v1beta/interactions", json=interaction, headers=headers)
    assert status == 404 and "interactions/v1_nobodyknowsthisone" in answer["error"]["message"]
    status, _, answer = await call(
        "POST", "/v1beta/interactions", json={**interaction, "previous_interaction_id": "bad id!"}, headers=headers
    )
    assert status == 400 and "previous_interaction_id" in answer["error"]["message"]
    generate = {"contents": [{"parts": [{"fileData": {"fileUri": "files/nosuchfile", "mimeType": "text/plain"}}]}]}
    status, _, answer = await call("POST", f"/v1beta/models/{MODEL}:generateContent", json=generate, headers=headers)
    assert status == 404 and "files/nosuchfile" in answer["error"]["message"]
    # oversized uploads: a start declaring more than the limit, and (below) bytes past the declared size
    start = {
        **headers,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(3 * 1024**3),
        "X-Goog-Upload-Header-Content-Type": "text/plain",
    }
    status, _, answer = await call("POST", "/upload/v1beta/files", json={"file": {}}, headers=start)
    assert status == 400 and "too large" in answer["error"]["message"]
    assert len(pool.sim.requests) == before  # nothing above reached the upstream
    async with pool.http.post(
        f"{pool.edge_a}/upload/v1beta/files",
        json={"file": {}},
        headers={**start, "X-Goog-Upload-Header-Content-Length": "4"},
    ) as resp:
        assert resp.status == 200
        upload_url = resp.headers["X-Goog-Upload-URL"]
    assert upload_url.startswith(pool.edge_b + "/upload/v1beta/files?upload_id=")
    async with pool.http.post(upload_url, data=b"toolong", headers=upload) as resp:
        assert resp.status == 400 and resp.headers["X-Goog-Upload-Status"] == "final"
        assert "exceeds the size declared" in (await resp.json())["error"]["message"]
    async with pool.http.post(upload_url.replace("v1beta", "v1"), data=b"data", headers=upload) as resp:
        assert resp.status == 404  # a session of another API version is not this one
    assert len(pool.sim.requests) == before + 1  # only the good start went up
    async with pool.http.post(upload_url, data=b"data", headers=upload) as resp:
        assert resp.status == 200 and (await resp.json())["file"]["sizeBytes"] == "4"  # the session still works
    async with pool.http.post(upload_url, data=b"data", headers=upload) as resp:
        assert resp.status == 404 and resp.headers["X-Goog-Upload-Status"] == "final"  # finished: unbound
    assert len(list(pool.sim.resources)) == resources_before + 1  # the one file, nothing else
    await pool.no_lease_held()


async def test_an_upload_chunk_above_the_body_limit_is_refused_and_the_upload_ends(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=1, allowed_models=(), max_body_bytes=1000)
    assert stack.http is not None
    start = {
        **stack.gemini_headers(),
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "5000",
        "X-Goog-Upload-Header-Content-Type": "text/plain",
    }
    async with stack.http.post(f"{stack.edge_url}/upload/v1beta/files", json={"file": {}}, headers=start) as resp:
        assert resp.status == 200
        upload_url = resp.headers["X-Goog-Upload-URL"]
    assert upload_url.startswith(stack.edge_url)  # EDGE_PUBLIC_BASE_URL: make_stack sets the edge's own address
    sent = len(stack.sim.requests)
    chunk = {"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}
    async with stack.http.post(upload_url, data=b"x" * 2000, headers=chunk) as resp:
        assert resp.status == 413 and resp.headers["X-Goog-Upload-Status"] == "final"
        error = (await resp.json())["error"]
        assert error["code"] == 413 and "too large" in error["message"]
    assert len(stack.sim.requests) == sent
    await stack.no_lease_held()


# ---------------------------------------------------------------- issue 18: tenants isolated

AGENT = "deep-research-pro-preview-12-2025"


async def test_an_agent_needs_an_allow_list_entry_of_its_own(pool: Pool) -> None:
    """Finding 5: an Interactions call with ``agent`` (or ``"model": null``) is judged by the allow-list."""
    headers = {"x-goog-api-key": pool.token}
    before = len(pool.sim.requests)
    for body, status in (
        ({"agent": AGENT, "input": "Research"}, 403),  # an empty allow-list admits every model, no agent
        ({"model": None, "input": "Research"}, 400),
        ({"input": "Research"}, 400),
        ({"model": MODEL, "agent": AGENT, "input": "Research"}, 400),
    ):
        async with pool.http.post(f"{pool.edge_a}/v1beta/interactions", json=body, headers=headers) as resp:
            error = (await resp.json())["error"]
            assert resp.status == status and error["code"] == status, (body, error)
    assert "not allowed" in error["message"] or "model and agent" in error["message"]
    assert len(pool.sim.requests) == before  # nothing reached the upstream
    admin = pool.replicas[0].admin
    allowed = pb.Pool(name="main", allowed_models=[MODEL, f"agents/{AGENT}"])
    await admin.UpdatePool(pb.UpdatePoolRequest(pool=allowed, update_fields=["allowed_models"]))
    for replica in pool.replicas:
        await eventually(lambda r=replica: r.keyring.cache.view.pools["main"].allowed_models != (), 3.0, "no update")
    a = pool.client(pool.edge_a)
    done = await a.interactions.create(agent=AGENT, input="Research")
    assert done.id and done.output_text == "Simulated answer to: Research"
    assert (await pool.client(pool.edge_b).interactions.get(done.id)).id == done.id  # bound like any interaction
    await pool.no_lease_held()


async def test_escaped_names_go_to_the_files_project_and_unparsable_ones_are_refused(pool: Pool) -> None:
    """Finding 7: ``"file\\u0055ri"`` and ``"files\\/id"`` name the file as Google reads them."""
    a = pool.client(pool.edge_a)
    uploaded = await a.files.upload(file=io.BytesIO(b"hello file"), config={"mime_type": "text/plain"})
    assert uploaded.name
    file_id = uploaded.name.removeprefix("files/")
    owner = pool.owner("files", file_id)
    headers = {"x-goog-api-key": pool.token, "content-type": "application/json"}
    url = f"{pool.edge_b}/v1beta/models/{MODEL}:generateContent"
    spellings = (
        rb'"file\u0055ri": "files/' + file_id.encode() + b'"',
        rb'"fileUri": "files\/' + file_id.encode() + b'"',
    )
    for spelling in spellings * 3:  # a random key of another project would be picked sooner or later
        body = (
            b'{"contents": [{"parts": [{"fileData": {' + spelling + b', "mimeType": "text/plain"}}, {"text": "Q"}]}]}'
        )
        async with pool.http.post(url, data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
    assert pool.projects_naming(file_id) == {owner}
    sent = len(pool.sim.requests)
    padding = b"[" + b"0," * 200_000 + b"0]"  # over EDGE_MAX_JSON_ELEMENTS: not parsed
    body = b'{"contents": [{"parts": [{"fileData": {' + spellings[0] + b'}}]}], "padding": ' + padding + b"}"
    async with pool.http.post(url, data=body, headers=headers) as resp:
        error = (await resp.json())["error"]
        assert resp.status == 413 and error["code"] == 413 and "parse budget" in error["message"], error
    assert len(pool.sim.requests) == sent
    await pool.no_lease_held()


async def test_a_project_of_one_pool_is_refused_to_another(pool: Pool) -> None:
    """Finding 7: a key whose project another pool uses cannot join it, so no pool lists another's files."""
    admin = pool.replicas[1].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="second")))
    shared = pb.KeyInput(secret=fake_auth_key("second-shared"), project=PROJECTS[0])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.AddKeys(pb.AddKeysRequest(pool="second", keys=[shared]))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"project {PROJECTS[0]!r} is used by pool 'main'" in (refused.value.details() or "")
    own = pb.KeyInput(secret=fake_auth_key("second-own"), project="project-second")
    assert (await admin.AddKeys(pb.AddKeysRequest(pool="second", keys=[own]))).added == 1
    assert {key.pool for key in pool.replicas[1].keyring.cache.view.keys.values() if key.project == PROJECTS[0]} == {
        "main"
    }


async def test_bindings_past_the_cap_are_refused_before_the_upstream(pool: Pool) -> None:
    """Finding 6: a token holding its cap of bindings gets a 429 for a create, nothing is made or recorded."""
    for replica in pool.replicas:  # what KEYRING_AFFINITY_MAX_PER_TOKEN sets (tests/unit/test_affinity.py)
        replica.server.keyring.desk.allocator.binding_caps = BindingCaps(per_pool=0, per_token=2)
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    config = types.CreateCachedContentConfig(contents=["A long document " * 20], ttl="600s")
    first = await a.caches.create(model=MODEL, config=config)
    await a.files.upload(file=io.BytesIO(b"x"), config={"mime_type": "text/plain"})  # its session, then its file
    made = len(list(pool.sim.resources))
    headers = {"x-goog-api-key": pool.token}
    upload = {
        **headers,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "1",
    }
    cache = {"model": f"models/{MODEL}", "contents": [{"parts": [{"text": "doc"}]}], "ttl": "600s"}
    for path, body, sent in (  # raw calls: the SDKs retry a 429 after its Retry-After
        ("/v1beta/cachedContents", cache, headers),
        ("/upload/v1beta/files", {"file": {}}, upload),
        ("/v1beta/interactions", {"model": MODEL, "input": "Hello"}, headers),
    ):
        async with pool.http.post(pool.edge_b + path, json=body, headers=sent) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 429 and error["status"] == "RESOURCE_EXHAUSTED", (path, error)
            assert "KEYRING_AFFINITY_MAX_PER_TOKEN" in error["message"] and int(resp.headers["Retry-After"]) > 0
    assert len(list(pool.sim.resources)) == made  # nothing was made upstream
    view = pool.replicas[0].server.keyring.cache.view
    assert sum(1 for pool_name, _ in view.affinity if pool_name == "main") == 2  # and nothing recorded
    # A call that binds nothing still works; a delete makes room for the next create.
    assert (await b.interactions.create(model=MODEL, input="Hi", store=False)).output_text
    assert first.name
    await a.caches.delete(name=first.name)
    await eventually(lambda: len(view.affinity) == 1, 3.0, "the delete was not seen")
    assert (await b.caches.create(model=MODEL, config=config)).name
    await pool.no_lease_held()


async def test_lists_show_only_what_the_pool_bound(pool: Pool) -> None:
    """Finding 7: pool B's key shares pool A's project unknown to keyring (no project given): B lists nothing of A's."""
    a = pool.client(pool.edge_a)
    uploaded = await a.files.upload(file=io.BytesIO(b"mine"), config={"mime_type": "text/plain"})
    assert uploaded.name
    owner = pool.owner("files", uploaded.name.removeprefix("files/"))
    admin = pool.replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="second")))
    theirs = fake_auth_key("second-unknown-project")
    pool.sim.set_project(theirs, owner)  # upstream, the same project as the file's
    assert (await admin.AddKeys(pb.AddKeysRequest(pool="second", keys=[pb.KeyInput(secret=theirs)]))).added == 1
    token = (await admin.CreateToken(pb.CreateTokenRequest(pool="second", name="other tenant"))).token
    headers = {"x-goog-api-key": token}
    views = [replica.server.keyring.cache.view for replica in pool.replicas]
    await eventually(lambda: all(any(t.pool == "second" for t in v.tokens.values()) for v in views), 3.0, "no token")
    for edge in (pool.edge_a, pool.edge_b):
        async with pool.http.get(f"{edge}/v1beta/files", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json()) == {}, await resp.text()
    assert any(r.key == theirs and r.path == "/v1beta/files" for r in pool.sim.requests)  # the project was listed
    assert [f.name async for f in await a.files.list()] == [uploaded.name]  # its own pool still lists it
    await pool.no_lease_held()
