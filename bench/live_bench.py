"""Live API sessions through the edge: concurrent sessions held, edge memory per session, frames relayed per second.

Real processes on 127.0.0.1 (``processes.py``, mutual TLS as deployed): one
etcd, two keyring replicas, one edge and the Gemini simulator. One pool of 8
keys in 4 projects. ``--sessions`` clients (default 100: sized for 2 cores,
every process sharing them) each open a Live session through the edge's plain
listener (a raw WebSocket, the frames google-genai sends: text JSON up,
binary JSON down), wait for ``setupComplete``, and the edge's resident memory
is read with them all open; then for ``--seconds`` each plays text turns back
to back (``clientContent`` up, the simulator's ``modelTurn`` chunks,
``generationComplete``, ``turnComplete`` with usage and a resumption handle
down); then every client closes.

One JSON line: sessions_opened, edge_rss_base_mib, edge_rss_open_mib,
edge_kib_per_session (resident growth with every session open, over their
number), turns, frames_down / frames_up and frames_per_s (both directions,
what the edge relayed), closes (codes seen by the half of the clients that
close), leases_held_after_half_closed (keyring's gauge on both replicas: the
other half), then the edge is SIGKILLed with that half open:
leases_reclaimed_after_edge_kill_s (until keyring holds none: within
KEYRING_STREAM_LEASE_GRACE_S, 15 s, as the edge's lease streams end with it;
a session lease unrenewed within KEYRING_SESSION_LEASE_TTL_S, 30 s, in any
case) and leases_in_flight_after (0, or a lease leaked: exit status 1).

    .venv/bin/python bench/live_bench.py [--sessions 100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processes import ROOT, Service, admin_channel, edge_env, etcd_ca, keyring_env, start_keyring

sys.path.insert(0, str(ROOT))
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.devstack.certs import LocalCA
from services.devstack.etcd_server import EtcdServer, free_port
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.sealing import generate_kek

MODEL = "gemini-3.1-flash-live-preview"
WS = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
SETUP = json.dumps({"setup": {"model": f"models/{MODEL}", "generationConfig": {"responseModalities": ["TEXT"]}}})
TURN = json.dumps(
    {"client_content": {"turns": [{"role": "user", "parts": [{"text": "Say something short"}]}], "turnComplete": True}}
)
PROJECTS, KEYS_PER_PROJECT = 4, 2


def rss_mib(pid: int) -> float:
    """A process's resident memory (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def leases_in_flight(http: aiohttp.ClientSession, metrics_urls: list[str]) -> float:
    total = 0.0
    for url in metrics_urls:
        async with http.get(url) as reply:
            for line in (await reply.text()).splitlines():
                if line.startswith("keyring_leases_in_flight"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def settled(http: aiohttp.ClientSession, metrics_urls: list[str], expected: float, within_s: float) -> float:
    """Keyring's leases in flight once they reach ``expected`` (polled), or what they are at the deadline."""
    deadline = time.monotonic() + within_s
    held = await leases_in_flight(http, metrics_urls)
    while held != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        held = await leases_in_flight(http, metrics_urls)
    return held


class Client:
    """One session's client: its socket, and what it counted."""

    def __init__(self) -> None:
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.frames_down = 0
        self.frames_up = 0
        self.turns = 0

    async def open(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.ws = await http.ws_connect(url, headers={"x-goog-api-key": token}, max_msg_size=0)
        await self.ws.send_str(SETUP)
        self.frames_up += 1
        first = await self.ws.receive(timeout=30)
        if first.type is not aiohttp.WSMsgType.BINARY or b"setupComplete" not in first.data:
            raise RuntimeError(f"no setupComplete: {first.type} {first.data!r} {first.extra!r}")
        self.frames_down += 1

    async def play(self, until: float) -> None:
        assert self.ws is not None
        while time.monotonic() < until:
            await self.ws.send_str(TURN)
            self.frames_up += 1
            while True:
                message = await self.ws.receive(timeout=30)
                if message.type is not aiohttp.WSMsgType.BINARY:
                    raise RuntimeError(f"session ended mid-turn: {message.type} {message.extra!r}")
                self.frames_down += 1
                if b'"turnComplete"' in message.data:
                    self.turns += 1
                    break

    async def close(self) -> int | None:
        if self.ws is None:
            return None
        await self.ws.close()
        return self.ws.close_code


async def seed(ca: LocalCA, address: str) -> str:
    async with admin_channel(ca, address) as channel:
        admin = pb_grpc.AdminServiceStub(channel)
        await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="live")))
        secrets = [fake_gemini_key(f"live-bench-{i}") for i in range(PROJECTS * KEYS_PER_PROJECT)]
        inputs = [pb.KeyInput(secret=s, project=f"live-{i % PROJECTS}") for i, s in enumerate(secrets)]
        await admin.AddKeys(pb.AddKeysRequest(pool="live", keys=inputs))
        return (await admin.CreateToken(pb.CreateTokenRequest(pool="live", name="live-bench"))).token


