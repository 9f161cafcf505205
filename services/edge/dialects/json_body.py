"""A request body the edge reads, parsed: bounded in depth, and no field the edge decides on given twice.

Depth: a body nests at most ``MAX_DEPTH`` objects and arrays (Gemini's own
requests need a few levels; a function's JSON schema a few dozen). Deeper is
a 400: every walk over a parsed body (the input-token estimate, the names of
files and caches) may then recurse without reaching Python's recursion limit
(a 600-deep body was a 500 with a traceback). orjson refuses a depth over
1024 on its own; the body is parsed inside ``1024 - MAX_DEPTH`` arrays, so
that the same single parse refuses anything deeper than ``MAX_DEPTH`` (a body
with at most ``MAX_DEPTH`` brackets at all is parsed as it is, without the
copy).

Fields given twice: orjson keeps the last value of a key given twice, and
Google's parser may keep another, so a body that gives a field the edge
decides on (``DECIDED``: the model, the stream flag, an agent, the content it
estimates...) more than once at its top level is a 400. Cheap on the usual
body: without a ``\\u`` escape those keys can only be spelled as they are, so
one occurrence each of ``"model"``... in the bytes proves there is no second;
otherwise the top level's keys are read exactly (``json``'s C scanner, keys
decoded as Google decodes them). The names of files and caches nested deeper
are read with every value they are given (``wire.named_resources``).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Final

import orjson

MAX_DEPTH: Final = 100
_ORJSON_MAX_DEPTH: Final = 1024  # orjson's own limit: deeper is a JSONDecodeError ("depth limit exceeded")
_PAD: Final = _ORJSON_MAX_DEPTH - MAX_DEPTH
_OPEN: Final = b"[" * _PAD
_CLOSE: Final = b"]" * _PAD

# Top-level fields some route of the edge reads and decides on (dialects, resources): given twice, refused.
DECIDED: Final = frozenset(
    {
        "model", "stream", "agent", "store", "previous_interaction_id", "contents", "messages", "input",
        "systemInstruction", "system_instruction", "cachedContent", "cached_content", "requests", "batch",
        "environment",
    }
)  # fmt: skip


class RefusedBody(ValueError):
    """A body the edge will not read (its message says why): a 400 in the caller's dialect."""


def parse_object(body: bytes) -> dict[str, object]:
    """The JSON object ``body`` holds: at most ``MAX_DEPTH`` deep, no ``DECIDED`` field given twice."""
    data = _parse(body)
    if not isinstance(data, dict):
        raise RefusedBody("the request body must be a JSON object")
    twice = _given_twice(body, data)
    if twice is not None:
        raise RefusedBody(f'the request body gives the field "{twice}" more than once')
    return data


def _parse(body: bytes) -> object:
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:  # cannot be too deep: parsed as it is
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise RefusedBody(f"the request body is not valid JSON: {error}") from None
    try:
        data = orjson.loads(b"".join((_OPEN, body, _CLOSE)))
    except orjson.JSONDecodeError as error:
        if "depth" in error.msg:
            raise RefusedBody(f"the request body nests deeper than {MAX_DEPTH} objects and arrays") from None
        where = min(max(error.pos - _PAD, 0), len(body))
        raise RefusedBody(f"the request body is not valid JSON: {error.msg} (at character {where})") from None
    for _ in range(_PAD):
        assert isinstance(data, list)
        data = data[0]
    return data


def _given_twice(body: bytes, data: dict[str, object]) -> str | None:
    """A ``DECIDED`` field the top level of ``body`` gives more than once, if any."""
    named = [key for key in DECIDED if key in data]
    if not named:
        return None  # a field given twice is in the parsed object (with one of its values)
    if b"\\u" not in body and all(body.count(b'"%s"' % key.encode()) == 1 for key in named):
        return None  # each spelt once in the whole body: given once
    counts = Counter(key for key, _ in _top_level_pairs(body) if key in DECIDED)
    return next((key for key, count in counts.items() if count > 1), None)


def _top_level_pairs(body: bytes) -> list[tuple[str, object]]:
    """Every (key, value) of the top-level object, in order, duplicates kept (values not built beyond need)."""
    try:
        pairs: object = json.loads(
            body.decode("utf-8"), object_pairs_hook=list, parse_int=_skip, parse_float=_skip, parse_constant=_skip
        )
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
        raise RefusedBody(f"the request body is not valid JSON: {error}") from None
    assert isinstance(pairs, list)
    return pairs


def _skip(_: str) -> None:
    """Numbers and constants are not needed to read keys (and big integers cost nothing to skip)."""
