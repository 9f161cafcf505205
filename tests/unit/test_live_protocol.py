"""What the edge reads of Live frames and closes (services/edge/live/protocol.py), and how it scrubs frames."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.common.answers import AnswerKind
from services.edge.live import credentials
from services.edge.live.protocol import (
    INVALID_ARGUMENT,
    MAX_HANDLES,
    Refused,
    Seen,
    close_error,
    cut_reason,
    handle_name,
    read_setup,
    with_model,
)
from services.edge.live.relay import _scrubbed
from services.simulator.live import QUOTA_MESSAGE, SESSION_CAP_MESSAGE

KEY = "AQ.Ab8RN6LnE4n0Rq2Xc-fake-key-for-tests_0123456789"


def test_setup_gives_the_model_and_the_handle() -> None:
    setup = read_setup({"setup": {"model": "models/gemini-3.8-live", "sessionResumption": {"handle": "h-1"}}})
    assert (setup.model, setup.handle) == ("gemini-3.8-live", "h-1")
    assert read_setup({"setup": {"model": "gemini-3.8-live", "session_resumption": {}}}).handle is None


@pytest.mark.parametrize(
    "first",
    [
        {"clientContent": {"turnComplete": True}},
        {"setup": {"model": "models/x"}, "clientContent": {}},
        {"setup": {}},
        {"setup": {"model": "models/../etc"}},
        {"setup": {"model": 3}},
        {"setup": {"model": "models/m", "sessionResumption": "h"}},
        {"setup": {"model": "models/m", "sessionResumption": {"handle": 7}}},
        ["setup"],
    ],
)
def test_anything_but_one_setup_first_is_googles_1007(first: object) -> None:
    with pytest.raises(Refused) as refused:
        read_setup(first)
    assert (refused.value.code, refused.value.reason) == (1007, INVALID_ARGUMENT)


def test_a_browser_tokens_model_is_forced_into_the_setup() -> None:
    forced = orjson.loads(with_model({"setup": {"model": "models/other", "tools": []}}, "gemini-3.8-live"))
    assert forced == {"setup": {"model": "models/gemini-3.8-live", "tools": []}}


def test_usage_is_summed_over_turns_and_the_newest_handles_kept() -> None:
    seen = Seen()
    seen.read(b'{"setupComplete":{}}')
    seen.read(b'{"serverContent":{"modelTurn":{"parts":[{"text":"usageMetadata"}]}}}')  # a mention, no usage
    for turn in range(MAX_HANDLES + 2):
        seen.read(
            orjson.dumps(
                {
                    "serverContent": {"turnComplete": True},
                    "usageMetadata": {"promptTokenCount": 10, "responseTokenCount": 3},
                }
            )
        )
        seen.read(orjson.dumps({"sessionResumptionUpdate": {"newHandle": f"h{turn}", "resumable": True}}))
    seen.read(b'{"sessionResumptionUpdate":{"newHandle":"not-resumable","resumable":false}}')
    seen.read(b'{"usageMetadata":{"promptTokenCount":true,"responseTokenCount":-4}}')  # nonsense counts nothing
    turns = MAX_HANDLES + 2
    assert seen.setup_complete and (seen.input_tokens, seen.output_tokens) == (10 * turns, 3 * turns)
    assert seen.handles == [f"h{turn}" for turn in range(2, MAX_HANDLES + 2)]


def test_closes_mean_what_the_rest_api_would() -> None:
    quota = close_error(1011, cut_reason(QUOTA_MESSAGE), "gemini-3.8-live")
    assert quota is not None and quota.kind is AnswerKind.RATE_LIMITED
    assert quota.http_status == 429 and dict(quota.violations[0].dimensions) == {"model": "gemini-3.8-live"}
    capped = close_error(1011, SESSION_CAP_MESSAGE, "m")
    assert capped is not None and capped.http_status == 429 and capped.kind.tries_another_key
    trouble = close_error(1011, "Internal error encountered.", "m")
    assert trouble is not None and trouble.kind is AnswerKind.UPSTREAM_TROUBLE
    bad_key = close_error(1007, "API key not valid. Please pass a valid API key.", "m")
    assert bad_key is not None and bad_key.kind is AnswerKind.KEY_INVALID
    leaked = close_error(1008, "Your API key was reported as leaked. Please use another API key.", "m")
    assert leaked is not None and leaked.kind.tries_another_key and leaked.http_status == 403
    unknown = close_error(1008, "models/x is not found for API version v1beta, or is not supported for bidi", "x")
    assert unknown is not None and not unknown.kind.tries_another_key
    assert close_error(1007, INVALID_ARGUMENT, "m") is None and close_error(1000, "", "m") is None


def test_handles_are_bound_by_a_hash_of_their_own() -> None:
    name = handle_name("a-secret-handle")
    assert name.startswith("liveSessions/") and "a-secret-handle" not in name and len(name) < 80
    assert handle_name("a-secret-handle") == name != handle_name("another")


def test_frames_are_scrubbed_of_the_key_and_media_left_intact() -> None:
    def scrubbed(frame: bytes) -> bytes:
        return _scrubbed(frame, KEY, Seen().carries_media(frame))

    text = orjson.dumps({"serverContent": {"modelTurn": {"parts": [{"text": f"key {KEY} and AIza{'x' * 35}"}]}}})
    assert KEY.encode() not in scrubbed(text) and b"AIza" + b"x" * 35 not in scrubbed(text)
    audio = orjson.dumps({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "AIza" + "A" * 60}}]}}})
    assert scrubbed(audio) == audio  # base64 that looks like a key shape is media, untouched
    assert KEY.encode() not in scrubbed(audio[:-3] + KEY.encode() + audio[-3:])  # the leased key never passes


def _request(query: str = "", **headers: str) -> web.Request:
    return make_mocked_request("GET", "/ws/x" + query, headers=headers)


def test_a_token_is_read_from_every_carrier_and_only_one_is_taken() -> None:
    token = "kr-" + "t" * 43
    assert credentials.client_token(_request(**{"x-goog-api-key": token})) == token  # Python
    assert credentials.client_token(_request(f"?key={token}")) == token  # JS, browsers
    assert credentials.client_token(_request(Authorization=f"Bearer {token}")) == token
    assert credentials.client_token(_request(f"?key={token}", **{"x-goog-api-key": token})) == token  # one value
    for refused, code in (
        (_request(f"?key={token}&key=kr-other-token-000000000"), 1007),
        (_request(f"?key={token}", Authorization="Bearer kr-other-token-000000000"), 1007),
        (_request(), 1008),
        (_request("?key=auth_tokens/abc"), 1008),  # a browser token belongs on the Constrained path
        (_request(f"?key={token}&access_token=auth_tokens/abc"), 1008),
    ):
        with pytest.raises(Refused) as caught:
            credentials.client_token(refused)
        assert caught.value.code == code


def test_a_browser_token_only_on_the_constrained_path() -> None:
    browser = "auth_tokens/" + "b" * 40
    python = _request(**{"Authorization": f"Token {browser}", "x-goog-api-key": browser})  # google-genai sends both
    assert credentials.browser_token(python) == browser
    assert credentials.browser_token(_request(f"?access_token={browser}")) == browser  # @google/genai
    for refused in (_request("?access_token=kr-" + "t" * 43), _request(f"?access_token={browser}&key=x")):
        with pytest.raises(Refused) as caught:
            credentials.browser_token(refused)
        assert caught.value.code == 1008
