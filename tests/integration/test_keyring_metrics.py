"""Keyring's /metrics move with traffic, and carry no secret."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key

from .conftest import StartReplica, make_pool
from .test_keyring_service import RATE_LIMITED, acquire, add_keys, eventually, refused, release

# What Google sends for a bad key and for a suspended one: an ErrorInfo reason blames the key (issue 11: a
# 401/403 without one blames nobody).
KEY_INVALID = pb.Outcome(http_status=400, error_status="INVALID_ARGUMENT", error_reason="API_KEY_INVALID")
SUSPENDED = pb.Outcome(http_status=403, error_status="PERMISSION_DENIED", error_reason="CONSUMER_SUSPENDED")


async def scrape(port: int) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as answer:
        assert answer.status == 200
        text = await answer.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


async def test_metrics_follow_leases_cooldowns_and_key_states(start_replica: StartReplica) -> None:
    replica = await start_replica(recheck_interval_s=0)
    token = await make_pool(replica, policy=pb.Policy(lease_ttl_ms=200))
    await add_keys(replica, 2)
    port = replica.server.metrics_port
    await release(replica, await acquire(replica, token), pb.Outcome(http_status=200))
    await release(replica, await acquire(replica, token), RATE_LIMITED)
    await release(replica, await acquire(replica, token), KEY_INVALID)
    await refused(replica, token)  # both keys out: one cooling, one invalid
    [invalid] = (await replica.admin.ListKeys(pb.ListKeysRequest(filter=pb.KeyFilter(state=pb.INVALID)))).keys
    await replica.admin.SetKeyState(pb.SetKeyStateRequest(key_id=invalid.key_id, action=pb.SetKeyStateRequest.REVIVE))
    await acquire(replica, token)  # never released: reclaimed after 200 ms

    async def expired() -> bool:
        return (await scrape(port))[1].get(("keyring_leases_expired_total", (("pool", "main"),)), 0) == 1

    await eventually(expired, within_s=3)
    text, samples = await scrape(port)
    assert samples[("keyring_leases_granted_total", (("pool", "main"),))] == 4
    assert samples[("keyring_leases_denied_total", (("pool", "main"), ("reason", "NoKeyAvailable")))] == 1
    assert samples[("keyring_cooldowns_started_total", (("reason", "rate_limit"),))] == 1
    assert samples[("keyring_cooling_pairs", (("reason", "rate_limit"), ("scope", "key")))] == 1
    assert samples[("keyring_keys", (("pool", "main"), ("state", "active")))] == 2
    assert samples[("keyring_keys", (("pool", "main"), ("state", "invalid")))] == 0
    assert samples[("keyring_live_replicas", ())] == 1
    assert samples[("keyring_view_revision", ())] > 0

    async def watch_caught_up() -> bool:
        return (await scrape(port))[1][("keyring_watch_lag_revisions", ())] == 0

    await eventually(watch_caught_up, within_s=2)
    assert samples[("keyring_lease_duration_seconds_count", (("pool", "main"),))] == 3
    requests = sum(v for (name, _), v in samples.items() if name == "keyring_key_requests_total")
    errors = sum(v for (name, _), v in samples.items() if name == "keyring_key_errors_total")
    assert (requests, errors) == (3, 2)
    for index in range(2):
        assert fake_gemini_key(f"k{index}") not in text
    assert "kr-" not in text


async def test_metrics_listener_reports_health(start_replica: StartReplica) -> None:
    replica = await start_replica(recheck_interval_s=0)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{replica.server.metrics_port}/healthz") as answer:
            assert answer.status == 200
        replica.keyring.stop_accepting()
        async with session.get(f"http://127.0.0.1:{replica.server.metrics_port}/healthz") as answer:
            assert answer.status == 503
