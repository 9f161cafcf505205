"""The edge's https listener, next to plain http: the certificate and key from EDGE_HTTPS_* files, renewed without
a restart (``services/common/server_tls.py``).

Clients that insist on TLS need it when no ingress terminates TLS in front of the edge (dev, tests, a
standalone edge): the Python google-genai client opens Live sessions with ``wss://`` only (LIVE_API_NOTES.md 1.1).
"""

from __future__ import annotations

from aiohttp import web

from services.common.server_tls import ReloadingCertificate
from services.common.serving import add_tls_site

from .config import EdgeSettings


async def serve_https(
    runner: web.AppRunner, settings: EdgeSettings, host: str | None = None, port: int | None = None
) -> str | None:
    """Add the https listener to a started edge (``start_edge``); its base URL, or None when not configured.

    Raises ``TLSConfigError`` when the files do not load.
    """
    if not settings.https_cert_file:
        return None
    certificate = ReloadingCertificate(settings.https_cert_file, settings.https_key_file)
    return await add_tls_site(
        runner,
        settings.host if host is None else host,
        settings.https_port if port is None else port,
        certificate.context,
        reuse_port=settings.reuse_port,
        backlog=settings.listen_backlog,
    )
