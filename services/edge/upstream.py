"""One upstream call with one leased key, and what its answer means.

::

    send the call with the lease's key
      -> an error answer: parsed and classified by services.common.answers
      -> a whole answer: passed on (model lists filtered by the allow-list)
      -> a stream: relayed by ``streaming`` from its first chunk on
    and ``outcome`` is what keyring will be told about the key.

What comes back is passed on by allow-list (``wire.response_headers``) and
never carries a key (issue 18): a whole 2xx body is scrubbed of the leased
key and of every key-shaped string (``masking.scrub``; a body that needed it
goes out decoded), a stream chunk by chunk (``masking.StreamScrubber``, the
stream asked uncompressed so its bytes can be read). The cost on the hot
path is a few bytes searches per body or chunk.

Transport failures of the call (timeouts, refused or broken connections, at
connect, while reading a whole body or a stream's chunk) are mapped in one
place, ``Attempt._call_upstream``'s ``except``: into an ``UpstreamError``
whose transport says which (504 or 502 for the client, another key tried),
or, once a stream is committed, into a cut connection.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

import aiohttp
from aiohttp import web
from opentelemetry import trace
from yarl import URL

from services.common import genai_semconv as genai
from services.common.answers import Transport, UpstreamError, parse_error
from services.common.masking import StreamScrubber, scrub
from services.common.proto.keyring.v1 import keyring_pb2 as pb

from . import streaming, wire
from .config import EdgeSettings
from .keyring import CANCELLED, Binding, HeldLease, LeaseRequest
from .observability import EdgeMetrics, describe_answer, first_chunk_arrived, set_usage_attributes, tracer
from .routing import DIALECT

# zlib.error: a stream whose bytes its Content-Encoding does not describe (``wire.StreamDecoded``), a broken answer.
_TRANSPORT_ERRORS: Final = (TimeoutError, aiohttp.ClientError, zlib.error)
# This process out of descriptors or buffers (``capacity.py``): the edge's trouble, never the key's.
_LOCAL_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a successful call created (bound to its key in keyring) or deleted (unbound)."""

    bind: tuple[Binding, ...] = ()
    unbind: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.bind or self.unbind)


NOTHING: Final = Settlement()
# Reads a successful answer (a whole body, decoded; or a stream's first bytes) and says what it created or
# deleted; may rewrite the headers of a whole answer (not yet sent) in place.
Settle = Callable[[bytes, web.StreamResponse], Settlement]


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(LeaseRequest):
    """What a dialect handler decided about one client request: the lease it asks for, and what goes upstream.

    A ``LeaseRequest`` itself (token hash, model, estimated input, affinity,
    excluded projects, binds): built once, handed as such to ``acquire``.
    """

    method: str
    url: URL
    # The client's headers minus hop-by-hop and credentials; the key is added per attempt.
    headers: dict[str, str]
    body: bytes | None
    stream: bool = False
    # The OpenAI-compatible endpoint takes the key as a Bearer token, the native one as x-goog-api-key.
    key_in_bearer: bool = False
    # Rewrites a successful non-stream body given the pool's allow-list (model lists).
    transform: Callable[[bytes, tuple[str, ...]], bytes] | None = None
    # The operation, for metrics and spans: "generateContent", "chat.completions", "models.list"...
    route: str = "other"
    # For calls that create or delete resources: what a successful answer binds or unbinds.
    settle: Settle | None = None
    # Answer headers passed back besides ``wire.PASSED_BACK_HEADERS`` (an upload start's URL, for its settle).
    passed_back: frozenset[str] = frozenset()


