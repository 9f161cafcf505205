"""OpenTelemetry GenAI semantic-convention names, pinned to one version, in one place.

The GenAI conventions left the main semantic-conventions repository for
their own (open-telemetry/semantic-conventions-genai, schema ``gen-ai``).
Every GenAI span attribute, span name, metric name and the Prometheus names
that mirror those metrics come from here, so moving to a newer version is an
edit of this module (and of the dashboard, whose queries name the Prometheus
series; ``tests/e2e/test_genai_semconv.py`` checks both against this module).

What the version changed for Keyring: ``gen_ai.system`` ("gemini") became
``gen_ai.provider.name`` ("gcp.gemini", the generativelanguage.googleapis.com
endpoint); inference spans are CLIENT spans named
``{gen_ai.operation.name} {gen_ai.request.model}``. The token histogram is
still ``gen_ai.client.token.usage`` in 1.42.0; the repository's unreleased
changes replace it with ``gen_ai.client.inference.*`` counters (a later
version, a later edit here).

The schema URL is an assumption, checked as far as this machine can: the names
above match the repository's documents and opentelemetry-js's constants, but
its ``model/manifest.yaml`` (as read in December 2026) publishes
``https://opentelemetry.io/schemas/gen-ai-dev/1.42.0-dev`` and its first
standalone release notes give no schema URL yet. ``gen-ai/1.42.0`` is what
GenAI dashboards pin today; change ``SCHEMA_URL`` here when a released one appears.
"""

from __future__ import annotations

import re
from typing import Final

VERSION: Final = "1.42.0"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/gen-ai/{VERSION}"

# Span and metric attributes.
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
RESPONSE_ID: Final = "gen_ai.response.id"
REQUEST_STREAM: Final = "gen_ai.request.stream"  # set (true) only on streaming calls
RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"  # seconds, a double; streams only
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
TOKEN_TYPE: Final = "gen_ai.token.type"
ERROR_TYPE: Final = "error.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# Well-known values.
GCP_GEMINI: Final = "gcp.gemini"
TOKEN_INPUT: Final = "input"
TOKEN_OUTPUT: Final = "output"
ERROR_OTHER: Final = "_OTHER"

# gen_ai.operation.name by the edge's route; a route outside this table keeps its own name.
OPERATIONS: Final = {
    "chat.completions": "chat",
    "generateContent": "generate_content",
    "streamGenerateContent": "generate_content",
    "embeddings": "embeddings",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
}

# Metrics: (name, unit). The Prometheus series are these names as OpenTelemetry's
# Prometheus exporter writes them (``prometheus_name``).
TOKEN_USAGE: Final = ("gen_ai.client.token.usage", "{token}")  # histogram, by gen_ai.token.type
OPERATION_DURATION: Final = ("gen_ai.client.operation.duration", "s")  # histogram
TIME_TO_FIRST_CHUNK: Final = ("gen_ai.client.operation.time_to_first_chunk", "s")  # histogram, streams only

# The conventions' advisory bucket boundaries.
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

_UNITS: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}
_ERROR_TYPE = re.compile(r"[A-Za-z0-9_.]{1,64}")


def operation(route: str) -> str:
    """gen_ai.operation.name of an edge route."""
    return OPERATIONS.get(route, route)


def span_name(operation_name: str, model: str) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}``, or the operation alone when no model is named."""
    return f"{operation_name} {model}".strip()


def prometheus_name(metric: tuple[str, str]) -> str:
    """The metric's Prometheus name: dots to underscores, the unit as a suffix (``{...}`` annotations dropped)."""
    name, unit = metric
    base = name.replace(".", "_")
    suffix = _UNITS.get(unit, "")
    return f"{base}_{suffix}" if suffix else base


def label(attribute: str) -> str:
    """An attribute's name as a Prometheus label."""
    return attribute.replace(".", "_")


def error_type(status: str) -> str:
    """A bounded ``error.type`` value: Google's status name as it came, anything odd as ``_OTHER``."""
    return status if _ERROR_TYPE.fullmatch(status) else ERROR_OTHER
