"""The two dialects the edge speaks: OpenAI's and Gemini's own.

Each module reads only what the edge owns (the client's token, the model,
the stream flag), builds an ``upstream.Call`` and hands it to the shared
attempt loop (``forwarding.forward``). Which of them answers a request is
decided once, by the route table (``routing``).
"""

from __future__ import annotations

from typing import Any

import orjson

from services.common.naming import model_id

from ..errors import bad_request


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def json_object(body: bytes) -> dict[str, object]:
    """Validate a JSON object body (the bytes themselves are forwarded, never re-serialised)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise bad_request(f"the request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    return data


def only_allowed(body: bytes, allowed: tuple[str, ...], *, listing: str, name: str) -> bytes:
    """A model list (``body[listing]``, each model named by ``name``) without the models outside the allow-list."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(data, dict) and isinstance(data.get(listing), list):
        data[listing] = [m for m in data[listing] if isinstance(m, dict) and model_id(str(m.get(name, ""))) in allowed]
    return orjson.dumps(data)
