"""Lease rate with 1,000 and with 100,000 keys in one pool, and a replica's restart over 100,000 keys.

Starts a local etcd and one keyring process (mutual TLS, as ``keyring_bench.py``),
creates one pool and a client token, adds 1,000 keys and measures acquire+release
pairs per second over the real gRPC API (the LeaseStream the edge uses, and
unary calls); then adds keys up to ``--keys`` (100,000 by default) through the
operators' path (``AddKeys``, at most 5,000 keys per call, so in chunks) and
measures again in the same run. Then the replica is stopped and started again
over the same etcd (same KEK) and the time from its start until it grants a
lease is measured. Reports keyring's peak RSS (VmHWM) before and after the
restart, etcd's database size, the pool's requests the replica counted
(GetUsage, which flushes first) against what the restarted replica reads back
from etcd (exactly-once usage at this scale), and keyring's warnings and
errors. ``--profile DIR`` writes py-spy raw samples of keyring (small and
large lease runs, the restart). Prints JSON; only the processes it started
are stopped, by PID.

    python bench/key_scale_bench.py [--seconds 5] [--keys 100000] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyring_bench import MODEL, measure_stream, measure_unary, secure, start_keyring

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.tls import channel_credentials
from services.devstack.certs import Certificate, LocalCA
from services.devstack.etcd_server import EtcdServer, free_port
from services.devstack.fake_keys import fake_gemini_key
from services.devstack.health import wait_until_serving
from services.keyring.sealing import generate_kek

POOL = "scale"
PER_CALL = 5000  # KEYRING_MAX_KEYS_PER_IMPORT's default
SMALL = 1000
RESTART_TARGET_S = 10.0
RATIO_TARGET = 0.9


async def create_pool(address: str, admin: Certificate) -> str:
    """The pool and a client token for it; returns the token's SHA-256 (what the edge presents)."""
    async with secure(address, admin) as channel:
        stub = pb_grpc.AdminServiceStub(channel)
        await stub.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=POOL)))
        token = (await stub.CreateToken(pb.CreateTokenRequest(pool=POOL, name="scale"))).token
    return hashlib.sha256(token.encode()).hexdigest()


async def add_keys(address: str, admin: Certificate, start: int, stop: int) -> float:
    """Keys ``start``..``stop`` added through AddKeys, ``PER_CALL`` at a time; returns the seconds it took."""
    began = time.perf_counter()
    async with secure(address, admin) as channel:
        stub = pb_grpc.AdminServiceStub(channel)
        for first in range(start, stop, PER_CALL):
            last = min(stop, first + PER_CALL)
            inputs = [pb.KeyInput(secret=fake_gemini_key(f"scale-{i}")) for i in range(first, last)]
            reply = await stub.AddKeys(pb.AddKeysRequest(pool=POOL, keys=inputs), timeout=600)
            assert reply.added == last - first, (reply.added, first, last)
    return time.perf_counter() - began


