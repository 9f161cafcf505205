"""Gemini's own dialect through the real stack, with the google-genai SDK as the client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from google import genai
from google.genai import types

from .conftest import Stack

MODEL = "gemini-3.5-flash"
OUTSIDE = "gemini-3.1-pro-preview"  # listed upstream, outside the pool's allow-list


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[genai.Client]:
    client = genai.Client(
        api_key=stack.token, http_options=types.HttpOptions(base_url=stack.edge_url, api_version="v1beta")
    )
    try:
        yield client
    finally:
        await client.aio.aclose()
        client.close()


async def test_generate_content(stack: Stack, client: genai.Client) -> None:
    answer = await client.aio.models.generate_content(model=MODEL, contents="Say hello")
    assert answer.text
    assert answer.usage_metadata is not None and answer.usage_metadata.prompt_token_count
    sent = stack.sim.requests[-1]
    assert (sent.method, sent.path) == ("POST", f"/v1beta/models/{MODEL}:generateContent")
    assert sent.headers["x-goog-api-key"] in stack.keys
    assert "x-goog-api-client" in sent.headers  # the SDK's own headers travel on
    await stack.no_lease_held()


async def test_generate_content_stream(stack: Stack, client: genai.Client) -> None:
    stack.sim.default_chunks = 5
    pieces = [
        chunk.text
        async for chunk in await client.aio.models.generate_content_stream(
            model=MODEL, contents="Tell me a story"
        )
    ]
    assert len(pieces) == 5 and all(pieces)
    sent = stack.sim.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:streamGenerateContent"
    assert sent.query.get("alt") == "sse"
    await stack.no_lease_held()


async def test_stream_as_json_array_without_alt_sse(stack: Stack, http: aiohttp.ClientSession) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "Tell me a story"}]}]}
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:streamGenerateContent"
    async with http.post(url, json=body, headers=stack.gemini_headers()) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["X-Accel-Buffering"] == "no"
        events = orjson.loads(await r.read())
    assert isinstance(events, list) and events[-1]["usageMetadata"]["candidatesTokenCount"] > 0
    await stack.no_lease_held()


async def test_count_tokens(stack: Stack, client: genai.Client) -> None:
    answer = await client.aio.models.count_tokens(model=MODEL, contents="How many tokens is this?")
    assert answer.total_tokens and answer.total_tokens > 0
    assert stack.sim.requests[-1].path.endswith(":countTokens")


async def test_embed_content(stack: Stack, client: genai.Client) -> None:
    answer = await client.aio.models.embed_content(model="text-embedding-004", contents=["one", "two"])
    assert answer.embeddings is not None and len(answer.embeddings) == 2


async def test_models_list_and_get(stack: Stack, client: genai.Client) -> None:
    names = [model.name async for model in await client.aio.models.list()]
    assert f"models/{MODEL}" in names
    assert f"models/{OUTSIDE}" not in names  # outside the pool's allow-list
    model = await client.aio.models.get(model=MODEL)
    assert model.name == f"models/{MODEL}"
    await stack.no_lease_held()


async def test_v1_api_version(stack: Stack) -> None:
    client = genai.Client(
        api_key=stack.token, http_options=types.HttpOptions(base_url=stack.edge_url, api_version="v1")
    )
    try:
        answer = await client.aio.models.generate_content(model=MODEL, contents="hi")
        names = [model.name async for model in await client.aio.models.list()]
    finally:
        await client.aio.aclose()
        client.close()
    assert answer.text and f"models/{MODEL}" in names
    assert {r.path for r in stack.sim.requests} >= {f"/v1/models/{MODEL}:generateContent", "/v1/models"}


async def test_query_parameters_other_than_key_are_kept(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{stack.edge_url}/v1beta/models", params={"key": stack.token, "pageSize": "2"}) as r:
        assert r.status == 200
        page = await r.json()
    assert page["nextPageToken"]
    assert stack.sim.requests[-1].query == {"pageSize": "2"}


# A native body with unusual spacing, field order and fields the edge knows nothing about.
ODD_BODY = (
    b'{\n  "safetySettings": [ {"category":"HARM_CATEGORY_HARASSMENT",   "threshold":"BLOCK_NONE"} ],\n'
    b'\t"futureField": {"x": 1, "nested": [1.0, 2.50, 1e3]},\n'
    b'  "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},\n'
    b'  "contents": [{"parts": [{"text": "caf\\u00e9 \xc3\xa9t\xc3\xa9"}], "role": "user"}]   ,'
    b' "cachedContent": null }\n'
)


@pytest.mark.parametrize("auth", ["header", "query", "bearer"])
async def test_native_body_reaches_upstream_byte_for_byte_without_the_token(
    stack: Stack, http: aiohttp.ClientSession, auth: str
) -> None:
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent"
    headers = {"Content-Type": "application/json", "User-Agent": "e2e-test/1.0", "Cookie": "session=secret"}
    params: dict[str, str] = {}
    if auth == "header":
        headers.update(stack.gemini_headers())
    elif auth == "query":
        params["key"] = stack.token
    else:
        headers.update(stack.bearer_headers())
    async with http.post(url, data=ODD_BODY, headers=headers, params=params) as r:
        assert r.status == 200, await r.text()
    sent = stack.sim.requests[-1]
    assert sent.body == ODD_BODY
    assert sent.headers["user-agent"] == "e2e-test/1.0"
    assert "cookie" not in sent.headers and "authorization" not in sent.headers
    assert sent.key in stack.keys


async def test_client_token_never_reaches_upstream(
    stack: Stack, client: genai.Client, http: aiohttp.ClientSession
) -> None:
    await client.aio.models.generate_content(model=MODEL, contents="hi")
    async for _ in await client.aio.models.generate_content_stream(model=MODEL, contents="hi"):
        pass
    await client.aio.models.count_tokens(model=MODEL, contents="hi")
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent"
    body = {"contents": [{"parts": [{"text": "hi"}]}]}
    for params, headers in [
        ({"key": stack.token, "alt": "json"}, {}),
        ({}, stack.bearer_headers()),
        ({"key": stack.token}, stack.gemini_headers()),
    ]:
        async with http.post(url, json=body, params=params, headers=headers) as r:
            assert r.status == 200
    async with http.post(
        f"{stack.edge_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers=stack.bearer_headers(),
    ) as r:
        assert r.status == 200
    assert len(stack.sim.requests) == 7
    for request in stack.sim.requests:
        assert request.key in stack.keys
        for name, value in [*request.headers.items(), *request.query.items()]:
            assert stack.token not in value, f"client token forwarded in {name}"
        assert "key" not in request.query
        assert stack.token.encode() not in request.body
