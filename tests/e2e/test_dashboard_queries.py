"""The dashboard's queries return data on a real stack under traffic (issue 22): Prometheus's own engine
(``promtool test rules``) evaluates every panel's PromQL over the series the real edge, keyring and admin
exported after test_observability's traffic, each counter growing as a scrape every minute would see it.

Names alone (test_observability) do not catch a query that selects nothing: a label matcher or a ``$pool``
filter on a metric without that label, a ``by`` clause naming a label no series carries. Series that need an
event of their own (test_observability's QUIET_UNDER_PLAIN_TRAFFIC) are left out, by name.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key

from .conftest import Stack, eventually
from .test_observability import (  # noqa: F401 (observed: the fixture, reused)
    QUIET_UNDER_PLAIN_TRAFFIC,
    alert_expressions,
    dashboard_expressions,
    metric_names_in,
    observed,
)

POOL = "main"  # the $pool the operator picks: the stack's pool
MODEL = "gemini-3.5-flash"
# The quota panel's series need a key with a project and a learnt limit: this test makes one (learn_a_quota).
QUOTAS = {"keyring_quota_limit", "keyring_quota_used"}
QUIET = QUIET_UNDER_PLAIN_TRAFFIC.keys() - QUOTAS
GROWING = {"counter", "histogram", "summary"}
Series = dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, bool]]  # -> (value, grows)


async def exported_series(http: aiohttp.ClientSession, urls: Iterable[str]) -> Series:
    """Every sample of these /metrics pages, and whether it grows (counters, histograms) or holds (gauges)."""
    series: Series = {}
    for url in urls:
        async with http.get(url) as answer:
            assert answer.status == 200
            text = await answer.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_created") or not math.isfinite(sample.value):
                    continue
                labels = tuple(sorted(sample.labels.items()))
                series[(sample.name, labels)] = (sample.value, family.type in GROWING)
    return series


def input_series(series: Series) -> list[dict[str, str]]:
    """promtool's input: 11 scrapes a minute apart; a counter grows by its value each minute."""
    out = []
    for (name, labels), (value, grows) in sorted(series.items()):
        matchers = ",".join(f'{key}="{_escaped(val)}"' for key, val in labels)
        out.append({"series": f"{name}{{{matchers}}}", "values": f"0+{value!r}x10" if grows else f"{value!r}x10"})
    return out


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels_of(series: Series, names: set[str]) -> set[str]:
    """Label names the series of these metrics carry (a histogram's by its _bucket/_count/_sum samples)."""
    return {
        key
        for (name, labels) in series
        if name in names or re.sub(r"_(bucket|count|sum)$", "", name) in names
        for key, _ in labels
    }


# Labels no exporter writes: the buckets' own, and the target labels Prometheus adds at each scrape.
NOT_EXPORTED = {"le", "instance", "job", ""}


def grouped_by(expr: str) -> set[str]:
    """Labels the expression's ``by (...)`` clauses name, less those no exporter writes."""
    groups = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    return {label.strip() for group in groups for label in group.split(",")} - NOT_EXPORTED


def queries() -> list[str]:
    """The panels' queries with $pool set, except those of series that need an event of their own."""
    picked = []
    for expr in dashboard_expressions():
        if expr.startswith("label_values") or metric_names_in(expr) & QUIET:
            continue
        picked.append(expr.replace("$pool", POOL))
    return picked


def promtool_evaluates(tmp_path: Path, series: Series, exprs: list[str]) -> subprocess.CompletedProcess[str]:
    """``promtool test rules``: each expression, counted at the tenth minute, must have at least one series."""
    (tmp_path / "none.rules.yml").write_text("groups: []\n")
    tests = {
        "rule_files": ["none.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series(series),
                "promql_expr_test": [
                    {
                        "expr": f"count({expr}) > bool 0",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for expr in exprs
                ],
            }
        ],
    }
    (tmp_path / "dashboard.test.yml").write_text(yaml.safe_dump(tests, width=1000))
    promtool = shutil.which("promtool")
    assert promtool is not None
    return subprocess.run(
        [promtool, "test", "rules", "dashboard.test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


async def learn_a_quota(stack: Stack) -> None:
    """A key of a project leased and answered with Google's 429 naming a per-minute quota: keyring learns the
    limit, so the quota series exist (as the first quota 429 of a real pool makes them)."""
    added = await stack.replica.admin.AddKeys(
        pb.AddKeysRequest(pool=POOL, keys=[pb.KeyInput(secret=fake_gemini_key("dashboard-q"), project="proj-d")])
    )
    [result] = added.results
    token_hash = hashlib.sha256(stack.token.encode()).hexdigest()
    others = [key_id for key_id in stack.key_ids.values()]
    acquired = await stack.replica.lease.Acquire(
        pb.AcquireRequest(token_hash=token_hash, model=MODEL, exclude_key_ids=others)
    )
    assert acquired.lease.key_id == result.key_id
    violation = pb.QuotaViolation(
        quota_id="GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quota_value="10", dimensions={"model": MODEL}
    )
    outcome = pb.Outcome(
        http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=1, quota_violations=[violation]
    )
    await stack.replica.lease.Release(
        pb.ReleaseRequest(lease_id=acquired.lease.lease_id, key_id=result.key_id, model=MODEL, outcome=outcome)
    )
    await eventually(lambda: bool(stack.replica.keyring.desk.quota_rows(project="proj-d")), 5, "no quota row")


async def test_every_dashboard_query_returns_data_under_traffic(observed: tuple[Stack, str], tmp_path: Path) -> None:  # noqa: F811
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (scripts/system-deps.sh installs Debian's prometheus package)")
    stack, admin_url = observed
    assert stack.http is not None
    await learn_a_quota(stack)
    await stack.no_lease_held()
    series = await exported_series(
        stack.http,
        (
            f"{stack.edge_url}/metrics",
            f"http://127.0.0.1:{stack.replica.server.metrics_port}/metrics",
            f"{admin_url}/metrics",
        ),
    )
    # The pool picker's query: keyring_keys carries the pool label, and this stack's pool is among its values.
    assert POOL in {
        value for (name, labels) in series if name == "keyring_keys" for key, value in labels if key == "pool"
    }
    exprs = queries()
    assert len(exprs) >= 20, exprs
    done = promtool_evaluates(tmp_path, series, exprs)
    assert done.returncode == 0, done.stdout + done.stderr
    # The same engine finds a query that selects nothing (a label the metric lacks): the check can fail.
    done = promtool_evaluates(tmp_path, series, ['sum(edge_requests_total{pool="main"})'])
    assert done.returncode != 0 and "edge_requests_total" in done.stdout + done.stderr
    # Every label a panel or an alert groups by is carried by a series of its metrics (else: blank legends).
    for expr in [*dashboard_expressions(), *alert_expressions()]:
        names = metric_names_in(expr)
        if names & QUIET:
            continue
        missing = grouped_by(expr) - labels_of(series, names)
        assert missing == set(), f"{expr}: grouped by {missing}, which no series of {names} carries"
        # A ratio of two metrics (quota used / limit) keeps apart what their series keep apart (but the pool,
        # filtered by $pool, and the target labels): else it divides the use of different limits by the largest.
        if len(names) > 1 and "/" in expr:
            merged = labels_of(series, names) - NOT_EXPORTED - {"pool"} - grouped_by(expr)
            assert merged == set(), f"{expr}: adds up series that differ in {merged}"