def spy_on(pid: int, profile: Path | None, seconds: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` for ``seconds`` into ``profile`` (raw, collapsed stacks); None without a profile."""
    if profile is None:
        return None
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "-f", "raw", "-o", str(profile),
         "--duration", str(seconds), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def lease_rates(
    address: str, token_hash: str, seconds: float, edge: Certificate, profile: Path | None, pid: int
) -> dict[str, float]:
    """Pairs/s on the LeaseStream at concurrency 64 and unary at 1; ``profile``: py-spy's raw samples of the first."""
    spy = spy_on(pid, profile, int(seconds + 1))  # the stream measurement's time
    rates = {"stream_c64": await measure_stream(address, token_hash, 64, seconds, edge)}
    if spy is not None:
        spy.wait()
    rates["unary_c1"] = await measure_unary(address, token_hash, 1, seconds, edge)
    return rates


async def first_lease_after(started: float, address: str, token_hash: str, edge: Certificate, limit_s: float) -> float:
    """Seconds from ``started`` until the replica at ``address`` grants (and takes back) a lease."""
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
               ("grpc.max_reconnect_backoff_ms", 100)]  # fmt: skip
    request = pb.AcquireRequest(token_hash=token_hash, model=MODEL)
    async with grpc.aio.secure_channel(address, channel_credentials(edge.files), options=options) as channel:
        stub = pb_grpc.LeaseServiceStub(channel)
        while time.perf_counter() - started < limit_s:
            try:
                lease = (await stub.Acquire(request, timeout=1.0)).lease
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
                continue
            elapsed = time.perf_counter() - started
            await stub.Release(pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id,
                                                 outcome=pb.Outcome(http_status=200)))  # fmt: skip
            return elapsed
    raise TimeoutError(f"no lease within {limit_s} s of the restart")


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak) and VmRSS of a live process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0])
    return fields


async def usage_requests(address: str, admin: Certificate) -> int | str:
    """The pool's requests in the last hour as keyring reports them (its own flushed first), or why it cannot."""
    async with secure(address, admin) as channel:
        stub = pb_grpc.AdminServiceStub(channel)
        try:
            reply = await stub.GetUsage(pb.GetUsageRequest(pool=POOL, window_s=3600), timeout=30)
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name}: {error.details()}"
    return sum(row.figures.requests for row in reply.pools)


def log_problems(workdir: Path) -> dict[str, object]:
    """keyring's warnings and errors during the run (a usage flush etcd refused, say): how many, the first few."""
    seen: list[str] = []
    for log in sorted(workdir.glob("keyring*.log")):
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
                seen.append(f"{entry['level']}: {str(entry.get('message', ''))[:240]}")
    return {"count": len(seen), "first": list(dict.fromkeys(seen))[:3]}


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def main_async(options: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as workdir:
        ca = LocalCA(os.path.join(workdir, "tls"))
        server, edge, admin = ca.issue("keyring"), ca.issue("keyring-edge"), ca.issue("keyring-admin")
        etcd = EtcdServer(data_dir=os.path.join(workdir, "etcd"), tls=ca.issue("etcd").files)
        etcd.start()
        port, kek = free_port(), generate_kek()

        def profile(name: str) -> Path | None:
            return Path(options.profile) / f"keyring-{name}.txt" if options.profile else None

        address = f"127.0.0.1:{port}"
        keyring = start_keyring(etcd, port, workdir, server, kek)
        try:
            await wait_until_serving(address, tls=edge.files)
            token_hash = await create_pool(address, admin)
            await add_keys(address, admin, 0, SMALL)
            small = await lease_rates(address, token_hash, options.seconds, edge, profile("small"), keyring.pid)
            seeding_s = await add_keys(address, admin, SMALL, options.keys)
            large = await lease_rates(address, token_hash, options.seconds, edge, profile("large"), keyring.pid)
            before_restart = memory_kib(keyring.pid)
            counted = await usage_requests(address, admin)
            stop(keyring)
            started = time.perf_counter()
            keyring = start_keyring(etcd, port, workdir, server, kek, "keyring-restarted.log")
            spy = spy_on(keyring.pid, profile("restart"), 60)
            restart_s = await first_lease_after(started, address, token_hash, edge, 60.0)
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
                spy.wait()
            after_restart = memory_kib(keyring.pid)
            durable = await usage_requests(address, admin)
            db = Path(etcd.data_dir) / "member" / "snap" / "db"
            results = {
                "benchmark": "keyring lease rate by pool size, and a restart over the large pool",
                "keys": {"small": SMALL, "large": options.keys},
                "seconds_per_run": options.seconds,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "pairs_per_second": {
                    f"{name}_keys_{size}": round(rates[name])
                    for size, rates in ((SMALL, small), (options.keys, large))
                    for name in rates
                },
                "large_over_small": {name: round(large[name] / small[name], 3) for name in small},
                "seconds_to_add_keys": round(seeding_s, 1),
                "restart_to_first_lease_s": round(restart_s, 2),
                "keyring_kib": {"before_restart": before_restart, "after_restart": after_restart},
                "etcd_db_bytes": db.stat().st_size if db.exists() else None,
                "keyring_log_problems": log_problems(Path(workdir)),
                # Exactly-once usage at this scale: what the replica counted, and what a restarted one reads back.
                "usage_requests": {"counted": counted, "durable_after_restart": durable},
                "targets": {"large_over_small": RATIO_TARGET, "restart_to_first_lease_s": RESTART_TARGET_S},
            }
        except BaseException:
            for log in sorted(Path(workdir).glob("keyring*.log")):
                print(f"--- {log.name}:\n{log.read_text()[-4000:]}", file=sys.stderr)
            raise
        finally:
            stop(keyring)
            etcd.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--profile", metavar="DIR", help="py-spy raw samples of keyring while the stream runs")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
