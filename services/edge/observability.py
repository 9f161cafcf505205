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
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .routing import DIALECT, Handler

tracer = trace.get_tracer("services.edge")
_PROPAGATOR = TraceContextTextMapPropagator()
_MODEL = re.compile(r"[a-z0-9][a-z0-9.\-]{0,127}")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# What the request's handler learnt, for the middleware to label with.
ROUTE: Final = web.RequestKey("keyring_route", str)
MODEL: Final = web.RequestKey("keyring_model", str)
STREAM: Final = web.RequestKey("keyring_stream", bool)
STARTED: Final = web.RequestKey("keyring_started", float)

# GenAI semantic conventions: gen_ai.operation.name by route.
OPERATIONS: Final = {
    "chat.completions": "chat",
    "generateContent": "generate_content",
    "streamGenerateContent": "generate_content",
    "embeddings": "embeddings",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
}


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
        self.upstream = Histogram(
            "edge_upstream_duration_seconds",
            "Latency of each upstream attempt.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "edge_stream_first_byte_seconds",
            "Time to the first byte of a streamed answer.",
            ["dialect"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "edge_failovers_total", "Requests moved to another key, by cause.", ["cause"], registry=r
        )
        self.tokens = Counter(
            "edge_tokens_total", "Tokens reported by the upstream.", ["model", "direction"], registry=r
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
    """One upstream attempt: its latency, and the tokens it reported."""
    if outcome.transport != pb.Outcome.TRANSPORT_CANCELLED:
        metrics.child(metrics.upstream, route).observe(outcome.latency_ms / 1000)
    accepted = outcome.transport == pb.Outcome.TRANSPORT_OK and 200 <= outcome.http_status < 300
    label = metrics.model_label(model, accepted)
    if outcome.input_tokens:
        metrics.child(metrics.tokens, label, "input").inc(outcome.input_tokens)
    if outcome.output_tokens:
        metrics.child(metrics.tokens, label, "output").inc(outcome.output_tokens)


def set_usage_attributes(span: trace.Span, outcome: pb.Outcome) -> None:
    span.set_attribute("http.response.status_code", outcome.http_status)
    if outcome.input_tokens or outcome.output_tokens:
        span.set_attribute("gen_ai.usage.input_tokens", outcome.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", outcome.output_tokens)
    if outcome.error_status:
        span.set_attribute("error.type", outcome.error_status)


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
        with tracer.start_as_current_span("edge " + request.method, context=parent, kind=trace.SpanKind.SERVER) as span:
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
