"""Batch mode and long-running operations, both per project.

- `POST /v1beta/models/{model}:batchGenerateContent` answers an Operation named
  `batches/{id}` whose `metadata` is the batch (google-genai's batches.py reads
  `metadata.state`, `metadata.output.inlinedResponses.inlinedResponses`...);
  `GET /v1beta/batches[/{id}]`, `POST /v1beta/batches/{id}:cancel`, `DELETE`.
  Input inline (`inputConfig.requests.requests`) or a JSONL file of the project
  (`inputConfig.fileName`, answered in a generated `responsesFile`).
- `POST /v1beta/models/{model}:predictLongRunning` answers
  `{"name": "models/{model}/operations/{id}"}`, polled with `GET /v1beta/{name}`;
  once done its video is a generated file, downloadable by the project's keys only.

A job is done `SimulatorState.job_duration_s` after its creation (0: at once).
Another project's batch or operation is 404 NOT_FOUND.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiohttp import web

from .answers import answer_chunks, gemini_response
from .content import random_id
from .errors import SimError, failed_precondition, invalid_argument, not_found
from .files_api import page, store_generated
from .pipeline import Call, admit, endpoint, json_response, parse_json_object
from .references import check_files, file_denied
from .resources import Resource, rfc3339

BATCH_TYPE: Final = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
BATCH_OUTPUT_TYPE: Final = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
VIDEO_TYPE: Final = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
_TERMINAL: Final = frozenset(
    {"BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"}
)
NOT_FOUND: Final = "Requested entity was not found."


def _answer(call: Call, request: Any) -> dict[str, Any]:
    """The GenerateContentResponse of one batched request (errors become a google.rpc.Status)."""
    try:
        if not isinstance(request, dict):
            raise invalid_argument("Invalid request in batch.")
        chunks, usage = answer_chunks(request, 1)
        return {"response": gemini_response([p for c in chunks for p in c], call.model or "", random_id(), usage)}
    except SimError as error:
        return {"error": {"code": error.code, "message": error.message}}


def _batch_requests(call: Call, config: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """(entries {key?, request}, input file id) of a batch's inputConfig; files must be the project's."""
    if isinstance(config.get("fileName"), str):
        file_id = config["fileName"].removeprefix("files/")
        source = call.state.resources.get("files", file_id, call.project)
        if source is None:
            raise file_denied(file_id)
        lines = [orjson.loads(line) for line in source.content.splitlines() if line.strip()]
        return [line for line in lines if isinstance(line, dict)], file_id
    inlined = (config.get("requests") or {}).get("requests")
    if not isinstance(inlined, list) or not inlined:
        raise invalid_argument("* BatchGenerateContentRequest.batch.input_config: input_config is not specified\n")
    return [r for r in inlined if isinstance(r, dict)], None


Answer = Callable[[Call, Any], dict[str, Any]]


async def create_batch(request: web.Request, call: Call, answer: Answer | None = None) -> web.StreamResponse:
    """`:batchGenerateContent` (and, with an embedding `answer`, `:asyncBatchEmbedContent`): a pending batch;
    its answers are computed now, revealed when done."""
    answer_of = answer or _answer
    batch = parse_json_object(call.body).get("batch")
    if not isinstance(batch, dict) or not isinstance(batch.get("inputConfig"), dict):
        raise invalid_argument("* BatchGenerateContentRequest.batch.input_config: input_config is not specified\n")
    entries, file_id = _batch_requests(call, batch["inputConfig"])
    for entry in entries:
        check_files(call.state.resources, call.project, (entry.get("request") or {}).get("contents"))
    answers = [
        {**answer_of(call, e.get("request")), **({"metadata": e["metadata"]} if "metadata" in e else {})}
        for e in entries
    ]
    if file_id is not None:
        lines = [
            orjson.dumps({**a, **({"key": e["key"]} if "key" in e else {})})
            for a, e in zip(answers, entries, strict=True)
        ]
        output = {"responsesFile": store_generated(call, b"\n".join(lines) + b"\n", "application/jsonl").data["name"]}
    else:
        output = {"inlinedResponses": {"inlinedResponses": answers}}
    now = time.time()
    meta: dict[str, Any] = {
        "@type": BATCH_TYPE,
        "model": f"models/{call.model}",
        "displayName": batch.get("displayName", ""),
    }
    meta.update({"createTime": rfc3339(now), "updateTime": rfc3339(now), "state": "BATCH_STATE_PENDING"})
    meta["batchStats"] = {"requestCount": str(len(entries)), "pendingRequestCount": str(len(entries))}
    job = call.state.resources.add("batches", call.project, call.key, {"metadata": meta})
    job.data["name"] = meta["name"] = f"batches/{job.id}"
    job.events = [output]  # the result, kept aside until the batch is done (seen on the next read at the earliest)
    return json_response({"name": job.data["name"], "metadata": dict(meta)})


def _batch_view(call: Call, job: Resource) -> dict[str, Any]:
    """The batch Operation as of now (finishing it when its time has come)."""
    meta = job.data["metadata"]
    if meta["state"] not in _TERMINAL and time.time() >= job.created + call.state.job_duration_s:
        count = meta["batchStats"]["requestCount"]
        meta.update({"state": "BATCH_STATE_SUCCEEDED", "endTime": rfc3339(time.time()), "output": job.events[0]})
        meta["batchStats"] = {"requestCount": count, "successfulRequestCount": count}
        job.data.update({"done": True, "response": {"@type": BATCH_OUTPUT_TYPE, **job.events[0]}})
    return {"name": job.data["name"], **{k: v for k, v in job.data.items() if k != "name"}}


@endpoint("native")
async def batches(request: web.Request) -> web.StreamResponse:
    """`GET /batches`: the project's batches, oldest first, as Operations."""
    call = await admit(request, "native", None, b"")
    return page(
        request, [_batch_view(call, j) for j in call.state.resources.list("batches", call.project)], "operations"
    )


