"""Admin console sessions ended before their expiry (logout), shared by every admin replica.

Admin keeps no session table: a session is a signed cookie any admin replica
accepts. What one replica learns at logout must reach the others, so the
ended session is recorded here, in the store, under the SHA-256 of its id
(keyring never sees a cookie), until the moment it would have expired
anyway. Every replica's view follows the store's watch, so a check answers
from memory. Expired records are dropped whenever a new one is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import orjson

from ..codec import Layout
from ..domain.errors import InvalidArgument
from ..domain.view import KeyringView
from ..writer import StateWriter

SESSION_HASH = re.compile(r"[0-9a-f]{64}")
# A session lives at most this long (admin's session_ttl_s is far below): bounds what a caller can store.
MAX_SESSION_S = 31 * 24 * 3600


class Sessions:
    def __init__(self, view: KeyringView, layout: Layout, writer: StateWriter, clock: Callable[[], float]) -> None:
        self._view = view
        self._layout = layout
        self._writer = writer
        self._clock = clock

    async def revoke(self, session_hash: str, expires_at: float) -> None:
        """Record an ended session until ``expires_at``; drops the records that have expired."""
        now = self._clock()
        _check_hash(session_hash)
        if not now < expires_at <= now + MAX_SESSION_S:
            raise InvalidArgument("expires_at_ms must lie in the future, within 31 days")
        for path in [path for path, value in self._view.sessions.items() if _expiry(value) <= now]:
            await self._writer.write_unguarded(path, None)
        record = orjson.dumps({"expires_at": expires_at, "at": now})
        await self._writer.write_unguarded(self._layout.session(session_hash), record)

    def revoked(self, session_hash: str) -> bool:
        _check_hash(session_hash)
        value = self._view.sessions.get(self._layout.session(session_hash))
        return value is not None and _expiry(value) > self._clock()


def _check_hash(session_hash: str) -> None:
    if not SESSION_HASH.fullmatch(session_hash):
        raise InvalidArgument("session_hash is the SHA-256 of the session id, 64 lowercase hex digits")


def _expiry(value: bytes) -> float:
    try:
        return float(orjson.loads(value)["expires_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0.0
