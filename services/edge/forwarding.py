"""The attempt loop both dialects share.

For one client request::

    acquire a lease (keys tried so far excluded)
      -> call the upstream with the lease's key
      -> classify the answer
      -> release the lease with the outcome (always, exactly once)
      -> answer the client, or fail over to another key

Failover happens only while nothing has been sent to the client: on 429,
401, 403, 5xx, 400 API_KEY_INVALID, timeouts and broken connections, up to
``max_attempts`` keys. A stream is committed when its first upstream chunk
arrives; after that, an upstream failure cuts the client's connection (a
clean end would pass a truncated answer for a whole one).

Releases start in ``finally`` blocks and synchronously (queued on the lease
stream, or a task when they must be waited for): nothing can interrupt that,
so a client that goes away (aiohttp cancels the handler) still releases its
lease, reported as ``TRANSPORT_CANCELLED``. Nobody waits for the release of
a finished request; before a failover the release is awaited, so keyring
has learnt from the failure before it picks the next key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
import grpc
from aiohttp import web
from opentelemetry import trace
from yarl import URL

from services.common.masking import scrub
from services.common.proto.keyring.v1 import keyring_pb2 as pb

from . import errors, upstream
from .config import EdgeSettings
from .errors import Dialect
from .keyring_client import GrantedLease, KeyringClient, LeaseDenied
from .observability import (
    MODEL,
    OPERATIONS,
    ROUTE,
    STARTED,
    STREAM,
    EdgeMetrics,
    failover_cause,
    model_label,
    record_attempt,
    set_usage_attributes,
    tracer,
)
from .upstream import UpstreamError

log = logging.getLogger(__name__)

# Bytes of a stream's end kept to read the token usage of its last event.
_TAIL_BYTES: Final = 4096
_RETRYABLE_4XX: Final = frozenset({401, 403, 408, 429})


@dataclass(frozen=True, slots=True)
class Call:
    """What a dialect handler decided about one client request."""

    dialect: Dialect
    method: str
    url: URL
    # The client's headers minus hop-by-hop and credentials; the key is added per attempt.
    headers: dict[str, str]
    body: bytes | None
    token_hash: str
    # Without "models/"; empty for calls about no model (listing).
    model: str
    stream: bool = False
    # The OpenAI-compatible endpoint takes the key as a Bearer token, the native one as x-goog-api-key.
    key_in_bearer: bool = False
    # Rewrites a successful non-stream body given the pool's allow-list (model lists).
    transform: Callable[[bytes, tuple[str, ...]], bytes] | None = None
    # The operation, for metrics and spans: "generateContent", "chat.completions", "models.list"...
    route: str = "other"


class Edge:
    """The process-wide resources a request needs: settings, the upstream session, keyring."""

    def __init__(
        self, settings: EdgeSettings, session: aiohttp.ClientSession, keyring: KeyringClient, metrics: EdgeMetrics
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.session = session
        self.keyring = keyring
        self.base_url = settings.upstream_base_url
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        self._proxies = settings.egress_proxy_list
        self._proxy = settings.http_proxy or None
        self._releases: set[asyncio.Task[None]] = set()

    def proxy_for(self, lease: pb.Lease) -> str | None:
        if self._proxies:
            return self._proxies[lease.egress_slot % len(self._proxies)]
        return self._proxy

    def release(
        self, granted: GrantedLease, model: str, outcome: pb.Outcome, *, confirmed: bool = False
    ) -> asyncio.Task[None] | None:
        """Start the release; synchronous, so no cancellation can come between the call and it.

        ``confirmed``: the caller will wait until keyring has taken the outcome in
        (before a failover); otherwise the release is sent and nobody waits.
        """
        if not confirmed and self.keyring.release_nowait(granted, model, outcome):
            return None
        task = asyncio.get_running_loop().create_task(self.keyring.release(granted, model, outcome))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        return task

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for releases still in flight (shutdown)."""
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=timeout_s)


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
        except LeaseDenied as denied:
            edge.metrics.child(edge.metrics.denied, denied.code.name).inc()
            if failure is None:
                return errors.render(errors.lease_denied(denied), call.dialect)
            return errors.upstream_failure(call.dialect, failure, _retry_after(denied))
        tried.append(granted.lease.key_id)
        attempt = _Attempt(edge, call, granted)
        result: web.StreamResponse | UpstreamError | None = None
        try:
            result = await attempt.run(request)
        finally:
            failing_over = isinstance(result, UpstreamError)
            released = edge.release(granted, call.model, attempt.outcome, confirmed=failing_over)
            record_attempt(edge.metrics, call.route, call.model, attempt.outcome)
        if not isinstance(result, UpstreamError):
            if result.status != 404:
                request[MODEL] = model_label(call.model)
            return result
        failure = result
        edge.metrics.child(edge.metrics.failovers, failover_cause(result, attempt.outcome)).inc()
        log.info(
            "upstream answered %s (%s) with key %s; trying another key",
            result.http_status,
            result.reason or result.status,
            granted.lease.key_id,
        )
        if released is not None:
            await asyncio.shield(released)
    assert failure is not None
    request[MODEL] = model_label(call.model)
    return errors.upstream_failure(call.dialect, failure)


def _retry_after(denied: LeaseDenied) -> float | None:
    """When to come back after keyring ran out of keys mid-failover (keys tried included)."""
    if denied.code is grpc.StatusCode.RESOURCE_EXHAUSTED and denied.retry_after_s > 0:
        return denied.retry_after_s
    return None


