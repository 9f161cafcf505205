"""Deterministic, cheap fake "inference": answer text, token counts, embeddings."""

from __future__ import annotations

import hashlib
import os
from base64 import urlsafe_b64encode
from collections.abc import Iterable
from typing import Any, Final

EMBEDDING_DIMS: Final = 8
ANSWER_PREFIX: Final = "Simulated answer to: "


def answer_for(prompt: str) -> str:
    """The reply text, derived from the last user text so tests can predict it."""
    return ANSWER_PREFIX + prompt[:40]


def count_tokens(text: str) -> int:
    """About four characters per token, never less than one."""
    return max(1, (len(text) + 3) // 4)


def embedding_for(text: str) -> list[float]:
    """Eight floats in [-1, 1) taken from a hash of the text: same text, same vector."""
    digest = hashlib.blake2b(text.encode(), digest_size=4 * EMBEDDING_DIMS).digest()
    return [round(int.from_bytes(digest[i : i + 4], "little") / 2**31 - 1.0, 6) for i in range(0, len(digest), 4)]


def random_id(nbytes: int = 12) -> str:
    """Opaque random identifier for responseId / chatcmpl ids."""
    return urlsafe_b64encode(os.urandom(nbytes)).decode().rstrip("=")


def split_text(text: str, pieces: int) -> list[str]:
    """Cut `text` into at most `pieces` non-empty consecutive slices (joined they give `text`)."""
    pieces = max(1, min(pieces, len(text)))
    size = -(-len(text) // pieces)
    return [text[i : i + size] for i in range(0, len(text), size)] or [text]


def parts_text(parts: Any) -> str:
    """Join the `text` fields of Gemini `parts` (non-text parts are ignored)."""
    if not isinstance(parts, list):
        return ""
    return " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def contents_texts(contents: Iterable[Any]) -> tuple[str, str]:
    """(all prompt text, text of the last user turn) of Gemini `contents`."""
    texts: list[str] = []
    last_user = ""
    for content in contents:
        if not isinstance(content, dict):
            continue
        text = parts_text(content.get("parts"))
        texts.append(text)
        if content.get("role", "user") == "user":
            last_user = text
    return " ".join(texts), last_user


def openai_content_text(content: Any) -> str:
    """Text of an OpenAI message `content`: a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def messages_texts(messages: Iterable[Any]) -> tuple[str, str]:
    """(all prompt text, text of the last user message) of OpenAI `messages`."""
    texts: list[str] = []
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        text = openai_content_text(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            last_user = text
    return " ".join(texts), last_user


def first_gemini_function(tools: Any) -> str | None:
    """Name of the first function declared in Gemini `tools`, if any."""
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        decls = tool.get("functionDeclarations") or tool.get("function_declarations")
        if isinstance(decls, list) and decls and isinstance(decls[0], dict) and decls[0].get("name"):
            return str(decls[0]["name"])
    return None


def first_openai_function(tools: Any) -> str | None:
    """Name of the first function in OpenAI `tools`, if any."""
    if not isinstance(tools, list):
        return None
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            return str(fn["name"])
    return None
