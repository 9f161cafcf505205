"""Native Gemini routes (`/v1beta/...` and `/v1/...`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from .catalog import ACTION_METHOD, MODEL_NAMES, MODELS, supports
from .content import (
    answer_for,
    contents_texts,
    count_tokens,
    embedding_for,
    first_gemini_function,
    parts_text,
    random_id,
    split_text,
)
from .errors import invalid_argument, model_not_found, not_found
from .pipeline import Call, admit, chunk_count, endpoint, json_response, parse_json_object, stream_frames
from .state import normalize_model

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000

Action = Callable[[web.Request, Call], Awaitable[web.StreamResponse]]


def _api_version(request: web.Request) -> str:
    return "v1beta" if request.path.startswith("/v1beta/") else "v1"


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
    page: dict[str, Any] = {"models": [MODELS[name] for name in MODEL_NAMES[offset : offset + size]]}
    if offset + size < len(MODEL_NAMES):
        page["nextPageToken"] = f"o{offset + size}"
    return json_response(page)


@endpoint("native")
async def get_model(request: web.Request) -> web.StreamResponse:
    """`GET /models/{model}`: one model object or 404."""
    model = normalize_model(request.match_info["tail"]) or ""
    await admit(request, "native", model, b"")
    if model not in MODELS:
        raise model_not_found(model, _api_version(request), "get")
    return json_response(MODELS[model])


@endpoint("native")
async def model_action(request: web.Request) -> web.StreamResponse:
    """`POST /models/{model}:{action}`: admit, check the model supports the action, dispatch."""
    model, sep, action = request.match_info["tail"].rpartition(":")
    if not sep:
        model, action = action, ""
    body = await request.read()
    call = await admit(request, "native", model, body, streaming=action == "streamGenerateContent")
    handler = _ACTIONS.get(action)
    if handler is None:
        raise not_found(f"Method not found: {request.path}")
    model = call.model or ""
    if not supports(model, ACTION_METHOD[action]):
        raise model_not_found(model, _api_version(request), ACTION_METHOD[action])
    return await handler(request, call)


def _contents(data: dict[str, Any], request_name: str = "GenerateContentRequest") -> list[Any]:
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid_argument(f"* {request_name}.contents: contents is not specified\n")
    return contents


def _prompt(data: dict[str, Any]) -> tuple[str, str]:
    """(whole prompt text incl. system instruction, last user text)."""
    prompt, last_user = contents_texts(_contents(data))
    system = data.get("systemInstruction") or data.get("system_instruction")
    if isinstance(system, dict):
        prompt = parts_text(system.get("parts")) + " " + prompt
    return prompt, last_user


def _answer_chunks(data: dict[str, Any], pieces: int) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
    """The answer as per-chunk part lists, plus its usageMetadata."""
    prompt, last_user = _prompt(data)
    function = first_gemini_function(data.get("tools"))
    if function is not None:
        chunks: list[list[dict[str, Any]]] = [[{"functionCall": {"name": function, "args": {}}}]]
        answer_tokens = count_tokens(function)
    else:
        text = answer_for(last_user)
        chunks = [[{"text": piece}] for piece in split_text(text, pieces)]
        answer_tokens = count_tokens(text)
    prompt_tokens = count_tokens(prompt)
    usage = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": answer_tokens,
        "totalTokenCount": prompt_tokens + answer_tokens,
    }
    return chunks, usage


def _response(
    parts: list[dict[str, Any]], model: str, response_id: str, usage: dict[str, int] | None
) -> dict[str, Any]:
    """One GenerateContentResponse; `usage` marks (and only goes on) the final one."""
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        candidate["finishReason"] = "STOP"
        out["usageMetadata"] = usage
    out["modelVersion"] = model
    out["responseId"] = response_id
    return out


async def generate(request: web.Request, call: Call) -> web.StreamResponse:
    """`:generateContent`: the whole answer at once."""
    chunks, usage = _answer_chunks(parse_json_object(call.body), 1)
    parts = [part for chunk in chunks for part in chunk]
    return json_response(_response(parts, call.model or "", random_id(), usage))


def _stream_payloads(call: Call, data: dict[str, Any]) -> Iterator[bytes]:
    """Serialized chunks; validation happens here, eagerly, before any byte is sent."""
    chunks, usage = _answer_chunks(data, chunk_count(call))
    response_id, model, last = random_id(), call.model or "", len(chunks) - 1
    return (
        orjson.dumps(_response(parts, model, response_id, usage if i == last else None))
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
    payloads = _stream_payloads(call, parse_json_object(call.body))
    if request.query.get("alt") == "sse":
        return await stream_frames(request, call, _sse(payloads), "text/event-stream")
    return await stream_frames(request, call, _json_array(payloads), "application/json; charset=UTF-8")


async def count(request: web.Request, call: Call) -> web.StreamResponse:
    """`:countTokens`: accepts `contents` or a whole `generateContentRequest`."""
    data = parse_json_object(call.body)
    inner = data.get("generateContentRequest")
    if "contents" not in data and isinstance(inner, dict):
        data = inner
    tokens = count_tokens(_prompt(data)[0])
    return json_response({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]})


def _embedding(request_data: Any, name: str) -> dict[str, list[float]]:
    content = request_data.get("content") if isinstance(request_data, dict) else None
    if not isinstance(content, dict):
        raise invalid_argument(f"* {name}.content: content is not specified\n")
    return {"values": embedding_for(parts_text(content.get("parts")))}


async def embed(request: web.Request, call: Call) -> web.StreamResponse:
    """`:embedContent`: one deterministic 8-float vector."""
    return json_response({"embedding": _embedding(parse_json_object(call.body), "EmbedContentRequest")})


async def batch_embed(request: web.Request, call: Call) -> web.StreamResponse:
    """`:batchEmbedContents`: one vector per entry of `requests`."""
    requests = parse_json_object(call.body).get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid_argument("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    return json_response({"embeddings": [_embedding(r, "EmbedContentRequest") for r in requests]})


_ACTIONS: Final[dict[str, Action]] = {
    "generateContent": generate,
    "streamGenerateContent": stream_generate,
    "countTokens": count,
    "embedContent": embed,
    "batchEmbedContents": batch_embed,
}


def add_routes(app: web.Application) -> None:
    """Register the native surface under both API versions."""
    for prefix in ("/v1beta", "/v1"):
        app.router.add_get(f"{prefix}/models", list_models)
        app.router.add_get(f"{prefix}/models/{{tail:.+}}", get_model)
        app.router.add_post(f"{prefix}/models/{{tail:.+}}", model_action)