async def run(options: argparse.Namespace, workdir: str) -> dict[str, Any]:
    ca = LocalCA(os.path.join(workdir, "tls"))
    etcd = EtcdServer(
        data_dir=os.path.join(workdir, "etcd"),
        port=free_port(),
        peer_port=free_port(),
        tls=etcd_ca(ca).issue("etcd").files,
    )
    simulator = Service("simulator", "services.simulator", {}, workdir, ["--port", str(free_port())])
    services: list[Service] = [simulator]
    try:
        await etcd.astart()
        simulator.start()
        sim_url = await simulator.announced(r"simulator listening on (\S+)")
        kek, ports, metrics = generate_kek(), [free_port(), free_port()], [free_port(), free_port()]
        for name, port, metrics_port in zip("ab", ports, metrics, strict=True):
            env = keyring_env(
                ca, etcd, sim_url, kek=kek, replica_id=f"live-{name}", port=port, metrics_port=metrics_port,
                prefix="/live-bench/",
            )  # fmt: skip
            services.append(Service(f"keyring-{name}", "services.keyring", env, workdir))
        addresses = [f"127.0.0.1:{port}" for port in ports]
        await asyncio.gather(*(start_keyring(s, a, ca) for s, a in zip(services[1:], addresses, strict=True)))
        token = await seed(ca, addresses[0])
        edge_port = free_port()
        edge = Service("edge", "services.edge", edge_env(ca, sim_url, addresses, edge_port), workdir)
        services.append(edge)
        edge.start()
        await edge.announced(r"edge listening on (\S+)")
        assert edge.process is not None
        url = f"http://127.0.0.1:{edge_port}{WS}"
        metrics_urls = [f"http://127.0.0.1:{port}/metrics" for port in metrics]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            async with http.post(f"{sim_url}/_sim/live", json={"max_sessions": None}) as reply:
                reply.raise_for_status()
            warm = Client()  # the first session's imports and pools are not a session's cost
            await warm.open(http, url, token)
            await warm.play(time.monotonic())
            await warm.close()
            base = rss_mib(edge.process.pid)
            clients = [Client() for _ in range(options.sessions)]
            for start in range(0, len(clients), 20):  # opened 20 at a time: a burst the 2 cores absorb
                await asyncio.gather(*(c.open(http, url, token) for c in clients[start : start + 20]))
            opened = rss_mib(edge.process.pid)
            began = time.monotonic()
            await asyncio.gather(*(c.play(began + options.seconds) for c in clients))
            elapsed = time.monotonic() - began
            half = len(clients) // 2
            codes = Counter(await asyncio.gather(*(c.close() for c in clients[:half])))
            held = await settled(http, metrics_urls, len(clients) - half, 15)  # the closed half released
            edge.signal(signal.SIGKILL)  # the other half still open: keyring must reclaim their leases
            killed_at = time.monotonic()
            left = await settled(http, metrics_urls, 0, 120)
            reclaimed_s = time.monotonic() - killed_at
        frames_down = sum(c.frames_down for c in clients)
        frames_up = sum(c.frames_up for c in clients)
        return {
            "sessions_opened": options.sessions,
            "edge_rss_base_mib": round(base, 1),
            "edge_rss_open_mib": round(opened, 1),
            "edge_kib_per_session": round((opened - base) * 1024 / options.sessions, 1),
            "seconds": round(elapsed, 2),
            "turns": sum(c.turns for c in clients),
            "frames_down": frames_down,
            "frames_up": frames_up,
            "frames_per_s": round((frames_down + frames_up) / elapsed, 1),
            "closes": {str(code): count for code, count in codes.items()},
            "leases_held_after_half_closed": held,
            "leases_reclaimed_after_edge_kill_s": round(reclaimed_s, 1),
            "leases_in_flight_after": left,
        }
    finally:
        for service in reversed(services):
            service.stop()
        etcd.stop()


async def main_async(options: argparse.Namespace) -> int:
    if not 1 <= options.sessions <= 1000 or not 0 < options.seconds <= 600:
        raise SystemExit("--sessions must be 1..1000 and --seconds in (0, 600]")
    workdir = tempfile.mkdtemp(prefix="live-bench-")
    try:
        result = await run(options, workdir)
        print(json.dumps(result), flush=True)
        return 0 if result["leases_in_flight_after"] == 0 else 1
    finally:
        if options.keep_logs:
            shutil.copytree(workdir, options.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("etcd"))
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100, help="concurrent sessions (default 100: 2 cores)")
    parser.add_argument("--seconds", type=float, default=10.0, help="turns played for this long (default 10)")
    parser.add_argument("--keep-logs", default="", metavar="DIR", help="copy the services' logs there")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
