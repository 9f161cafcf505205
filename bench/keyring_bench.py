"""Acquire+Release pairs per second against one keyring replica over a real etcd.

Starts a local etcd and one keyring process (mutual TLS on gRPC and etcd, as in
production: a local CA and certificates from services/devstack/certs.py), seeds a pool with 1,000 keys and
a client token, then measures pairs/s at concurrency 1 and 64, both with
unary RPCs and with the multiplexed LeaseStream (what the edge uses).
Prints JSON. Only the processes it started are stopped, by PID.

    python bench/keyring_bench.py [--seconds 5] [--keys 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.common.proto.keyring.v1 import keyring_pb2 as pb  # noqa: E402
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc  # noqa: E402
from services.common.tls import channel_credentials  # noqa: E402
from services.devstack.certs import Certificate, LocalCA  # noqa: E402
from services.devstack.etcd_server import EtcdServer, free_port  # noqa: E402
from services.devstack.fake_keys import fake_gemini_key  # noqa: E402
from services.devstack.health import wait_until_serving  # noqa: E402
from services.edge.keyring import KeyringClient, LeaseRequest  # noqa: E402
from services.keyring.sealing import generate_kek  # noqa: E402

MODEL = "gemini-3.5-flash"


def start_keyring(
    etcd: EtcdServer, port: int, log_dir: str, cert: Certificate, kek: str = "", log_name: str = "keyring.log"
) -> subprocess.Popen[bytes]:
    """One keyring process; ``kek``: the same one again for a restart over the same etcd (default: a new one)."""
    env = {
        **cert.env("KEYRING_TLS"),
        **cert.env("KEYRING_ETCD_TLS"),
        **os.environ,
        "KEYRING_KEK": kek or generate_kek(),
        "KEYRING_ETCD_ENDPOINT": etcd.endpoint,
        "KEYRING_HOST": "127.0.0.1",
        "KEYRING_PORT": str(port),
        "KEYRING_PREFIX": "/bench/",
        "KEYRING_METRICS_HOST": "127.0.0.1",
        "KEYRING_METRICS_PORT": "0",  # a free port: other keyrings on this machine may hold the default
        "LOG_LEVEL": "WARNING",
    }
    log = open(Path(log_dir) / log_name, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "services.keyring"], env=env, cwd=ROOT, stdout=log, stderr=log)


def secure(address: str, cert: Certificate) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, channel_credentials(cert.files))


async def seed(address: str, keys: int, admin: Certificate) -> str:
    async with secure(address, admin) as channel:
        admin = pb_grpc.AdminServiceStub(channel)
        await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="bench")))
        secrets = [fake_gemini_key(f"bench-{i}") for i in range(keys)]
        reply = await admin.AddKeys(pb.AddKeysRequest(pool="bench", keys=[pb.KeyInput(secret=s) for s in secrets]))
        assert reply.added == keys, reply.added
        token = (await admin.CreateToken(pb.CreateTokenRequest(pool="bench", name="bench"))).token
    return hashlib.sha256(token.encode()).hexdigest()


async def run_workers(concurrency: int, seconds: float, one_pair) -> float:  # type: ignore[no-untyped-def]
    """Run ``one_pair`` in ``concurrency`` loops for ``seconds``; returns pairs per second."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await one_pair()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def measure_unary(address: str, token_hash: str, concurrency: int, seconds: float, edge: Certificate) -> float:
    async with secure(address, edge) as channel:
        stub = pb_grpc.LeaseServiceStub(channel)
        request = pb.AcquireRequest(token_hash=token_hash, model=MODEL)
        ok = pb.Outcome(http_status=200)

        async def pair() -> None:
            lease = (await stub.Acquire(request)).lease
            await stub.Release(pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, outcome=ok))

        await run_workers(concurrency, 0.5, pair)  # warm-up
        return await run_workers(concurrency, seconds, pair)


async def measure_stream(address: str, token_hash: str, concurrency: int, seconds: float, edge: Certificate) -> float:
    client = KeyringClient([address], tls=edge.files)
    ok = pb.Outcome(http_status=200)

    async def pair() -> None:
        granted = await client.acquire(LeaseRequest(token_hash=token_hash, model=MODEL))
        await granted.release(ok)

    try:
        await run_workers(concurrency, 0.5, pair)
        return await run_workers(concurrency, seconds, pair)
    finally:
        await client.close()


async def main_async(options: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as workdir:
        ca = LocalCA(os.path.join(workdir, "tls"))
        server, edge, admin = ca.issue("keyring"), ca.issue("keyring-edge"), ca.issue("keyring-admin")
        etcd = EtcdServer(data_dir=os.path.join(workdir, "etcd"), tls=ca.issue("etcd").files)
        etcd.start()
        port = free_port()
        keyring = start_keyring(etcd, port, workdir, server)
        address = f"127.0.0.1:{port}"
        try:
            await wait_until_serving(address, tls=edge.files)
            token_hash = await seed(address, options.keys, admin)
            results: dict[str, float] = {}
            for c in (1, 64):
                results[f"unary_c{c}"] = await measure_unary(address, token_hash, c, options.seconds, edge)
                results[f"stream_c{c}"] = await measure_stream(address, token_hash, c, options.seconds, edge)
        finally:
            keyring.terminate()
            try:
                keyring.wait(15)
            except subprocess.TimeoutExpired:
                keyring.kill()
            etcd.stop()
    return {
        "benchmark": "keyring acquire+release pairs per second",
        "keys": options.keys,
        "seconds_per_run": options.seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "pairs_per_second": {name: round(value) for name, value in results.items()},
        "target_stream_c64": 5000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--keys", type=int, default=1000)
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
