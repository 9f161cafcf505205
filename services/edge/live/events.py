"""What the edge reads of the Interactions API's live socket (``/{version}/interactions/live``): plain Python.

Not the Live API's ``setup``: google-genai 3.6 (``_interactions_websocket.py``)
opens the socket with an event, ``interaction.connect {id}`` (its
``interactions.connect(id)``) or ``interaction.create {model, ...}``; a batch
``{"events": [...]}`` may carry it first. The edge reads that opening
(``read_opening``: what the lease is for, what it is bound to), and in the
upstream's events (``EventsSeen``) the interaction a create made
(``interaction.created``) and each step's usage (``step.stop``'s
``step_usage``: what this connection generated; the cumulative ``usage`` would
count a reconnected interaction's earlier turns again). Every other frame is
relayed untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .. import wire
from .protocol import INVALID_ARGUMENT, INVALID_PAYLOAD, Refused

CREATE: Final = "interaction.create"
CONNECT: Final = "interaction.connect"
_INTERACTION_ID: Final = re.compile(wire.INTERACTION_ID)


@dataclass(frozen=True, slots=True)
class Opening:
    """The socket's first event: the model leased for ("" for a connect: the interaction's key decides), the
    interaction it reaches (its affinity), whether it creates one and keeps it (``store``)."""

    model: str
    affinity: tuple[str, ...]
    creates: bool
    stored: bool = True


def first_event(data: object) -> dict[str, Any] | None:
    """The first event of a frame: the frame itself, or a batch's first (None when it is neither)."""
    if isinstance(data, dict) and "events" in data:
        events = data["events"]
        data = events[0] if isinstance(events, list) and events else None
    return data if isinstance(data, dict) else None


def read_opening(data: object) -> Opening:
    """The first frame, checked before any lease: a create with a model, or a connect to an interaction id (1007)."""
    event = first_event(data)
    kind = event.get("event_type") if event is not None else None
    if event is None or kind not in (CREATE, CONNECT):
        raise Refused(INVALID_PAYLOAD, f"The first event must be {CREATE} or {CONNECT}.")
    if kind == CONNECT:
        return Opening("", (f"interactions/{_interaction_id(event.get('id'))}",), creates=False)
    named = event.get("model")
    model = wire.valid_model(named) if isinstance(named, str) else None
    if not model:
        raise Refused(INVALID_PAYLOAD, "interaction.create needs a model: models/{model id}.")
    previous = event.get("previous_interaction_id")
    affinity = () if previous is None else (f"interactions/{_interaction_id(previous)}",)
    return Opening(model, affinity, creates=True, stored=event.get("store") is not False)


def _interaction_id(value: object) -> str:
    if not isinstance(value, str) or _INTERACTION_ID.fullmatch(value) is None:
        raise Refused(INVALID_PAYLOAD, INVALID_ARGUMENT)
    return value


@dataclass(slots=True)
class EventsSeen:
    """What the upstream's events told the edge so far (``relay.Relay``'s reader)."""

    input_tokens: int = 0
    output_tokens: int = 0
    created: str = ""  # the interaction an ``interaction.created`` named

    def read(self, frame: bytes) -> None:
        """Note the frame's created interaction and step usage; cheap for the frames that carry neither."""
        if b"step_usage" not in frame and b"interaction.created" not in frame:
            return
        try:
            payload = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return
        batch = payload.get("events") if isinstance(payload, dict) else None
        for event in batch if isinstance(batch, list) else [payload]:
            if isinstance(event, dict):
                self._note(event)

    def _note(self, event: dict[str, Any]) -> None:
        kind = event.get("event_type")
        if kind == "interaction.created":
            named = event.get("interaction_id")
            if isinstance(named, str) and _INTERACTION_ID.fullmatch(named):
                self.created = named
        elif kind == "step.stop" and isinstance(event.get("step_usage"), dict):
            usage = event["step_usage"]
            self.input_tokens += _count(usage.get("total_input_tokens"))
            self.output_tokens += _count(usage.get("total_output_tokens"))

    def carries_media(self, frame: bytes) -> bool:
        """Audio, image and video deltas carry base64 ``data`` (which a key-shape scrub would corrupt)."""
        return b'"data"' in frame

    def go_away(self, time_left_s: float) -> bytes | None:
        """No event warns of a close here (an unknown frame would break google-genai's reader): the 1001 close
        alone tells the client to ``connect`` again, through another edge."""
        return None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
