"""Issue 18, finding 2: nothing unauthenticated costs admin more than a few KiB. A real admin process (as its
container starts it, 8 MiB body limit by default) on a real keyring and etcd takes 20 concurrent 8 MiB login
bodies (half with a declared length, half chunked), stays under its Kubernetes memory limit (256Mi, the peak RSS
the kernel recorded) and answers an operator with the right token during and after."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_shutdown import Process

from .conftest import ADMIN_TOKEN, Replica

pytestmark = pytest.mark.etcd
K8S_MEMORY_LIMIT = 256 * 1024 * 1024
EIGHT_MIB = 8 * 1024 * 1024
# The body that took admin from 75 MB to 367 MB: the most Python objects per byte of JSON.
BODY = b"[" + b"{}," * (EIGHT_MIB // 3 - 1) + b"{}]"


def peak_rss(pid: int) -> int:
    """The process's resident set high-water mark (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


async def _chunks() -> AsyncIterator[bytes]:
    for start in range(0, len(BODY), 256 * 1024):
        yield BODY[start : start + 256 * 1024]


async def test_concurrent_8mib_login_bodies_stay_under_the_memory_limit_and_operators_get_in(
    replica: Replica, tmp_path: Path
) -> None:
    env = {
        "ADMIN_HOST": "127.0.0.1",
        "ADMIN_PORT": "0",
        "ADMIN_KEYRING_ADDRESSES": f"127.0.0.1:{replica.server.port}",
        "ADMIN_ADMIN_TOKENS": f"ops:operator:{ADMIN_TOKEN}",
    }
    admin = Process("services.admin", env, tmp_path / "admin.log")
    try:
        await admin.wait_for_line("admin listening on")
        found = re.search(r"admin listening on (\S+)", admin.log.read_text())
        assert found is not None
        base_url = found.group(1)
        operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession() as session:

            async def login(chunked: bool) -> int:
                data = _chunks() if chunked else io.BytesIO(BODY)
                headers = {"Content-Type": "application/json"}
                async with session.post(base_url + "/api/login", data=data, headers=headers) as answer:
                    return answer.status

            async def operator_reads() -> int:
                async with session.get(base_url + "/api/pools", headers=operator) as answer:
                    return answer.status

            before = peak_rss(admin.popen.pid)
            statuses = await asyncio.gather(*(login(n % 2 == 1) for n in range(20)), operator_reads())
            assert statuses[-1] == 200  # the operator, during
            assert await operator_reads() == 200  # and after: the right token is never locked out
            async with session.post(base_url + "/api/login", json={"token": ADMIN_TOKEN}) as answer:
                assert answer.status == 200
        peak = peak_rss(admin.popen.pid)
    finally:
        admin.kill()
    assert peak < K8S_MEMORY_LIMIT, f"admin peaked at {peak / 2**20:.0f} MiB (from {before / 2**20:.0f} MiB)"
    assert peak - before < 32 * 1024 * 1024, f"admin grew from {before / 2**20:.0f} to {peak / 2**20:.0f} MiB"
    assert set(statuses[:-1]) <= {413, 429}, statuses  # too large; then too many failures (malformed logins count)
