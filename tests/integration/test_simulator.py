"""Integration tests of the Gemini simulator (services/simulator).

The simulator runs in-process on 127.0.0.1:0; it is exercised with plain
aiohttp and with the official `openai` and `google-genai` clients, so its
wire shapes stay compatible with what real SDKs parse.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from services.simulator import (
    PER_DAY_QUOTA_ID,
    Behaviour,
    RecordedRequest,
    SimulatorState,
    start_simulator,
)

MODEL = "gemini-3.5-flash"
GEN_BODY = {"contents": [{"role": "user", "parts": [{"text": "What is the capital of France?"}]}]}
EXPECTED_ANSWER = "Simulated answer to: What is the capital of France?"
UNREGISTERED = "Method doesn't allow unregistered callers"


@dataclass
class Sim:
    base: str
    state: SimulatorState
    http: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return self.base + path

    async def post(self, path: str, body: Any = GEN_BODY, key: str | None = "k1", **kw: Any) -> tuple[int, Any]:
        """POST JSON (or raw bytes) with the native key header; returns (status, parsed body)."""
        headers = {"x-goog-api-key": key} if key else {}
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.http.post(self.url(path), data=data, headers=headers, **kw) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def get(self, path: str, key: str | None = "k1") -> tuple[int, Any]:
        headers = {"x-goog-api-key": key} if key else {}
        async with self.http.get(self.url(path), headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def chat(self, body: dict[str, Any], key: str | None = "k1") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.http.post(self.url("/v1beta/openai/chat/completions"), json=body, headers=headers) as resp:
            return resp.status, orjson.loads(await resp.read())


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    runner, base, state = await start_simulator()
    try:
        async with aiohttp.ClientSession() as http:
            yield Sim(base, state, http)
    finally:
        await runner.cleanup()


@pytest.fixture
async def oai(sim: Sim) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{sim.base}/v1beta/openai/", api_key="k1", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def gclient(sim: Sim) -> AsyncIterator[genai.Client]:
    client = genai.Client(api_key="k1", http_options=types.HttpOptions(base_url=sim.base, api_version="v1beta"))
    try:
        yield client
    finally:
        await client.aio.aclose()
        client.close()


def error_of(body: Any) -> dict[str, Any]:
    """The `error` object of a native body."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


def detail(error: dict[str, Any], type_suffix: str) -> dict[str, Any]:
    """The single `details[]` entry of the given google.rpc type."""
    wanted = f"type.googleapis.com/google.rpc.{type_suffix}"
    matches: list[dict[str, Any]] = [d for d in error.get("details", []) if d["@type"] == wanted]
    assert len(matches) == 1, error
    return matches[0]


# ---------------------------------------------------------------- native success paths


async def test_generate_content_shape(sim: Sim) -> None:
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    assert status == 200
    (candidate,) = body["candidates"]
    assert candidate["content"] == {"parts": [{"text": EXPECTED_ANSWER}], "role": "model"}
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    usage = body["usageMetadata"]
    assert usage["promptTokenCount"] >= 1 and usage["candidatesTokenCount"] >= 1
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert body["modelVersion"] == MODEL and body["responseId"]


async def test_v1_and_query_key_and_prefixed_model(sim: Sim) -> None:
    url = sim.url(f"/v1/models/models%2F{MODEL}:generateContent?key=qk")
    async with sim.http.post(url, json=GEN_BODY) as resp:
        assert resp.status == 200
        assert (await resp.json())["modelVersion"] == MODEL
    assert sim.state.count("qk") == 1
    assert sim.state.requests[-1].model == MODEL


WEATHER_TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
            },
            {"name": "other"},
        ]
    }
]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


