"""Metrics of every service move with traffic; one request is one trace; dashboards and alerts are sound."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from services.admin.app import start_admin
from services.admin.config import AdminSettings
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.simulator import Behaviour

from .conftest import MakeStack, Stack, eventually

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemini-3.5-flash"
ADMIN_TOKEN = "observability-admin-token-0123456789"
GENERATE = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, url: str) -> tuple[set[str], Samples]:
    """Metric names (families and samples) and sample values of one /metrics page."""
    async with http.get(url) as answer:
        assert answer.status == 200
        text = await answer.text()
    names: set[str] = set()
    samples: Samples = {}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        for sample in family.samples:
            names.add(sample.name)
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return names, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in samples.items() if sample == name and wanted <= set(sample_labels)
    )


async def drive_traffic(stack: Stack) -> None:
    """Successes in both dialects, a stream, a 429 that fails over, and a request with a bad token."""
    assert stack.http is not None
    stack.sim.script(stack.keys[0], Behaviour.rate_limit(retry_delay_s=600))
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent"
    for _ in range(4):
        async with stack.http.post(url, json=GENERATE, headers=stack.gemini_headers()) as answer:
            assert answer.status == 200
    async with stack.http.post(
        f"{stack.edge_url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
        json=GENERATE,
        headers=stack.gemini_headers(),
    ) as answer:
        assert answer.status == 200 and b"data:" in await answer.read()
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    async with stack.http.post(
        f"{stack.edge_url}/v1/chat/completions", json=chat, headers=stack.bearer_headers()
    ) as answer:
        assert answer.status == 200
    async with stack.http.post(url, json=GENERATE, headers=stack.gemini_headers("kr-wrong")) as answer:
        assert answer.status == 401


@pytest.fixture
async def observed(make_stack: MakeStack) -> tuple[Stack, str]:
    """A stack with traffic driven through it, plus an admin service on the same keyring."""
    stack = await make_stack(keys=3)
    settings = AdminSettings(
        keyring_addresses=f"127.0.0.1:{stack.replica.server.port}", admin_tokens=f"ops:{ADMIN_TOKEN}"
    )
    runner, admin_url = await start_admin(settings, host="127.0.0.1", port=0)
    await drive_traffic(stack)
    assert stack.http is not None
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with stack.http.post(f"{admin_url}/api/pools", json={"name": "observed"}, headers=headers) as answer:
        assert answer.status == 201
    async with stack.http.get(f"{admin_url}/api/pools/nope", headers=headers) as answer:
        assert answer.status == 404
    yield stack, admin_url
    await runner.cleanup()


async def test_metrics_of_every_service_move(observed: tuple[Stack, str]) -> None:
    stack, admin_url = observed
    assert stack.http is not None
    await stack.no_lease_held()
    _, edge = await scrape(stack.http, f"{stack.edge_url}/metrics")
    assert (
        total(edge, "edge_requests_total", dialect="gemini", route="generateContent", model=MODEL, status_class="2xx")
        == 4
    )
    assert total(edge, "edge_requests_total", dialect="gemini", route="streamGenerateContent", status_class="2xx") == 1
    assert total(edge, "edge_requests_total", dialect="openai", route="chat.completions", status_class="2xx") == 1
    assert total(edge, "edge_requests_total", status_class="4xx") == 1
    assert total(edge, "edge_failovers_total", cause="rate_limited") == 1
    assert total(edge, "edge_leases_denied_total", reason="UNAUTHENTICATED") == 1
    tokens = "gen_ai_client_token_usage_sum"
    assert total(edge, tokens, gen_ai_request_model=MODEL, gen_ai_token_type="input") > 0
    assert total(edge, tokens, gen_ai_request_model=MODEL, gen_ai_token_type="output") > 0
    assert total(edge, "gen_ai_client_operation_time_to_first_chunk_seconds_count", dialect="gemini") == 1
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert total(edge, duration) == 7  # six answers, one of them after a 429
    assert total(edge, duration, error_type="RESOURCE_EXHAUSTED") == 1
    assert total(edge, "edge_request_duration_seconds_count", stream="true") == 1
    assert total(edge, "edge_requests_in_flight") == 0
    assert total(edge, "edge_keyring_releases_owed") == 0  # every release reached its replica
    assert 0 <= total(edge, "edge_keyring_releases_unconfirmed") <= 7  # at most this test's releases, until flushed

    _, keyring = await scrape(stack.http, f"http://127.0.0.1:{stack.replica.server.metrics_port}/metrics")
    granted = total(keyring, "keyring_leases_granted_total", pool="main")
    unused = total(keyring, "keyring_credits_unused_total", pool="main")
    assert granted - unused == 7  # the leases that made a call (credits granted ahead of need, given back unused)
    assert total(keyring, "keyring_cooldowns_started_total", reason="rate_limit") == 1
    assert total(keyring, "keyring_cooling_pairs", reason="rate_limit") == 1
    assert total(keyring, "keyring_key_errors_total", key_id=stack.key_ids[stack.keys[0]]) == 1
    assert total(keyring, "keyring_leases_denied_total", reason="Unauthenticated") == 1
    assert total(keyring, "keyring_keys", pool="main", state="active") == 3

    _, admin = await scrape(stack.http, f"{admin_url}/metrics")
    assert total(admin, "admin_requests_total", route="/api/pools", status="201") == 1
    assert total(admin, "admin_requests_total", route="/api/pools/{name}", status="404") == 1
    assert total(admin, "admin_changes_total", kind="POST /api/pools") == 1

    for text in [str(edge), str(keyring), str(admin)]:
        assert stack.token not in text and not any(secret in text for secret in stack.keys)

    # Usage epochs: once keyring has written its counts (GetUsage flushes them), the next reply on the lease
    # stream says so and the edge forgets the releases it kept; only the newest one's epoch is not written yet.
    await stack.replica.admin.GetUsage(pb.GetUsageRequest(window_s=3600))
    async with stack.http.post(
        f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent", json=GENERATE, headers=stack.gemini_headers()
    ) as answer:
        assert answer.status == 200
    await stack.no_lease_held()
    _, edge = await scrape(stack.http, f"{stack.edge_url}/metrics")
    assert total(edge, "edge_keyring_releases_unconfirmed") <= 1


def dashboard_expressions() -> list[str]:
    dashboard = orjson.loads((ROOT / "deploy/grafana/dashboards/keyring.json").read_bytes())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [variable["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    return exprs


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/keyring.rules.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def metric_names_in(expr: str) -> set[str]:
    """Our metric names in a PromQL expression (label lists and matchers left out: gen_ai_* labels are not metrics)."""
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)|\{[^}]*\}", " ", expr)
    return set(re.findall(r"\b((?:keyring|edge|admin|gen_ai)_[a-z_]+)\b", bare))


# Series the dashboard or the alerts query that this test's traffic does not make: each needs an event of its own.
QUIET_UNDER_PLAIN_TRAFFIC = {
    "edge_live_closes_total": "a Live session (tests/e2e/test_live.py)",
    "edge_live_sessions_refused_total": "a session cap reached",
    "keyring_billing_account_cooling": "a 402 or a spend limit on an account (tests/admin/test_console_billing.py)",
    "keyring_etcd_errors_total": "etcd failing",
    "keyring_leases_expired_total": "an edge gone with its leases",
    "keyring_quota_limit": "keys with a project and a quota learnt or set",
    "keyring_quota_used": "keys with a project and a quota learnt or set",
}


async def test_dashboard_and_alerts_query_series_that_have_data(observed: tuple[Stack, str]) -> None:
    """Every metric the dashboard and the alerts query is exported, and has samples under this traffic."""
    stack, admin_url = observed
    assert stack.http is not None
    exported: set[str] = set()
    with_data: set[str] = set()
    for url in (
        f"{stack.edge_url}/metrics",
        f"http://127.0.0.1:{stack.replica.server.metrics_port}/metrics",
        f"{admin_url}/metrics",
    ):
        names, samples = await scrape(stack.http, url)
        exported |= names
        with_data |= {name for name, _ in samples}
    used = set().union(*(metric_names_in(expr) for expr in dashboard_expressions() + alert_expressions()))
    assert used, "no metric found in the dashboard or the alerts"
    assert used - exported == set()
    assert used - with_data == set(QUIET_UNDER_PLAIN_TRAFFIC)


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/system-deps.sh installs Debian's prometheus package)")
    queries = [expr.replace("$pool", ".*") for expr in dashboard_expressions() if not expr.startswith("label_values")]
    recording = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:panel_{index}", "expr": expr} for index, expr in enumerate(queries)],
            }
        ]
    }
    dashboard_rules = tmp_path / "dashboard.rules.yml"
    dashboard_rules.write_text(yaml.safe_dump(recording))
    for rules in (dashboard_rules, ROOT / "deploy/prometheus/rules/keyring.rules.yml"):
        checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(x[5m])"}]}]})
    )
    assert subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True).returncode != 0


def test_dashboard_is_generated_from_its_script() -> None:
    checked = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_dashboard.py"), "--check"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


async def test_one_request_is_one_trace_across_edge_keyring_and_upstream(
    make_stack: MakeStack, spans: InMemorySpanExporter
) -> None:
    stack = await make_stack(keys=2)
    assert stack.http is not None
    spans.clear()
    url = f"{stack.edge_url}/v1beta/models/{MODEL}:generateContent"
    async with stack.http.post(url, json=GENERATE, headers=stack.gemini_headers()) as answer:
        assert answer.status == 200

    def names() -> set[str]:
        return {span.name for span in spans.get_finished_spans()}

    await eventually(lambda: "keyring.v1.LeaseService/Release" in names(), 3, "keyring's release span")
    finished = spans.get_finished_spans()
    by_name = {span.name: span for span in finished}
    server = by_name["edge generateContent"]
    acquire, acquired = by_name["keyring.acquire"], by_name["keyring.v1.LeaseService/Acquire"]
    upstream = by_name[f"generate_content {MODEL}"]
    release, released = by_name["keyring.release"], by_name["keyring.v1.LeaseService/Release"]
    assert len({span.context.trace_id for span in (server, acquire, acquired, upstream, release, released)}) == 1
    assert server.parent is None
    assert acquire.parent.span_id == server.context.span_id
    assert acquired.parent.span_id == acquire.context.span_id
    assert upstream.parent.span_id == server.context.span_id
    assert release.parent.span_id == server.context.span_id
    assert released.parent.span_id == release.context.span_id
    attributes = dict(upstream.attributes or {})
    assert attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert attributes["gen_ai.operation.name"] == "generate_content"
    assert attributes["gen_ai.request.model"] == MODEL
    assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["keyring.key_id"] in stack.key_ids.values()
    every_value = " ".join(str(value) for span in finished for value in (span.attributes or {}).values())
    assert stack.token not in every_value and not any(secret in every_value for secret in stack.keys)
