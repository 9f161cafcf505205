"""The attempt loop both dialects share.

For one client request::

    acquire a lease (keys tried so far excluded)        keyring_client
      -> call the upstream with the lease's key           upstream (streaming)
      -> release the lease with the outcome (always, exactly once)   keyring_client
      -> answer the client, or fail over to another key

Failover happens only while nothing has been sent to the client, when the
answer's kind says another key may do better (``AnswerKind.tries_another_key``:
rate limits, quotas, bad or refused keys, upstream trouble, transport
failures), up to ``max_attempts`` keys. A stream is committed when its first
upstream chunk arrives (see ``streaming``).

Releases start in ``finally`` blocks and synchronously (queued on the lease
stream, or a task when they must be waited for): nothing can interrupt that,
so a client that goes away (aiohttp cancels the handler) still releases its
lease, reported as ``TRANSPORT_CANCELLED``. Nobody waits for the release of
a finished request; before a failover the release is awaited, so keyring
has learnt from the failure before it picks the next key.

Errors are raised, never rendered here: ``errors.answer_in_dialect`` answers
them in the caller's dialect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiohttp import web

from services.common.answers import UpstreamError

from .config import EdgeSettings
from .errors import LeaseRefused, NoKeyFree, UpstreamFailed
from .keyring_client import KeyringClient
from .observability import MODEL, ROUTE, STREAM, EdgeMetrics, record_attempt
from .upstream import Attempt, Call, Upstream

log = logging.getLogger(__name__)


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
        # Request bodies being read and checked (dialects.read_body): bounded, see EdgeSettings.
        self.body_slots = asyncio.Semaphore(settings.max_concurrent_bodies)


EDGE: Final = web.AppKey("edge", Edge)


async def forward(request: web.Request, call: Call) -> web.StreamResponse:
    """Answer ``call`` through up to ``max_attempts`` upstream keys."""
    edge = request.app[EDGE]
    request[ROUTE], request[STREAM] = call.route, call.stream
    tried: list[str] = []
    failure: UpstreamError | None = None
    for _ in range(edge.settings.max_attempts):
        try:
            granted = await edge.keyring.acquire(call.token_hash, call.model, tried)
        except LeaseRefused as refused:
            edge.metrics.child(edge.metrics.denied, refused.reason).inc()
            if failure is None:
                raise
            # Keyring ran out of keys mid-failover: the last upstream error, with keyring's retry time if it has one.
            retry_after = refused.retry_after_s if isinstance(refused, NoKeyFree) and refused.retry_after_s else None
            raise UpstreamFailed(failure, retry_after) from None
        tried.append(granted.lease.key_id)
        attempt = Attempt(edge.upstream, edge.metrics, call, granted)
        result: web.StreamResponse | UpstreamError | None = None
        fail_over = False
        try:
            result = await attempt.run(request)
        finally:
            if isinstance(result, UpstreamError):
                fail_over = result.kind.tries_another_key
            released = edge.keyring.release(granted, call.model, attempt.outcome, confirm=fail_over)
            record_attempt(edge.metrics, call.route, call.model, attempt.outcome)
        if not isinstance(result, UpstreamError):
            request[MODEL] = edge.metrics.model_label(call.model, accepted=200 <= result.status < 300)
            return result
        if not fail_over:  # the request is at fault: no other key helps
            request[MODEL] = edge.metrics.model_label(call.model)
            raise UpstreamFailed(result)
        failure = result
        edge.metrics.child(edge.metrics.failovers, result.kind.value).inc()
        log.info(
            "upstream answered %s (%s) with key %s; trying another key",
            result.http_status,
            result.reason or result.status,
            granted.lease.key_id,
        )
        if released is not None:
            await asyncio.shield(released)
    assert failure is not None
    request[MODEL] = edge.metrics.model_label(call.model)
    raise UpstreamFailed(failure)