class _Attempt:
    """One upstream call with one leased key; ``outcome`` is what keyring will be told."""

    __slots__ = ("call", "edge", "granted", "outcome", "started")

    def __init__(self, edge: Edge, call: Call, granted: GrantedLease) -> None:
        self.edge = edge
        self.call = call
        self.granted = granted
        self.outcome = upstream.CANCELLED  # until the attempt knows better
        self.started = time.monotonic()

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    async def run(self, request: web.Request) -> web.StreamResponse | UpstreamError:
        """A response for the client, or the ``UpstreamError`` that calls for another key."""
        if not trace.get_current_span().is_recording():
            return await self._call_upstream(request)  # an unsampled request: no span to fill
        call, lease = self.call, self.granted.lease
        attributes = {
            "gen_ai.system": "gemini",
            "gen_ai.operation.name": OPERATIONS.get(call.route, call.route),
            "gen_ai.request.model": call.model,
            "keyring.key_id": lease.key_id,
            "keyring.pool": lease.pool,
        }
        name = f"{attributes['gen_ai.operation.name']} {call.model}".strip()
        with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            try:
                return await self._call_upstream(request)
            finally:
                set_usage_attributes(span, self.outcome)

    async def _call_upstream(self, request: web.Request) -> web.StreamResponse | UpstreamError:
        call, lease = self.call, self.granted.lease
        headers = dict(call.headers)
        if call.key_in_bearer:
            headers["Authorization"] = f"Bearer {lease.secret}"
        else:
            headers["x-goog-api-key"] = lease.secret
        try:
            answer = await self.edge.session.request(
                call.method,
                call.url,
                data=call.body,
                headers=headers,
                proxy=self.edge.proxy_for(lease),
                timeout=self.edge.timeout,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ClientError) as error:
            return self._transport_failure(error)
        try:
            if answer.status >= 400:
                return await self._error(answer)
            if call.stream:
                return await self._stream(request, answer)
            return await self._whole(answer)
        finally:
            answer.release()

    def _transport_failure(self, error: BaseException) -> UpstreamError:
        timeout = isinstance(error, TimeoutError)
        kind = pb.Outcome.TRANSPORT_TIMEOUT if timeout else pb.Outcome.TRANSPORT_CONNECTION
        message = type(error).__name__
        self.outcome = upstream.transport_outcome(kind, self._elapsed_ms(), message)
        return upstream.transport_error(timeout, message)

    async def _error(self, answer: aiohttp.ClientResponse) -> web.StreamResponse | UpstreamError:
        try:
            body = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            return self._transport_failure(error)
        plain = scrub(upstream.decoded(body, answer.headers.get("Content-Encoding")), self.granted.lease.secret)
        failure = upstream.parse_error(answer.status, plain)
        self.outcome = upstream.error_outcome(failure, self._elapsed_ms())
        status = failure.http_status
        if status >= 500 or status in _RETRYABLE_4XX or (status == 400 and failure.key_invalid):
            return failure
        return errors.upstream_failure(self.call.dialect, failure)  # the client's fault: no other key helps

    async def _whole(self, answer: aiohttp.ClientResponse) -> web.StreamResponse | UpstreamError:
        try:
            body = await answer.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            return self._transport_failure(error)
        encoding = answer.headers.get("Content-Encoding")
        plain = upstream.decoded(body, encoding)
        self.outcome = upstream.ok_outcome(answer.status, self._elapsed_ms(), upstream.usage(plain))
        headers = upstream.response_headers(answer.headers.items())
        allowed = self.granted.allowed_models
        if self.call.transform is not None and allowed:
            body = self.call.transform(plain, allowed)
            headers = [(name, value) for name, value in headers if name.lower() != "content-encoding"]
        return web.Response(status=answer.status, body=body, headers=headers)

    async def _stream(self, request: web.Request, answer: aiohttp.ClientResponse) -> web.StreamResponse | UpstreamError:
        try:
            chunk = await answer.content.readany()  # nothing is committed before the first chunk
        except (TimeoutError, aiohttp.ClientError) as error:
            return self._transport_failure(error)
        response = web.StreamResponse(status=answer.status, headers=upstream.response_headers(answer.headers.items()))
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        tail = b""
        try:
            await response.prepare(request)  # the first bytes: the first chunk follows at once
            self.edge.metrics.child(self.edge.metrics.first_byte, self.call.dialect).observe(time.perf_counter() - request[STARTED])
            while chunk:
                await response.write(chunk)
                tail = chunk if len(chunk) >= _TAIL_BYTES else (tail + chunk)[-_TAIL_BYTES:]
                try:
                    chunk = await answer.content.readany()
                except (TimeoutError, aiohttp.ClientError) as error:
                    self._transport_failure(error)
                    _cut(request)  # a clean end would pass a truncated answer for a whole one
                    return response
            await response.write_eof()
        except ConnectionError:  # the client went away while we wrote
            self.outcome = pb.Outcome(transport=pb.Outcome.TRANSPORT_CANCELLED, latency_ms=self._elapsed_ms())
            return response
        tokens = (0, 0) if answer.headers.get("Content-Encoding") else upstream.usage(tail)
        self.outcome = upstream.ok_outcome(answer.status, self._elapsed_ms(), tokens)
        return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()
