"""The unsampled server span (issue 23): what the SDK's unsampled span gives the logs and keyring, for less."""

from __future__ import annotations

from opentelemetry import trace

from services.common.telemetry import UnsampledSpan, current_traceparent, ids_of_current_span


def test_an_unsampled_span_is_current_with_fresh_ids_and_records_nothing() -> None:
    outside = ids_of_current_span()
    with UnsampledSpan() as first:
        trace_id, span_id = ids_of_current_span()
        assert trace.get_current_span() is first
        assert len(trace_id) == 32 and len(span_id) == 16 and int(trace_id, 16) and int(span_id, 16)
        assert not first.is_recording() and not first.get_span_context().trace_flags.sampled
        assert current_traceparent() == ""  # keyring is told nothing for it
    assert ids_of_current_span() == outside  # the context is restored
    with UnsampledSpan():
        assert ids_of_current_span()[0] != trace_id  # a new trace each request