@endpoint("native")
async def batch_item(request: web.Request) -> web.StreamResponse:
    """`GET|DELETE /batches/{id}`, `POST /batches/{id}:cancel`."""
    call = await admit(request, "native", None, await request.read())
    rid, _, action = request.match_info["batch"].partition(":")
    job = call.state.resources.get("batches", rid, call.project)
    if job is None:
        raise not_found(NOT_FOUND)
    if request.method == "DELETE" and not action:
        call.state.resources.delete("batches", rid, call.project)
        return json_response({})
    if request.method == "POST" and action == "cancel":
        meta = _batch_view(call, job)["metadata"]
        if meta["state"] in _TERMINAL:
            raise failed_precondition(f"Batch batches/{rid} is already in state {meta['state']}.")
        meta.update({"state": "BATCH_STATE_CANCELLED", "endTime": rfc3339(time.time())})
        job.data["done"] = True
        return json_response({})
    if request.method == "GET" and not action:
        return json_response(_batch_view(call, job))
    raise not_found(f"Method not found: {request.path}")


# -- long-running video generation ------------------------------------------------------------


async def predict_long_running(request: web.Request, call: Call) -> web.StreamResponse:
    """`:predictLongRunning`: an operation whose result, once done, is a generated video file."""
    data = parse_json_object(call.body)
    instances = data.get("instances")
    if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        raise invalid_argument("* PredictLongRunningRequest.instances: instances is not specified\n")
    prompt = str(instances[0].get("prompt", ""))
    operation = call.state.resources.add("operations", call.project, call.key, {"prompt": prompt})
    operation.data = {"name": f"models/{call.model}/operations/{operation.id}"}
    operation.content = b"\x00\x00\x00\x18ftypmp42" + prompt.encode()[:200]  # a fake MP4, unique per prompt
    return json_response(operation.data)


def get_operation(call: Call, name: str) -> web.StreamResponse:
    """`GET /v1beta/models/{model}/operations/{id}`: the operation, done after the job duration."""
    rid = name.rsplit("/", 1)[-1]
    operation = call.state.resources.get("operations", rid, call.project)
    if operation is None or operation.data["name"] != name:
        raise not_found(NOT_FOUND)
    if "done" not in operation.data and time.time() >= operation.created + call.state.job_duration_s:
        video = store_generated(call, operation.content, "video/mp4")
        sample = {"video": {"uri": video.data["downloadUri"]}}
        result = {"@type": VIDEO_TYPE, "generateVideoResponse": {"generatedSamples": [sample]}}
        operation.data.update({"done": True, "response": result})
    return json_response(operation.data)


def add_routes(app: web.Application) -> None:
    """Register batches under both versions (operations are served by native's model routes)."""
    for version in ("v1beta", "v1", "v1alpha"):
        app.router.add_get(f"/{version}/batches", batches)
        for method in ("GET", "POST", "DELETE"):
            app.router.add_route(method, f"/{version}/batches/{{batch}}", batch_item)
