"""Live API bookkeeping of the simulator: open sessions per project, resumption handles, limits.

Plain Python (no aiohttp) so tests inspect it in process; `live.py` speaks the WebSocket protocol on top.

Rules, as Google applies them (LIVE_API_NOTES.md sections 3.2, 3.3 and 7):

- limits are per Google Cloud **project**: the concurrent-session cap (`max_sessions`, per project or a
  default; None: no cap) counts the open sessions of every key of the project;
- a `sessionResumption` handle is issued to a session and resumes it on a key of the same project
  (`handle_scope="project"`) or on the issuing key only (`handle_scope="key"`); it is valid while its session
  is open and `handle_ttl_s` (2 hours) after the session ends; anything else is refused;
- a resumed session keeps the model of the session it resumes and its history.
"""

from __future__ import annotations

import os
import time
from base64 import urlsafe_b64encode
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

HANDLE_TTL_S: Final = 2 * 3600.0
MAX_CLOSED_SESSIONS: Final = 200
MAX_HISTORY_TURNS: Final = 50
MAX_HANDLES_PER_SESSION: Final = 16
HandleScope = Literal["project", "key"]
_INTS: Final = ("max_sessions", "lifetime_close_code", "max_frame_bytes")
_FLOATS: Final = ("connection_s", "go_away_s", "handle_ttl_s", "quota_close_delay_s", "vad_silence_s")


@dataclass(slots=True)
class LiveSettings:
    """What the control API (`/_sim/live`) may change; every field has Google's value or a test-friendly one."""

    #: Concurrent sessions per project (None: no cap); `max_sessions_by_project` wins for a named project.
    max_sessions: int | None = None
    max_sessions_by_project: dict[str, int] = field(default_factory=dict)
    #: A connection's life: `goAway` is sent `go_away_s` before it ends, then the close below (real: ~600 s, 50 s).
    connection_s: float = 600.0
    go_away_s: float = 50.0
    #: The close at the end of a connection's life: code from the notes (section 3.1); the reason is not recorded.
    lifetime_close_code: int = 1008
    lifetime_close_reason: str = ""
    handle_ttl_s: float = HANDLE_TTL_S
    handle_scope: HandleScope = "project"
    #: Seconds between `setupComplete` and the quota close of a scripted `rate_limit` (measured: ~0.8 s).
    quota_close_delay_s: float = 0.8
    #: With automatic activity detection, this much silence (no audio frame) ends the user's turn.
    vad_silence_s: float = 0.5
    #: A client frame larger than this is closed with 1009.
    max_frame_bytes: int = 4 * 1024 * 1024
    #: API versions whose Live path is served; another version's path is a 404 before any upgrade.
    versions: tuple[str, ...] = ("v1beta", "v1alpha")
    #: Keys whose upgrade is refused at HTTP level with this status (the handshake-failure path of a client).
    reject_upgrade: dict[str, int] = field(default_factory=dict)

    def update(self, data: dict[str, Any]) -> None:
        """Set the given fields, type-checked (a ValueError names the bad one; nothing is set then)."""
        staged = {}
        for name, value in data.items():
            staged[name] = self._checked(name, value)
        for name, value in staged.items():
            setattr(self, name, value)

    def _checked(self, name: str, value: Any) -> Any:
        if name in _INTS:
            if value is None and name == "max_sessions":
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name!r} must be a non-negative integer")
            return value
        if name in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name!r} must be a non-negative number")
            return float(value)
        if name == "lifetime_close_reason" and isinstance(value, str):
            return value
        if name == "handle_scope" and value in ("project", "key"):
            return value
        if name == "versions" and isinstance(value, list) and all(v in ("v1", "v1beta", "v1alpha") for v in value):
            return tuple(value)
        if (
            name in ("max_sessions_by_project", "reject_upgrade")
            and isinstance(value, dict)
            and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in value.items())
        ):
            return dict(value)
        raise ValueError(f"bad or unknown live setting {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_sessions": self.max_sessions,
            "max_sessions_by_project": dict(self.max_sessions_by_project),
            "connection_s": self.connection_s,
            "go_away_s": self.go_away_s,
            "lifetime_close_code": self.lifetime_close_code,
            "lifetime_close_reason": self.lifetime_close_reason,
            "handle_ttl_s": self.handle_ttl_s,
            "handle_scope": self.handle_scope,
            "quota_close_delay_s": self.quota_close_delay_s,
            "vad_silence_s": self.vad_silence_s,
            "max_frame_bytes": self.max_frame_bytes,
            "versions": list(self.versions),
            "reject_upgrade": dict(self.reject_upgrade),
        }


