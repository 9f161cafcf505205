"""The one attempt loop: every route (generate, streams, resources, listings) answers through it.

For one client request::

    acquire a lease for the call (keys tried so far excluded)   keyring (a HeldLease)
      -> call the upstream with the lease's key                  upstream (streaming)
      -> release the lease with the outcome (always, once)       HeldLease.release
      -> answer the client, or fail over to another key

Failover happens only while nothing has been sent to the client, when the
answer's kind says another key may do better (``AnswerKind.tries_another_key``:
rate limits, quotas, bad or refused keys, upstream trouble, transport
failures), up to ``max_attempts`` keys. A stream is committed when its first
upstream chunk arrives (see ``streaming``).

Every lease ends in the loop's ``finally``, synchronously (queued on the
lease stream, or a task when it must be waited for): nothing can interrupt
that, so a client that goes away (aiohttp cancels the handler) still
releases its lease, reported as ``TRANSPORT_CANCELLED``. A whole answer
(not a stream) is released, and its attempt counted, in a callback of the
loop's next turn (``call_soon``, as uninterruptible): aiohttp writes the
answer when the handler returns, in the same step, so the caller waits for
neither. A lease released
earlier (a settling stream, before its end is sent: ``upstream``) is not
released again (``HeldLease.release`` is idempotent). Nobody waits for the
release of a finished request; before a failover the release is awaited, so
keyring has learnt from the failure before it picks the next key.

Project-bound resources (affinity, docs/configuration.md "Files, caches, batches,
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
from typing import TypeVar

from aiohttp import web

from services.common.answers import UpstreamError
from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .context import EDGE, Edge
from .errors import LeaseRefused, NoKeyFree, UpstreamFailed
from .keyring import HeldLease
from .observability import MODEL, ROUTE, STREAM, record_attempt
from .upstream import Attempt, Call

log = logging.getLogger(__name__)

T = TypeVar("T")
# What one attempt does with its lease: an answer for the caller, or the upstream error that ended it.
Run = Callable[[Attempt, web.Request], Awaitable[T | UpstreamError]]


async def forward(request: web.Request, call: Call) -> web.StreamResponse:
    """Answer ``call`` through up to ``max_attempts`` upstream keys."""
    metrics = request.app[EDGE].metrics
    request[ROUTE], request[STREAM] = call.route, call.stream
    try:
        response = await attempts(request, call, Attempt.run, [])
    except LeaseRefused as refused:
        metrics.child(metrics.denied, refused.reason).inc()
        raise
    except UpstreamFailed as failed:
        if failed.refused is None:
            request[MODEL] = metrics.model_label(call.model)
        raise
    request[MODEL] = metrics.model_label(call.model, accepted=200 <= response.status < 300)
    return response


async def attempts(request: web.Request, call: Call, run: Run[T], tried: list[str]) -> T:
    """What ``run`` makes of ``call`` with the first key that does not fail over (``tried``: key ids, grown).

    Raises keyring's refusal when no lease is granted at all (the caller counts it),
    ``UpstreamFailed`` with the last upstream error when no key did better (its
    ``refused`` set when keyring had no other key to try).
    """
    edge = request.app[EDGE]
    failure: UpstreamError | None = None
    for _ in range(edge.settings.max_attempts):
        try:
            held = await edge.keyring.acquire(call, tried)
        except LeaseRefused as refused:
            if failure is None:
                raise
            edge.metrics.child(edge.metrics.denied, refused.reason).inc()
            # Keyring ran out of keys mid-failover: the last upstream error, with keyring's retry time if it has one.
            retry_after = refused.retry_after_s if isinstance(refused, NoKeyFree) and refused.retry_after_s else None
            raise UpstreamFailed(failure, retry_after, refused) from None
        tried.append(held.lease.key_id)
        attempt = Attempt(edge.upstream, edge.metrics, call, held)
        result: T | UpstreamError | None = None
        fail_over = False
        try:
            result = await run(attempt, request)
        finally:
            if isinstance(result, UpstreamError):
                fail_over = result.kind.tries_another_key
            settlement = attempt.settlement
            if not settlement and _unsent(result):  # a whole answer: its bookkeeping once it is written
                asyncio.get_running_loop().call_soon(_end_attempt, edge, call, held, attempt.outcome)
                released = None
            else:
                released = held.release(
                    attempt.outcome, confirm=fail_over, bind=settlement.bind, unbind=settlement.unbind
                )
                record_attempt(edge.metrics, call.route, call.model, attempt.outcome)
        if not isinstance(result, UpstreamError):
            if settlement and released is not None:  # a settling stream waited for its bindings before its end
                await held.committed()
            return result
        if not fail_over:  # the request is at fault: no other key helps
            raise UpstreamFailed(result)
        failure = result
        _failed_over(edge, result, held.lease.key_id)
        if released is not None:
            await asyncio.shield(released)
    assert failure is not None
    raise UpstreamFailed(failure)


def _unsent(result: object) -> bool:
    """A response not written yet: aiohttp writes it when the handler returns, in this same step of the task."""
    return isinstance(result, web.StreamResponse) and not result.prepared


def _end_attempt(edge: Edge, call: Call, held: HeldLease, outcome: pb.Outcome) -> None:
    """The release and the attempt's metrics of an answer the client has been sent (``call_soon`` from
    ``attempts``: the next turn of the loop, after aiohttp wrote it), so a caller waits for neither."""
    held.release(outcome, confirm=False)
    record_attempt(edge.metrics, call.route, call.model, outcome)


def _failed_over(edge: Edge, failure: UpstreamError, key_id: str) -> None:
    edge.metrics.child(edge.metrics.failovers, failure.kind.value).inc()
    reason = failure.reason or failure.status
    log.info("upstream answered %s (%s) with key %s; trying another key", failure.http_status, reason, key_id)
