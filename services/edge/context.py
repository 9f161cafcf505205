"""The process-wide resources a request needs, stored once on the app (``EDGE``)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .body_reads import BodyReads, worst_cost
from .config import EdgeSettings
from .keyring import KeyringClient
from .observability import EdgeMetrics
from .resources.sessions import UploadSessions
from .upstream import Upstream


class Edge:
    """The process-wide resources a request needs: settings, metrics, keyring, the upstream."""

    def __init__(
        self, settings: EdgeSettings, metrics: EdgeMetrics, keyring: KeyringClient, upstream: Upstream
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.keyring = keyring
        self.upstream = upstream
        self.base_url = upstream.base_url
        # Request bodies being read (dialects.read_body): a few per token, all within a memory budget.
        self.body_reads = BodyReads(
            settings.max_concurrent_bodies * worst_cost(settings.max_body_bytes, settings.max_json_elements),
            settings.max_bodies_per_token,
        )
        # Upload sessions sealed into upload URLs (resources.uploads).
        self.uploads = UploadSessions(settings.upload_session_key)


EDGE: Final = web.AppKey("edge", Edge)
