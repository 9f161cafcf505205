"""The attempt loop both dialects share.

For one client request::

    acquire a lease (keys tried so far excluded)        keyring
      -> call the upstream with the lease's key           upstream (streaming)
      -> release the lease with the outcome (always, exactly once)   keyring
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

Project-bound resources (affinity, README "Files, caches, batches,
operations and interactions"): a call naming resources (``Call.affinity``)
is leased the owner key, or another key of its project (keyring decides; a
failover stays in that project); a name keyring does not know is a 404
(``errors.UnknownResource``) with no upstream call. A call that creates or
deletes resources (``Call.settle``) releases with the bindings its answer
names, and waits for keyring to commit them before the client gets its
answer (a stream: before its end is sent), so the client's next call,
through any edge and any keyring replica, finds the owner. Bindings keyring
could not commit are logged; the answer still goes out (the resource exists
upstream: an error would only make the client create it again).

Errors are raised, never rendered here: ``errors.answer_in_dialect`` answers
them in the caller's dialect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from services.common.answers import UpstreamError

from .body_reads import BodyReads, worst_cost
from .config import EdgeSettings
from .errors import LeaseRefused, NoKeyFree, UpstreamFailed
from .keyring import GrantedLease, KeyringClient
from .observability import MODEL, ROUTE, STREAM, EdgeMetrics, record_attempt
from .resources.sessions import UploadSessions
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
        # Request bodies being read (dialects.read_body): a few per token, all within a memory budget.
        self.body_reads = BodyReads(
            settings.max_concurrent_bodies * worst_cost(settings.max_body_bytes, settings.max_json_elements),
            settings.max_bodies_per_token,
        )
        # Upload sessions sealed into upload URLs (resources.uploads).
        self.uploads = UploadSessions(settings.upload_session_key)


EDGE: Final = web.AppKey("edge", Edge)


async def forward(request: web.Request, call: Call) -> web.StreamResponse:
    """Answer ``call`` through up to ``max_attempts`` upstream keys."""
    edge = request.app[EDGE]
    request[ROUTE], request[STREAM] = call.route, call.stream
    tried: list[str] = []
    failure: UpstreamError | None = None
    for _ in range(edge.settings.max_attempts):
        try:
            granted = await lease(edge, call, tried)
        except LeaseRefused as refused:
            edge.metrics.child(edge.metrics.denied, refused.reason).inc()
            if failure is None:
                raise
            # Keyring ran out of keys mid-failover: the last upstream error, with keyring's retry time if it has one.
            retry_after = refused.retry_after_s if isinstance(refused, NoKeyFree) and refused.retry_after_s else None
            raise UpstreamFailed(failure, retry_after) from None
        tried.append(granted.lease.key_id)
        attempt = Attempt(edge.upstream, edge.metrics, call, granted)
        if call.settle is not None and call.stream:
            attempt.on_stream_end = _settler(edge, call, granted, attempt)
        result: web.StreamResponse | UpstreamError | None = None
        fail_over = False
        released: asyncio.Task[bool] | None = None
        try:
            result = await attempt.run(request)
        finally:
            if isinstance(result, UpstreamError):
                fail_over = result.kind.tries_another_key
            if not attempt.released:
                released = edge.keyring.release(
                    granted, call.model, attempt.outcome, confirm=fail_over,
                    bind=attempt.settlement.bind, unbind=attempt.settlement.unbind,
                )  # fmt: skip
            record_attempt(edge.metrics, call.route, call.model, attempt.outcome)
        if not isinstance(result, UpstreamError):
            request[MODEL] = edge.metrics.model_label(call.model, accepted=200 <= result.status < 300)
            if attempt.settlement and released is not None:
                await _committed(released, granted)
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


async def lease(edge: Edge, call: Call, tried: list[str]) -> GrantedLease:
    """A lease for ``call`` (its affinity, excluded projects and estimated input included)."""
    if not call.affinity and not call.exclude_projects and not call.binds:  # the hot path: as before affinity
        return await edge.keyring.acquire(
            call.token_hash, call.model, tried, estimated_input_tokens=call.input_tokens
        )
    return await edge.keyring.acquire(
        call.token_hash, call.model, tried, affinity=call.affinity, exclude_projects=call.exclude_projects,
        estimated_input_tokens=call.input_tokens, binds=call.binds,
    )  # fmt: skip


def _settler(edge: Edge, call: Call, granted: GrantedLease, attempt: Attempt) -> Callable[[], Awaitable[None]]:
    """Release a settling stream's lease, bindings committed, before the client sees the stream's end."""

    async def settle() -> None:
        attempt.released = True
        settlement = attempt.settlement
        released = edge.keyring.release(
            granted, call.model, attempt.outcome, bind=settlement.bind, unbind=settlement.unbind
        )
        if settlement:
            await _committed(released, granted)

    return settle


async def _committed(released: asyncio.Task[bool], granted: GrantedLease) -> None:
    if not await asyncio.shield(released):
        log.warning(
            "keyring did not commit the resources of lease %s: later calls naming them may not find their owner",
            granted.lease.lease_id,
        )
