"""A pool whose only keys are auth keys (AQ.) serves both dialects end to end, with the official clients.

The whole request path (edge, a keyring replica on mutual TLS, real etcd, the
simulator as the upstream) with keys shaped like those AI Studio issues now:
each one reaches the upstream in exactly the credential its endpoint takes,
operators see their kind, and no answer carries one back.
"""

from __future__ import annotations

from google import genai
from google.genai import types
from openai import AsyncOpenAI

from services.common.masking import mask
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_auth_key

from .conftest import MakeStack, Stack

MODEL = "gemini-3.5-flash"


def assert_no_key_in(stack: Stack, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in stack.keys:
        assert secret.encode() not in data


async def test_a_pool_of_auth_keys_serves_both_dialects(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=3, key_maker=fake_auth_key)
    assert all(secret.startswith("AQ.") for secret in stack.keys)
    answers: list[str] = []

    gemini = genai.Client(
        api_key=stack.token, http_options=types.HttpOptions(base_url=stack.edge_url, api_version="v1beta")
    )
    try:
        answer = await gemini.aio.models.generate_content(model=MODEL, contents="Say hello")
        assert answer.text
        answers.append(answer.model_dump_json())
        stream = await gemini.aio.models.generate_content_stream(model=MODEL, contents="Hi")
        streamed = [chunk async for chunk in stream]
        assert streamed and "".join(chunk.text or "" for chunk in streamed)
        answers.extend(chunk.model_dump_json() for chunk in streamed)
        models = [model.name async for model in await gemini.aio.models.list()]
        assert models
    finally:
        await gemini.aio.aclose()
        gemini.close()
    native = [sent for sent in stack.sim.requests if sent.path.startswith("/v1beta/models")]
    assert native and all(sent.headers.get("x-goog-api-key") in stack.keys for sent in native)
    assert all("authorization" not in sent.headers and "key" not in sent.query for sent in native)

    openai = AsyncOpenAI(base_url=stack.edge_url + "/v1", api_key=stack.token, max_retries=0)
    try:
        chat = await openai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello"}])
        assert chat.choices[0].message.content
        answers.append(chat.model_dump_json())
        stream = await openai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        answers.extend(chunk.model_dump_json() for chunk in chunks)
    finally:
        await openai.close()
    compatible = [sent for sent in stack.sim.requests if "/openai/" in sent.path]
    assert compatible
    for sent in compatible:  # exactly one credential: the key as Bearer
        assert sent.headers["authorization"].removeprefix("Bearer ") in stack.keys
        assert "x-goog-api-key" not in sent.headers and "key" not in sent.query

    for text in answers:
        assert_no_key_in(stack, text)
    await stack.no_lease_held()


async def test_operators_see_the_kind_and_only_masks(make_stack: MakeStack) -> None:
    stack = await make_stack(keys=2, key_maker=fake_auth_key)
    standard = "AIza" + "s" * 35
    added = await stack.replica.admin.AddKeys(pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=standard)]))
    assert added.added == 1
    listed = await stack.replica.admin.ListKeys(pb.ListKeysRequest(filter=pb.KeyFilter(pool="main")))
    kinds = {key.mask: key.kind for key in listed.keys}
    assert kinds == {**{mask(secret): "auth" for secret in stack.keys}, mask(standard): "standard"}
    assert_no_key_in(stack, listed.SerializeToString())