@dataclass(slots=True)
class LiveSession:
    """One WebSocket session as the simulator saw it (kept a while after it closed, for tests)."""

    id: str
    key: str
    project: str
    path: str
    version: str
    model: str | None = None
    started: float = field(default_factory=time.time)
    open: bool = True
    #: Counted against its project's cap: from its accepted `setup` until it closes.
    admitted: bool = False
    resumed_from: str | None = None
    turns: int = 0
    #: Client frames by WebSocket type (`text`, `binary`): a relay must keep each frame's type.
    frames_in: dict[str, int] = field(default_factory=lambda: {"text": 0, "binary": 0})
    frames_out: int = 0
    close_code: int | None = None
    close_reason: str = ""
    #: The conversation so far (user and model turns, Gemini `Content`s); a resumption restores it.
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Handles issued to this session.
    handles: list[str] = field(default_factory=list)
    #: Ends the open connection on command (code None: cut, no close frame); set by the WebSocket handler.
    interrupt: Callable[[int | None, str], None] | None = None

    def remember(self, *contents: dict[str, Any]) -> None:
        """Add turns to the history, which keeps the newest `MAX_HISTORY_TURNS`."""
        self.history += contents
        del self.history[:-MAX_HISTORY_TURNS]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "project": self.project,
            "path": self.path,
            "version": self.version,
            "model": self.model,
            "started": self.started,
            "open": self.open,
            "admitted": self.admitted,
            "resumed_from": self.resumed_from,
            "turns": self.turns,
            "frames_in": dict(self.frames_in),
            "frames_out": self.frames_out,
            "close_code": self.close_code,
            "close_reason": self.close_reason,
        }


@dataclass(slots=True)
class EphemeralToken:
    """An `auth_tokens/...` token minted with a key (`POST /v1alpha/auth_tokens`): Live sessions on the Constrained
    path run as that key, with the setup fields the token locks; `uses` (0: unlimited) counts new sessions only."""

    name: str
    key: str
    expires: float  # Unix time: no session after it
    new_sessions_until: float  # Unix time: no new session after it
    uses_left: int | None  # None: unlimited
    setup: dict[str, Any]  # bidiGenerateContentSetup: its fields win over the client's

    def refusal(self, now: float, resuming: bool) -> str | None:
        """Why a session may not start with this token now (None: it may)."""
        if now >= self.expires or (not resuming and now >= self.new_sessions_until):
            return "expired"
        if not resuming and self.uses_left == 0:
            return "used"
        return None


@dataclass(slots=True)
class _Handle:
    session: LiveSession
    expires: float = float("inf")  # set when its session ends


def _opaque(nbytes: int = 24) -> str:
    return urlsafe_b64encode(os.urandom(nbytes)).decode().rstrip("=")


