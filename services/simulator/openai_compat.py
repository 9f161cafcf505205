"""OpenAI-compatible routes (`/v1beta/openai/...`), as Gemini serves them."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from typing import Any, Final

import orjson
from aiohttp import web

from .catalog import CATALOGUE, dimensions, model_info, supports
from .content import (
    answer_for,
    count_tokens,
    embedding_for,
    messages_texts,
    openai_function_call,
    random_id,
    split_text,
)
from .errors import INVALID_JSON_MESSAGE, invalid_argument, model_not_found
from .pipeline import Call, admit, chunk_count, endpoint, json_response, stream_frames
from .state import normalize_model

PREFIX: Final = "/v1beta/openai"


def _try_object(body: bytes) -> dict[str, Any] | None:
    """Parse leniently: the model must be known before admission, the 400 comes after it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _body_model(data: dict[str, Any] | None) -> str | None:
    model = data.get("model") if data is not None else None
    return model if isinstance(model, str) else None


def _require(data: dict[str, Any] | None, call: Call, method: str) -> dict[str, Any]:
    """Validate an admitted request: parseable body and a model that supports `method`."""
    if data is None:
        raise invalid_argument(INVALID_JSON_MESSAGE)
    if not call.model:
        raise invalid_argument("Missing required parameter: 'model'.")
    if not supports(call.model, method, call.state.missing_models):
        raise model_not_found(call.model, "v1beta", method)
    return data


def _model_object(name: str) -> dict[str, Any]:
    return {"id": f"models/{name}", "object": "model", "created": 0, "owned_by": "google"}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _tool_call(function: tuple[str, Any]) -> dict[str, Any]:
    name, arguments = function
    return {
        "id": f"call_{random_id(9)}",
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


@endpoint("openai")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """`POST chat/completions`, streamed as SSE when `stream` is true."""
    body = await request.read()
    data = _try_object(body)
    streaming = bool(data and data.get("stream"))
    messages_in = data.get("messages") if data else None
    tokens = count_tokens(messages_texts(messages_in)[0]) if isinstance(messages_in, list) else 1
    call = await admit(request, "openai", _body_model(data), body, streaming=streaming, tokens=tokens)
    data = _require(data, call, "generateContent")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_argument("Missing required parameter: 'messages'.")
    prompt, last_user = messages_texts(messages)
    scripted = call.behaviour.answer_text
    function = openai_function_call(data, last_user) if scripted is None else None
    text = function[0] if function is not None else scripted if scripted is not None else answer_for(last_user)
    usage = _usage(count_tokens(prompt), count_tokens(text))
    head = {"id": f"chatcmpl-{random_id()}", "created": int(time.time()), "model": call.model}
    if streaming:
        options = data.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        frames = _chunk_frames(head, function, text, chunk_count(call), usage if include_usage else None)
        return await stream_frames(request, call, frames, "text/event-stream")
    if function is not None:
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [_tool_call(function)]}
        finish = "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": text}, "stop"
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return json_response({**head, "object": "chat.completion", "choices": [choice], "usage": usage})


def _chunk_frames(
    head: dict[str, Any], function: tuple[str, Any] | None, text: str, pieces: int, usage: dict[str, int] | None
) -> Iterator[bytes]:
    """chat.completion.chunk SSE frames: role first, content pieces, finish, [usage], [DONE]."""
    if function is not None:
        tool = {"index": 0, **_tool_call(function)}
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "tool_calls": [tool]}, "tool_calls")]
    else:
        chunks = split_text(text, pieces)
        deltas = [({"content": piece}, None) for piece in chunks]
        deltas[0][0]["role"] = "assistant"
        deltas[-1] = (deltas[-1][0], "stop")
    base = {**head, "object": "chat.completion.chunk"}
    for delta, finish in deltas:
        yield _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    if usage is not None:
        yield _sse({**base, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@endpoint("openai")
async def list_models(request: web.Request) -> web.StreamResponse:
    """`GET models`: every catalogue model in OpenAI's list shape."""
    await admit(request, "openai", None, b"")
    return json_response({"object": "list", "data": [_model_object(m["name"][7:]) for m in CATALOGUE]})


@endpoint("openai")
async def get_model(request: web.Request) -> web.StreamResponse:
    """`GET models/{model}`: one model in OpenAI's shape."""
    model = normalize_model(request.match_info["model"]) or ""
    call = await admit(request, "openai", model, b"")
    if model_info(model, call.state.missing_models) is None:
        raise model_not_found(model, "v1beta", "get")
    return json_response(_model_object(model))


def _inputs(data: dict[str, Any]) -> list[str]:
    raw = data.get("input")
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        return [item if isinstance(item, str) else str(item) for item in raw]
    raise invalid_argument("Missing required parameter: 'input'.")


def _encode_vector(values: list[float], encoding: Any) -> list[float] | str:
    """Floats, or base64 little-endian float32 when the client asks for `base64`."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


@endpoint("openai")
async def embeddings(request: web.Request) -> web.StreamResponse:
    """`POST embeddings`: one deterministic vector per input string."""
    body = await request.read()
    data = _try_object(body)
    call = await admit(request, "openai", _body_model(data), body)
    data = _require(data, call, "embedContent")
    texts = _inputs(data)
    encoding = data.get("encoding_format")
    size = dimensions(call.model or "", data.get("dimensions"))
    items = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(embedding_for(text, size), encoding)}
        for i, text in enumerate(texts)
    ]
    tokens = sum(count_tokens(text) for text in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_response({"object": "list", "data": items, "model": call.model, "usage": usage})


def add_routes(app: web.Application) -> None:
    """Register the OpenAI-compatible surface."""
    app.router.add_post(f"{PREFIX}/chat/completions", chat_completions)
    app.router.add_get(f"{PREFIX}/models", list_models)
    app.router.add_get(f"{PREFIX}/models/{{model:.+}}", get_model)
    app.router.add_post(f"{PREFIX}/embeddings", embeddings)
