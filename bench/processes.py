"""The processes a benchmark starts: each service a subprocess on 127.0.0.1 over mutual TLS, signalled by its PID only.

Shared by ``chaos_bench.py`` and ``quota_bench.py``, which start the same
stack (etcd, keyring replicas, edges, the simulator) and differ in what they
do to it: the settings every keyring and edge needs (``keyring_env``,
``edge_env``), starting a replica until it serves (``start_keyring``), an
admin channel to a replica and the simulator's per-key counts.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp
import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.common.tls import channel_credentials  # noqa: E402
from services.devstack.certs import ETCD_CA_NAME, LocalCA  # noqa: E402
from services.devstack.etcd_server import EtcdServer  # noqa: E402
from services.devstack.health import wait_until_serving  # noqa: E402


class Service:
    """One subprocess this run started (and may start again with the same settings); signalled by its PID only."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: str, args: list[str] | None = None):
        self.name, self.module, self.env, self.args = name, module, env, args or []
        self.log_path = Path(log_dir) / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process is reaped
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env={**os.environ, "LOG_LEVEL": "WARNING", **self.env},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def still_alive(self) -> None:
        if not self.alive:
            raise SystemExit(f"{self.name} exited (code {self.process and self.process.poll()}); see {self.log_path}")

    async def announced(self, pattern: str, timeout_s: float = 30.0) -> str:
        """Read stdout until the process prints its address."""
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(loop.run_in_executor(None, stdout.readline), deadline - time.monotonic())
            if not line:
                raise SystemExit(f"{self.name} exited before announcing itself; see {self.log_path}")
            match = re.search(pattern, line.decode())
            if match:
                return match.group(1)
        raise SystemExit(f"{self.name} did not announce itself in {timeout_s} s")

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, sig)

    async def exited(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if not self.alive:
            self._reap()
            return True
        return False

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._reap()


def etcd_ca(ca: LocalCA) -> LocalCA:
    """etcd's own CA beside the stack's (as deployed): it signs etcd's certificate and keyring's etcd one only."""
    return LocalCA(ca.directory / "etcd-ca", name=ETCD_CA_NAME)


def keyring_env(
    ca: LocalCA, etcd: EtcdServer, sim_url: str, *, kek: str, replica_id: str, port: int, metrics_port: int, prefix: str
) -> dict[str, str]:
    """A keyring replica's settings: its ports, the stack's etcd and KEK, the simulator upstream, no re-checks."""
    return {
        "KEYRING_KEK": kek,
        "KEYRING_ETCD_ENDPOINT": etcd.endpoint,
        "KEYRING_HOST": "127.0.0.1",
        "KEYRING_PORT": str(port),
        "KEYRING_METRICS_HOST": "127.0.0.1",
        "KEYRING_METRICS_PORT": str(metrics_port),
        "KEYRING_PREFIX": prefix,
        "KEYRING_REPLICA_ID": replica_id,
        "KEYRING_UPSTREAM_BASE_URL": sim_url,
        "KEYRING_RECHECK_INTERVAL_S": "0",
        **ca.issue("keyring").env("KEYRING_TLS"),
        **etcd_ca(ca).issue("keyring").env("KEYRING_ETCD_TLS"),
    }


def edge_env(ca: LocalCA, sim_url: str, keyring_addresses: list[str], port: int) -> dict[str, str]:
    """An edge's settings: its port, every keyring replica, the simulator upstream."""
    return {
        "EDGE_HOST": "127.0.0.1",
        "EDGE_PORT": str(port),
        "EDGE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "EDGE_KEYRING_ADDRESSES": ",".join(keyring_addresses),
        "EDGE_UPSTREAM_BASE_URL": sim_url,
        **ca.issue("keyring-edge").env("EDGE_KEYRING_TLS"),
    }


async def start_keyring(replica: Service, address: str, ca: LocalCA) -> None:
    """Start a keyring replica and wait until its gRPC health says it serves."""
    replica.start()
    await replica.announced(r"keyring listening on (\S+)")
    await wait_until_serving(address, 30, replica.still_alive, tls=ca.issue("keyring-edge").files)


def admin_channel(ca: LocalCA, address: str) -> grpc.aio.Channel:
    """A channel to a replica's AdminService, with admin's certificate."""
    return grpc.aio.secure_channel(address, channel_credentials(ca.issue("keyring-admin").files))


async def sim_counts(sim_url: str, http: aiohttp.ClientSession) -> dict[str, int]:
    """The simulator's upstream calls per key secret since it started."""
    async with http.get(f"{sim_url}/_sim/counts") as reply:
        counts: dict[str, int] = (await reply.json())["counts"]
    return counts