class LiveBook:
    """Open and recent sessions, the project's caps and the resumption handles."""

    def __init__(self) -> None:
        self.settings = LiveSettings()
        self._open: dict[str, LiveSession] = {}
        self._closed: deque[LiveSession] = deque(maxlen=MAX_CLOSED_SESSIONS)
        self._handles: dict[str, _Handle] = {}
        self._tokens: dict[str, EphemeralToken] = {}

    # -- sessions ----------------------------------------------------------

    def cap_of(self, project: str) -> int | None:
        """The project's concurrent-session cap (None: no cap)."""
        return self.settings.max_sessions_by_project.get(project, self.settings.max_sessions)

    def open_in(self, project: str) -> int:
        """Sessions of `project` open now (every key of the project counts)."""
        return sum(1 for s in self._open.values() if s.project == project and s.admitted)

    def at_cap(self, project: str) -> bool:
        cap = self.cap_of(project)
        return cap is not None and self.open_in(project) >= cap

    def start(self, key: str, project: str, path: str, version: str) -> LiveSession:
        """A new connection (listed at once; counted against its project's cap once `admit`ted)."""
        session = LiveSession(id=_opaque(12), key=key, project=project, path=path, version=version)
        self._open[session.id] = session
        return session

    def admit(self, session: LiveSession) -> None:
        """The session's setup was accepted: it holds one of its project's session slots until it ends."""
        session.admitted = True

    def end(self, session: LiveSession, code: int | None, reason: str) -> None:
        """The session closed (idempotent): its slot is free, its handles live `handle_ttl_s` from now."""
        if not session.open:
            return
        session.open = False
        session.close_code, session.close_reason = code, reason
        self._open.pop(session.id, None)
        self._closed.append(session)
        expires = time.monotonic() + self.settings.handle_ttl_s
        for handle in session.handles:
            if handle in self._handles:
                self._handles[handle].expires = expires

    def sessions(self, project: str | None = None, key: str | None = None) -> list[LiveSession]:
        """Open sessions first, then recently closed ones (of a project or a key, when named)."""
        every = [*self._open.values(), *reversed(self._closed)]
        return [s for s in every if (project is None or s.project == project) and (key is None or s.key == key)]

    def open_sessions(self, project: str | None = None, key: str | None = None) -> list[LiveSession]:
        return [s for s in self.sessions(project, key) if s.open]

    # -- ephemeral tokens --------------------------------------------------

    def mint(self, key: str, expires: float, new_sessions_until: float, uses: int, setup: dict[str, Any]) -> str:
        """A new `auth_tokens/...` name for `key` (`uses` 0: unlimited)."""
        now = time.time()
        for old in [n for n, t in self._tokens.items() if t.expires <= now]:
            del self._tokens[old]
        name = "auth_tokens/" + _opaque()
        self._tokens[name] = EphemeralToken(name, key, expires, new_sessions_until, uses or None, setup)
        return name

    def token(self, name: str) -> EphemeralToken | None:
        return self._tokens.get(name)

    def spend(self, token: EphemeralToken) -> None:
        """A new session started with `token` (resumptions do not count)."""
        if token.uses_left is not None:
            token.uses_left -= 1

    # -- resumption handles ------------------------------------------------

    def issue_handle(self, session: LiveSession) -> str:
        """A new opaque handle resuming `session` (its history as of now and onward)."""
        self._collect()
        handle = _opaque()
        session.handles.append(handle)
        self._handles[handle] = _Handle(session)
        for old in session.handles[:-MAX_HANDLES_PER_SESSION]:  # a long session's oldest handles lapse
            self._handles.pop(old, None)
        del session.handles[:-MAX_HANDLES_PER_SESSION]
        return handle

    def resume(self, handle: str, key: str, project: str) -> LiveSession | None:
        """The session `handle` resumes for a caller of `key` in `project`, or None (unknown, expired,
        another project's, or another key's under `handle_scope="key"`)."""
        self._collect()
        found = self._handles.get(handle)
        if found is None:
            return None
        issued = found.session
        if issued.project != project or (self.settings.handle_scope == "key" and issued.key != key):
            return None
        return issued

    def handles_of(self, project: str | None = None) -> list[dict[str, Any]]:
        self._collect()
        now = time.monotonic()
        return [
            {
                "handle": h,
                "project": rec.session.project,
                "key": rec.session.key,
                "session": rec.session.id,
                "expires_in_s": None if rec.expires == float("inf") else round(rec.expires - now, 3),
            }
            for h, rec in self._handles.items()
            if project is None or rec.session.project == project
        ]

    def _collect(self) -> None:
        now = time.monotonic()
        for handle in [h for h, rec in self._handles.items() if rec.expires <= now]:
            del self._handles[handle]

    def expire_handles(self) -> None:
        """Every handle of an ended session expires now (tests: the 2 hours have passed)."""
        for rec in self._handles.values():
            if not rec.session.open:
                rec.expires = 0.0
        self._collect()

    def clear(self) -> None:
        """Forget closed sessions and handles; settings back to defaults (open sessions keep running)."""
        self.settings = LiveSettings()
        self._closed.clear()
        self._handles.clear()
        self._tokens.clear()
