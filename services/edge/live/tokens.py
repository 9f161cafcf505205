"""Browser tokens minted by the pool: ``POST /v1alpha/auth_tokens``, Google's ephemeral-token call, answered here.

A backend holding a client token asks, as it would ask Google
(google-genai's ``client.auth_tokens.create``, LIVE_API_NOTES.md 4.1), for a
token its browser's unmodified ``@google/genai`` presents on the Constrained
path. Keyring mints it (``MintSessionToken``): ``auth_tokens/<random>``,
locked to ``bidiGenerateContentSetup.model``, redeemable until
``newSessionExpireTime`` (60 s by default, 30 min at most) for ``uses``
sessions (1 by default, 10 at most). The edge later redeems it and opens a
normal session with a leased key (``session``): media, metering and
revocation stay in the pool; no Google token ever reaches the browser.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

import orjson
from aiohttp import web

from .. import wire
from ..context import EDGE
from ..dialects import authenticated, json_object, read_body
from ..dialects.gemini import client_token
from ..errors import bad_request
from ..observability import ROUTE

DEFAULT_TTL_S: Final = 60.0
MAX_TTL_S: Final = 1800.0
MAX_USES: Final = 10


async def create(request: web.Request) -> web.StreamResponse:
    """Mint a browser token for one model; Google's answer shape (``name``, ``expireTime``...)."""
    request[ROUTE] = "live.authTokens.create"
    hashed = await authenticated(request, client_token(request))
    data = json_object(request, await read_body(request))
    setup = data.get("bidiGenerateContentSetup", data.get("bidi_generate_content_setup")) or {}
    named = setup.get("model") if isinstance(setup, dict) else None
    model = wire.valid_model(named) if isinstance(named, str) else None
    if model is None:
        raise bad_request("bidiGenerateContentSetup.model must name the one model the token may open a session for")
    uses = data.get("uses", 1)
    if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
        raise bad_request(f"uses must be 1 to {MAX_USES} (a browser token of the pool is never unlimited)")
    ttl_s = _seconds_until(data.get("newSessionExpireTime", data.get("new_session_expire_time")))
    minted = await request.app[EDGE].keyring.mint_session_token(hashed, model, ttl_s, uses)
    expires = _rfc3339(minted.expires_at_ms / 1000)
    body = {
        "name": minted.token,
        "expireTime": expires,
        "newSessionExpireTime": expires,
        "uses": minted.uses,
        "bidiGenerateContentSetup": {"model": f"models/{minted.model}"},
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"})


def _seconds_until(value: object) -> float:
    """How long from now until ``value`` (an RFC 3339 time); the default when absent; 400 when out of bounds."""
    if value is None:
        return DEFAULT_TTL_S
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise bad_request("newSessionExpireTime must be an RFC 3339 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    seconds = at.timestamp() - time.time()
    if not 0 < seconds <= MAX_TTL_S:
        raise bad_request(f"newSessionExpireTime must be in the future and at most {MAX_TTL_S:.0f} s from now")
    return seconds


def _rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
