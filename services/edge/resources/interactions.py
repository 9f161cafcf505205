"""The Interactions API: ``/{version}/interactions[/{id}[/cancel]]``.

- ``POST /interactions``: plain, streamed (``"stream": true``: SSE, relayed
  as it comes, keep-alives included) or in the background. The edge reads
  ``model`` or ``agent`` (exactly one: the lease is for the model, or for
  ``agents/{agent}``, which keyring grants only when the pool's allow-list
  names that agent: an empty list or a model entry admits no agent),
  ``stream``, ``store`` and ``previous_interaction_id`` (its interaction and
  any file the input names are the affinity); the body goes up byte for
  byte. A stored interaction (``store`` not false) is bound to the key that
  made it, from the answer's ``id`` (a stream: its first event), before the
  client sees the answer's end.
- ``GET /interactions/{id}`` (``stream=true`` and ``last_event_id`` resume a
  stream), ``DELETE`` (unbinds), ``POST .../cancel``: leased by affinity.

A row of ``kinds`` served by ``generic``; this module is what its create
reads (``plan``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .. import wire
from ..errors import bad_request
from ..estimates import interaction_input
from ..upstream import Settle
from . import bindings

_INTERACTION_ID: Final = re.compile(wire.INTERACTION_ID)
# An agent call is leased for ``agents/{id}``: keyring grants it only when the pool's allow-list names it.
AGENT_PREFIX: Final = "agents/"


@dataclass(frozen=True, slots=True)
class Plan:
    """What a create's body decides about its call (``kinds.Kind.plan``; ``generic`` builds the call)."""

    model: str
    affinity: tuple[str, ...]
    binds: bool
    settle: Settle | None
    stream: bool
    input_tokens: int


def plan(data: dict[str, object], body: bytes) -> Plan:
    """``POST /{version}/interactions``: its model or agent, its previous interaction, stored or not, streamed."""
    model = _leased_for(data)
    affinity: list[str] = []
    previous = data.get("previous_interaction_id")
    if previous is not None:
        if not isinstance(previous, str) or _INTERACTION_ID.fullmatch(previous) is None:
            raise bad_request(
                "previous_interaction_id must be an interaction id (letters, digits, '_' and '-', at most 128)"
            )
        affinity.append(f"interactions/{previous}")
    stored = data.get("store") is not False
    return Plan(
        model, tuple(affinity), stored, bindings.created_interaction if stored else None, data.get("stream") is True,
        0 if model.startswith(AGENT_PREFIX) else interaction_input(data, body),
    )  # fmt: skip


def _leased_for(data: dict[str, object]) -> str:
    """What the lease is for: the model, or ``agents/{agent}`` (the pool must name that agent explicitly).

    Exactly one of ``model`` and ``agent``, as Google requires: a call with neither (or ``"model": null``
    alone) would reach the upstream with no name the pool's allow-list could judge.
    """
    model, agent = data.get("model"), data.get("agent")
    if (model is None) == (agent is None):
        raise bad_request("an interaction needs exactly one of model and agent")
    if model is not None:
        valid = wire.valid_model(model) if isinstance(model, str) else None
        if not valid:
            raise bad_request("model must be a model id (lower-case letters, digits, '.' and '-')")
        return valid
    valid = wire.valid_agent(agent) if isinstance(agent, str) else None
    if not valid:
        raise bad_request("agent must be an agent id (lower-case letters, digits, '.' and '-')")
    return f"{AGENT_PREFIX}{valid}"
