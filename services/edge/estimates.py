"""A request's input tokens, estimated from its parsed body: what keyring reserves for the call.

Each handler about a model estimates once, from the body it parsed within the
parse budget (``dialects.json_object``/``check_json_object``; a body over it is
not estimated), as ``Call.input_tokens``. Keyring reserves the estimate at
lease in the leased project's tokens-per-minute count (pacing) until the
answer tells the real count, and a 429 with quota violations carries it so
``answers.classify`` can tell a request larger than a tokens-per-minute limit
(the client's fault) from a spent window.

The client writes the body, and the estimate is shared by every tenant of the
project until the answer settles it, so it counts only the fields the
upstream reads as the request's input (each dialect's content, below), never
a ``text``/``content`` string elsewhere in the body, and never more than the
body's bytes / 4. Roughly 4 UTF-8 bytes a token; images and files are not
counted: the estimate errs low, so a request is blamed only when its text
alone exceeds a limit.
"""

from __future__ import annotations

from typing import Final

BYTES_PER_TOKEN: Final = 4

# Native actions whose input counts in the model's tokens-per-minute (a batch, a count or a video does not).
_GENERATING: Final = frozenset({"generateContent", "streamGenerateContent"})


def gemini_input(action: str, data: object, body: bytes | None) -> int:
    """``POST .../models/{model}:{action}``: contents and system instruction (generate), content (embed)."""
    if not isinstance(data, dict):
        return 0
    if action in _GENERATING:
        return _capped(_generate_request(data), body)
    if action == "embedContent":
        return _capped(_content(data.get("content")), body)
    if action == "batchEmbedContents":
        requests = _items(data.get("requests"))
        return _capped(sum(_content(r.get("content")) for r in requests if isinstance(r, dict)), body)
    return 0


def cache_input(data: object, body: bytes | None) -> int:
    """``POST .../cachedContents``: its contents and system instruction, as a generate request's."""
    return _capped(_generate_request(data), body) if isinstance(data, dict) else 0


def openai_input(endpoint: str, data: object, body: bytes | None) -> int:
    """``POST /v1/chat/completions``: the messages' content; ``POST /v1/embeddings``: the input strings."""
    if not isinstance(data, dict):
        return 0
    if endpoint == "chat/completions":
        messages = _items(data.get("messages"))
        return _capped(sum(_text_or_parts(m.get("content")) for m in messages if isinstance(m, dict)), body)
    if endpoint == "embeddings":
        inputs = data.get("input")
        return _capped(_text(inputs) + sum(_text(item) for item in _items(inputs)), body)
    return 0


def interaction_input(data: object, body: bytes | None) -> int:
    """``POST .../interactions``: its input (a string, content items or turns) and system instruction."""
    if not isinstance(data, dict):
        return 0
    given = data.get("input")
    items = [given] if isinstance(given, dict) else _items(given)
    total = _text(given) + _text(data.get("system_instruction"))
    for item in items:
        if isinstance(item, dict):  # a content item ({"type": "text", "text": ...}) or a turn ({"content": ...})
            total += _text(item.get("text")) + _text_or_parts(item.get("content"))
    return _capped(total, body)


def _capped(text_bytes: int, body: bytes | None) -> int:
    """Tokens of ``text_bytes``, never more than the body's own bytes would make."""
    return min(text_bytes, len(body or b"")) // BYTES_PER_TOKEN


def _generate_request(data: dict[str, object]) -> int:
    contents = sum(_content(content) for content in _items(data.get("contents")))
    system = data.get("systemInstruction", data.get("system_instruction"))
    return contents + _content(system)


def _content(content: object) -> int:
    """A native ``Content``: its parts' text."""
    if not isinstance(content, dict):
        return 0
    return sum(_text(part.get("text")) for part in _items(content.get("parts")) if isinstance(part, dict))


def _text_or_parts(content: object) -> int:
    """A string, or a list of parts whose ``text`` counts (OpenAI messages, interaction turns)."""
    return _text(content) + sum(_text(part.get("text")) for part in _items(content) if isinstance(part, dict))


def _items(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _text(value: object) -> int:
    return len(value.encode()) if isinstance(value, str) else 0
