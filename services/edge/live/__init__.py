"""The Live API through the edge (issue 20): WebSocket sessions on a held lease, and browser tokens.

``session`` serves an upgrade (credentials, the setup frame, the lease),
``relay`` one session on one key, ``protocol`` what the edge reads of the
frames and closes (plain Python), ``credentials`` the carriers of a token,
``tokens`` the minting of browser tokens, ``metrics`` the sessions' metrics;
``interactions`` the Interactions API's live socket on the same relay, ``events``
what the edge reads of its events.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..observability import EdgeMetrics
from ..routing import GEMINI, add_route
from . import interactions
from .metrics import LiveMetrics
from .session import LIVE_METRICS, LIVE_RELAYS, bidi_generate_content
from .tokens import create as create_token

# Whatever the slashes before "ws": the SDKs' base URLs end in "/", so "//ws/..." is the common case (notes 1.4).
PATH: Final = (
    "/{lead:/*}ws/google.ai.generativelanguage.{version:v1|v1beta|v1alpha}.GenerativeService"
    ".{method:BidiGenerateContent(?:Constrained)?}"
)


def add_routes(app: web.Application, metrics: EdgeMetrics) -> None:
    """Register the Live path, browser-token minting (``POST /{v1alpha,v1beta}/auth_tokens``) and the
    Interactions API's live socket (``/{version}/interactions/live``)."""
    app[LIVE_METRICS] = LiveMetrics(metrics)
    app[LIVE_RELAYS] = set()
    add_route(app, "GET", PATH, bidi_generate_content, GEMINI)
    for version in ("v1alpha", "v1beta"):
        add_route(app, "POST", f"/{version}/auth_tokens", create_token, GEMINI)
    interactions.add_routes(app)


def go_away(app: web.Application, time_left_s: float) -> int:
    """The edge is leaving: every open session gets Google's ``goAway`` (its client resumes elsewhere) and is
    closed 1001 a second before ``time_left_s`` (the drain's end); how many were told."""
    relays = app[LIVE_RELAYS].copy()
    for relay in relays:
        relay.go_away(time_left_s)
    return len(relays)
