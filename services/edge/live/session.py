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
from ..keyring import Binding
from ..observability import MODEL, ROUTE, STREAM
from ..upstream import Attempt, Call, Settlement
from . import credentials
from .metrics import LiveMetrics
from .protocol import (
    ABNORMAL,
    HANDLE_LIFE_S,
    INTERNAL,
    INVALID_ARGUMENT,
    INVALID_KEY,
    INVALID_PAYLOAD,
    POLICY,
    TOO_BIG,
    TRY_LATER,
    UNAUTHENTICATED,
    UNAVAILABLE,
    FrameReader,
    Refused,
    Seen,
    Setup,
    handle_name,
    read_setup,
    with_model,
)
from .relay import Ending, Limits, Relay, close_client

log = logging.getLogger(__name__)

LIVE_METRICS: Final = web.AppKey("live_metrics", LiveMetrics)
LIVE_RELAYS: Final = web.AppKey("live_relays", set[Relay])
ROUTE_NAME: Final = "live.bidiGenerateContent"
_PASSED_HEADERS: Final = ("user-agent", "x-goog-api-client")
BIDI: Final = "bidiGenerateContent"
_CAP_REASONS: Final = frozenset({"LIVE_SESSIONS", "LIVE_SESSIONS_PER_TOKEN"})


async def bidi_generate_content(request: web.Request) -> web.StreamResponse:
    """``GET [/]/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent[Constrained]``."""
    edge = request.app[EDGE]
    request[ROUTE], request[STREAM] = ROUTE_NAME, True
    constrained = request.match_info["method"].endswith("Constrained")
    if constrained:
        refused: Refused | None = None
        try:
            token = credentials.browser_token(request)
        except Refused as early:
            token, refused = "", early
    else:
        token, refused = await checked_client_token(request)
    settings = edge.settings
    client = web.WebSocketResponse(max_msg_size=settings.live_max_frame_bytes, autoping=True, compress=False)
    await client.prepare(request)
    try:
        if refused is not None:
            raise refused
        frame, data = await first_frame(client, settings.live_setup_timeout_s)
        setup = read_setup(data)
        request[MODEL] = edge.metrics.model_label(setup.model)
        if constrained:  # the token's grant leases instead of a client token; its model is forced into the setup
            grant = await _redeem(request, token, setup.model, setup.handle is not None)
            call = _call(request, setup, session_grant=grant)
            frame = with_model(data, setup.model)
        else:
            call = _call(request, setup, token_hash=token_hash(token))
        relay = new_relay(request, client, call, frame)
        version = request.match_info["version"]
        ending = await serve(
            request, relay, call, _handles(relay), lambda refusal: close_for(refusal, call.model, version)
        )
    except (Refused, ClientLeft) as ended:
        ending = await refused_ending(client, ended)
    request.app[LIVE_METRICS].closed(ending.cause, ending.code)
    return client


async def checked_client_token(request: web.Request) -> tuple[str, Refused | None]:
    """The key path's client token (every carrier), checked at keyring before the upgrade; or the close for it."""
    try:
        token = credentials.client_token(request)
        await request.app[EDGE].keyring.check_token(token_hash(token))
    except Refused as early:
        return "", early
    except LeaseRefused as early:
        return "", close_for(early, "")
    return token, None


async def refused_ending(client: web.WebSocketResponse, ended: Refused | ClientLeft) -> Ending:
    """A session that never reached a key: the edge's close (malformed: 1007, refused) or the client's."""
    if isinstance(ended, Refused):
        await client.close(code=ended.code, message=ended.reason.encode())
        return Ending("bad_input" if ended.code == INVALID_PAYLOAD else "refused", ended.code, ended.reason)
    code = client.close_code or ABNORMAL
    return Ending("bad_input" if code == TOO_BIG else "client", code)


class ClientLeft(Exception):
    """The client closed before its first frame."""


async def first_frame(client: web.WebSocketResponse, timeout_s: float) -> tuple[str | bytes, Any]:
    """The client's first message (text or binary JSON) and its parsed value; 1007 when it is not JSON."""
    try:
        message = await client.receive(timeout=timeout_s)
    except TimeoutError:
        raise Refused(INVALID_PAYLOAD, "No setup message was received in time.") from None
    if message.type is WSMsgType.ERROR:  # over the frame limit: aiohttp closed with 1009 already
        raise ClientLeft()
    if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        raise ClientLeft()
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
        raise close_for(refusal, model, request.match_info["version"]) from None
    return redeemed.grant


