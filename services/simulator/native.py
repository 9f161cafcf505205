"""Native Gemini routes (`/v1beta/...` and `/v1/...`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from .answers import answer_chunks, gemini_response, prompt_texts
from .catalog import ACTION_METHOD, CATALOGUE, dimensions, model_info, supports
from .content import count_tokens, embedding_for, parts_text, random_id
from .errors import SimError, invalid_argument, model_not_found, not_found
from .jobs import create_batch, get_operation, predict_long_running
from .pipeline import Call, admit, chunk_count, endpoint, json_response, parse_json_object, stream_frames
from .references import check_references
from .state import normalize_model

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000

Action = Callable[[web.Request, Call], Awaitable[web.StreamResponse]]


def _api_version(request: web.Request) -> str:
    return request.path.split("/")[1]


def _page_size(request: web.Request) -> int:
    raw = request.query.get("pageSize")
    if not raw:
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise invalid_argument(f"Invalid value at 'page_size' (TYPE_INT32), \"{raw}\"") from None
    return DEFAULT_PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)


def _page_offset(request: web.Request) -> int:
    token = request.query.get("pageToken")
    if not token:
        return 0
    if not token.startswith("o") or not token[1:].isdigit():
        raise invalid_argument("Invalid page token.")
    return int(token[1:])


@endpoint("native")
async def list_models(request: web.Request) -> web.StreamResponse:
    """`GET /models`: the catalogue, paged with an opaque offset token."""
    await admit(request, "native", None, b"")
    size, offset = _page_size(request), _page_offset(request)
    page: dict[str, Any] = {"models": CATALOGUE[offset : offset + size]}
    if offset + size < len(CATALOGUE):
        page["nextPageToken"] = f"o{offset + size}"
    return json_response(page)


@endpoint("native")
async def get_model(request: web.Request) -> web.StreamResponse:
    """`GET /models/{model}`: one model object or 404."""
    model = normalize_model(request.match_info["tail"]) or ""
    model, operations, operation = model.partition("/operations/")
    call = await admit(request, "native", model, b"")
    if operations:  # GET /v1beta/models/{model}/operations/{id}: a long-running operation
        return get_operation(call, f"models/{model}/operations/{operation}")
    info = model_info(model, call.state.missing_models)
    if info is None:
        raise model_not_found(model, _api_version(request), "get")
    return json_response(info)


@endpoint("native")
async def model_action(request: web.Request) -> web.StreamResponse:
    """`POST /models/{model}:{action}`: admit, check the model supports the action, dispatch."""
    model, sep, action = request.match_info["tail"].rpartition(":")
    if not sep:
        model, action = action, ""
    body = await request.read()
    generating = action in ("generateContent", "streamGenerateContent")
    tokens = input_tokens(body) if generating else None
    call = await admit(request, "native", model, body, streaming=action == "streamGenerateContent", tokens=tokens)
    handler = _ACTIONS.get(action)
    if handler is None:
        raise not_found(f"Method not found: {request.path}")
    model = call.model or ""
    if not supports(model, ACTION_METHOD[action], call.state.missing_models):
        raise model_not_found(model, _api_version(request), ACTION_METHOD[action])
    return await handler(request, call)


def input_tokens(body: bytes) -> int:
    """Input tokens of a GenerateContentRequest, counted as its `promptTokenCount` (1 if unreadable)."""
    try:
        return count_tokens(prompt_texts(parse_json_object(body))[0])
    except SimError:
        return 1


async def generate(request: web.Request, call: Call) -> web.StreamResponse:
    """`:generateContent`: the whole answer at once."""
    data = parse_json_object(call.body)
    chunks, usage = answer_chunks(data, 1, check_references(call, data), call.behaviour.answer_text)
    parts = [part for chunk in chunks for part in chunk]
    response = json_response(gemini_response(parts, _served(call), random_id(), usage))
    if call.service_tier:
        response.headers["x-gemini-service-tier"] = call.service_tier
    return response


def _stream_payloads(call: Call, data: dict[str, Any]) -> Iterator[bytes]:
    """Serialized chunks; validation happens here, eagerly, before any byte is sent."""
    chunks, usage = answer_chunks(data, chunk_count(call), check_references(call, data), call.behaviour.answer_text)
    response_id, model, last = random_id(), _served(call), len(chunks) - 1
    return (
        orjson.dumps(gemini_response(parts, model, response_id, usage if i == last else None))
        for i, parts in enumerate(chunks)
    )


def _sse(payloads: Iterator[bytes]) -> Iterator[bytes]:
    for payload in payloads:
        yield b"data: " + payload + b"\r\n\r\n"


def _json_array(payloads: Iterator[bytes]) -> Iterator[bytes]:
    """`[{...}`, `\\r\\n,{...}`..., with the closing `]` on the last frame."""
    previous: bytes | None = None
    for payload in payloads:
        if previous is not None:
            yield previous
            previous = b"\r\n," + payload
        else:
            previous = b"[" + payload
    yield (previous or b"[") + b"]"


async def stream_generate(request: web.Request, call: Call) -> web.StreamResponse:
    """`:streamGenerateContent`: SSE with `alt=sse`, else one streamed JSON array."""
    return await stream_answer(request, call, _stream_payloads(call, parse_json_object(call.body)))


async def stream_answer(request: web.Request, call: Call, payloads: Iterator[bytes]) -> web.StreamResponse:
    """A streamed answer's chunks: SSE with `alt=sse`, else one streamed JSON array (a tuned model's too)."""
    if request.query.get("alt") == "sse":
        return await stream_frames(request, call, _sse(payloads), "text/event-stream")
    return await stream_frames(request, call, _json_array(payloads), "application/json; charset=UTF-8")


async def count(request: web.Request, call: Call) -> web.StreamResponse:
    """`:countTokens`: accepts `contents` or a whole `generateContentRequest`."""
    data = parse_json_object(call.body)
    inner = data.get("generateContentRequest")
    if "contents" not in data and isinstance(inner, dict):
        data = inner
    tokens = count_tokens(prompt_texts(data)[0])
    return json_response({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})


def _embedding(request_data: Any, name: str, model: str) -> dict[str, list[float]]:
    content = request_data.get("content") if isinstance(request_data, dict) else None
    if not isinstance(content, dict):
        raise invalid_argument(f"* {name}.content: content is not specified\n")
    size = dimensions(model, request_data.get("outputDimensionality"))
    return {"values": embedding_for(parts_text(content.get("parts")), size)}


async def embed(request: web.Request, call: Call) -> web.StreamResponse:
    """`:embedContent`: one deterministic vector of the model's size."""
    return json_response(
        {"embedding": _embedding(parse_json_object(call.body), "EmbedContentRequest", call.model or "")}
    )


