"""The Live relay's metrics, on the edge's registry (``EdgeMetrics.registry``): bounded labels only.

``cause`` is one of ``CAUSES`` and ``code`` a close code the relay sent or
passed on (a few dozen values at most); no label carries a model outside
``EdgeMetrics.model_label``'s bounded set, a key or a token.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from ..observability import EdgeMetrics

# Why a session ended: who closed it, or which limit of the edge's.
CAUSES: Final = (
    "client",
    "upstream",
    "upstream_cut",
    "idle",
    "max_duration",
    "lease_lost",
    "refused",
    "bad_input",
    "shutdown",
)
DURATION_BUCKETS: Final = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class LiveMetrics:
    """Open sessions, their duration and bytes, closes by cause and code, refusals by keyring's cap."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        r = metrics.registry
        self.open = Gauge("edge_live_sessions_open", "Live sessions relayed now.", registry=r)
        self.duration = Histogram(
            "edge_live_session_duration_seconds",
            "Length of Live sessions that reached setupComplete.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.bytes = Counter(
            "edge_live_bytes_total", "Frame bytes relayed, by direction (up: client to Google).", ["direction"],
            registry=r,
        )  # fmt: skip
        self.frames = Counter("edge_live_frames_total", "Frames relayed, by direction.", ["direction"], registry=r)
        self.closes = Counter(
            "edge_live_closes_total", "Live sessions ended, by cause and close code.", ["cause", "code"], registry=r
        )
        self.capped = Counter(
            "edge_live_sessions_refused_total",
            "Live sessions keyring refused for a session cap (LIVE_SESSIONS: every project full; _PER_TOKEN).",
            ["reason"],
            registry=r,
        )
        self._children = metrics.child
        self.up_bytes = self.bytes.labels("up")
        self.down_bytes = self.bytes.labels("down")
        self.up_frames = self.frames.labels("up")
        self.down_frames = self.frames.labels("down")

    def closed(self, cause: str, code: int) -> None:
        self._children(self.closes, cause, str(code)).inc()
