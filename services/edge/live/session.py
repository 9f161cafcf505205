"""A Live API upgrade (``BidiGenerateContent``): credentials, the setup frame, the lease, the relay, the close.

::

    credentials (every carrier; a key-path token checked at keyring before the upgrade)
      -> upgrade accepted; the first frame read within EDGE_LIVE_SETUP_TIMEOUT_S: setup, or 1007
      -> the Constrained path: the browser token redeemed for the setup's model (keyring, single use)
      -> the attempt loop (forwarding.attempts) with a session LeaseRequest (affinity: the resumed handle)
      -> relay.Relay.run per key until setupComplete, then the session; its release binds the handles issued

Errors are closes, as Google gives them (LIVE_API_NOTES.md 3.1): a browser
cannot read the status of a refused upgrade, the SDKs turn a close into
``APIError(code, reason)``. Malformed input 1007, a refused credential or
model 1008, the pool's session cap 1013 with keyring's reason, no key free
1011 ``RESOURCE_EXHAUSTED``, keyring unreachable 1011. No lease is asked for
before the setup frame has been read and checked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import WSMsgType, web
from yarl import URL

from services.common.answers import UpstreamError
from services.common.naming import token_hash

from ..context import EDGE
from ..errors import (
    InvalidLeaseRequest,
    LeaseRefused,
    ModelNotAllowed,
    NoKeyFree,
    TokenRejected,
    UnknownResource,
    UpstreamFailed,
)
from ..forwarding import attempts
from ..keyring import Binding, LeaseRequest
from ..observability import MODEL, ROUTE, STREAM
from ..upstream import Attempt, Call, Settlement
from . import credentials
from .metrics import LiveMetrics
from .protocol import (
    HANDLE_LIFE_S,
    INTERNAL,
    INVALID_ARGUMENT,
    INVALID_KEY,
    INVALID_PAYLOAD,
    POLICY,
    TRY_LATER,
    UNAUTHENTICATED,
    UNAVAILABLE,
    Refused,
    handle_name,
    read_setup,
    with_model,
)
from .relay import Ending, Limits, Relay

log = logging.getLogger(__name__)

LIVE_METRICS: Final = web.AppKey("live_metrics", LiveMetrics)
LIVE_RELAYS: Final = web.AppKey("live_relays", set[Relay])
ROUTE_NAME: Final = "live.bidiGenerateContent"
# google-genai 3.x asks for v1 by default; Google serves Live on v1beta (LIVE_API_NOTES.md 1.5): v1 goes up as v1beta.
UPSTREAM_VERSION: Final = {"v1": "v1beta", "v1beta": "v1beta", "v1alpha": "v1alpha"}
_PASSED_HEADERS: Final = ("user-agent", "x-goog-api-client")
BIDI: Final = "bidiGenerateContent"
_CAP_REASONS: Final = frozenset({"LIVE_SESSIONS", "LIVE_SESSIONS_PER_TOKEN"})


async def bidi_generate_content(request: web.Request) -> web.StreamResponse:
    """``GET [/]/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent[Constrained]``."""
    edge = request.app[EDGE]
    metrics = request.app[LIVE_METRICS]
    request[ROUTE], request[STREAM] = ROUTE_NAME, True
    constrained = request.match_info["method"].endswith("Constrained")
    refused: Refused | None = None
    token = ""
    try:
        token = credentials.browser_token(request) if constrained else credentials.client_token(request)
        if not constrained:
            await edge.keyring.check_token(token_hash(token))
    except Refused as early:
        refused = early
    except LeaseRefused as early:
        refused = _close_for(early, "")
    settings = edge.settings
    client = web.WebSocketResponse(max_msg_size=settings.live_max_frame_bytes, autoping=True, compress=False)
    await client.prepare(request)
    try:
        if refused is not None:
            raise refused
        frame, data = await _first_frame(client, settings.live_setup_timeout_s)
        setup = read_setup(data)
        request[MODEL] = edge.metrics.model_label(setup.model)
        lease: LeaseRequest
        if constrained:
            grant = await _redeem(request, token, setup.model, setup.handle is not None)
            frame = with_model(data, setup.model)
            lease = LeaseRequest(token_hash="", model=setup.model, session=True, session_grant=grant)
        else:
            lease = LeaseRequest(token_hash=token_hash(token), model=setup.model, session=True)
        ending = await _serve(request, client, lease, frame, setup.model, setup.handle)
    except Refused as closing:
        ending = Ending("bad_input" if closing.code == INVALID_PAYLOAD else "refused", closing.code, closing.reason)
        await client.close(code=closing.code, message=closing.reason.encode())
    except _ClientLeft:
        ending = Ending("client", client.close_code or 1006)
    metrics.closed(ending.cause, ending.code)
    return client


class _ClientLeft(Exception):
    """The client closed before its setup frame."""


async def _first_frame(client: web.WebSocketResponse, timeout_s: float) -> tuple[str | bytes, Any]:
    """The client's first message (text or binary JSON) and its parsed value; 1007 when it is not JSON."""
    try:
        message = await client.receive(timeout=timeout_s)
    except TimeoutError:
        raise Refused(INVALID_PAYLOAD, "No setup message was received in time.") from None
    if message.type is WSMsgType.ERROR:  # over the frame limit: aiohttp closed with 1009 already
        raise _ClientLeft()
    if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        raise _ClientLeft()
    try:
        return message.data, orjson.loads(message.data)
    except orjson.JSONDecodeError:
        raise Refused(INVALID_PAYLOAD, "Invalid JSON payload received. Unexpected token.") from None


