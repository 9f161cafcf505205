"""The edge's spans and metrics carry the GenAI semantic conventions' names of the pinned version (gen-ai 1.42.0).

One generateContent and one stream go through a real stack (edge, keyring on etcd, the simulator as Google);
the exported spans are read from an in-memory exporter on the process's tracer provider (the edge runs in this
process) and the metrics from the edge's /metrics.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from yarl import URL

from services.common import genai_semconv as genai

from .conftest import MakeStack, eventually
from .test_observability import dashboard_expressions, metric_names_in, scrape, total

MODEL = "gemini-3.5-flash"
GENERATE = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
# Written out, not read from the module: the test pins the version the names were checked against.
PINNED_SCHEMA_URL = "https://opentelemetry.io/schemas/gen-ai/1.42.0"


def test_names_of_the_pinned_version() -> None:
    assert genai.SCHEMA_URL == PINNED_SCHEMA_URL
    assert genai.prometheus_name(genai.TOKEN_USAGE) == "gen_ai_client_token_usage"  # {token}: an annotation, no suffix
    assert genai.prometheus_name(genai.OPERATION_DURATION) == "gen_ai_client_operation_duration_seconds"
    assert genai.span_name("generate_content", MODEL) == f"generate_content {MODEL}"
    assert genai.span_name("embeddings", "") == "embeddings"
    assert genai.error_type("RESOURCE_EXHAUSTED") == "RESOURCE_EXHAUSTED"
    assert genai.error_type("no spaces or {braces}") == "_OTHER"  # bounded: a label value


async def test_spans_and_metrics_carry_the_current_genai_names(
    make_stack: MakeStack, spans: InMemorySpanExporter
) -> None:
    stack = await make_stack(keys=1)
    assert stack.http is not None
    spans.clear()
    base = f"{stack.edge_url}/v1beta/models/{MODEL}"
    async with stack.http.post(f"{base}:generateContent", json=GENERATE, headers=stack.gemini_headers()) as answer:
        assert answer.status == 200
    async with stack.http.post(
        f"{base}:streamGenerateContent?alt=sse", json=GENERATE, headers=stack.gemini_headers()
    ) as answer:
        assert answer.status == 200 and b"data:" in await answer.read()

    def inference() -> list[ReadableSpan]:
        return [span for span in spans.get_finished_spans() if span.kind == trace.SpanKind.CLIENT
                and span.name == f"generate_content {MODEL}"]  # fmt: skip

    await eventually(lambda: len(inference()) == 2, 3, "two inference spans")
    for span in inference():
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.schema_url == PINNED_SCHEMA_URL
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.operation.name"] == "generate_content"
        assert attributes["gen_ai.provider.name"] == "gcp.gemini"
        assert "gen_ai.system" not in attributes  # the name the conventions replaced
        assert attributes["gen_ai.request.model"] == MODEL
        assert attributes["gen_ai.response.model"] == MODEL  # the simulator's modelVersion
        assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("STOP",)  # type: ignore[arg-type]
        assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == URL(stack.sim_url).port
        assert isinstance(attributes["gen_ai.response.id"], str) and attributes["gen_ai.response.id"]
        assert "error.type" not in attributes
    streamed = [span for span in inference() if (span.attributes or {}).get("gen_ai.request.stream") is True]
    assert len(streamed) == 1  # set on the stream only
    first_chunk = dict(streamed[0].attributes or {})["gen_ai.response.time_to_first_chunk"]
    assert isinstance(first_chunk, float) and 0 < first_chunk < 3

    await stack.no_lease_held()
    names, edge = await scrape(stack.http, f"{stack.edge_url}/metrics")
    common = {"gen_ai_operation_name": "generate_content", "gen_ai_provider_name": "gcp.gemini"}
    tokens = genai.prometheus_name(genai.TOKEN_USAGE)
    for token_type in ("input", "output"):
        labels = {**common, "gen_ai_request_model": MODEL, "gen_ai_token_type": token_type}
        assert total(edge, tokens + "_count", **labels) == 2  # one observation per call: a histogram, not a counter
        assert total(edge, tokens + "_sum", **labels) > 0
    duration = genai.prometheus_name(genai.OPERATION_DURATION)
    assert total(edge, duration + "_count", **common, gen_ai_request_model=MODEL, error_type="") == 2
    assert total(edge, genai.prometheus_name(genai.TIME_TO_FIRST_CHUNK) + "_count", **common) == 1
    assert not {"edge_tokens_total", "edge_upstream_duration_seconds_count"} & names  # the pre-1.42 names are gone

    # The dashboard's GenAI queries name these series, and each has data after this traffic.
    queried = {name for expr in dashboard_expressions() for name in metric_names_in(expr) if name.startswith("gen_ai_")}
    first_chunk = genai.prometheus_name(genai.TIME_TO_FIRST_CHUNK)
    assert queried == {tokens + "_sum", duration + "_bucket", first_chunk + "_bucket"}
    for name in queried:
        assert total(edge, name) > 0, name
