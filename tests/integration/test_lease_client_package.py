"""The lease client package (clients/python, ``keyring_lease``) against two real keyring replicas.

It leases with an internal service's own certificate (an identity in KEYRING_LEASE_IDENTITIES) and a client
token, reports Google's answers through the edge's classifier, moves to another key when the answer blames
the key, and never keeps a lease past its block. The example of docs/internal-services.md runs as written,
in a process of its own, with the simulator as the upstream.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import os
import re
import sys
from pathlib import Path

import orjson
import pytest
from google.protobuf import json_format

import keyring_lease
from keyring_lease import AnswerKind, Identity, LeasePool, NoKeyAvailable, NotPermitted, TokenRefused
from keyring_lease.outcomes import answer_report
from services.common.answers import parse_error
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.certs import Certificate, LocalCA
from services.edge.upstream import error_outcome, ok_outcome
from services.simulator.app import start_simulator
from tests.docs import doc, section
from tests.pki import session_pki

from .conftest import Replica, StartReplica
from .test_keyring_service import MODEL, add_keys, eventually, key_info

ROOT = Path(__file__).resolve().parents[2]
INTERNAL = "keyring-internal"  # the devstack's internal-service identity, as the guide's example expects
LEASERS = f"keyring-edge,{INTERNAL}"

QUOTA_429 = orjson.dumps(
    {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "quotaDimensions": {"location": "global", "model": MODEL},
                            "quotaValue": "10",
                        }
                    ],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"},
            ],
        }
    }
)
ANSWER_200 = orjson.dumps(
    {
        "candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3},
    }
)


def internal_certificate() -> Certificate:
    """keyring-internal's certificate, from the session's CA (as the devstack issues it in var/tls)."""
    return LocalCA(session_pki().directory).issue(INTERNAL)


def identity(cert: Certificate) -> Identity:
    return Identity(cert.cert_file, cert.key_file, cert.ca_file)


async def two_replicas(start_replica: StartReplica, keys: int) -> tuple[Replica, Replica, str]:
    """Two replicas letting the edge and keyring-internal lease; a pool with ``keys`` keys; its raw client token."""
    a = await start_replica("replica-a", lease_identities=LEASERS)
    b = await start_replica("replica-b", lease_identities=LEASERS)
    await a.admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
    created = await a.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="internal"))
    await add_keys(a, keys)

    hashed = hashlib.sha256(created.token.encode()).hexdigest()

    async def both_ready() -> bool:  # each replica's view has the token and the keys
        allocators = [replica.keyring.desk.allocator for replica in (a, b)]
        return all(x.find_token(hashed) is not None and len(x._view.keys) == keys for x in allocators)

    await eventually(both_ready, within_s=3)
    return a, b, created.token


def held(*replicas: Replica) -> int:
    return sum(len(replica.keyring.desk.book) for replica in replicas)


def test_the_classifier_is_the_edges_own_file_and_the_package_stands_alone() -> None:
    """One source of truth: the package's classifier is services/common/answers.py itself (a link); and no
    module of the package (that one included) imports anything but the standard library, its dependencies
    (grpcio, protobuf, orjson) and itself, so it installs and runs without the services."""
    assert Path(keyring_lease.answers.__file__).resolve() == (ROOT / "services/common/answers.py").resolve()
    allowed = set(sys.stdlib_module_names) | {"grpc", "google", "orjson", "keyring_lease"}
    package = ROOT / "clients/python/keyring_lease"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] in allowed, (path, node.module)
            elif isinstance(node, ast.Import):
                assert all(alias.name.split(".")[0] in allowed for alias in node.names), path


def test_the_package_reports_what_the_edge_reports() -> None:
    """The Outcome keyring gets from the package is the edge's, byte for byte, for an error carrying every
    detail the classifier reads (QuotaFailure with futureQuotaValue, RetryInfo, ErrorInfo's consumer) and for a
    success: a field one of them learns to send and the other not fails here."""
    body = orjson.loads(QUOTA_429)
    body["error"]["details"][0]["violations"][0]["futureQuotaValue"] = "20"
    body["error"]["details"].append(
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"consumer": "projects/123456789", "service": "generativelanguage.googleapis.com"},
        }
    )
    detailed = orjson.dumps(body)
    error = answer_report(429, detailed, latency_ms=12)
    assert error.kind is AnswerKind.RATE_LIMITED and error.outcome.retry_delay_ms == 30_000
    assert error.outcome.consumer_project == "123456789"
    assert error.outcome.quota_violations[0].future_quota_value == "20"
    edge = error_outcome(parse_error(429, detailed), 12)
    assert error.outcome.SerializeToString(deterministic=True) == edge.SerializeToString(deterministic=True)
    ok = answer_report(200, ANSWER_200, latency_ms=5, model=MODEL)
    assert ok.outcome.SerializeToString() == ok_outcome(200, 5, (7, 3)).SerializeToString()
    served = answer_report(200, orjson.dumps({"modelVersion": "gemini-3-flash"}), latency_ms=5, model=MODEL)
    assert served.outcome.served_model == "gemini-3-flash"  # answered by another model than the one asked


async def test_leases_reports_a_429_moves_to_another_key_and_releases_on_exceptions(
    start_replica: StartReplica,
) -> None:
    a, b, token = await two_replicas(start_replica, keys=2)
    async with LeasePool([a.address, b.address], token=token, identity=identity(internal_certificate())) as pool:
        leases = []
        attempts = pool.attempts(MODEL, max_attempts=3)
        async for attempt in attempts:
            async with attempt as lease:
                assert lease.key.startswith("AIza") and held(a, b) == 1
                lease.report(*((429, QUOTA_429) if not leases else (200, ANSWER_200)))
                leases.append(lease)
        assert [lease.kind for lease in leases] == [AnswerKind.RATE_LIMITED, AnswerKind.OK] and attempts.count == 2
        cooled, fine = leases[0].key_id, leases[1].key_id
        assert cooled != fine and held(a, b) == 0

        async def cooling_seen_by_both() -> bool:  # the cooldown is in etcd: the other replica sees it too
            infos = [await key_info(replica, cooled) for replica in (a, b)]
            return all([c.model for c in info.cooldowns] == [MODEL] for info in infos)

        await eventually(cooling_seen_by_both, within_s=3)
        assert not (await key_info(a, fine)).cooldowns

        with pytest.raises(RuntimeError, match="the service failed"):
            async with pool.lease(f"models/{MODEL}") as lease:
                assert lease.key_id == fine  # the other one is cooling
                raise RuntimeError("the service failed")
        assert lease.released and held(a, b) == 0
        info = await key_info(b, fine)
        assert not info.cooldowns and info.consecutive_failures == 0  # an exception says nothing of the key

        async with pool.lease(MODEL) as lease:
            lease.report(429, QUOTA_429)

        async def both_cooling_everywhere() -> bool:  # the other replica learns it from etcd, not at once
            infos = [await key_info(replica, key_id) for replica in (a, b) for key_id in (cooled, fine)]
            return all(info.cooldowns for info in infos)

        await eventually(both_cooling_everywhere, within_s=3)
        with pytest.raises(NoKeyAvailable) as refused:
            async with pool.lease(MODEL):
                pass
        assert 20 <= refused.value.retry_after_s <= 30 and held(a, b) == 0

    async with LeasePool(a.address, token="not-a-token", identity=identity(internal_certificate())) as stranger:
        with pytest.raises(TokenRefused):
            async with stranger.lease(MODEL):
                pass
    admin = session_pki().admin  # a certificate of the CA whose identity may not lease
    async with LeasePool(a.address, token=token, identity=identity(admin)) as not_a_leaser:
        with pytest.raises(NotPermitted):
            async with not_a_leaser.lease(MODEL):
                pass


def guide_example() -> str:
    """The python block of the guide's "Internal services" part (docs/internal-services.md)."""
    part = doc("internal-services").split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", part, flags=re.S)
    assert blocks, "no python example in docs/internal-services.md before its first subsection"
    return str(blocks[0])


async def test_the_guide_example_runs_as_written(start_replica: StartReplica, tmp_path: Path) -> None:
    example = guide_example()
    imported = set(re.findall(r"^(?:from|import) ([\w.]+)", example, flags=re.M))
    assert imported <= {"asyncio", "json", "os", "urllib.error", "urllib.request", "keyring_lease"}, imported
    a, b, token = await two_replicas(start_replica, keys=2)
    cert = internal_certificate()
    runner, upstream, state = await start_simulator()
    try:
        script = tmp_path / "internal_service.py"
        script.write_text(example)
        env = {
            **os.environ,
            "KEYRING_ADDRESS": f"{a.address},{b.address}",
            "KEYRING_CLIENT_TOKEN": token,
            "KEYRING_TLS_DIR": str(Path(cert.cert_file).parent),
            "GEMINI_BASE_URL": upstream,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert out.decode().strip(), "the example printed no answer"
        assert sum(state.counts().values()) == 1  # one call reached the upstream, with a leased key
        assert held(a, b) == 0
    finally:
        await runner.cleanup()


def test_the_grpcurl_walk_through_sends_valid_requests() -> None:
    """Each grpcurl -d body of the guide parses as its method's request (grpcurl itself is not needed here)."""
    walk_through = section("internal-services", "## Other languages: the proto and grpcurl")
    block = walk_through.split("```bash\n", 1)[1].split("```", 1)[0]
    pattern = r"""-d (?:"((?:\\.|[^"\\])*)"|'([^']*)')\s*\\?\s*127\.0\.0\.1:50051 keyring\.v1\.LeaseService/(\w+)"""
    calls = re.findall(pattern, block)
    assert [method for *_, method in calls] == ["Acquire", "Release"]
    requests = {"Acquire": pb.AcquireRequest, "Release": pb.ReleaseRequest}
    for double, single, method in calls:
        body = (double.replace('\\"', '"') or single).replace("$HASH", "ab" * 32)
        parsed = json_format.Parse(body, requests[method]())
        assert parsed.ListFields(), method
    assert "sha256sum" in block and "-cert var/tls/keyring-internal.crt" in block
