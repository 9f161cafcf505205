"""The edge's input-token estimate (issue 18, finding 4): only each dialect's content, capped by the body's size."""

from __future__ import annotations

import orjson

from services.edge.estimates import cache_input, gemini_input, interaction_input, openai_input


def sized(data: object) -> tuple[object, bytes]:
    return data, orjson.dumps(data)


def test_only_the_native_requests_content_counts_not_text_strings_elsewhere() -> None:
    data, body = sized(
        {
            "contents": [{"role": "user", "parts": [{"text": "x" * 4000}, {"inlineData": {"data": "A" * 999}}]}],
            "systemInstruction": {"parts": [{"text": "s" * 400}]},
            # Strings named text or content outside the request's content: the upstream never reads them as input.
            "generationConfig": {"text": "t" * 40_000, "content": "c" * 40_000},
            "labels": {"text": "t" * 40_000},
            "tools": [{"functionDeclarations": [{"name": "f", "description": "d", "content": "c" * 40_000}]}],
            "contents_extra": [{"parts": [{"text": "e" * 40_000}]}],
        }
    )
    assert gemini_input("generateContent", data, body) == 1100
    assert gemini_input("streamGenerateContent", data, body) == 1100
    assert cache_input(data, body) == 1100
    assert gemini_input("countTokens", data, body) == 0  # not the model's tokens-per-minute
    assert gemini_input("batchGenerateContent", data, body) == 0
    embed, embed_body = sized({"content": {"parts": [{"text": "e" * 80}]}, "title": {"text": "t" * 9000}})
    assert gemini_input("embedContent", embed, embed_body) == 20
    batch, batch_body = sized({"requests": [{"content": {"parts": [{"text": "b" * 40}]}} for _ in range(3)]})
    assert gemini_input("batchEmbedContents", batch, batch_body) == 30
    assert gemini_input("generateContent", None, body) == 0  # over the parse budget: not estimated


def test_only_the_openai_messages_content_and_embedding_input_count() -> None:
    data, body = sized(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "y" * 800},
                {"role": "user", "content": [{"type": "text", "text": "z" * 400}, {"type": "image_url"}]},
                {"role": "user", "name": "n", "text": "t" * 40_000},
            ],
            "metadata": {"content": "c" * 40_000},
            "response_format": {"json_schema": {"text": "t" * 40_000}},
        }
    )
    assert openai_input("chat/completions", data, body) == 300
    embed, embed_body = sized({"model": "m", "input": ["a" * 40, "b" * 40], "user": "u" * 9000})
    assert openai_input("embeddings", embed, embed_body) == 20
    one, one_body = sized({"model": "m", "input": "a" * 40})
    assert openai_input("embeddings", one, one_body) == 10


def test_only_an_interactions_input_and_system_instruction_count() -> None:
    plain, plain_body = sized(
        {"model": "m", "input": "i" * 400, "system_instruction": "s" * 40, "x": {"text": "t" * 9000}}
    )
    assert interaction_input(plain, plain_body) == 110
    turns, turns_body = sized(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "u" * 80},
                {"role": "model", "content": [{"type": "text", "text": "m" * 40}]},
                {"type": "text", "text": "c" * 40},
            ],
            "generation_config": {"text": "t" * 9000},
        }
    )
    assert interaction_input(turns, turns_body) == 40


def test_the_estimate_never_exceeds_the_bodys_bytes_over_four() -> None:
    data = {"contents": [{"parts": [{"text": "x" * 4000}]}]}
    assert gemini_input("generateContent", data, b"{}") == 0  # a parsed body the bytes do not back
    assert gemini_input("generateContent", data, b"x" * 400) == 100
    assert openai_input("chat/completions", {"messages": [{"content": "y" * 4000}]}, b"x" * 40) == 10
    assert interaction_input({"input": "i" * 4000}, None) == 0
