"""The newer project-bound kinds (``services/edge/resources/kinds.py``) through a pool of three projects (issue 21).

The stack of ``test_resources`` (etcd, two keyring replicas, edges A and B,
the simulator scoping every resource to its key's project). The official
google-genai client makes each kind through edge A and uses and deletes it
through edge B; the simulator's request log proves every upstream call
naming the resource went with a key of its project (a wrong-project key
answers 404 there). Kinds the client lacks, ``v1alpha`` and bad input: raw
HTTP.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_auth_key
from services.edge.resources import kinds
from services.keyring.domain.models import KeyState
from tests.e2e.conftest import eventually
from tests.e2e.test_resources import MODEL, Pool, pool, refused  # noqa: F401
from tests.integration.conftest import start_replica  # noqa: F401

EMBEDDER = "gemini-embedding-001"
pytestmark = pytest.mark.filterwarnings("ignore:.*usage is experimental:UserWarning")
warnings.filterwarnings("ignore", ".*usage is experimental", UserWarning)


@asynccontextmanager
async def only_project(pool: Pool, project: str) -> AsyncIterator[None]:  # noqa: F811
    """Every key outside ``project`` disabled (on every replica) while the block runs."""
    admin = pool.replicas[0].admin
    others = [key.key_id for key in pool.replicas[0].keyring.cache.view.keys.values() if key.project != project]

    async def set_state(action: Any, state: KeyState) -> None:
        for key_id in others:
            await admin.SetKeyState(pb.SetKeyStateRequest(key_id=key_id, action=action))
        views = [replica.keyring.cache.view.keys for replica in pool.replicas]
        await eventually(lambda: all(view[k].state == state for view in views for k in others), 3.0, "key states")

    await set_state(pb.SetKeyStateRequest.DISABLE, KeyState.DISABLED)
    try:
        yield
    finally:
        await set_state(pb.SetKeyStateRequest.ENABLE, KeyState.ACTIVE)


async def _across_edges(
    pool: Pool,  # noqa: F811
    route: str,
    rid: str,
    get: Callable[[str], Awaitable[Any]],
    delete: Callable[[str], Awaitable[Any]],
) -> str:
    """``rid`` (made through A) read and deleted through B, then unknown to A: its owner project."""
    owner = pool.owner(route, rid)
    assert (await get(rid)) is not None
    await delete(rid)
    await refused(404, lambda: get(rid))  # unbound: the edge's own 404
    assert pool.projects_naming(rid) == {owner}, route
    return owner


async def test_the_clients_kinds_are_made_on_a_and_used_and_deleted_on_b(pool: Pool) -> None:  # noqa: F811
    a, b = pool.client(pool.edge_a), pool.client(pool.edge_b)
    agent = await a.agents.create(id="helper-1", description="helps")
    listed = await b.agents.list()
    assert [item.id for item in listed.agents or []] == ["helper-1"]
    await _across_edges(pool, "agents", "helper-1", b.agents.get, b.agents.delete)
    assert agent.description == "helps"

    environment = await a.environments.create()
    owner = pool.owner("environments", environment.id)
    remote = {"type": "remote", "environment_id": environment.id}
    for named in (environment.id, f"environments/{environment.id}", remote):  # a body's references route it
        made = await b.interactions.create(model=MODEL, input="Hello", environment=named)
        assert pool.owner("interactions", made.id) == owner, named
    await _across_edges(pool, "environments", environment.id, b.environments.get, b.environments.delete)

    hook = await a.webhooks.create(uri="https://example.com/hook", subscribed_events=["interaction.completed"])
    await b.webhooks.ping(hook.id)
    secret = await b.webhooks.rotate_signing_secret(hook.id)
    assert secret is not None
    await _across_edges(pool, "webhooks", hook.id, b.webhooks.get, b.webhooks.delete)

    voice = await a.voices.create(voice={"type": "prompted", "display_name": "calm"}, store=True)
    await _across_edges(pool, "voices", voice.id, b.voices.get, b.voices.delete)

    store = await a.file_search_stores.create(config={"display_name": "docs"})
    store_id = store.name.removeprefix("fileSearchStores/")
    owner = pool.owner("fileSearchStores", store_id)
    async with only_project(pool, owner):  # a file import needs the file in the store's project, as on Google
        uploaded = await a.files.upload(file=io.BytesIO(b"some text"), config={"mime_type": "text/plain"})
    operation = await b.file_search_stores.import_file(
        file_search_store_name=store.name, file_name=uploaded.name
    )
    assert operation.done
    # an upload to the store: started on A in the store's project, its bytes through B (A's upload URL)
    upload = await a.file_search_stores.upload_to_file_search_store(
        file_search_store_name=store.name, file=io.BytesIO(b"more text"),
        config={"mime_type": "text/plain", "display_name": "more"},
    )  # fmt: skip
    assert upload.done and pool.routed("b", "uploads.bytes") == 1
    documents = await b.file_search_stores.documents.list(parent=store.name)
    assert [document.display_name async for document in documents] == [uploaded.name, "more"]
    assert pool.owner("files", uploaded.name.removeprefix("files/")) == owner
    await b.file_search_stores.delete(name=store.name, config={"force": True})
    assert pool.projects_naming(store_id) == {owner}
    await pool.no_lease_held()


async def test_raw_kinds_on_every_version(pool: Pool) -> None:  # noqa: F811
    headers = {"x-goog-api-key": pool.token}

    async def call(edge: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with pool.http.request(method, edge + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    schedule = {"schedule": "0 * * * *", "time_zone": "UTC"}
    status, trigger = await call(pool.edge_a, "POST", "/v1alpha/triggers", schedule)
    assert status == 200, trigger
    status, run = await call(pool.edge_b, "POST", f"/v1beta/triggers/{trigger['id']}/executions", {})
    assert status == 200, run
    status, runs = await call(pool.edge_b, "GET", f"/v1/triggers/{trigger['id']}/executions")
    assert status == 200 and [item["id"] for item in runs["executions"]] == [run["id"]]
    status, patched = await call(pool.edge_b, "PATCH", f"/v1alpha/triggers/{trigger['id']}", {"display_name": "n"})
    assert status == 200 and patched["display_name"] == "n"
    owner = pool.owner("triggers", trigger["id"])
    assert pool.projects_naming(trigger["id"]) == {owner}

    # an environment's file: uploaded (started on A, bytes through B, sealed session) and downloaded through B
    status, environment = await call(pool.edge_a, "POST", "/v1alpha/environments", {})
    assert status == 200, environment
    start = {
        **headers,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": "5",
    }
    file_path = f"/v1alpha/environments/{environment['id']}/files/notes/a.txt"
    async with pool.http.post(f"{pool.edge_a}/upload{file_path}", headers=start) as resp:
        assert resp.status == 200, await resp.text()
        upload_url = resp.headers["X-Goog-Upload-URL"]
    assert upload_url.startswith(pool.edge_b + "/upload/v1alpha/files?upload_id=")
    finish = {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"}
    async with pool.http.post(upload_url, data=b"hello", headers=finish) as resp:
        assert resp.status == 200 and (await resp.json())["path"] == "notes/a.txt"
    async with pool.http.get(f"{pool.edge_b}{file_path}?alt=media", headers=headers) as resp:
        assert resp.status == 200 and await resp.read() == b"hello"
    assert pool.projects_naming(environment["id"]) == {pool.owner("environments", environment["id"])}

    status, tuned = await call(pool.edge_a, "POST", "/v1beta/tunedModels", {"baseModel": f"models/{MODEL}"})
    assert status == 200 and tuned["metadata"]["tunedModel"].startswith("tunedModels/"), tuned
    name = tuned["metadata"]["tunedModel"]
    hello = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
    status, answer = await call(pool.edge_b, "POST", f"/v1/{name}:generateContent", hello)
    assert status == 200 and answer["modelVersion"] == name
    genai_b = pool.client(pool.edge_b)  # the official client calls a tuned model by its name, whole and streamed
    whole = await genai_b.models.generate_content(model=name, contents="Hello")
    assert whole.text and whole.model_version == name
    chunks = [chunk async for chunk in await genai_b.models.generate_content_stream(model=name, contents="Hello")]
    assert "".join(chunk.text or "" for chunk in chunks) == whole.text and chunks[-1].model_version == name
    assert pool.projects_naming(name) == {pool.owner("tunedModels", name.removeprefix("tunedModels/"))}

    status, decision = await call(pool.edge_b, "POST", "/v1alpha/decisions", {"model": MODEL, "questions": {"q": {}}})
    assert status == 200 and decision["answers"] == {"q": {"score": 1.0}}

    # files:register binds every file its answer names; asyncBatchEmbedContent binds its batch
    status, registered = await call(pool.edge_a, "POST", "/v1beta/files:register", {"uris": ["gs://b/o.txt"]})
    assert status == 200, registered
    [file] = registered["files"]
    status, got = await call(pool.edge_b, "GET", f"/v1/{file['name']}")
    assert status == 200 and got["source"] == "REGISTERED"
    assert pool.projects_naming(file["name"]) == {pool.owner("files", file["name"].removeprefix("files/"))}
    requests = {"requests": [{"request": {"content": {"parts": [{"text": "embed me"}]}}}]}
    embed = {"batch": {"inputConfig": {"requests": requests}}}
    status, batch = await call(pool.edge_a, "POST", f"/v1/models/{EMBEDDER}:asyncBatchEmbedContent", embed)
    assert status == 200 and batch["name"].startswith("batches/"), batch
    status, polled = await call(pool.edge_b, "GET", f"/v1beta/{batch['name']}")
    assert status == 200 and polled["name"] == batch["name"]
    assert pool.projects_naming(batch["name"]) == {pool.owner("batches", batch["name"].removeprefix("batches/"))}

    first = await pool.client(pool.edge_a).interactions.create(model=MODEL, input="Hello")
    status, token = await call(pool.edge_b, "POST", f"/v1alpha/interactions/{first.id}/auth_tokens", {})
    assert status == 200, token
    status, got = await call(pool.edge_a, "GET", f"/v1/interactions/{first.id}/auth_tokens/{token['id']}")
    assert status == 200 and got["id"] == token["id"]
    assert pool.projects_naming(token["id"]) == {pool.owner("interactions", first.id)}
    await pool.no_lease_held()


def _bad_paths() -> list[tuple[str, str, int]]:
    """(method, path, status) for every row of the table: ids of the wrong shape (400) and names nobody bound (404)."""
    cases: list[tuple[str, str, int]] = []
    for kind in kinds.KINDS:
        if kind.parent:
            parent = kinds.parent_id(kind)
            assert re.fullmatch(parent, "nosuch")
            cases.append(("GET", f"/v1/{kind.parent}/nosuch/{kind.collection}/x1", 404))
            cases.append(("GET", f"/v1/{kind.parent}/a%2Fb/{kind.collection}/x1", 400))
            continue
        for method in sorted(kind.item):
            cases.append((method, f"/v1beta/{kind.collection}/nosuch", 404))
            cases.append((method, f"/v1alpha/{kind.collection}/a%2Fb", 400))
            cases.append((method, f"/v1/{kind.collection}/{'x' * 300}", 400))
        for verb in sorted(kind.verbs):
            cases.append(("POST", f"/v1/{kind.collection}/nosuch{kind.sep}{verb}", 404))
    return cases


async def test_bad_input_for_every_kind_changes_nothing(pool: Pool) -> None:  # noqa: F811
    headers = {"x-goog-api-key": pool.token}
    made = await pool.client(pool.edge_a).agents.create(id="kept-1")
    requests_before, resources_before = len(pool.sim.requests), len(list(pool.sim.resources))

    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with pool.http.request(method, pool.edge_b + path, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    for method, path, expected in _bad_paths():
        status, answer = await call(method, path, headers=headers)
        assert status == expected and answer["error"]["code"] == status, (method, path, answer)
    # bodies: not a JSON object, a decision without a model, a model off the pool's allow-list shape
    for path, body, expected in (
        ("/v1/agents", b"not json", 400),
        ("/v1/webhooks", b"[1, 2]", 400),
        ("/v1/decisions", b'{"questions": {}}', 400),
        ("/v1/decisions", b'{"model": "Bad Model"}', 400),
        ("/v1/interactions/v1_nosuch/auth_tokens", b"{}", 404),
        ("/v1/fileSearchStores/nosuch:importFile", b'{"fileName": "files/abc"}', 404),
    ):
        status, answer = await call("POST", path, data=body, headers={**headers, "content-type": "application/json"})
        assert status == expected and answer["error"]["code"] == expected, (path, answer)
    # a body naming a file nobody bound: the edge's 404 naming it, nothing made
    naming = {"tools": [{"fileUri": "files/nosuchfile"}]}
    status, answer = await call("POST", "/v1/agents", json=naming, headers=headers)
    assert status == 404 and "files/nosuchfile" in answer["error"]["message"], answer
    naming_env = {"model": MODEL, "input": "hi", "environment": {"type": "remote", "environment_id": "nosuch-env"}}
    status, answer = await call("POST", "/v1/interactions", json=naming_env, headers=headers)
    assert status == 404 and "environments/nosuch-env" in answer["error"]["message"], answer
    # uploads: a size over the limit (400), an unbound store (404), a path off the table (400)
    start = {**headers, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"}
    environment = (await call("POST", "/v1/environments", json={}, headers=headers))[1]["id"]
    requests_before, resources_before = len(pool.sim.requests), len(list(pool.sim.resources))
    for path, size, expected in (
        (f"/upload/v1/environments/{environment}/files/big.bin", str(3 * 1024**3), 400),
        ("/upload/v1beta/fileSearchStores/nosuch:uploadToFileSearchStore", "4", 404),
        ("/upload/v1/fileSearchStores/s1:importFile", "4", 400),
        (f"/upload/v1/environments/{environment}/files/a%2Fb", "4", 400),
    ):
        sized = {**start, "X-Goog-Upload-Header-Content-Length": size}
        status, answer = await call("POST", path, json={}, headers=sized)
        assert status == expected and answer["error"]["code"] == expected, (path, answer)
    # another pool's token does not reach this pool's agent: 404, nothing sent up
    admin = pool.replicas[0].admin
    await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="other")))
    other_key = pb.KeyInput(secret=fake_auth_key("kinds-other"), project="project-other")
    assert (await admin.AddKeys(pb.AddKeysRequest(pool="other", keys=[other_key]))).added == 1
    other = (await admin.CreateToken(pb.CreateTokenRequest(pool="other", name="other"))).token
    for method in ("GET", "DELETE"):
        status, answer = await call(method, f"/v1/agents/{made.id}", headers={"x-goog-api-key": other})
        assert status == 404 and answer["error"]["status"] == "NOT_FOUND", answer
    assert len(pool.sim.requests) == requests_before  # nothing above reached the upstream
    assert len(list(pool.sim.resources)) == resources_before
    assert (await pool.client(pool.edge_b).agents.get(made.id)).id == made.id  # still there, still routed
    await pool.no_lease_held()


async def test_the_simulator_scopes_every_kind_to_its_project(pool: Pool) -> None:  # noqa: F811
    """Upstream, as on Google: another project's key gets 404 for each top-level kind and its children."""
    by_project = {project: key for key, project in pool.projects.items()}
    own, other = ({"x-goog-api-key": by_project[p]} for p in ("project-a", "project-b"))

    async def sim(method: str, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
        async with pool.http.request(method, pool.sim_url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    for collection in ("agents", "environments", "webhooks", "triggers", "credentials", "voices", "fileSearchStores"):
        status, made = await sim("POST", f"/v1alpha/{collection}", own, {})
        assert status == 200, made
        name = made.get("name") or f"{collection}/{made['id']}"
        assert (await sim("GET", f"/v1/{name}", own))[0] == 200
        status, answer = await sim("GET", f"/v1/{name}", other)
        assert status == 404 and answer["error"]["status"] == "NOT_FOUND", (name, answer)
        assert (await sim("DELETE", f"/v1beta/{name}", other))[0] == 404
        assert (await sim("GET", "/v1/" + collection, other))[1] == {}  # not in the other project's list
    status, environment = await sim("POST", "/v1/environments", own, {})
    assert (await sim("GET", f"/v1/environments/{environment['id']}/files", other))[0] == 404  # a child: its parent's
