"""The edge's metrics and spans, in one place.

Labels stay bounded: dialect (decided once per request, ``routing``), route
(the operation, from the route table), status class, a failover cause (the
answer's kind, ``services.common.answers.AnswerKind``), and the model from a
bounded set (``EdgeMetrics.model_label``): a model id becomes a label value
once the upstream has answered it with a success (a model the pool allows
and Google serves), up to ``max_model_labels`` of them for the life of the
process; every other model, and every model past the cap, is "other". Labels
are never evicted (Prometheus keeps a series once exported), so the cap is
the number of model series, whatever clients send.
No label or span attribute carries a key or a client token: key ids only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common import genai_semconv as genai
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.telemetry import UnsampledSpan, roots_unsampled

from .routing import DIALECT, Handler

tracer = trace.get_tracer("services.edge", schema_url=genai.SCHEMA_URL)
_PROPAGATOR = TraceContextTextMapPropagator()
_MODEL = re.compile(r"[a-z0-9][a-z0-9.\-]{0,127}")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# What the request's handler learnt, for the middleware to label with.
ROUTE: Final = web.RequestKey("keyring_route", str)
MODEL: Final = web.RequestKey("keyring_model", str)
STREAM: Final = web.RequestKey("keyring_stream", bool)
STARTED: Final = web.RequestKey("keyring_started", float)

_OPERATION_LABELS: Final = [genai.label(genai.OPERATION_NAME), genai.label(genai.PROVIDER_NAME)]
_ANSWER_MODEL = re.compile(rb'"(?:modelVersion|model)"\s*:\s*"([A-Za-z0-9][A-Za-z0-9._:/\-]{0,127})"')
_RESPONSE_ID = re.compile(
    rb'"responseId"\s*:\s*"([A-Za-z0-9_\-]{1,128})"|^\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_\-]{1,128})"'
)
_FINISH_REASON = re.compile(rb'"(?:finishReason|finish_reason)"\s*:\s*"([A-Za-z_]{1,40})"')


class EdgeMetrics:
    def __init__(self, max_model_labels: int = 64) -> None:
        self._model_labels: set[str] = set()
        self._max_model_labels = max_model_labels
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "edge_requests_total", "Client requests.", ["dialect", "route", "model", "status_class"], registry=r
        )
        self.duration = Histogram(
            "edge_request_duration_seconds",
            "End-to-end latency of client requests.",
            ["dialect", "route", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # GenAI client metrics (``genai_semconv``): each upstream attempt is one GenAI client operation.
        self.upstream = Histogram(
            genai.prometheus_name(genai.OPERATION_DURATION),
            "GenAI operation duration: each upstream attempt.",
            [*_OPERATION_LABELS, genai.label(genai.REQUEST_MODEL), genai.label(genai.ERROR_TYPE)],
            buckets=genai.DURATION_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            genai.prometheus_name(genai.TIME_TO_FIRST_CHUNK),
            "Time to the first chunk of a streamed answer, from the client's request.",
            [*_OPERATION_LABELS, "dialect"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "edge_failovers_total", "Requests moved to another key, by cause.", ["cause"], registry=r
        )
        self.tokens = Histogram(
            genai.prometheus_name(genai.TOKEN_USAGE),
            "Number of input and output tokens used, per upstream attempt that reported them.",
            [*_OPERATION_LABELS, genai.label(genai.REQUEST_MODEL), genai.label(genai.TOKEN_TYPE)],
            buckets=genai.TOKEN_BUCKETS,
            registry=r,
        )
        self.tier_downgrades = Counter(
            "edge_service_tier_downgrades_total",
            "Priority calls Google served at another tier (x-gemini-service-tier), by the tier served.",
            ["served"],
            registry=r,
        )
        self.denied = Counter(
            "edge_leases_denied_total", "Lease requests keyring refused, by gRPC status.", ["reason"], registry=r
        )
        self.in_flight = Gauge("edge_requests_in_flight", "Client requests being served.", registry=r)
        # Read when scraped (``keyring.KeyringClient``): set_function in app.py.
        self.releases_owed = Gauge(
            "edge_keyring_releases_owed",
            "Releases waiting for their keyring replica's stream to come back.",
            registry=r,
        )
        self.releases_unconfirmed = Gauge(
            "edge_keyring_releases_unconfirmed",
            "Releases keyring counted in a usage epoch not yet in its store (re-sent if that replica dies).",
            registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def watch_replicas(self, states: Callable[[], dict[str, int]], hedged: Callable[[], int]) -> None:
        """``edge_keyring_replica_state{replica}`` and ``edge_keyring_hedged_calls_total``, read when scraped."""
        self.registry.register(_ReplicaCollector(states, hedged))

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: label values are bounded, and this runs per request."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def model_label(self, model: str, accepted: bool = False) -> str:
        """The model as a label value: one already admitted, or admitted now (``accepted``) while room remains."""
        if model in self._model_labels:
            return model
        if accepted and len(self._model_labels) < self._max_model_labels and _MODEL.fullmatch(model):
            self._model_labels.add(model)
            return model
        return "other"


class _ReplicaCollector(Collector):
    """The keyring client's view of its replicas, read at scrape time (nothing on the lease path)."""

    def __init__(self, states: Callable[[], dict[str, int]], hedged: Callable[[], int]) -> None:
        self._states = states
        self._hedged = hedged

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "edge_keyring_replica_state", "Each keyring replica as this edge sees it: 0 healthy, 1 slow, 2 down.",
            labels=["replica"],
        )  # fmt: skip
        for replica, value in sorted(self._states().items()):
            state.add_metric([replica], value)
        yield state
        yield CounterMetricFamily(
            "edge_keyring_hedged_calls",
            "Calls to keyring also sent to another replica because the first had not answered in its hedge delay.",
            value=self._hedged(),
        )


