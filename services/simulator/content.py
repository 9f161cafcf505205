"""Deterministic, cheap fake "inference": answer text, token counts, embeddings."""

from __future__ import annotations

import hashlib
import os
import re
import struct
from base64 import urlsafe_b64encode
from collections.abc import Iterable
from typing import Any, Final

from .schema import function_parameters, instance

ANSWER_PREFIX: Final = "Simulated answer to: "


def answer_for(prompt: str) -> str:
    """The reply text, derived from the last user text so tests can predict it."""
    return ANSWER_PREFIX + prompt[:40]


def count_tokens(text: str) -> int:
    """About four characters per token, never less than one."""
    return max(1, (len(text) + 3) // 4)


def embedding_for(text: str, dims: int) -> list[float]:
    """`dims` floats in [-1, 1) drawn from a hash of the text: same text, same vector (prefixes agree,
    so a smaller `outputDimensionality` is a truncation, as with Matryoshka embeddings)."""
    digest = hashlib.shake_256(text.encode()).digest(2 * dims)
    return [round(v / 32768.0, 5) for v in struct.unpack(f"<{dims}h", digest)]


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
    """(all prompt text, the last text part of the last user turn that has text) of Gemini `contents`.

    The last part, because clients put context first (gemini-cli sends its session context, then
    the prompt, in one turn): the answer echoes what the user asked."""
    texts: list[str] = []
    last_user = ""
    for content in contents:
        if not isinstance(content, dict):
            continue
        parts = content.get("parts")
        text = parts_text(parts)
        texts.append(text)
        if content.get("role", "user") == "user" and text and isinstance(parts, list):
            last_user = [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)][-1]
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
        if message.get("role") == "user" and text:
            last_user = text
    return " ".join(texts), last_user


# -- when to call a function ---------------------------------------------------------------------------
#
# The rule (deterministic, so tests and agents can rely on it): a function is called only when
# the conversation asks for it, that is when the last turn is the user's (not a function
# response) and its last text part (what the user typed: clients put context first) names a
# declared function: its name (`get_weather` or `get weather`),
# or every word of its name but a leading verb (`weather` for get_weather, `file` for
# read_file), as whole words in any case. The first declared function so named is called,
# with arguments made from its parameter schema. A tool config in mode ANY (OpenAI: tool_choice "required"
# or a named function) calls the first allowed function; mode NONE never calls. The answer
# to a function response is always text, so an agent loop ends.


_VERBS: Final = frozenset(
    [
        "get",
        "set",
        "list",
        "read",
        "write",
        "search",
        "find",
        "fetch",
        "lookup",
        "look",
        "do",
        "run",
        "call",
        "make",
        "create",
        "update",
        "delete",
        "invoke",
        "enter",
    ]
)


def names_function(text: str, name: str) -> bool:
    """True when `text` asks for the function `name` (see the rule above)."""
    if re.search(r"\b" + re.escape(name).replace("_", "[_ ]") + r"\b", text, re.IGNORECASE):
        return True
    words = [w.lower() for w in re.findall(r"[A-Za-z][a-z0-9]*|[A-Z0-9]+", name)]
    if len(words) > 1 and words[0] in _VERBS:
        words = words[1:]
    if not words or words[0] in _VERBS:
        return False
    found = {w.lower() for w in re.findall(r"[A-Za-z0-9]+", text)}
    return all(w in found for w in words)


def _pick(declarations: list[dict[str, Any]], text: str, forced: bool, allowed: list[str] | None) -> Any:
    candidates = [d for d in declarations if allowed is None or d["name"] in allowed]
    for declaration in candidates:
        if names_function(text, declaration["name"]):
            return declaration
    return candidates[0] if forced and candidates else None


def gemini_declarations(tools: Any) -> list[dict[str, Any]]:
    """Function declarations of Gemini `tools` (camelCase or snake_case)."""
    found: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else []:
        decls = (
            tool.get("functionDeclarations") or tool.get("function_declarations") if isinstance(tool, dict) else None
        )
        found += [d for d in decls or [] if isinstance(d, dict) and isinstance(d.get("name"), str)]
    return found


def gemini_function_call(data: dict[str, Any], last_user: str) -> dict[str, Any] | None:
    """The `functionCall` part to answer with, or None for a text answer (see the rule above)."""
    declarations = gemini_declarations(data.get("tools"))
    contents = data.get("contents")
    if not declarations or not isinstance(contents, list) or not contents:
        return None
    last = contents[-1]
    parts = last.get("parts") if isinstance(last, dict) else None
    if not isinstance(last, dict) or last.get("role", "user") not in ("user", ""):
        return None
    if any(isinstance(p, dict) and ("functionResponse" in p or "function_response" in p) for p in parts or []):
        return None
    config = (data.get("toolConfig") or data.get("tool_config") or {}).get("functionCallingConfig") or {}
    mode = str(config.get("mode", "AUTO")).upper()
    if mode == "NONE":
        return None
    allowed = config.get("allowedFunctionNames")
    texts = [p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]
    chosen = _pick(declarations, texts[-1] if texts else "", mode in ("ANY", "VALIDATED"), allowed)
    if chosen is None:
        return None
    return {"name": chosen["name"], "args": instance(function_parameters(chosen), last_user[:40]) or {}}


def openai_function_call(data: dict[str, Any], last_user: str) -> tuple[str, Any] | None:
    """(name, arguments) of the tool call to answer with, or None for a text answer."""
    functions = [
        t["function"]
        for t in data.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and isinstance(t["function"].get("name"), str)
    ]
    messages = data.get("messages")
    if not functions or not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None  # a tool result (or an assistant turn) is answered with text
    choice = data.get("tool_choice", "auto")
    if choice == "none":
        return None
    allowed = None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        allowed = [choice["function"].get("name")]
    chosen = _pick(
        functions, openai_content_text(last.get("content")), choice == "required" or allowed is not None, allowed
    )
    if chosen is None:
        return None
    return chosen["name"], instance(chosen.get("parameters") or {}, last_user[:40]) or {}