def _call(request: web.Request, setup: Setup, *, token_hash: str = "", session_grant: str = "") -> Call:
    """The session's lease request (a handle resumed: the key it was issued on) and its upstream socket."""
    version = request.match_info["version"]
    if version == "v1" or request.match_info["method"].endswith("Constrained"):
        version = "v1beta"  # Google serves Live on v1beta; v1alpha only for what a client asked of v1alpha itself
    base = request.app[EDGE].base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return Call(
        token_hash=token_hash,
        session_grant=session_grant,
        session=True,
        model=setup.model,
        affinity=(handle_name(setup.handle),) if setup.handle else (),
        method="GET",
        url=URL(f"{base}/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"),
        headers={name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers},
        body=None,
        stream=True,
        route=ROUTE_NAME,
    )


def new_relay(request: web.Request, client: web.WebSocketResponse, call: Call, frame: str | bytes,
              seen: FrameReader | None = None, *, hold_close: bool = False) -> Relay:  # fmt: skip
    """The relay of one session (its client's first frame read), with the edge's Live limits."""
    app = request.app
    settings = app[EDGE].settings
    limits = Limits(
        setup_timeout_s=settings.live_setup_timeout_s,
        idle_timeout_s=settings.live_idle_timeout_s,
        max_duration_s=settings.live_max_duration_s,
        max_frame_bytes=settings.live_max_frame_bytes,
        connect_timeout_s=settings.connect_timeout_s,
    )
    return Relay(client, request, frame, call.model, str(call.url), call.headers, limits, app[LIVE_METRICS],
                 app[LIVE_RELAYS], seen, hold_close=hold_close)  # fmt: skip


async def serve(
    request: web.Request,
    relay: Relay,
    call: Call,
    bindings: Callable[[], tuple[Binding, ...]],
    close_for: Callable[[LeaseRefused], Refused],
) -> Ending:
    """The attempt loop with the relay as its run (its release binding ``bindings()``); keyring's refusal
    (``close_for``) or the upstream's last close as the close; the client closed once the release committed."""
    edge = request.app[EDGE]
    client = relay.client
    try:
        ending = await attempts(request, call, _binding(relay, bindings), [])
    except LeaseRefused as refusal:
        edge.metrics.child(edge.metrics.denied, refusal.reason).inc()
        capped = _cap_reason(refusal)
        if capped:
            relay.metrics.capped.labels(capped).inc()
        raise close_for(refusal) from None
    except UpstreamFailed:
        ending = relay.refused or Ending("upstream", INTERNAL, UNAVAILABLE)
        if not client.closed:
            await client.close(code=ending.code, message=ending.reason.encode())
    await close_client(client, ending)
    return ending


def _binding(
    relay: Relay, bindings: Callable[[], tuple[Binding, ...]]
) -> Callable[[Attempt, web.Request], Awaitable[Ending | UpstreamError]]:
    """``relay.run``, and what the session made (``bindings()``) bound at its release to the lease's key."""

    async def run(attempt: Attempt, request: web.Request) -> Ending | UpstreamError:
        try:
            return await relay.run(attempt, request)
        finally:
            bound = bindings()
            if bound:
                attempt.settlement = Settlement(bind=bound)

    return run


def _handles(relay: Relay) -> Callable[[], tuple[Binding, ...]]:
    """The resumption handles a Live session was issued, each bound for its life (2 h)."""
    seen = relay.seen
    assert isinstance(seen, Seen)
    return lambda: tuple(Binding(handle_name(h), HANDLE_LIFE_S) for h in seen.handles)


def close_for(refusal: LeaseRefused, model: str, version: str = "v1beta", method: str = BIDI) -> Refused:
    """Keyring's refusal as the close Google would give for it (or, for the pool's own limits, a clear one)."""
    if isinstance(refusal, TokenRejected):
        return Refused(INVALID_PAYLOAD, INVALID_KEY)
    if isinstance(refusal, ModelNotAllowed):
        return Refused(
            POLICY, f"models/{model} is not found for API version {version}, or is not supported for {method}"
        )
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
