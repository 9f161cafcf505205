"""What the edge reads of the Live API's frames and closes (LIVE_API_NOTES.md sections 2 and 3): plain Python.

The edge relays frames untouched; it reads only the client's first frame
(``setup``: the model, a resumption handle) and, in the upstream's frames,
``setupComplete``, ``usageMetadata`` and ``sessionResumptionUpdate.newHandle``
(``Seen``). A close of the upstream's means an outcome for keyring
(``close_outcome``), as the keyring proto's "Live sessions" comment lists:
a quota or session-cap close is a 429 that cools the project for the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import orjson

from services.common.answers import LEAKED_KEY_REASON, QuotaViolation, UpstreamError

from .. import wire

# Google's reasons, verbatim (section 3.1), for the closes the edge gives itself in Google's place.
INVALID_ARGUMENT: Final = "Request contains an invalid argument."
INVALID_KEY: Final = "API key not valid. Please pass a valid API key."
UNREGISTERED: Final = (
    "Method doesn't allow unregistered callers (callers without established identity)."
    " Please use API key or other form of API consumer identity to call this API."
)
UNAUTHENTICATED: Final = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie"
    " or other valid authentication credential."
)
UNAVAILABLE: Final = "The service is currently unavailable."
QUOTA_PREFIX: Final = "You exceeded your current quota"
LEAKED_PREFIX: Final = "Your API key was reported as leaked"
MAX_REASON_BYTES: Final = 123  # a close frame's reason (RFC 6455: 125 bytes of payload, 2 of them the code)
# Handles a release binds (the newest: the one a client resumes with, and the one before it, in case the newest was
# lost with the connection); each binding lives 2 h and counts against the token's bindings cap.
MAX_HANDLES: Final = 2
HANDLE_LIFE_S: Final = 2 * 3600.0  # "valid for 2 hours after the last session terminates"

# Close codes (RFC 6455 and Google's use of them).
NORMAL: Final = 1000
GOING_AWAY: Final = 1001
INVALID_PAYLOAD: Final = 1007
POLICY: Final = 1008
TOO_BIG: Final = 1009
INTERNAL: Final = 1011
TRY_LATER: Final = 1013
ABNORMAL: Final = 1006  # never sent: what a peer sees when the connection is cut


class Refused(Exception):
    """End the client's session with this close code and reason (Google's wording where Google has one)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = cut_reason(reason)


def cut_reason(reason: str) -> str:
    """``reason`` cut to what a close frame holds, never inside a UTF-8 character."""
    return reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


@dataclass(frozen=True, slots=True)
class Setup:
    """What the edge needs of the client's ``setup``: the bare model id, and the handle it resumes (if any)."""

    model: str
    handle: str | None


def read_setup(data: object) -> Setup:
    """The first client message, checked as Google checks it: exactly ``{"setup": {...}}`` with a model (1007)."""
    if not isinstance(data, dict) or set(data) != {"setup"} or not isinstance(data["setup"], dict):
        raise Refused(INVALID_PAYLOAD, INVALID_ARGUMENT)
    setup: dict[str, Any] = data["setup"]
    named = setup.get("model")
    model = wire.valid_model(named) if isinstance(named, str) else None
    if model is None:
        raise Refused(INVALID_PAYLOAD, INVALID_ARGUMENT)
    resumption = setup.get("sessionResumption", setup.get("session_resumption"))
    if resumption is not None and not isinstance(resumption, dict):
        raise Refused(INVALID_PAYLOAD, INVALID_ARGUMENT)
    handle = (resumption or {}).get("handle")
    if handle is not None and (not isinstance(handle, str) or not 0 < len(handle) <= 4096):
        raise Refused(INVALID_PAYLOAD, INVALID_ARGUMENT)
    return Setup(model, handle or None)


