"""The Interactions API: ``/{version}/interactions[/{id}[/cancel]]``.

- ``POST /interactions``: plain, streamed (``"stream": true``: SSE, relayed
  as it comes, keep-alives included) or in the background. The edge reads
  ``model`` (the lease's model; an ``agent`` call leases for no model),
  ``stream``, ``store`` and ``previous_interaction_id`` (its interaction and
  any file the input names are the affinity); the body goes up byte for
  byte. A stored interaction (``store`` not false) is bound to the key that
  made it, from the answer's ``id`` (a stream: its first event), before the
  client sees the answer's end.
- ``GET /interactions/{id}`` (``stream=true`` and ``last_event_id`` resume a
  stream), ``DELETE`` (unbinds), ``POST .../cancel``: leased by affinity.
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from .. import wire
from ..dialects import authenticated, json_object, read_body
from ..errors import bad_request
from ..estimates import interaction_input
from ..forwarding import forward
from . import bindings
from .common import cancel_get_delete, client_token, path_of, resource_call

_INTERACTION_ID: Final = re.compile(wire.INTERACTION_ID)


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /{version}/interactions``."""
    path = path_of(request, "interactions", item=False)
    hashed = await authenticated(request, client_token(request))
    body = await read_body(request)
    data = json_object(request, body)
    model = ""
    named = data.get("model")
    if named is not None:
        model = (wire.valid_model(named) if isinstance(named, str) else None) or ""
        if not model:
            raise bad_request("model must be a model id (lower-case letters, digits, '.' and '-')")
    affinity: list[str] = []
    previous = data.get("previous_interaction_id")
    if previous is not None:
        if not isinstance(previous, str) or _INTERACTION_ID.fullmatch(previous) is None:
            raise bad_request(
                "previous_interaction_id must be an interaction id (letters, digits, '_' and '-', at most 128)"
            )
        affinity.append(f"interactions/{previous}")
    if wire.names_resources(body):
        affinity += wire.named_resources(body)
    stored = data.get("store") is not False
    call = resource_call(
        request, path, hashed, "interactions.create", body=body, model=model, affinity=tuple(affinity),
        settle=bindings.created_interaction if stored else None, stream=data.get("stream") is True,
        input_tokens=interaction_input(data, body) if model else 0,
    )  # fmt: skip
    return await forward(request, call)


async def item(request: web.Request) -> web.StreamResponse:
    """``GET|DELETE /{version}/interactions/{id}``; ``POST /{version}/interactions/{id}/cancel``."""
    return await cancel_get_delete(
        request, "interactions", cancel_hint="/{version}/interactions/{id}/cancel", streamable=True
    )
