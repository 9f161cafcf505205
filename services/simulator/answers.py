"""The answer to a GenerateContentRequest (used by generateContent, streams and batches)."""

from __future__ import annotations

from typing import Any

import orjson

from .content import answer_for, contents_texts, count_tokens, gemini_function_call, parts_text, split_text
from .errors import invalid_argument
from .schema import instance


def request_contents(data: dict[str, Any], request_name: str = "GenerateContentRequest") -> list[Any]:
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid_argument(f"* {request_name}.contents: contents is not specified\n")
    return contents


def prompt_texts(data: dict[str, Any]) -> tuple[str, str]:
    """(whole prompt text incl. system instruction, last user text)."""
    prompt, last_user = contents_texts(request_contents(data))
    system = data.get("systemInstruction") or data.get("system_instruction")
    if isinstance(system, dict):
        prompt = parts_text(system.get("parts")) + " " + prompt
    return prompt, last_user


def _answer_text(data: dict[str, Any], last_user: str) -> str:
    """The text answer: JSON of the requested schema for structured output, else the echo."""
    config = data.get("generationConfig") or data.get("generation_config") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema") or config.get("response_json_schema")
    if schema is not None or config.get("responseMimeType") == "application/json":
        return orjson.dumps(instance(schema or {"type": "object"}, answer_for(last_user))).decode()
    return answer_for(last_user)


def answer_chunks(
    data: dict[str, Any], pieces: int, cached_tokens: int = 0, scripted: str | None = None
) -> tuple[list[list[dict[str, Any]]], dict[str, int]]:
    """The answer as per-chunk part lists, plus its usageMetadata (``scripted``: the text to answer)."""
    prompt, last_user = prompt_texts(data)
    call = None if scripted is not None else gemini_function_call(data, last_user)
    if call is not None:
        chunks: list[list[dict[str, Any]]] = [[{"functionCall": call}]]
        answer_tokens = count_tokens(orjson.dumps(call).decode())
    else:
        text = _answer_text(data, last_user) if scripted is None else scripted
        chunks = [[{"text": piece}] for piece in split_text(text, pieces)]
        answer_tokens = count_tokens(text)
    prompt_tokens = count_tokens(prompt) + cached_tokens
    usage = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": answer_tokens,
        "totalTokenCount": prompt_tokens + answer_tokens,
    }
    if cached_tokens:
        usage["cachedContentTokenCount"] = cached_tokens
    return chunks, usage


def gemini_response(
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