def with_model(data: dict[str, Any], model: str) -> bytes:
    """The setup frame with its model forced (a browser token's locked model), as JSON."""
    return orjson.dumps({"setup": {**data["setup"], "model": f"models/{model}"}})


def handle_name(handle: str) -> str:
    """The name a resumption handle is bound under in keyring: a hash (the handle resumes a conversation)."""
    return "liveSessions/" + hashlib.sha256(handle.encode()).hexdigest()[:48]


class FrameReader(Protocol):
    """What a relay reads of the upstream's frames: ``Seen`` (Live), ``events.EventsSeen`` (interactions)."""

    input_tokens: int
    output_tokens: int

    def read(self, frame: bytes) -> None: ...

    def carries_media(self, frame: bytes) -> bool: ...

    def go_away(self, time_left_s: float) -> bytes | None: ...


@dataclass(slots=True)
class Seen:
    """What the upstream's frames told the edge so far."""

    setup_complete: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    handles: list[str] = field(default_factory=list)  # the newest last, at most MAX_HANDLES

    def read(self, frame: bytes) -> None:
        """Note what ``frame`` (one server message) carries; cheap for the frames that carry none of it."""
        if b"setupComplete" not in frame and b"usageMetadata" not in frame and b"newHandle" not in frame:
            return
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return
        if not isinstance(message, dict):
            return
        if "setupComplete" in message:
            self.setup_complete = True
        usage = message.get("usageMetadata")
        if isinstance(usage, dict):
            # Per turn in what the simulator and Bifrost's transcript show: the session's usage is their sum.
            self.input_tokens += _count(usage.get("promptTokenCount"))
            self.output_tokens += _count(usage.get("responseTokenCount"))
        update = message.get("sessionResumptionUpdate")
        if isinstance(update, dict):
            handle = update.get("newHandle")
            if isinstance(handle, str) and handle and update.get("resumable", True) is not False:
                self.handles.append(handle)
                del self.handles[:-MAX_HANDLES]

    def carries_media(self, frame: bytes) -> bool:
        """Audio and images come as base64 ``inlineData`` (which a key-shape scrub would corrupt)."""
        return b'"inlineData"' in frame or b'"inline_data"' in frame

    def go_away(self, time_left_s: float) -> bytes | None:
        """Google's ``goAway``: the client resumes elsewhere within ``time_left_s``."""
        return b'{"goAway":{"timeLeft":"%ds"}}' % int(time_left_s)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def close_error(code: int, reason: str, model: str) -> UpstreamError | None:
    """What an upstream close means for the key, as an REST error would (None: nothing against the key).

    The quota close and the concurrent-session cap (1011) are a 429 on the
    model's per-minute input tokens per project (the Live quota, section 3.2):
    keyring cools the project for the model. A bad key 400 API_KEY_INVALID,
    a leaked one 403, other 1011s server trouble (500), an unknown model 404.
    """
    if code == INTERNAL and (reason.startswith(QUOTA_PREFIX) or "RESOURCE_EXHAUSTED" in reason):
        violation = QuotaViolation(
            quota_id="GenerateContentInputTokensPerModelPerMinute",
            quota_metric="generativelanguage.googleapis.com/generate_content_input_token_count",
            dimensions=(("model", model),),
        )
        return UpstreamError(429, "RESOURCE_EXHAUSTED", reason, violations=(violation,))
    if code == INTERNAL:
        return UpstreamError(500, "INTERNAL", reason)
    if code == INVALID_PAYLOAD and reason.startswith(INVALID_KEY):
        return UpstreamError(400, "INVALID_ARGUMENT", reason, reasons=("API_KEY_INVALID",))
    if code == POLICY and reason.startswith(LEAKED_PREFIX):
        return UpstreamError(403, "PERMISSION_DENIED", reason, reasons=(LEAKED_KEY_REASON,))
    if code == POLICY and "is not found for API version" in reason:
        return UpstreamError(404, "NOT_FOUND", reason)
    return None