async def _redeem(request: web.Request, token: str, model: str, resumption: bool) -> str:
    """The grant a browser token is worth for this model (spending a use unless resuming); 1008 otherwise."""
    try:
        redeemed = await request.app[EDGE].keyring.redeem_session_token(token, model, resumption)
    except TokenRejected:  # unknown, forged, spent or expired
        raise Refused(POLICY, UNAUTHENTICATED) from None
    except ModelNotAllowed as other_model:
        raise Refused(POLICY, other_model.message) from None
    except LeaseRefused as refusal:
        raise _close_for(refusal, model) from None
    return redeemed.grant


async def _serve(
    request: web.Request,
    client: web.WebSocketResponse,
    lease: LeaseRequest,
    frame: str | bytes,
    model: str,
    handle: str | None,
) -> Ending:
    edge = request.app[EDGE]
    settings = edge.settings
    version = UPSTREAM_VERSION[request.match_info["version"]]
    base = edge.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    url = f"{base}/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
    headers = {name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers}
    limits = Limits(
        setup_timeout_s=settings.live_setup_timeout_s,
        idle_timeout_s=settings.live_idle_timeout_s,
        max_duration_s=settings.live_max_duration_s,
        max_frame_bytes=settings.live_max_frame_bytes,
        connect_timeout_s=settings.connect_timeout_s,
    )
    app = request.app
    relay = Relay(client, request, frame, model, url, headers, limits, app[LIVE_METRICS], app[LIVE_RELAYS])
    call = Call(
        token_hash=lease.token_hash,
        model=lease.model,
        session=True,
        session_grant=lease.session_grant,
        affinity=(handle_name(handle),) if handle else (),
        method="GET",
        url=URL(url),
        headers=headers,
        body=None,
        stream=True,
        route=ROUTE_NAME,
    )
    try:
        ending = await attempts(request, call, _with_handles(relay), [])
    except LeaseRefused as refusal:
        edge.metrics.child(edge.metrics.denied, refusal.reason).inc()
        capped = _cap_reason(refusal)
        if capped:
            relay.metrics.capped.labels(capped).inc()
        raise _close_for(refusal, model) from None
    except UpstreamFailed:
        ending = relay.refused or Ending("upstream", INTERNAL, UNAVAILABLE)
        if not client.closed:
            await client.close(code=ending.code, message=ending.reason.encode())
    return ending


def _with_handles(relay: Relay) -> Callable[[Attempt, web.Request], Awaitable[Ending | UpstreamError]]:
    """``relay.run``, and the handles the session was issued bound (at its release) to the lease's key."""

    async def run(attempt: Attempt, request: web.Request) -> Ending | UpstreamError:
        try:
            return await relay.run(attempt, request)
        finally:
            handles = relay.seen.handles
            if handles:
                attempt.settlement = Settlement(bind=tuple(Binding(handle_name(h), HANDLE_LIFE_S) for h in handles))

    return run


def _close_for(refusal: LeaseRefused, model: str) -> Refused:
    """Keyring's refusal as the close Google would give for it (or, for the pool's own limits, a clear one)."""
    if isinstance(refusal, TokenRejected):
        return Refused(INVALID_PAYLOAD, INVALID_KEY)
    if isinstance(refusal, ModelNotAllowed):
        return Refused(POLICY, f"models/{model} is not found for API version v1beta, or is not supported for {BIDI}")
    if isinstance(refusal, UnknownResource):  # a resumption handle no key of the pool issued (or expired)
        return Refused(INVALID_PAYLOAD, INVALID_ARGUMENT)
    if isinstance(refusal, InvalidLeaseRequest):
        return Refused(INVALID_PAYLOAD, INVALID_ARGUMENT)
    if isinstance(refusal, NoKeyFree):
        if _cap_reason(refusal):
            return Refused(TRY_LATER, refusal.message)
        retry = f"; retry in {refusal.retry_after_s:.0f} s" if refusal.retry_after_s else ""
        return Refused(INTERNAL, f"RESOURCE_EXHAUSTED: no key of the pool is free for models/{model}{retry}")
    return Refused(INTERNAL, UNAVAILABLE)


def _cap_reason(refusal: LeaseRefused) -> str:
    """Keyring's session-cap reason (``StreamError.reason``) when that is why no lease was granted, else ""."""
    return refusal.cause if isinstance(refusal, NoKeyFree) and refusal.cause in _CAP_REASONS else ""
