"""Write deploy/grafana/dashboards/keyring.json from the panel list below.

Grafana dashboards are long JSON; keeping the panels here (title, queries,
unit) keeps them reviewable. Run: python scripts/gen_dashboard.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "keyring.json"
DS = {"type": "prometheus", "uid": "${datasource}"}

# (row, title, kind, unit, [(expr, legend)])
PANELS = [
    ("Key health", "Keys by state", "timeseries", "short", [("max by (pool, state) (keyring_keys{pool=~\"$pool\"})", "{{pool}} {{state}}")]),
    ("Key health", "Invalid keys", "stat", "short", [("max by (pool) (keyring_keys{pool=~\"$pool\", state=\"invalid\"})", "{{pool}}")]),
    ("Key health", "Cooling (key or project, model) pairs", "timeseries", "short", [("max by (scope, reason) (keyring_cooling_pairs)", "{{scope}} {{reason}}")]),
    ("Key health", "Quota used of the limit (per project, model, metric, service class)", "timeseries", "percentunit", [("sum by (project, model, metric, service_tier) (keyring_quota_used{pool=~\"$pool\"}) / max by (project, model, metric, service_tier) (keyring_quota_limit{pool=~\"$pool\"})", "{{project}} {{model}} {{metric}} {{service_tier}}")]),
    ("Key health", "Cooldowns started", "timeseries", "ops", [("sum by (reason) (rate(keyring_cooldowns_started_total[5m]))", "{{reason}}")]),
    ("Key health", "Billing accounts cooling (a 402 or a spend limit: every project of the account)", "timeseries", "s", [("max by (pool, account, cause) (keyring_billing_account_cooling{pool=~\"$pool\"})", "{{pool}} {{account}} {{cause}}")]),
    ("Traffic", "Requests by model and dialect", "timeseries", "reqps", [("sum by (model, dialect) (rate(edge_requests_total[5m]))", "{{dialect}} {{model}}")]),
    ("Traffic", "Errors by status class", "timeseries", "reqps", [("sum by (status_class, dialect) (rate(edge_requests_total{status_class!~\"[12]xx\"}[5m]))", "{{dialect}} {{status_class}}")]),
    ("Traffic", "Failovers by cause", "timeseries", "ops", [("sum by (cause) (rate(edge_failovers_total[5m]))", "{{cause}}")]),
    ("Traffic", "Tokens per model (gen_ai.client.token.usage)", "timeseries", "short", [("sum by (gen_ai_request_model, gen_ai_token_type) (rate(gen_ai_client_token_usage_sum[5m]))", "{{gen_ai_request_model}} {{gen_ai_token_type}}")]),
    ("Latency", "End-to-end latency", "timeseries", "s", [
        (f"histogram_quantile({q}, sum by (le) (rate(edge_request_duration_seconds_bucket[5m])))", f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)
    ]),
    ("Latency", "Upstream latency (gen_ai.client.operation.duration)", "timeseries", "s", [
        (f"histogram_quantile({q}, sum by (le) (rate(gen_ai_client_operation_duration_seconds_bucket[5m])))", f"p{int(q * 100)}") for q in (0.5, 0.99)
    ]),
    ("Latency", "Stream time to first chunk (gen_ai.client.operation.time_to_first_chunk)", "timeseries", "s", [
        ("histogram_quantile(0.5, sum by (le) (rate(gen_ai_client_operation_time_to_first_chunk_seconds_bucket[5m])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(gen_ai_client_operation_time_to_first_chunk_seconds_bucket[5m])))", "p99"),
    ]),
    ("Latency", "Requests in flight", "timeseries", "short", [("sum(edge_requests_in_flight)", "in flight")]),
    ("Live API sessions", "Live sessions open, and refused by a session cap", "timeseries", "short", [
        ("sum(edge_live_sessions_open)", "open"),
        ("sum by (reason) (rate(edge_live_sessions_refused_total[5m]))", "refused/s {{reason}}"),
    ]),
    ("Live API sessions", "Live closes by cause and code", "timeseries", "ops", [("sum by (cause, code) (rate(edge_live_closes_total[5m]))", "{{cause}} {{code}}")]),
    ("Live API sessions", "Live session duration", "timeseries", "s", [
        (f"histogram_quantile({q}, sum by (le) (rate(edge_live_session_duration_seconds_bucket[15m])))", f"p{int(q * 100)}") for q in (0.5, 0.99)
    ]),
    ("Live API sessions", "Live bytes relayed", "timeseries", "Bps", [("sum by (direction) (rate(edge_live_bytes_total[5m]))", "{{direction}}")]),
    ("Keyring", "Lease rates", "timeseries", "ops", [
        ("sum(rate(keyring_leases_granted_total[5m]))", "granted"),
        ("sum(rate(keyring_credits_unused_total[5m]))", "credits back unused"),
        ("sum by (reason) (rate(keyring_leases_denied_total[5m]))", "denied {{reason}}"),
        ("sum(rate(keyring_leases_expired_total[5m]))", "expired"),
    ]),
    ("Keyring", "Releases the edges keep", "timeseries", "short", [
        ("sum(edge_keyring_releases_owed)", "owed (a replica away)"),
        ("sum(edge_keyring_releases_unconfirmed)", "counted, not yet written"),
    ]),
    ("Keyring", "Lease duration p99", "timeseries", "s", [("histogram_quantile(0.99, sum by (le, pool) (rate(keyring_lease_duration_seconds_bucket[5m])))", "{{pool}}")]),
    ("Keyring", "etcd latency p99", "timeseries", "s", [("histogram_quantile(0.99, sum by (le, operation) (rate(keyring_etcd_operation_duration_seconds_bucket[5m])))", "{{operation}}")]),
    ("Keyring", "etcd errors", "timeseries", "ops", [("sum by (operation) (rate(keyring_etcd_errors_total[5m]))", "{{operation}}")]),
    ("Keyring", "Live replicas", "stat", "short", [("max(keyring_live_replicas)", "replicas")]),
    ("Keyring", "Watch lag (revisions behind)", "timeseries", "short", [("max by (instance) (keyring_watch_lag_revisions)", "{{instance}}")]),
    ("Admin", "Admin API requests", "timeseries", "reqps", [("sum by (route, status) (rate(admin_requests_total[5m]))", "{{route}} {{status}}")]),
    ("Admin", "Changes by kind", "timeseries", "ops", [("sum by (kind) (rate(admin_changes_total[5m]))", "{{kind}}")]),
]


def build() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    y = 0
    panel_id = 1
    row_title = None
    x = 0
    for row, title, kind, unit, queries in PANELS:
        if row != row_title:
            if x:
                y += 8
            panels.append({"type": "row", "title": row, "id": panel_id, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "collapsed": False, "panels": []})
            panel_id += 1
            y += 1
            x = 0
            row_title = row
        panels.append({
            "type": kind,
            "title": title,
            "id": panel_id,
            "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                for i, (expr, legend) in enumerate(queries)
            ],
        })
        panel_id += 1
        x = 12 - x
        if x == 0:
            y += 8
    return {
        "title": "Keyring",
        "uid": "keyring-overview",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["keyring", "gemini"],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source", "current": {}},
            {"name": "pool", "type": "query", "datasource": DS, "query": "label_values(keyring_keys, pool)",
             "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "label": "Pool", "current": {}},
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        if OUT.read_text() != render():
            sys.exit("deploy/grafana/dashboards/keyring.json is stale: run python scripts/gen_dashboard.py")
        print("dashboard is up to date")
    else:
        OUT.write_text(render())
        print(f"wrote {OUT}")