class Upstream:
    """The process's one upstream connection pool, its timeouts and egress proxies."""

    def __init__(self, settings: EdgeSettings, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.base_url = settings.upstream_base_url
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        # Seconds of silence in an SSE stream before the edge writes a keep-alive (0: never).
        self.stream_keepalive_s = settings.stream_keepalive_s
        self._proxies = settings.egress_proxy_list
        self._proxy = settings.http_proxy or None

    def proxy_for(self, lease: pb.Lease) -> str | None:
        if self._proxies:
            return self._proxies[lease.egress_slot % len(self._proxies)]
        return self._proxy


class Attempt:
    """Upstream calls with one held lease; ``outcome`` (of the last) and ``settlement`` are what its release says.

    One call per attempt, except a list's pages (``resources.listing``): each
    ``run`` sends ``call`` as it is then.
    """

    __slots__ = ("call", "committed", "held", "metrics", "outcome", "settlement", "span", "started", "upstream")

    def __init__(self, upstream: Upstream, metrics: EdgeMetrics, call: Call, held: HeldLease) -> None:
        self.upstream = upstream
        self.metrics = metrics
        self.call = call
        self.held = held
        self.outcome = CANCELLED  # until the attempt knows better
        self.started = 0.0
        self.span: trace.Span = trace.INVALID_SPAN  # the attempt's span, when the request is sampled
        # A stream whose first bytes went to the client: past this point no other key can answer.
        self.committed: web.StreamResponse | None = None
        # What a successful answer created or deleted (``call.settle``), for the release.
        self.settlement = NOTHING

    def _elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def run(self, request: web.Request) -> Awaitable[web.StreamResponse | UpstreamError]:
        """A response for the client, or the upstream's error (the caller decides whether another key may do better).

        An unsampled request gets the call's coroutine itself: no frame of its own held for a stream's length.
        """
        self.started = time.monotonic()
        if not trace.get_current_span().is_recording():
            return self._call_upstream(request)  # no span to fill
        return self._traced(request)

    async def _traced(self, request: web.Request) -> web.StreamResponse | UpstreamError:
        call, lease = self.call, self.held.lease
        operation = genai.operation(call.route)
        attributes: dict[str, str | int | bool] = {
            genai.OPERATION_NAME: operation,
            genai.PROVIDER_NAME: genai.GCP_GEMINI,
            genai.REQUEST_MODEL: call.model,
            genai.SERVER_ADDRESS: call.url.host or "",
            genai.SERVER_PORT: call.url.port or 443,
            "keyring.key_id": lease.key_id,
            "keyring.pool": lease.pool,
        }
        if call.stream:
            attributes[genai.REQUEST_STREAM] = True
        name = genai.span_name(operation, call.model)
        with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            self.span = span
            try:
                return await self._call_upstream(request)
            finally:
                set_usage_attributes(span, self.outcome)

    async def _call_upstream(self, request: web.Request) -> web.StreamResponse | UpstreamError:
        # Its locals live as long as a stream: what only the start needs is built in helpers (issue 23).
        call = self.call
        answer: aiohttp.ClientResponse | None = None
        try:
            answer = await self.upstream.session.request(
                call.method,
                call.url,
                data=call.body,
                headers=self._headers(),
                proxy=self.upstream.proxy_for(self.held.lease),
                timeout=self.upstream.timeout,
                allow_redirects=False,
            )
            if answer.status >= 400:
                return self._error(answer, await answer.read())
            self._tier_served(answer)
            if not call.stream:
                return self._whole(answer, await answer.read())
            keepalive = streaming.keepalive_interval(answer, self.upstream.stream_keepalive_s)
            # Nothing is committed before the first chunk, or before the first keep-alive (None) is due.
            chunk = await streaming.next_chunk(answer, keepalive)
            if chunk is not None:
                first_chunk_arrived(self.span, self.started)
            response, scrubber = self._commit(answer)
            operation = genai.operation(call.route)
            first_byte = self.metrics.child(self.metrics.first_byte, operation, genai.GCP_GEMINI, request[DIALECT])
            before_end = None if call.settle is None else partial(self._settle_stream, answer, response)
            relaying = streaming.relay(request, response, answer, chunk, first_byte, keepalive, before_end, scrubber)
            del chunk  # relay's from here on: this frame lasts as long as the stream
            tail = await relaying
            if not self.held.released:  # a settling stream's lease ends before its end is sent
                self._streamed(answer, tail)
            return response
        except _TRANSPORT_ERRORS as error:  # the one place transport failures are mapped
            failure = self._transport_failure(error)
            if self.committed is None:
                return failure
            streaming.cut(request)
            return self.committed
        finally:
            if answer is not None:
                answer.release()

    def _headers(self) -> dict[str, str]:
        """The client's headers as forwarded, with the lease's key (aiohttp copies them: this dict is not kept)."""
        call, secret = self.call, self.held.lease.secret
        headers = dict(call.headers)
        if call.key_in_bearer:
            headers["Authorization"] = f"Bearer {secret}"
        else:
            headers["x-goog-api-key"] = secret
        if call.stream:  # relayed chunk by chunk: each must be readable, to be scrubbed
            headers["accept-encoding"] = "identity"
        return headers

    def _commit(self, answer: aiohttp.ClientResponse) -> tuple[web.StreamResponse, wire.ChunkFilter]:
        """The client's response to a stream (the upstream's headers, filtered; not yet sent) and its chunk filter.

        From here on the stream is committed: no other key can answer.
        """
        passed = wire.response_headers(answer.headers.items(), self.call.passed_back)
        scrubber: wire.ChunkFilter = StreamScrubber(self.held.lease.secret)
        if answer.headers.get("Content-Encoding", "identity") != "identity":  # compressed though asked not to be
            scrubber = wire.StreamDecoded(scrubber)
            passed = [(name, value) for name, value in passed if name.lower() != "content-encoding"]
        self.committed = response = streaming.response_for(answer.status, passed)
        self.held.keep_alone()  # held for the stream's length: not the reply it came in
        return response, scrubber

    async def _settle_stream(
        self, answer: aiohttp.ClientResponse, response: web.StreamResponse, head: bytes, tail: bytes
    ) -> None:
        """A whole stream is relayed but not ended: its lease ends, what it created bound, before the end is sent.

        The client's next call, through any edge and replica, then finds the owner.
        """
        assert self.call.settle is not None
        self._streamed(answer, tail)
        if 200 <= answer.status < 300:
            self.settlement = self.call.settle(head, response)
        settlement = self.settlement
        self.held.release(self.outcome, bind=settlement.bind, unbind=settlement.unbind)
        await self.held.committed()

    def _transport_failure(self, error: BaseException) -> UpstreamError:
        failure = transport_failure(error)
        self.outcome = pb.Outcome(
            transport=_OUTCOME_TRANSPORT[failure.transport],
            latency_ms=self._elapsed_ms(),
            error_message=type(error).__name__,
        )
        return failure

    def _error(self, answer: aiohttp.ClientResponse, body: bytes) -> UpstreamError:
        plain = scrub(wire.decoded(body, answer.headers.get("Content-Encoding")), self.held.lease.secret)
        failure = parse_error(answer.status, plain)
        if answer.status == 429 and failure.violations:  # only then may the request's size be at fault
            failure = dataclasses.replace(failure, estimated_input_tokens=self.call.input_tokens)
        self.outcome = error_outcome(failure, self._elapsed_ms())
        return failure

    def _tier_served(self, answer: aiohttp.ClientResponse) -> None:
        """A priority call Google served at another tier: counted (the header itself goes back to the client)."""
        if self.call.service_tier != "priority":  # most calls: nothing to read
            return
        served = answer.headers.get("x-gemini-service-tier", "").strip().lower()
        if served and served != "priority":
            self.metrics.tier_downgrades.labels(served if served in ("standard", "flex") else "other").inc()

    def _served_model(self, answer: bytes) -> None:
        """The answer's ``modelVersion`` when it is not the name asked: keyring keys its decisions by it."""
        if (served := _model_version(answer)) and served != self.call.model:
            self.outcome.served_model = served

    def _whole(self, answer: aiohttp.ClientResponse, body: bytes) -> web.Response:
        plain = wire.decoded(body, answer.headers.get("Content-Encoding"))
        self.outcome = ok_outcome(answer.status, self._elapsed_ms(), wire.usage(plain))
        self._served_model(plain)
        if 200 <= answer.status < 300:
            describe_answer(self.span, plain)
        headers = wire.response_headers(answer.headers.items(), self.call.passed_back)
        allowed = self.held.allowed_models
        transform = self.call.transform if allowed else None
        scrubbed = scrub(plain, self.held.lease.secret)
        if scrubbed is not plain or transform is not None:  # the body goes out decoded (no Content-Encoding)
            plain = scrubbed
            body = plain if transform is None else transform(plain, allowed)
            headers = [(name, value) for name, value in headers if name.lower() != "content-encoding"]
        response = web.Response(status=answer.status, body=body, headers=headers)
        if self.call.settle is not None and 200 <= answer.status < 300:
            self.settlement = self.call.settle(plain, response)
        return response

    def _streamed(self, answer: aiohttp.ClientResponse, tail: bytes | None) -> None:
        if tail is None:  # the client went away while we wrote
            self.outcome = pb.Outcome(transport=pb.Outcome.TRANSPORT_CANCELLED, latency_ms=self._elapsed_ms())
        else:
            tokens = wire.usage(tail)  # the tail as relayed: decoded
            self.outcome = ok_outcome(answer.status, self._elapsed_ms(), tokens)
            self._served_model(tail)
            describe_answer(self.span, tail)


def transport_failure(error: BaseException) -> UpstreamError:
    """A timeout (504) or a refused or broken connection (502), as the error the client sees if no key does better.

    A connection this process could not open for want of descriptors (EMFILE...) is a 503 that teaches keyring
    nothing (``Transport.CANCELLED``: no key cooled, no other key tried; nothing reached Google, nothing counted).
    """
    name = type(error).__name__
    if isinstance(error, aiohttp.ClientConnectorError) and error.errno in _LOCAL_ERRNOS:
        message = f"the edge is out of connections ({name}: {errno.errorcode[error.errno]}); try again shortly"
        return UpstreamError(503, "UNAVAILABLE", message, transport=Transport.CANCELLED)
    if isinstance(error, TimeoutError):
        message = f"the upstream did not answer in time ({name})"
        return UpstreamError(504, "DEADLINE_EXCEEDED", message, transport=Transport.TIMEOUT)
    return UpstreamError(502, "UNAVAILABLE", f"the upstream connection failed ({name})", transport=Transport.CONNECTION)


# -- outcomes for keyring ------------------------------------------------------

_OUTCOME_TRANSPORT: Final = {
    Transport.TIMEOUT: pb.Outcome.TRANSPORT_TIMEOUT,
    Transport.CONNECTION: pb.Outcome.TRANSPORT_CONNECTION,
    Transport.CANCELLED: pb.Outcome.TRANSPORT_CANCELLED,
}


_MODEL_VERSION: Final = re.compile(rb'"modelVersion"\s*:\s*"([A-Za-z0-9][A-Za-z0-9._\-]{0,127})"')


def _model_version(body: bytes) -> str:
    """A Gemini answer's ``modelVersion`` (the model that really answered), or ""."""
    found = _MODEL_VERSION.search(body[:65536])
    return found.group(1).decode() if found else ""


def ok_outcome(http_status: int, latency_ms: int, tokens: tuple[int, int]) -> pb.Outcome:
    return pb.Outcome(
        transport=pb.Outcome.TRANSPORT_OK,
        http_status=http_status,
        latency_ms=latency_ms,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
    )


def error_outcome(error: UpstreamError, latency_ms: int) -> pb.Outcome:
    """The error as keyring judges it: status, first reason, retry delay and every quota violation."""
    return pb.Outcome(
        transport=pb.Outcome.TRANSPORT_OK,
        http_status=error.http_status,
        error_status=error.status,
        error_reason=error.reason,
        retry_delay_ms=round(error.retry_delay_s * 1000),
        quota_violations=[
            pb.QuotaViolation(
                quota_id=violation.quota_id,
                quota_metric=violation.quota_metric,
                dimensions=dict(violation.dimensions),
                quota_value=violation.quota_value,
                future_quota_value=violation.future_quota_value,
            )
            for violation in error.violations
        ],
        latency_ms=latency_ms,
        error_message=error.message[:500],
        estimated_input_tokens=error.estimated_input_tokens,
        consumer_project=error.consumer_project,
    )
