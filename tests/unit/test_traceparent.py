"""The edge's hand-formatted traceparent is exactly what the W3C propagator writes."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.telemetry import context_from, current_traceparent


def test_current_traceparent_matches_the_propagator_for_sampled_spans_and_is_empty_for_unsampled() -> None:
    assert current_traceparent() == ""  # no span
    for sampler in (ALWAYS_ON, ALWAYS_OFF):
        tracer = TracerProvider(sampler=sampler).get_tracer("test")
        with tracer.start_as_current_span("call"):
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            assert trace.get_current_span().get_span_context().is_valid
            if sampler is ALWAYS_ON:
                assert current_traceparent() == carrier["traceparent"]
            else:  # not sent: the receiver would record nothing under it anyway
                assert current_traceparent() == ""
                assert context_from(carrier["traceparent"]) is None
