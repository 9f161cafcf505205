"""Client spans for keyring calls, only for sampled requests (an unsampled one allocates nothing)."""

from __future__ import annotations

import contextlib
from typing import Any, Final

from opentelemetry import trace

tracer = trace.get_tracer("services.edge")
_NO_SPAN: Final = contextlib.nullcontext()


def traced() -> bool:
    """Whether the current request is sampled (its span may have ended: releases run after the answer)."""
    span_context = trace.get_current_span().get_span_context()
    return span_context.is_valid and span_context.trace_flags.sampled


def client_span(name: str, key_id: str) -> contextlib.AbstractContextManager[Any]:
    """A client span for a sampled request; a shared no-op otherwise (nothing allocated)."""
    if not traced():
        return _NO_SPAN
    return tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes={"keyring.key_id": key_id})
