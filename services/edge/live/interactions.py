"""The Interactions API's live socket through the edge: ``GET /{v1,v1beta,v1alpha}/interactions/live`` (issue 21).

The Live relay (``session``, ``relay``) with another first frame (``events``)::

    the client token (the key path's carriers: x-goog-api-key, ?key=, Bearer), checked at keyring before the upgrade
      -> the first frame within EDGE_LIVE_SETUP_TIMEOUT_S: interaction.create (a model) or interaction.connect
         (an interaction id), else 1007 and no lease
      -> one session lease through the attempt loop: a create's for its model (its previous interaction, if any,
         is the affinity), a connect's for the interaction's key (affinity ``interactions/{id}``: one the pool
         never bound is a 1008 "not found", nothing sent up)
      -> the relay until either side ends; the lease renewed, released once with the session's step usage;
         an interaction the session created bound to the lease's key before the client's socket is closed, so
         a ``connect`` or a REST call naming it on any edge finds it

The key goes upstream in ``x-goog-api-key`` only; ``api-revision`` (google-genai
sends it) is passed on with the client's agent headers. Not served: an
interaction's own ``auth_tokens/...`` as the credential (they are Google's,
minted for a key the client never sees): refused 1008.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from yarl import URL

from services.common.naming import token_hash

from .. import wire
from ..context import EDGE
from ..errors import LeaseRefused, UnknownResource
from ..keyring import Binding
from ..observability import MODEL, ROUTE, STREAM
from ..resources.kinds import DAY, INTERACTION_TTL_S
from ..routing import GEMINI, add_route
from ..upstream import Call
from .events import EventsSeen, Opening, read_opening
from .protocol import POLICY, Refused
from .session import LIVE_METRICS, ClientLeft, checked_client_token, close_for, first_frame, new_relay, refused_ending
from .session import serve as serve_session

ROUTE_NAME: Final = "live.interactions"
METHOD: Final = "interactions.live"
PATHS: Final = tuple(f"/{version}/interactions/live" for version in wire.VERSIONS)  # plain: before interactions/{id}
_PASSED_HEADERS: Final = ("user-agent", "x-goog-api-client", "api-revision")


async def interactions_live(request: web.Request) -> web.StreamResponse:
    """``GET /{version}/interactions/live``: one connection to one interaction (module docstring)."""
    edge = request.app[EDGE]
    request[ROUTE], request[STREAM] = ROUTE_NAME, True
    token, refused = await checked_client_token(request)
    settings = edge.settings
    # The client's close answered by the edge only once the session's release committed what it binds.
    client = web.WebSocketResponse(
        max_msg_size=settings.live_max_frame_bytes, autoping=True, autoclose=False, compress=False
    )
    await client.prepare(request)
    try:
        if refused is not None:
            raise refused
        frame, data = await first_frame(client, settings.live_setup_timeout_s)
        opening = read_opening(data)
        if opening.model:
            request[MODEL] = edge.metrics.model_label(opening.model)
        call = _call(request, opening, token_hash(token))
        seen = EventsSeen()
        relay = new_relay(request, client, call, frame, seen, hold_close=True)
        version = request.path.split("/")[1]
        ending = await serve_session(
            request,
            relay,
            call,
            lambda: _created(opening, seen),
            lambda refusal: _close_for_refusal(refusal, call, version),
        )
    except (Refused, ClientLeft) as ended:
        ending = await refused_ending(client, ended)
    request.app[LIVE_METRICS].closed(ending.cause, ending.code)
    return client


def _call(request: web.Request, opening: Opening, hashed: str) -> Call:
    """The session's lease request and its upstream socket (the same version and path, the key added per attempt)."""
    version = request.path.split("/")[1]
    base = request.app[EDGE].base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return Call(
        token_hash=hashed,
        session=True,
        model=opening.model,
        affinity=opening.affinity,
        binds=opening.creates,
        method="GET",
        url=URL(f"{base}/{version}/interactions/live"),
        headers={name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers},
        body=None,
        stream=True,
        route=ROUTE_NAME,
    )


def _created(opening: Opening, seen: EventsSeen) -> tuple[Binding, ...]:
    """The interaction a create made, bound to the lease's key: as long as a stored one lives, else a day."""
    if not opening.creates or not seen.created:
        return ()
    return (Binding(f"interactions/{seen.created}", INTERACTION_TTL_S if opening.stored else DAY),)


def _close_for_refusal(refusal: LeaseRefused, call: Call, version: str) -> Refused:
    """Keyring's refusal as a close: an interaction the pool never made is Google's 1008 "not found"."""
    if isinstance(refusal, UnknownResource):
        named = call.affinity[0].removeprefix("interactions/") if call.affinity else ""
        return Refused(POLICY, f"Interaction {named} not found.")
    return close_for(refusal, call.model, version, METHOD)


def add_routes(app: web.Application) -> None:
    """``GET /{version}/interactions/live`` under every version (plain paths: they win over ``interactions/{id}``)."""
    for path in PATHS:
        add_route(app, "GET", path, interactions_live, GEMINI)
