"""The simulator's project-scoped resources and auth, driven by the official google-genai client
(only its base URL and key changed): files, caches, batches, operations, interactions; a resource
made with one project's key is refused for another project's key, as Google refuses it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from services.simulator import SimulatorState, start_simulator

KEY_A = "AQ.Ab8RN6KsimulatedAuthKeyOfProjectA_0123456789"
KEY_A2 = "AIzaSyA-simulated-standard-key-project-A0"
KEY_B = "AQ.Ab8RN6KsimulatedAuthKeyOfProjectB_0123456789"
MODEL = "gemini-3.5-flash-lite"


class Sim:
    def __init__(self, base: str, state: SimulatorState, http: aiohttp.ClientSession) -> None:
        self.base, self.state, self.http = base, state, http
        self.clients: list[genai.Client] = []

    def client(self, key: str) -> genai.Client:
        client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=self.base, api_version="v1beta"))
        self.clients.append(client)
        return client

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, self.base + path, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    runner, base, state = await start_simulator()
    async with aiohttp.ClientSession() as http:
        sim = Sim(base, state, http)
        # project-a holds two keys (an auth key and a standard one); KEY_B is alone in project-b
        await sim.control("POST", "/_sim/projects", {"projects": {KEY_A: "project-a", KEY_A2: "project-a"}})
        await sim.control("POST", "/_sim/projects", {"key": KEY_B, "project": "project-b"})
        try:
            yield sim
        finally:
            for client in sim.clients:
                await client.aio.aclose()
            await runner.cleanup()


@pytest.fixture
def a(sim: Sim) -> genai.client.AsyncClient:
    return sim.client(KEY_A).aio


@pytest.fixture
def a2(sim: Sim) -> genai.client.AsyncClient:
    return sim.client(KEY_A2).aio


@pytest.fixture
def b(sim: Sim) -> genai.client.AsyncClient:
    return sim.client(KEY_B).aio


async def refused(code: int, call: Callable[[], Any]) -> genai_errors.APIError:
    with pytest.raises(genai_errors.APIError) as caught:
        await call()
    assert caught.value.code == code, caught.value
    return caught.value


# ---------------------------------------------------------------- models, keys, credentials


async def test_any_well_formed_model_and_both_key_kinds(a: Any, a2: Any) -> None:
    for model in ("gemini-3.5-flash-lite", "gemini-3.1-pro-preview", "gemini-4-flash-tomorrow"):
        answer = await a.models.generate_content(model=model, contents="Say hello")
        assert answer.text == "Simulated answer to: Say hello" and answer.model_version == model
    info = await a2.models.get(model="gemini-3.1-pro-preview")
    assert info.name == "models/gemini-3.1-pro-preview" and "generateContent" in (info.supported_actions or [])
    listed = [m.name async for m in await a.models.list()]
    assert "models/gemini-3.5-flash-lite" in listed and "models/gemini-3.1-pro-preview" in listed
    await refused(404, lambda: a.models.generate_content(model="gemini-no-such-model", contents="x"))


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (
            f"/v1beta/models/{MODEL}:generateContent",
            {"x-goog-api-key": KEY_A, "Authorization": f"Bearer {KEY_A}"},
        ),
        (f"/v1beta/models/{MODEL}:generateContent?key={KEY_A}", {"x-goog-api-key": KEY_A}),
        (f"/v1beta/openai/chat/completions?key={KEY_A}", {"Authorization": f"Bearer {KEY_A}"}),
        ("/v1beta/openai/chat/completions", {"Authorization": f"Bearer {KEY_A}", "x-goog-api-key": KEY_B}),
    ],
)
async def test_two_credentials_answer_400(sim: Sim, path: str, headers: dict[str, str]) -> None:
    body = {"contents": [{"parts": [{"text": "hi"}]}], "model": MODEL, "messages": []}
    async with sim.http.post(sim.base + path, json=body, headers=headers) as resp:
        payload = orjson.loads(await resp.read())
    error = (payload[0] if isinstance(payload, list) else payload)["error"]
    assert resp.status == 400 and error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == "Multiple authentication credentials received. Please pass only one."


async def test_projects_are_set_and_shown_by_the_control_api(sim: Sim) -> None:
    shown = await sim.control("GET", "/_sim/projects?key=AIzaSomeOtherKey0000000000000000000000")
    assert shown["projects"][KEY_A] == "project-a" and shown["projects"][KEY_B] == "project-b"
    assert shown["projects"]["AIzaSomeOtherKey0000000000000000000000"].startswith("sim-")  # one project per key
    assert sim.state.project_of("k1") == sim.state.project_of("k1") != sim.state.project_of("k2")


# ---------------------------------------------------------------- files


async def test_files_upload_get_list_generate_delete_per_project(sim: Sim, a: Any, a2: Any, b: Any) -> None:
    uploaded = await a.files.upload(
        file=io.BytesIO(b"hello file"), config={"mime_type": "text/plain", "display_name": "f"}
    )
    assert uploaded.name and uploaded.name.startswith("files/") and uploaded.size_bytes == 10
    assert uploaded.state == types.FileState.ACTIVE and uploaded.uri and uploaded.uri.endswith(uploaded.name)
    second = await a.files.upload(file=io.BytesIO(b"two"), config={"mime_type": "text/plain"})
    got = await a2.files.get(name=uploaded.name)  # another key of the same project
    assert got.display_name == "f" and got.mime_type == "text/plain"
    names = [f.name async for f in await a.files.list(config={"page_size": 1})]
    assert names == [uploaded.name, second.name]  # paged, one per page
    part = types.Part.from_uri(file_uri=uploaded.uri, mime_type="text/plain")
    answer = await a2.models.generate_content(model=MODEL, contents=[part, "Summarise"])
    assert answer.text == "Simulated answer to: Summarise"
    # project-b sees none of it: Google's 403 for a file of another project
    error = await refused(403, lambda: b.files.get(name=uploaded.name))
    assert error.message == f"You do not have permission to access the File {uploaded.name[6:]} or it may not exist."
    await refused(403, lambda: b.models.generate_content(model=MODEL, contents=[part, "Summarise"]))
    assert [f async for f in await b.files.list()] == []
    await refused(403, lambda: b.files.delete(name=uploaded.name))
    await a.files.delete(name=uploaded.name)
    await refused(403, lambda: a.files.get(name=uploaded.name))
    kinds = await sim.control("GET", "/_sim/resources?project=project-a&kind=files")
    assert [r["id"] for r in kinds["resources"]] == [second.name[6:]]


async def test_upload_protocol_edges(sim: Sim) -> None:
    start = {
        "x-goog-api-key": KEY_A,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "4",
        "X-Goog-Upload-Header-Content-Type": "text/plain",
    }
    async with sim.http.post(sim.base + "/upload/v1beta/files", json={"file": {}}, headers=start) as resp:
        assert resp.status == 200 and resp.headers["X-Goog-Upload-Status"] == "active"
        url = resp.headers["X-Goog-Upload-URL"]
    assert url.startswith(sim.base + "/upload/v1beta/files?upload_id=")
    bytes_headers = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    # a key of another project does not see the session; neither does an unknown upload id
    async with sim.http.post(url, data=b"data", headers={**bytes_headers, "x-goog-api-key": KEY_B}) as resp:
        assert resp.status == 404 and resp.headers["X-Goog-Upload-Status"] == "final"
    async with sim.http.post(
        url.replace("upload_id=", "upload_id=zz"), data=b"data", headers={**bytes_headers, "x-goog-api-key": KEY_A}
    ) as resp:
        assert resp.status == 404
    async with sim.http.post(url, data=b"toolong", headers={**bytes_headers, "x-goog-api-key": KEY_A}) as resp:
        assert resp.status == 400  # more than declared: refused, nothing kept
    async with sim.http.post(
        url, data=b"da", headers={"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": "0"}
    ) as resp:
        assert (
            resp.status == 200 and resp.headers["X-Goog-Upload-Status"] == "active"
        )  # no key: the id is the capability
    finalize = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "2", "x-goog-api-key": KEY_A2}
    async with sim.http.post(url, data=b"ta", headers=finalize) as resp:
        assert resp.status == 200 and resp.headers["X-Goog-Upload-Status"] == "final"
        file = (await resp.json())["file"]
    assert file["sizeBytes"] == "4" and sim.state.resources.owner("files", file["name"][6:]) == "project-a"


# ---------------------------------------------------------------- caches


async def test_caches_create_use_update_delete_per_project(sim: Sim, a: Any, a2: Any, b: Any) -> None:
    config = types.CreateCachedContentConfig(contents=["A long document " * 20], ttl="600s", display_name="doc")
    cache = await a.caches.create(model=MODEL, config=config)
    assert cache.name and cache.name.startswith("cachedContents/") and cache.model == f"models/{MODEL}"
    assert cache.usage_metadata and cache.usage_metadata.total_token_count and cache.expire_time
    answer = await a2.models.generate_content(
        model=MODEL, contents="Question", config=types.GenerateContentConfig(cached_content=cache.name)
    )
    assert (
        answer.usage_metadata
        and answer.usage_metadata.cached_content_token_count == cache.usage_metadata.total_token_count
    )
    updated = await a.caches.update(name=cache.name, config=types.UpdateCachedContentConfig(ttl="7200s"))
    assert updated.expire_time and updated.expire_time > cache.expire_time
    assert [c.name async for c in await a2.caches.list()] == [cache.name]
    error = await refused(
        403,
        lambda: b.models.generate_content(
            model=MODEL, contents="Q", config=types.GenerateContentConfig(cached_content=cache.name)
        ),
    )
    assert error.message == "CachedContent not found (or permission denied)"
    await refused(403, lambda: b.caches.get(name=cache.name))
    assert [c async for c in await b.caches.list()] == []
    await a.caches.delete(name=cache.name)
    await refused(403, lambda: a.caches.get(name=cache.name))


# ---------------------------------------------------------------- batches and operations


async def test_batches_inline_get_list_cancel_delete_per_project(sim: Sim, a: Any, a2: Any, b: Any) -> None:
    src = [
        {"contents": [{"parts": [{"text": "first"}], "role": "user"}]},
        {"contents": [{"parts": [{"text": "second"}]}]},
    ]
    job = await a.batches.create(model=MODEL, src=src, config={"display_name": "nightly"})
    assert job.name and job.name.startswith("batches/") and job.state == types.JobState.JOB_STATE_PENDING
    done = await a2.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.dest and done.dest.inlined_responses
    texts = [r.response.text for r in done.dest.inlined_responses if r.response]
    assert texts == ["Simulated answer to: first", "Simulated answer to: second"]
    assert [j.name async for j in await a.batches.list()] == [job.name]
    await refused(404, lambda: b.batches.get(name=job.name))
    assert [j async for j in await b.batches.list()] == []
    sim.state.job_duration_s = 3600
    slow = await a.batches.create(model=MODEL, src=src)
    await refused(404, lambda: b.batches.cancel(name=slow.name))
    await a.batches.cancel(name=slow.name)
    assert (await a.batches.get(name=slow.name)).state == types.JobState.JOB_STATE_CANCELLED
    await a.batches.delete(name=slow.name)
    await refused(404, lambda: a.batches.get(name=slow.name))


async def test_video_operation_polled_then_downloaded_by_its_project_only(sim: Sim, a: Any, a2: Any, b: Any) -> None:
    sim.state.job_duration_s = 0.2
    # google-genai 3.6's models.generate_videos is Vertex-only: started as the REST docs show, polled by the SDK
    url = sim.base + "/v1beta/models/veo-3.1-generate-preview:predictLongRunning"
    body = {"instances": [{"prompt": "a cat"}], "parameters": {"aspectRatio": "16:9"}}
    async with sim.http.post(url, json=body, headers={"x-goog-api-key": KEY_A}) as resp:
        assert resp.status == 200
        started = await resp.json()
    operation = types.GenerateVideosOperation(name=started["name"])
    assert operation.name and operation.name.startswith("models/veo-3.1-generate-preview/operations/")
    assert not operation.done
    await refused(404, lambda: b.operations.get(operation))
    while not operation.done:
        await asyncio.sleep(0.05)
        operation = await a2.operations.get(operation)
    assert operation.response and operation.response.generated_videos
    video = operation.response.generated_videos[0].video
    assert video is not None and video.uri
    data = await a2.files.download(file=video)
    assert data.startswith(b"\x00\x00\x00\x18ftypmp42") and b"a cat" in data
    await refused(403, lambda: b.files.download(file=video))


# ---------------------------------------------------------------- interactions


async def test_interactions_create_follow_up_get_delete_per_project(sim: Sim, a: Any, a2: Any, b: Any) -> None:
    first = await a.interactions.create(model=MODEL, input="Hello there")
    assert first.id and first.status == "completed" and first.output_text == "Simulated answer to: Hello there"
    assert first.usage and first.usage.total_tokens
    follow = await a2.interactions.create(model=MODEL, input="And then?", previous_interaction_id=first.id)
    assert follow.previous_interaction_id == first.id and follow.output_text == "Simulated answer to: And then?"
    got = await a2.interactions.get(first.id)
    assert got.id == first.id and got.output_text == first.output_text
    for wrong in (
        lambda: b.interactions.get(first.id),
        lambda: b.interactions.delete(first.id),
        lambda: b.interactions.create(model=MODEL, input="x", previous_interaction_id=first.id),
    ):
        with pytest.raises(Exception) as caught:
            await wrong()
        assert getattr(caught.value, "status_code", None) == 404, caught.value
    unstored = await a.interactions.create(model=MODEL, input="forget me", store=False)
    with pytest.raises(Exception) as caught:
        await a.interactions.get(unstored.id)
    assert getattr(caught.value, "status_code", None) == 404
    await a.interactions.delete(first.id)
    with pytest.raises(Exception) as caught:
        await a.interactions.get(first.id)
    assert getattr(caught.value, "status_code", None) == 404


async def test_interaction_stream_and_resume(sim: Sim, a: Any, a2: Any) -> None:
    stream = await a.interactions.create(model=MODEL, input="Count to three", stream=True)
    events = [event async for event in stream]
    kinds = [e.event_type for e in events]
    assert kinds[:3] == ["interaction.created", "interaction.status_update", "step.start"]
    assert kinds[-2:] == ["step.stop", "interaction.completed"] and kinds.count("step.delta") > 1
    text = "".join(e.delta.text for e in events if e.event_type == "step.delta")
    assert text == "Simulated answer to: Count to three"
    interaction_id = events[0].interaction.id
    resumed = await a2.interactions.get(interaction_id, stream=True, last_event_id=events[3].event_id)
    rest = [event async for event in resumed]
    assert [e.event_id for e in rest] == [e.event_id for e in events[4:]]


async def test_background_interaction_cancel(sim: Sim, a: Any, b: Any) -> None:
    sim.state.job_duration_s = 3600
    started = await a.interactions.create(model=MODEL, input="Think long", background=True)
    assert started.status == "in_progress"
    with pytest.raises(Exception) as caught:
        await b.interactions.cancel(started.id)
    assert getattr(caught.value, "status_code", None) == 404
    cancelled = await a.interactions.cancel(started.id)
    assert cancelled.status == "cancelled"
    assert (await a.interactions.get(started.id)).status == "cancelled"


async def test_requests_of_a_key_are_listed(sim: Sim, a: Any, b: Any) -> None:
    await a.models.generate_content(model=MODEL, contents="one")
    await b.models.generate_content(model=MODEL, contents="two")
    mine = await sim.control("GET", f"/_sim/requests?key={KEY_A}")
    assert [r["key"] for r in mine["requests"]] == [KEY_A]
    theirs = await sim.control("GET", "/_sim/requests?project=project-b")
    assert [r["path"] for r in theirs["requests"]] == [f"/v1beta/models/{MODEL}:generateContent"]
