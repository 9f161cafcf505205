"""What the edge reads of the Interactions API's live socket (``edge/live/events.py``): the opening event, the
interaction a create made, each step's usage, media frames."""

from __future__ import annotations

import orjson
import pytest

from services.edge.live.events import EventsSeen, Opening, read_opening
from services.edge.live.protocol import INVALID_PAYLOAD, Refused, Seen
from services.edge.live.relay import _scrubbed

KEY = "AIza" + "k" * 35


def test_a_connect_is_leased_by_its_interaction_and_a_create_by_its_model() -> None:
    assert read_opening({"event_type": "interaction.connect", "id": "v1_abc"}) == Opening(
        "", ("interactions/v1_abc",), creates=False
    )
    assert read_opening({"event_type": "interaction.create", "model": "models/gemini-3.8-live"}) == Opening(
        "gemini-3.8-live", (), creates=True
    )
    previous = {"event_type": "interaction.create", "model": "gemini-3.8-live", "previous_interaction_id": "v1_p"}
    assert read_opening({"events": [{**previous, "store": False}, {"event_type": "input"}]}) == Opening(
        "gemini-3.8-live", ("interactions/v1_p",), creates=True, stored=False
    )


@pytest.mark.parametrize(
    "first",
    [
        {"setup": {"model": "models/gemini-3.8-live"}},  # the Live API's setup
        {"event_type": "input", "content": []},
        {"events": []},
        {"events": [{"event_type": "input"}, {"event_type": "interaction.connect", "id": "v1_a"}]},
        {"event_type": "interaction.create"},
        {"event_type": "interaction.create", "model": "../files/x"},
        {"event_type": "interaction.create", "model": "gemini-3.8-live", "previous_interaction_id": 7},
        {"event_type": "interaction.connect"},
        {"event_type": "interaction.connect", "id": "a/../b"},
        {"event_type": "interaction.connect", "id": "x" * 129},
        ["interaction.connect"],
        "interaction.connect",
    ],
)
def test_a_first_frame_that_opens_nothing_is_refused_1007(first: object) -> None:
    with pytest.raises(Refused) as refused:
        read_opening(first)
    assert refused.value.code == INVALID_PAYLOAD and refused.value.reason


def test_the_created_interaction_and_the_steps_usage_are_read_alone_or_batched() -> None:
    seen = EventsSeen()
    seen.read(b'{"event_type":"interaction.created","interaction_id":"v1_new"}')
    step = {"event_type": "step.stop", "index": 1, "step_usage": {"total_input_tokens": 3, "total_output_tokens": 8}}
    cumulative = {**step, "usage": {"total_input_tokens": 300, "total_output_tokens": 800}}
    seen.read(orjson.dumps({"events": [step, cumulative, {"event_type": "step.delta", "index": 2}]}))
    seen.read(b'{"event_type":"step.stop","index":3,"usage":{"total_input_tokens":9}}')  # no step_usage: nothing
    seen.read(b'{"event_type":"step.stop","step_usage":{"total_input_tokens":-4,"total_output_tokens":true}}')
    seen.read(b"not json step_usage")
    assert (seen.created, seen.input_tokens, seen.output_tokens) == ("v1_new", 6, 16)
    seen.read(b'{"event_type":"interaction.created","interaction_id":"../x"}')
    assert seen.created == "v1_new"


def test_media_deltas_keep_their_base64_and_the_key_never_passes() -> None:
    seen = EventsSeen()
    audio = orjson.dumps({"event_type": "step.delta", "delta": {"type": "audio", "data": "AIza" + "A" * 60}})
    assert _scrubbed(audio, KEY, seen.carries_media(audio)) == audio
    text = orjson.dumps({"event_type": "step.delta", "delta": {"type": "text", "text": f"{KEY} AIza{'x' * 35}"}})
    out = _scrubbed(text, KEY, seen.carries_media(text))
    assert KEY.encode() not in out and b"AIza" + b"x" * 35 not in out


def test_a_leaving_edge_sends_no_frame_google_genai_would_refuse() -> None:
    # google-genai's reader raises on any server frame without an event_type (Live's goAway has none): the
    # interactions socket is only closed 1001 when its edge leaves; the Live socket gets Google's goAway.
    assert EventsSeen().go_away(30.0) is None
    assert Seen().go_away(30.0) == b'{"goAway":{"timeLeft":"30s"}}'