async def test_function_call_only_when_the_user_names_a_tool(sim: Sim) -> None:
    url = f"/v1beta/models/{MODEL}:generateContent"
    status, out = await sim.post(url, {**GEN_BODY, "tools": WEATHER_TOOLS})
    assert status == 200 and out["candidates"][0]["content"]["parts"] == [{"text": EXPECTED_ANSWER}]
    asked = [user("Please call get_weather for Paris")]
    status, out = await sim.post(url, {"contents": asked, "tools": WEATHER_TOOLS})
    candidate = out["candidates"][0]
    [part] = candidate["content"]["parts"]
    assert part["functionCall"]["name"] == "get_weather" and set(part["functionCall"]["args"]) == {"city"}
    assert candidate["finishReason"] == "STOP"
    for asking in ("use get weather", "What is the weather in Paris?"):  # the name, or its words but the verb
        _, out = await sim.post(url, {"contents": [user(asking)], "tools": WEATHER_TOOLS})
        assert out["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    # the answer to a function response is text, never another call (an agent loop ends)
    answered = [
        *asked,
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]},
    ]
    _, out = await sim.post(url, {"contents": answered, "tools": WEATHER_TOOLS})
    assert out["candidates"][0]["content"]["parts"] == [
        {"text": "Simulated answer to: Please call get_weather for Paris"}
    ]
    # mode ANY forces a call, mode NONE forbids one
    forced = {
        "contents": [user("hi")],
        "tools": WEATHER_TOOLS,
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }
    _, out = await sim.post(url, forced)
    assert out["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    forced["toolConfig"] = {"functionCallingConfig": {"mode": "NONE"}}
    forced["contents"] = asked
    _, out = await sim.post(url, forced)
    assert "text" in out["candidates"][0]["content"]["parts"][0]


async def test_structured_output_follows_the_schema(sim: Sim) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "reasoning": {"type": "STRING"},
            "score": {"type": "INTEGER"},
            "who": {"enum": ["user", "model"]},
        },
        "required": ["reasoning", "score"],
    }
    body = {**GEN_BODY, "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}}
    _, out = await sim.post(f"/v1beta/models/{MODEL}:generateContent", body)
    answer = orjson.loads(out["candidates"][0]["content"]["parts"][0]["text"])
    assert isinstance(answer["reasoning"], str) and answer["score"] == 1 and answer["who"] == "user"


async def test_list_models_paging_and_get(sim: Sim) -> None:
    status, first = await sim.get("/v1beta/models?pageSize=4")
    assert status == 200 and len(first["models"]) == 4 and first["nextPageToken"]
    _, second = await sim.get(f"/v1beta/models?pageSize=4&pageToken={first['nextPageToken']}")
    assert second["nextPageToken"]
    names = [m["name"] for m in first["models"] + second["models"]]
    assert names[:2] == ["models/gemini-3.1-pro-preview", "models/gemini-3.5-flash"]
    _, all_models = await sim.get("/v1beta/models")
    listed = {m["name"] for m in all_models["models"]}
    assert {"models/gemini-3.5-flash-lite", "models/gemini-2.5-flash", "models/gemini-embedding-001"} <= listed
    assert set(names) < listed and "nextPageToken" not in all_models
    status, model = await sim.get(f"/v1beta/models/{MODEL}")
    assert status == 200
    assert model["name"] == f"models/{MODEL}"
    assert {"version", "displayName", "description", "inputTokenLimit", "outputTokenLimit"} <= set(model)
    assert "generateContent" in model["supportedGenerationMethods"]


async def test_count_tokens_and_embeddings_are_deterministic(sim: Sim) -> None:
    status, tokens = await sim.post(f"/v1beta/models/{MODEL}:countTokens")
    assert status == 200 and tokens["totalTokens"] >= 1
    embed_body = {"content": {"parts": [{"text": "hello"}]}}
    _, one = await sim.post("/v1beta/models/text-embedding-004:embedContent", embed_body)
    _, again = await sim.post("/v1beta/models/text-embedding-004:embedContent", embed_body)
    values = one["embedding"]["values"]
    assert len(values) == 768 and all(isinstance(v, float) for v in values)
    assert again == one
    batch = {
        "requests": [{"model": "models/text-embedding-004", **embed_body}, {"content": {"parts": [{"text": "x"}]}}]
    }
    status, out = await sim.post("/v1beta/models/text-embedding-004:batchEmbedContents", batch)
    assert status == 200 and len(out["embeddings"]) == 2
    assert out["embeddings"][0]["values"] == values and out["embeddings"][1]["values"] != values


# ---------------------------------------------------------------- native streaming


async def test_sse_stream_yields_several_events(sim: Sim) -> None:
    url = sim.url(f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse")
    async with sim.http.post(url, json=GEN_BODY, headers={"x-goog-api-key": "k1"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        raw = await resp.read()
    events = [e for e in raw.split(b"\r\n\r\n") if e]
    assert len(events) == 3 and all(e.startswith(b"data: ") for e in events)
    chunks = [orjson.loads(e[len(b"data: ") :]) for e in events]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == EXPECTED_ANSWER
    assert "finishReason" not in chunks[0]["candidates"][0] and "usageMetadata" not in chunks[0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in chunks[-1]
    assert len({c["responseId"] for c in chunks}) == 1


async def test_json_array_stream_parses_as_array(sim: Sim) -> None:
    sim.state.default_chunks = 4
    url = sim.url(f"/v1beta/models/{MODEL}:streamGenerateContent")
    async with sim.http.post(url, json=GEN_BODY, headers={"x-goog-api-key": "k1"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        raw = await resp.read()
    assert raw.startswith(b"[{") and raw.endswith(b"}]") and raw.count(b"\r\n,{") == 3
    chunks = orjson.loads(raw)
    assert isinstance(chunks, list) and len(chunks) == 4
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == EXPECTED_ANSWER


@pytest.mark.parametrize("query", ["?alt=sse", ""])
async def test_bad_stream_request_is_400_before_streaming(sim: Sim, query: str) -> None:
    status, body = await sim.post(f"/v1beta/models/{MODEL}:streamGenerateContent{query}", {"contents": []})
    assert status == 400 and error_of(body)["status"] == "INVALID_ARGUMENT"


async def test_chunk_delay_lets_a_client_cut_the_stream(sim: Sim) -> None:
    sim.state.script("k1", Behaviour.ok(chunk_delay_s=30))
    url = sim.url(f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse")
    async with asyncio.timeout(10):  # far below the 30 s chunk delay: we never wait for chunk 2
        async with sim.http.post(url, json=GEN_BODY, headers={"x-goog-api-key": "k1"}) as resp:
            first = await resp.content.readuntil(b"\r\n\r\n")
            resp.close()
        assert orjson.loads(first[len(b"data: ") :])["candidates"][0]["content"]["parts"][0]["text"]
        status, _ = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    assert status == 200  # the server survived the cut stream
    assert sim.state.count("k1") == 2


async def test_ok_delay_is_applied(sim: Sim) -> None:
    sim.state.script("k1", Behaviour.ok(delay_s=0.3))
    started = time.monotonic()
    status, _ = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    assert status == 200 and time.monotonic() - started >= 0.3


# ---------------------------------------------------------------- native errors


async def test_missing_key_is_403(sim: Sim) -> None:
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent", key=None)
    error = error_of(body)
    assert status == 403 == error["code"] and error["status"] == "PERMISSION_DENIED"
    assert error["message"].startswith(UNREGISTERED)
    assert sim.state.requests[-1].key is None and sim.state.counts() == {}


async def test_unknown_model_is_404(sim: Sim) -> None:
    status, body = await sim.post("/v1beta/models/xyz:generateContent")
    error = error_of(body)
    assert status == 404 == error["code"] and error["status"] == "NOT_FOUND"
    assert error["message"].startswith(
        "models/xyz is not found for API version v1beta, or is not supported for generateContent."
    )
    status, body = await sim.get("/v1/models/xyz")
    assert status == 404 and "API version v1," in error_of(body)["message"]
    status, body = await sim.post("/v1beta/models/text-embedding-004:generateContent")
    assert status == 404 and error_of(body)["status"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", orjson.dumps({"contents": []}), orjson.dumps({"generationConfig": {}})],
    ids=["malformed", "not-object", "empty-contents", "missing-contents"],
)
async def test_bad_request_is_400(sim: Sim, body: bytes) -> None:
    status, out = await sim.post(f"/v1beta/models/{MODEL}:generateContent", body)
    error = error_of(out)
    assert status == 400 == error["code"] and error["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("kind", "code", "canonical"),
    [
        ("rate_limit", 429, "RESOURCE_EXHAUSTED"),
        ("invalid_key", 400, "INVALID_ARGUMENT"),
        ("permission_denied", 403, "PERMISSION_DENIED"),
        ("unauthenticated", 401, "UNAUTHENTICATED"),
        ("server_error", 500, "INTERNAL"),
        ("overloaded", 503, "UNAVAILABLE"),
        ("timeout", 504, "DEADLINE_EXCEEDED"),
    ],
)
async def test_scripted_error_kinds(sim: Sim, kind: Any, code: int, canonical: str) -> None:
    sim.state.script("k1", Behaviour(kind))
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    error = error_of(body)
    assert status == code == error["code"] and error["status"] == canonical and error["message"]
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    assert status == 200 and "candidates" in body  # the step was consumed
    assert sim.state.count("k1") == 2


async def test_rate_limit_details(sim: Sim) -> None:
    sim.state.script("k1", Behaviour.rate_limit(retry_delay_s=37), Behaviour.rate_limit(None, PER_DAY_QUOTA_ID))
    _, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    error = error_of(body)
    assert error["message"].startswith("You exceeded your current quota, please check your plan and billing details.")
    (violation,) = detail(error, "QuotaFailure")["violations"]
    assert violation == {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": MODEL},
        "quotaValue": "10",
    }
    assert detail(error, "RetryInfo") == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
    assert detail(error, "Help")["links"][0]["url"].startswith("https://")
    _, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    error = error_of(body)
    assert detail(error, "QuotaFailure")["violations"][0]["quotaId"] == PER_DAY_QUOTA_ID
    assert not [d for d in error["details"] if d["@type"].endswith("RetryInfo")]


async def test_invalid_key_details(sim: Sim) -> None:
    sim.state.set_sticky("bad", Behaviour("invalid_key"))
    for _ in range(2):
        status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent", key="bad")
        error = error_of(body)
        assert status == 400 and error["message"] == "API key not valid. Please pass a valid API key."
        info = detail(error, "ErrorInfo")
        assert info["reason"] == "API_KEY_INVALID" and info["domain"] == "googleapis.com"
        assert info["metadata"] == {"service": "generativelanguage.googleapis.com"}
        assert detail(error, "LocalizedMessage")["locale"] == "en-US"
    assert sim.state.count("bad") == 2


async def test_permission_denied_masks_the_key(sim: Sim) -> None:
    key = "AIzaSyTHISISAVERYSECRETKEY0123456789"
    sim.state.script(key, Behaviour("permission_denied"))
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent", key=key)
    assert status == 403 and "has been suspended" in error_of(body)["message"]
    assert key not in orjson.dumps(body).decode()


async def test_status_and_message_override(sim: Sim) -> None:
    sim.state.script("k1", Behaviour("server_error", status=502, message="bad gateway"))
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    assert status == 502 and error_of(body)["message"] == "bad gateway"


async def test_steps_then_sticky_and_model_restriction(sim: Sim) -> None:
    state = sim.state
    state.script("k1", Behaviour("overloaded"), model="models/gemini-3.1-pro-preview")
    state.script("k1", Behaviour("server_error"))
    state.set_sticky("k1", Behaviour("rate_limit"))
    flash = f"/v1beta/models/{MODEL}:generateContent"
    pro = "/v1beta/models/gemini-3.1-pro-preview:generateContent"
    assert (await sim.post(flash))[0] == 500  # the unrestricted step; the pro-only one is skipped
    assert (await sim.post(pro))[0] == 503
    assert (await sim.post(pro))[0] == 429  # list empty: sticky
    assert (await sim.post(flash))[0] == 429
    state.clear("k1")
    assert (await sim.post(flash))[0] == 200
    assert state.count("k1") == 5 and state.counts() == {"k1": 5}


async def test_drop_closes_connection(sim: Sim) -> None:
    sim.state.script("k1", Behaviour("drop"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await sim.post(f"/v1beta/models/{MODEL}:generateContent")
    assert sim.state.count("k1") == 1
    assert (await sim.post(f"/v1beta/models/{MODEL}:generateContent"))[0] == 200


async def test_drop_mid_stream_sends_one_chunk(sim: Sim) -> None:
    sim.state.script("k1", Behaviour("drop_mid_stream"))
    url = sim.url(f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse")
    async with sim.http.post(url, json=GEN_BODY, headers={"x-goog-api-key": "k1"}) as resp:
        assert resp.status == 200
        first = await resp.content.readuntil(b"\r\n\r\n")
        assert first.startswith(b"data: {")
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.content.read()


# ---------------------------------------------------------------- recording and control API


async def test_recorded_body_is_byte_exact(sim: Sim) -> None:
    payload = b'{ "contents" : [ {"parts":[{"text":"h\\u00e9llo \xc3\xa9"}]} ] ,"x":1.50}'
    status, _ = await sim.post(f"/v1beta/models/{MODEL}:generateContent?foo=bar", payload, key="rec")
    assert status == 200
    recorded = sim.state.requests[-1]
    assert isinstance(recorded, RecordedRequest)
    assert recorded.body == payload
    assert (recorded.key, recorded.method, recorded.model) == ("rec", "POST", MODEL)
    assert recorded.path == f"/v1beta/models/{MODEL}:generateContent" and recorded.query == {"foo": "bar"}
    assert recorded.headers["x-goog-api-key"] == "rec"
    async with sim.http.get(sim.url("/_sim/requests?limit=1")) as resp:
        (entry,) = (await resp.json())["requests"]
    assert base64.b64decode(entry["body"]) == payload and entry["key"] == "rec"


async def test_recorded_requests_are_bounded() -> None:
    state = SimulatorState()
    for i in range(10_005):
        state.record(RecordedRequest("k", "GET", f"/{i}", {}, {}, b"", None))
    assert len(state.requests) == 10_000
    assert state.requests[0].path == "/5" and state.count("k") == 10_005
    assert [r.path for r in state.last_requests(2)] == ["/10003", "/10004"]


async def test_control_api(sim: Sim) -> None:
    script = {
        "key": "ck",
        "model": None,
        "steps": [{"kind": "rate_limit", "retry_delay_s": 12}],
        "sticky": {"kind": "invalid_key"},
    }
    async with sim.http.post(sim.url("/_sim/script"), json=script) as resp:
        assert resp.status == 200
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent", key="ck")
    assert status == 429 and detail(error_of(body), "RetryInfo")["retryDelay"] == "12s"
    status, body = await sim.post(f"/v1beta/models/{MODEL}:generateContent", key="ck")
    assert status == 400 and detail(error_of(body), "ErrorInfo")["reason"] == "API_KEY_INVALID"
    async with sim.http.get(sim.url("/_sim/counts")) as resp:
        assert await resp.json() == {"counts": {"ck": 2}}
    async with sim.http.post(sim.url("/_sim/script"), json={"key": "ck", "steps": [{"kind": "nope"}]}) as resp:
        assert resp.status == 400
    async with sim.http.post(sim.url("/_sim/reset")) as resp:
        assert resp.status == 200
    assert sim.state.counts() == {} and sim.state.requests == []
    assert (await sim.post(f"/v1beta/models/{MODEL}:generateContent", key="ck"))[0] == 200


# ---------------------------------------------------------------- OpenAI-compatible routes (raw)


async def test_openai_errors_are_array_wrapped(sim: Sim) -> None:
    sim.state.script("k1", Behaviour("rate_limit"))
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    status, body = await sim.chat(chat)
    assert status == 429 and isinstance(body, list) and len(body) == 1
    error = error_of(body[0])
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert detail(error, "RetryInfo")["retryDelay"] == "30s"
    status, body = await sim.chat(chat, key=None)
    assert status == 403 and error_of(body[0])["message"].startswith(UNREGISTERED)
    status, body = await sim.chat({"model": "nope", "messages": chat["messages"]})
    assert status == 404 and error_of(body[0])["status"] == "NOT_FOUND"
    async with sim.http.post(
        sim.url("/v1beta/openai/chat/completions"), data=b"{oops", headers={"Authorization": "Bearer k1"}
    ) as resp:
        assert resp.status == 400 and error_of((await resp.json())[0])["status"] == "INVALID_ARGUMENT"


async def test_openai_content_parts_and_usage_chunk(sim: Sim) -> None:
    content = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
    ]
    status, body = await sim.chat({"model": MODEL, "messages": [{"role": "user", "content": content}]})
    assert status == 200 and body["choices"][0]["message"]["content"] == "Simulated answer to: describe"
    stream_body = {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with sim.http.post(
        sim.url("/v1beta/openai/chat/completions"), json=stream_body, headers={"Authorization": "Bearer k1"}
    ) as resp:
        assert resp.content_type == "text/event-stream"
        raw = await resp.read()
    events = [e[len(b"data: ") :] for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] >= 2
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------- official OpenAI client


async def test_openai_client_chat(sim: Sim, oai: openai.AsyncOpenAI) -> None:
    completion = await oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
    assert completion.choices[0].message.content == "Simulated answer to: Hello"
    assert completion.choices[0].finish_reason == "stop" and completion.id.startswith("chatcmpl-")
    assert completion.usage is not None and completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    recorded = sim.state.requests[-1]
    assert recorded.key == "k1" and recorded.path == "/v1beta/openai/chat/completions"


async def test_openai_client_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert len(pieces) > 1 and "".join(pieces) == "Simulated answer to: Hello"


async def test_openai_client_tool_calls(oai: openai.AsyncOpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    plain = await oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=tools)
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
    completion = await oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "lookup x"}], tools=tools
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "lookup" and call.function.arguments == "{}" and call.id.startswith("call_")
    answered = await oai.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "lookup x"},
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
        tools=tools,
    )
    assert answered.choices[0].finish_reason == "stop" and answered.choices[0].message.content


async def test_openai_client_embeddings_and_models(oai: openai.AsyncOpenAI) -> None:
    result = await oai.embeddings.create(model="text-embedding-004", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 768
    again = await oai.embeddings.create(model="text-embedding-004", input="a", encoding_format="base64")
    raw = base64.b64decode(str(again.data[0].embedding))
    assert list(struct.unpack("<768f", raw)) == pytest.approx(result.data[0].embedding, abs=1e-6)
    small = await oai.embeddings.create(model="gemini-embedding-001", input="a", dimensions=256)
    assert len(small.data[0].embedding) == 256
    ids = [m.id async for m in oai.models.list()]
    assert "models/gemini-3.5-flash" in ids and "models/gemini-3.1-pro-preview" in ids
    model = await oai.models.retrieve("models/gemini-3.5-flash-lite")
    assert model.id == "models/gemini-3.5-flash-lite" and model.owned_by == "google"


async def test_openai_client_sees_rate_limit(sim: Sim, oai: openai.AsyncOpenAI) -> None:
    sim.state.script("k1", Behaviour("rate_limit"))
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 429
    assert isinstance(caught.value.body, list) and caught.value.body[0]["error"]["status"] == "RESOURCE_EXHAUSTED"


# ---------------------------------------------------------------- official google-genai client


async def test_genai_generate_and_stream(sim: Sim, gclient: genai.Client) -> None:
    response = await gclient.aio.models.generate_content(model=MODEL, contents="Why is the sky blue?")
    assert response.text == "Simulated answer to: Why is the sky blue?"
    assert response.usage_metadata is not None and response.usage_metadata.total_token_count
    assert sim.state.requests[-1].headers["x-goog-api-key"] == "k1"
    chunks = [c async for c in await gclient.aio.models.generate_content_stream(model=MODEL, contents="Why?")]
    assert len(chunks) > 1 and "".join(c.text or "" for c in chunks) == "Simulated answer to: Why?"
    assert sim.state.requests[-1].query == {"alt": "sse"}


async def test_genai_count_tokens_and_embed(gclient: genai.Client) -> None:
    counted = await gclient.aio.models.count_tokens(model=MODEL, contents="one two three four")
    assert counted.total_tokens is not None and counted.total_tokens >= 1
    embedded = await gclient.aio.models.embed_content(model="text-embedding-004", contents=["hello", "world"])
    assert embedded.embeddings is not None and len(embedded.embeddings) == 2
    assert all(e.values is not None and len(e.values) == 768 for e in embedded.embeddings)
    big = await gclient.aio.models.embed_content(model="gemini-embedding-001", contents="hello")
    assert big.embeddings is not None and len(big.embeddings[0].values or []) == 3072
    cut = await gclient.aio.models.embed_content(
        model="gemini-embedding-001", contents="hello", config=types.EmbedContentConfig(output_dimensionality=768)
    )
    assert cut.embeddings is not None and cut.embeddings[0].values == (big.embeddings[0].values or [])[:768]


async def test_genai_sees_google_errors(sim: Sim, gclient: genai.Client) -> None:
    sim.state.script("k1", Behaviour("rate_limit"), Behaviour("invalid_key"))
    with pytest.raises(genai_errors.ClientError) as caught:
        await gclient.aio.models.generate_content(model=MODEL, contents="x")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(genai_errors.ClientError) as caught:
        await gclient.aio.models.generate_content(model=MODEL, contents="x")
    assert caught.value.code == 400 and "API key not valid" in (caught.value.message or "")
    with pytest.raises(genai_errors.ClientError) as caught:
        await gclient.aio.models.generate_content(model="no-such-model", contents="x")
    assert caught.value.code == 404


# ---------------------------------------------------------------- the process entry point


async def test_main_runs_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.simulator",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "SIMULATOR_HOST": "127.0.0.1"},
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode().strip()
            assert line.startswith("simulator listening on http://127.0.0.1:")
            base = line.rsplit(" ", 1)[1]
            async with aiohttp.ClientSession() as http, http.get(f"{base}/_sim/counts") as resp:
                assert await resp.json() == {"counts": {}}
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
