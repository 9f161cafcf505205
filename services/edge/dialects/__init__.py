"""The two dialects the edge speaks: OpenAI's and Gemini's own.

Each module parses only what the edge owns (token, model, stream flag),
builds a ``forwarding.Call`` and hands it to the shared attempt loop.
"""

from __future__ import annotations

import hashlib

import orjson

from ..errors import bad_request


def token_hash(token: str) -> str:
    """What keyring knows a client token by: SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


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


def model_id(name: str) -> str:
    """``models/gemini-2.5-flash`` and ``gemini-2.5-flash`` are the same model."""
    return name[7:] if name.startswith("models/") else name
