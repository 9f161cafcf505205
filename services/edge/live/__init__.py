"""The Live API through the edge (issue 20): WebSocket sessions on a held lease, and browser tokens.

``session`` serves an upgrade (credentials, the setup frame, the lease),
``relay`` one session on one key, ``protocol`` what the edge reads of the
frames and closes (plain Python), ``credentials`` the carriers of a token,
``tokens`` the minting of browser tokens, ``metrics`` the sessions' metrics.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..observability import EdgeMetrics
from ..routing import GEMINI, add_route
from .metrics import LiveMetrics
from .session import LIVE_METRICS, bidi_generate_content
from .tokens import create as create_token

# Whatever the slashes before "ws": the SDKs' base URLs end in "/", so "//ws/..." is the common case (notes 1.4).
PATH: Final = (
    "/{lead:/*}ws/google.ai.generativelanguage.{version:v1|v1beta|v1alpha}.GenerativeService"
    ".{method:BidiGenerateContent(?:Constrained)?}"
)


def add_routes(app: web.Application, metrics: EdgeMetrics) -> None:
    """Register the Live path and browser-token minting (``POST /{v1alpha,v1beta}/auth_tokens``)."""
    app[LIVE_METRICS] = LiveMetrics(metrics)
    add_route(app, "GET", PATH, bidi_generate_content, GEMINI)
    for version in ("v1alpha", "v1beta"):
        add_route(app, "POST", f"/{version}/auth_tokens", create_token, GEMINI)