def record_attempt(metrics: EdgeMetrics, route: str, model: str, outcome: pb.Outcome) -> None:
    """One upstream attempt (a GenAI client operation): its duration, and the tokens it reported."""
    operation = genai.operation(route)
    accepted = outcome.transport == pb.Outcome.TRANSPORT_OK and 200 <= outcome.http_status < 300
    label = metrics.model_label(model, accepted)
    if outcome.transport != pb.Outcome.TRANSPORT_CANCELLED:
        error = attempt_error(outcome)
        metrics.child(metrics.upstream, operation, genai.GCP_GEMINI, label, error).observe(outcome.latency_ms / 1000)
    for token_type, count in ((genai.TOKEN_INPUT, outcome.input_tokens), (genai.TOKEN_OUTPUT, outcome.output_tokens)):
        if count:
            metrics.child(metrics.tokens, operation, genai.GCP_GEMINI, label, token_type).observe(count)


def attempt_error(outcome: pb.Outcome) -> str:
    """``error.type`` of an attempt: Google's status, the HTTP status, the transport failure, or '' for none."""
    if outcome.transport not in (pb.Outcome.TRANSPORT_OK, pb.Outcome.TRANSPORT_CANCELLED):
        return genai.error_type(pb.Outcome.Transport.Name(outcome.transport).removeprefix("TRANSPORT_").lower())
    if outcome.error_status:
        return genai.error_type(outcome.error_status)
    if outcome.http_status >= 400:
        return str(outcome.http_status)
    return ""


def set_usage_attributes(span: trace.Span, outcome: pb.Outcome) -> None:
    span.set_attribute("http.response.status_code", outcome.http_status)
    if outcome.input_tokens or outcome.output_tokens:
        span.set_attribute(genai.USAGE_INPUT_TOKENS, outcome.input_tokens)
        span.set_attribute(genai.USAGE_OUTPUT_TOKENS, outcome.output_tokens)
    error = attempt_error(outcome)
    if error:
        span.set_attribute(genai.ERROR_TYPE, error)


def first_chunk_arrived(span: trace.Span, started: float) -> None:
    """gen_ai.response.time_to_first_chunk (seconds since ``started``, a monotonic time) on the attempt's span."""
    if span.is_recording():
        span.set_attribute(genai.RESPONSE_TIME_TO_FIRST_CHUNK, time.monotonic() - started)


def describe_answer(span: trace.Span, body: bytes) -> None:
    """gen_ai.response.model, .id and .finish_reasons of a 2xx answer, on the attempt's (upstream) span.

    Read from the bytes (Gemini's ``modelVersion``/``responseId``/``finishReason``, OpenAI's ``model``/``id``/
    ``finish_reason``)
    only when the span records: an unsampled request pays one call (the span is passed: no context lookup).
    """
    if not span.is_recording():
        return
    model = _ANSWER_MODEL.search(body)
    if model:
        span.set_attribute(genai.RESPONSE_MODEL, model.group(1).decode())
    response_id = _RESPONSE_ID.search(body)  # Gemini's responseId, or an OpenAI object's leading id
    if response_id:
        span.set_attribute(genai.RESPONSE_ID, (response_id.group(1) or response_id.group(2)).decode())
    reasons = list(dict.fromkeys(match.group(1).decode() for match in _FINISH_REASON.finditer(body)))
    if reasons:
        span.set_attribute(genai.RESPONSE_FINISH_REASONS, reasons)


def observe(metrics: EdgeMetrics) -> Middleware:
    """Middleware: the server span and the request metrics; it never touches bodies."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/metrics", "/healthz", "/readyz"):
            return await handler(request)
        request[STARTED] = started = time.perf_counter()
        parent = _PROPAGATOR.extract(request.headers) if "traceparent" in request.headers else None
        status = 500
        metrics.in_flight.inc()
        if parent is None and roots_unsampled():
            server_span: AbstractContextManager[trace.Span] = UnsampledSpan()
        else:
            name = "edge " + request.method
            server_span = tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER)
        with server_span as span:
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as error:
                status = error.status
                raise
            except BaseException:
                status = 499 if request.transport is None or request.transport.is_closing() else 500
                raise
            finally:
                metrics.in_flight.dec()
                route = request.get(ROUTE, "other")
                dialect = request[DIALECT]
                if span.is_recording():
                    span.update_name(f"edge {route}")
                    span.set_attributes(
                        {
                            "http.request.method": request.method,
                            "http.route": route,
                            "http.response.status_code": status,
                            "keyring.dialect": dialect,
                        }
                    )
                status_class = f"{status // 100}xx"
                metrics.child(metrics.requests, dialect, route, request.get(MODEL, "other"), status_class).inc()
                stream = "true" if request.get(STREAM, False) else "false"
                metrics.child(metrics.duration, dialect, route, stream).observe(time.perf_counter() - started)

    return middleware
