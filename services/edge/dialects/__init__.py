"""The two dialects the edge speaks: OpenAI's and Gemini's own.

Each module reads only what the edge owns (the client's token, the model,
the stream flag), builds an ``upstream.Call`` and hands it to the shared
attempt loop (``forwarding.forward``). Which of them answers a request is
decided once, by the route table (``routing``).
"""

from __future__ import annotations

import orjson

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