async def batch_embed(request: web.Request, call: Call) -> web.StreamResponse:
    """`:batchEmbedContents`: one vector per entry of `requests`."""
    requests = parse_json_object(call.body).get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid_argument("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    return json_response({"embeddings": [_embedding(r, "EmbedContentRequest", call.model or "") for r in requests]})


async def batch_embed_async(request: web.Request, call: Call) -> web.StreamResponse:
    """`:asyncBatchEmbedContent`: a batch like `batchGenerateContent`'s, each answer an embedding."""

    def answer(call: Call, entry: Any) -> dict[str, Any]:
        try:
            return {"response": {"embedding": _embedding(entry, "EmbedContentRequest", call.model or "")}}
        except SimError as error:
            return {"error": {"code": error.code, "message": error.message}}

    return await create_batch(request, call, answer)


_ACTIONS: Final[dict[str, Action]] = {
    "generateContent": generate,
    "streamGenerateContent": stream_generate,
    "countTokens": count,
    "embedContent": embed,
    "batchEmbedContents": batch_embed,
    "batchGenerateContent": create_batch,
    "asyncBatchEmbedContent": batch_embed_async,
    "predictLongRunning": predict_long_running,
}


def add_routes(app: web.Application) -> None:
    """Register the native surface under both API versions."""
    for prefix in ("/v1beta", "/v1", "/v1alpha"):
        app.router.add_get(f"{prefix}/models", list_models)
        app.router.add_get(f"{prefix}/models/{{tail:.+}}", get_model)
        app.router.add_post(f"{prefix}/models/{{tail:.+}}", model_action)


def _served(call: Call) -> str:
    """The answer's modelVersion: the model that really answered (a retired name or an alias names another)."""
    model = call.model or ""
    return call.state.served_as.get(model, model)
