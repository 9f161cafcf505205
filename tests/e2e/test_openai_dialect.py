"""The OpenAI dialect through the real stack, with the official openai SDK as the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from openai import AsyncOpenAI

from .conftest import Stack

MODEL = "gemini-3.5-flash"
OUTSIDE = "gemini-3.1-pro-preview"  # listed upstream, outside the pool's allow-list


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{stack.edge_url}/v1", api_key=stack.token, max_retries=0) as client:
        yield client


def _upstream_keys(stack: Stack) -> set[str | None]:
    return {request.key for request in stack.sim.requests}


async def test_chat_completion(stack: Stack, client: AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    sent = stack.sim.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1beta/openai/chat/completions")
    assert sent.key in stack.keys  # the real key, as a Bearer token
    assert sent.headers["authorization"] == f"Bearer {sent.key}"
    await stack.no_lease_held()


async def test_chat_completion_accepts_models_prefix(stack: Stack, client: AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model=f"models/{MODEL}", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content


async def test_chat_completion_stream(stack: Stack, client: AsyncOpenAI) -> None:
    stack.sim.default_chunks = 4
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
    assert len(pieces) == 4
    assert usage is not None and usage.completion_tokens > 0
    await stack.no_lease_held()


async def test_stream_headers(stack: Stack, http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with http.post(f"{stack.edge_url}/v1/chat/completions", json=body, headers=stack.bearer_headers()) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Accel-Buffering"] == "no"
        text = await r.text()
    assert text.rstrip().endswith("data: [DONE]")


async def test_tools_pass_through(stack: Stack, client: AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    )
    calls = answer.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"


async def test_image_content_passes_through(stack: Stack, client: AsyncOpenAI) -> None:
    image = (
        "data:image/png;base64,"
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    )
    answer = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            }
        ],
    )
    assert answer.choices[0].message.content
    assert image.encode() in stack.sim.requests[-1].body


async def test_embeddings(stack: Stack, client: AsyncOpenAI) -> None:
    answer = await client.embeddings.create(model="text-embedding-004", input=["one", "two"])
    assert len(answer.data) == 2 and len(answer.data[0].embedding) > 0
    assert stack.sim.requests[-1].path == "/v1beta/openai/embeddings"
    await stack.no_lease_held()


async def test_models_list(stack: Stack, client: AsyncOpenAI) -> None:
    ids = [model.id async for model in client.models.list()]
    assert f"models/{MODEL}" in ids
    assert f"models/{OUTSIDE}" not in ids  # outside the pool's allow-list
    assert stack.sim.requests[-1].path == "/v1beta/openai/models"


async def test_v1_models_answers_in_the_callers_dialect(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.edge_url}/v1/models", headers=stack.bearer_headers()) as r:
        assert r.status == 200
        openai_shape = await r.json()
    assert openai_shape["object"] == "list" and openai_shape["data"][0]["id"].startswith("models/")
    assert stack.sim.requests[-1].path == "/v1beta/openai/models"

    async with http.get(f"{stack.edge_url}/v1/models", headers=stack.gemini_headers()) as r:
        assert r.status == 200
        gemini_shape = await r.json()
    assert "models" in gemini_shape and gemini_shape["models"][0]["name"].startswith("models/")
    assert stack.sim.requests[-1].path == "/v1/models"

    async with http.get(f"{stack.edge_url}/v1/models", params={"key": stack.token}) as r:
        assert r.status == 200
        assert "models" in await r.json()
    await stack.no_lease_held()
