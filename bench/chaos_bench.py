"""Faults under load: what a client sees, and what keyring keeps, when processes die or stall.

Starts the whole stack as subprocesses on 127.0.0.1 with mutual TLS (a local
CA from services/devstack/certs.py): one etcd, two keyring replicas, two
edges and the Gemini simulator (50 ms think time). One pool of 20 keys in 4
projects (5 each) and a client token. A bounded aiohttp client (concurrency
16) posts ``generateContent`` to the edges that are "in the Service" (those
whose ``/readyz`` answers 200, polled every 0.1 s, as a Kubernetes Service
would route), and each scenario applies one fault to that steady load:

  keyring_sigkill        replica A SIGKILLed, restarted after a hold
  keyring_sigterm        replica A SIGTERMed (drains), restarted
  etcd_sigstop           etcd stopped (SIGSTOP) for 10 s (--quick: 4 s), then SIGCONT
  etcd_sigkill_restart   etcd SIGKILLed, restarted on its data after a hold
  edge_sigterm_streams   edge 1 SIGTERMed with long streams in flight on it, restarted
  storm_429              every key answers 429 without RetryInfo for 10 s (the pool's
                         base backoff 12 s; --quick: 3 s and 4 s)

In the first five, the 5 keys of one project answer 429 (RetryInfo 2 s) all
along, so cooldowns are decided while the fault runs. Each scenario uses its
own model name, so its cooldowns are its own. One JSON object per scenario is
printed (a line each):

  scenario, seconds, requests (load requests and streams answered), ok,
  errors (by status: "429", "503"..., "connection", "timeout", "stream_cut"),
  max_latency_s (load requests; streams are timed apart: stream_max_s),
  leases_in_flight_after (keyring_leases_in_flight summed over the replicas
  once the load has stopped and settled for a second, long before any lease
  TTL; less what a replica held before the scenario, so a lease an earlier
  scenario leaked counts once), usage_counted (the pool's requests counted by keyring, GetUsage after
  both replicas flushed, this scenario's delta), upstream_calls (the
  simulator's per-key request counts, this scenario's delta),
  upstream_429s, extra_upstream_429s (429s the upstream answered beyond one
  per key answering 429 per cooling window, ceil(seconds / window) each: the
  calls in flight on a project when its quota event begins; the rest reached
  a pair keyring should have known was cooling), recovered_after_s (from the end
  of the fault to the last client-visible error after it; for the storm,
  from the upstream's recovery until no key of the pool is cooling any more),
  fault (what was done and when), violations (acceptance bounds broken).

Acceptance (issue 13), checked by ``--check`` (exit 1 when any is broken): no
client-visible 5xx, connection error, timeout or cut stream; no client 429
but in the storm (elsewhere 15 of 20 keys are free: a 429 is right only
while every key cools); max latency under 2 s; leases_in_flight_after 0;
usage_counted == upstream_calls; extra_upstream_429s at most 10 outside the
storm (a cooldown decided is kept, whatever etcd does; the storm's count is
reported only: see ``violations``); after the storm, no key
cooling within 15 s of the upstream's recovery.

``--quick`` runs every scenario in a reduced form (about a minute in all).
Only the processes this run started are stopped, by PID.

    python bench/chaos_bench.py [--quick] [--check] [--only storm_429,...] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from processes import Service, admin_channel, edge_env, etcd_ca, keyring_env, sim_counts, start_keyring  # noqa: E402

from services.common.proto.keyring.v1 import keyring_pb2 as pb  # noqa: E402
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc  # noqa: E402
from services.devstack.certs import LocalCA  # noqa: E402
from services.devstack.etcd_server import EtcdServer, free_port  # noqa: E402
from services.devstack.fake_keys import fake_gemini_key  # noqa: E402
from services.keyring.sealing import generate_kek  # noqa: E402

POOL = "chaos"
KEYS = 20
PROJECTS = 4
CONCURRENCY = 16
STREAMS = 8
THINK_S = 0.05
REQUEST_TIMEOUT_S = 30.0
READY_POLL_S = 0.1
MAX_LATENCY_S = 2.0
RECOVERY_BOUND_S = 15.0
EXTRA_429_BOUND = 10
GAUGE = "keyring_leases_in_flight "
BODY = b'{"contents": [{"role": "user", "parts": [{"text": "Say hello to the chaos"}]}]}'
SCENARIOS = (
    "keyring_sigkill",
    "keyring_sigterm",
    "etcd_sigstop",
    "etcd_sigkill_restart",
    "edge_sigterm_streams",
    "storm_429",
)


@dataclass(frozen=True)
class Timing:
    """Seconds of each phase; ``--quick`` shrinks them."""

    warm_s: float  # load before the fault
    hold_s: float  # a process down
    etcd_stop_s: float  # etcd stopped (SIGSTOP)
    after_s: float  # load after the fault ended
    retry_s: float  # RetryInfo of the 429 project in fault scenarios
    storm_s: float  # the storm's length
    base_cooldown_s: float  # the pool's base backoff (429 without RetryInfo)
    stream_chunks: int
    stream_chunk_delay_s: float
    keyring_grace_s: float  # KEYRING_SHUTDOWN_GRACE_S: how long a SIGTERMed replica drains
    edge_delay_s: float  # EDGE_SHUTDOWN_DELAY_S: how long a SIGTERMed edge accepts while /readyz says 503


FULL = Timing(
    warm_s=3,
    hold_s=6,
    etcd_stop_s=10,
    after_s=5,
    retry_s=2,
    storm_s=10,
    base_cooldown_s=12,
    stream_chunks=8,
    stream_chunk_delay_s=0.8,
    keyring_grace_s=10,  # the default
    edge_delay_s=5,  # the default
)
QUICK = Timing(
    warm_s=1.0,
    hold_s=2.0,
    etcd_stop_s=4,
    after_s=2.0,
    retry_s=1,
    storm_s=3,
    base_cooldown_s=4,
    stream_chunks=6,
    stream_chunk_delay_s=0.5,
    keyring_grace_s=2,
    edge_delay_s=1,  # ten readiness polls of the load (READY_POLL_S): it stops routing there first
)


# -- the stack -------------------------------------------------------------


@dataclass
class Stack:
    workdir: str
    ca: LocalCA
    etcd: EtcdServer
    simulator: Service
    sim_url: str
    replicas: list[Service]
    keyring_ports: list[int]
    metrics_ports: list[int]
    edges: list[Service]
    edge_urls: list[str]
    token: str = ""
    key_secrets: list[str] = field(default_factory=list)
    key_projects: dict[str, str] = field(default_factory=dict)

    def keyring_address(self, index: int) -> str:
        return f"127.0.0.1:{self.keyring_ports[index]}"

    def admin_channel(self, index: int = 0) -> grpc.aio.Channel:
        return admin_channel(self.ca, self.keyring_address(index))

    async def start_replica(self, index: int) -> None:
        await start_keyring(self.replicas[index], self.keyring_address(index), self.ca)

    async def start_edge(self, index: int) -> None:
        self.edges[index].start()
        await self.edges[index].announced(r"edge listening on (\S+)")

    def stop_all(self) -> None:
        services = [*self.edges, *self.replicas, self.simulator]
        for service in services:  # all told at once: their graceful stops overlap
            service.signal(signal.SIGCONT)
            service.signal(signal.SIGTERM)
        for service in services:
            service.stop()
        if self.etcd.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.etcd.pid, signal.SIGCONT)
        self.etcd.stop()


async def start_stack(workdir: str, timing: Timing) -> Stack:
    ca = LocalCA(os.path.join(workdir, "tls"))
    # Fixed ports and a kept data dir: a SIGKILLed etcd comes back where the replicas look for it.
    etcd = EtcdServer(
        data_dir=os.path.join(workdir, "etcd"),
        port=free_port(),
        peer_port=free_port(),
        tls=etcd_ca(ca).issue("etcd").files,
    )
    simulator = Service("simulator", "services.simulator", {}, workdir, ["--port", str(free_port())])
    stack = Stack(workdir, ca, etcd, simulator, "", [], [], [], [], [])
    try:
        await etcd.astart()
        simulator.start()
        stack.sim_url = await simulator.announced(r"simulator listening on (\S+)")
        kek = generate_kek()
        for name in ("a", "b"):
            port, metrics_port = free_port(), free_port()
            stack.keyring_ports.append(port)
            stack.metrics_ports.append(metrics_port)
            env = keyring_env(
                ca, etcd, stack.sim_url, kek=kek, replica_id=f"replica-{name}", port=port, metrics_port=metrics_port,
                prefix="/chaos/",
            )  # fmt: skip
            env["KEYRING_SHUTDOWN_GRACE_S"] = str(timing.keyring_grace_s)
            stack.replicas.append(Service(f"keyring-{name}", "services.keyring", env, workdir))
        await asyncio.gather(*(stack.start_replica(i) for i in range(2)))
        await seed(stack, timing)
        addresses = [stack.keyring_address(i) for i in range(2)]
        for index in range(2):
            port = free_port()
            env = edge_env(ca, stack.sim_url, addresses, port)
            env["EDGE_SHUTDOWN_DELAY_S"] = str(timing.edge_delay_s)  # whatever the caller's environment says
            stack.edges.append(Service(f"edge-{index + 1}", "services.edge", env, workdir))
            stack.edge_urls.append(f"http://127.0.0.1:{port}")
        await asyncio.gather(*(stack.start_edge(i) for i in range(2)))
        async with aiohttp.ClientSession() as http:
            config = {"default_delay_s": THINK_S, "default_chunks": timing.stream_chunks}
            config["default_chunk_delay_s"] = timing.stream_chunk_delay_s
            async with http.post(f"{stack.sim_url}/_sim/config", json=config) as reply:
                reply.raise_for_status()
    except BaseException:
        stack.stop_all()
        raise
    return stack


async def seed(stack: Stack, timing: Timing) -> None:
    policy = pb.Policy(rate_limit_cooldown_ms=int(timing.base_cooldown_s * 1000))
    async with stack.admin_channel() as channel:
        admin = pb_grpc.AdminServiceStub(channel)
        await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=POOL, policy=policy)))
        stack.key_secrets = [fake_gemini_key(f"chaos-{i}") for i in range(KEYS)]
        stack.key_projects = {secret: f"proj-{i % PROJECTS}" for i, secret in enumerate(stack.key_secrets)}
        inputs = [pb.KeyInput(secret=s, project=stack.key_projects[s]) for s in stack.key_secrets]
        reply = await admin.AddKeys(pb.AddKeysRequest(pool=POOL, keys=inputs))
        assert reply.added == KEYS, reply.added
        stack.token = (await admin.CreateToken(pb.CreateTokenRequest(pool=POOL, name="chaos"))).token


# -- what keyring and the simulator say --------------------------------------


async def leases_in_flight(stack: Stack, http: aiohttp.ClientSession) -> list[tuple[int, int | None]]:
    """Per replica: (its start count, its keyring_leases_in_flight; None when it does not answer)."""
    found: list[tuple[int, int | None]] = []
    for replica, port in zip(stack.replicas, stack.metrics_ports, strict=True):
        value: int | None = None
        try:
            async with http.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=3)) as reply:
                text = await reply.text()
            value = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(GAUGE))
        except (aiohttp.ClientError, TimeoutError):
            pass
        found.append((replica.starts, value))
    return found


def leases_left(before: list[tuple[int, int | None]], after: list[tuple[int, int | None]]) -> int | None:
    """This scenario's leases still held, summed over the replicas: an earlier scenario's leak is not counted
    again (a replica started since then holds none of it)."""
    total = 0
    for (starts_before, held_before), (starts_after, held_after) in zip(before, after, strict=True):
        if held_after is None:
            return None
        earlier = (held_before or 0) if starts_before == starts_after else 0
        total += held_after - earlier
    return total


async def usage_counted(stack: Stack) -> int | None:
    """The pool's requests over the last hour: each replica flushes its own counts when asked (GetUsage)."""
    figures: list[int] = []
    for _ in range(2):  # the second round reads the other replica's flushed counts too
        for index in range(len(stack.replicas)):
            try:
                async with stack.admin_channel(index) as channel:
                    reply = await pb_grpc.AdminServiceStub(channel).GetUsage(
                        pb.GetUsageRequest(pool=POOL, window_s=3600), timeout=10
                    )
            except grpc.aio.AioRpcError:
                continue
            figures.append(sum(row.figures.requests for row in reply.pools if row.id == POOL))
        await asyncio.sleep(0.3)
    return max(figures) if figures else None


async def sim_script(
    stack: Stack, http: aiohttp.ClientSession, keys: list[str], model: str, retry_s: float | None
) -> None:
    for secret in keys:
        body = {"key": secret, "model": model, "sticky": {"kind": "rate_limit", "retry_delay_s": retry_s}}
        async with http.post(f"{stack.sim_url}/_sim/script", json=body) as reply:
            reply.raise_for_status()


async def sim_clear(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{stack.sim_url}/_sim/clear", json={}) as reply:
        reply.raise_for_status()


async def cooling_keys(stack: Stack, model: str) -> int | None:
    """Keys of the pool with a cooldown of ``model`` in force (None when no replica answers)."""
    for index in range(len(stack.replicas)):
        try:
            async with stack.admin_channel(index) as channel:
                reply = await pb_grpc.AdminServiceStub(channel).ListKeys(
                    pb.ListKeysRequest(filter=pb.KeyFilter(pool=POOL)), timeout=3
                )
        except grpc.aio.AioRpcError:
            continue
        now_ms = time.time() * 1000
        return sum(any(c.model == model and c.until_ms > now_ms for c in key.cooldowns) for key in reply.keys)
    return None


# -- the load ----------------------------------------------------------------


class Load:
    """``CONCURRENCY`` bounded workers posting to the edges in the Service, until stopped."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession, model: str) -> None:
        self.stack, self.http, self.model = stack, http, model
        self.path = f"/v1beta/models/{model}:generateContent"
        self.headers = {"x-goog-api-key": stack.token, "Content-Type": "application/json"}
        self.in_service: list[str] = list(stack.edge_urls)
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.stream_durations: list[float] = []
        self.error_times: list[float] = []
        self.first_ok_after: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._turn = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(CONCURRENCY)]
        self._tasks.append(asyncio.create_task(self._readiness()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _readiness(self) -> None:
        """The Service's view: an edge is routed to while its /readyz answers 200."""
        while not self._stop.is_set():
            ready = []
            for url in self.stack.edge_urls:
                try:
                    timeout = aiohttp.ClientTimeout(total=0.5)
                    async with self.http.get(f"{url}/readyz", timeout=timeout) as reply:
                        if reply.status == 200:
                            ready.append(url)
                except (aiohttp.ClientError, TimeoutError):
                    pass
            self.in_service = ready
            await asyncio.sleep(READY_POLL_S)

    def _edge(self) -> str | None:
        edges = self.in_service
        if not edges:
            return None
        self._turn += 1
        return edges[self._turn % len(edges)]

    def _record(self, status: str, started: float) -> None:
        self.statuses[status] += 1
        if status != "200":
            self.error_times.append(time.time())

    async def _worker(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        while not self._stop.is_set():
            edge = self._edge()
            if edge is None:
                await asyncio.sleep(0.05)
                continue
            started = time.monotonic()
            try:
                async with self.http.post(edge + self.path, data=BODY, headers=self.headers, timeout=timeout) as reply:
                    await reply.read()
                    status = str(reply.status)
            except TimeoutError:
                status = "timeout"
            except aiohttp.ClientError:
                status = "connection"
            self.latencies.append(time.monotonic() - started)
            self._record(status, started)
            if status == "429":
                await asyncio.sleep(0.2)  # a polite client: every key cools

    async def stream(self, edge: str) -> None:
        """One long stream through ``edge``: it must end with its last event."""
        path = f"/v1beta/models/{self.model}:streamGenerateContent?alt=sse"
        started = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S * 2)
            async with self.http.post(edge + path, data=BODY, headers=self.headers, timeout=timeout) as reply:
                body = await reply.read()
                status = str(reply.status)
                if status == "200" and b"finishReason" not in body:
                    status = "stream_cut"
        except TimeoutError:
            status = "timeout"
        except aiohttp.ClientError:
            status = "stream_cut"
        self.stream_durations.append(time.monotonic() - started)
        self._record(status, started)


# -- scenarios ---------------------------------------------------------------


@dataclass
class Fault:
    """What a scenario did: its steps (seconds since the load started) and when the fault was over."""

    steps: list[str] = field(default_factory=list)
    ended_at: float = 0.0
    recovered_after_s: float | None = None
    upstream_429s: int = 0  # the storm's, counted between its start and the upstream's recovery


async def hold(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def keyring_signal(stack: Stack, load: Load, timing: Timing, fault: Fault, sig: signal.Signals) -> None:
    replica = stack.replicas[0]
    replica.signal(sig)
    fault.steps.append(f"keyring-a {sig.name}")
    if not await replica.exited(30):
        fault.steps.append("keyring-a still running after 30 s: SIGKILL")
        replica.signal(signal.SIGKILL)
        await replica.exited(10)
    fault.steps.append("keyring-a exited")
    await hold(timing.hold_s)
    await stack.start_replica(0)
    fault.steps.append("keyring-a serving again")


async def etcd_sigstop(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    assert stack.etcd.pid is not None
    os.kill(stack.etcd.pid, signal.SIGSTOP)
    fault.steps.append(f"etcd SIGSTOP for {timing.etcd_stop_s:g} s")
    try:
        await hold(timing.etcd_stop_s)
    finally:
        os.kill(stack.etcd.pid, signal.SIGCONT)
    fault.steps.append("etcd SIGCONT")


async def etcd_sigkill_restart(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    assert stack.etcd.pid is not None
    os.kill(stack.etcd.pid, signal.SIGKILL)
    fault.steps.append("etcd SIGKILL")
    while stack.etcd.running:
        await asyncio.sleep(0.05)
    stack.etcd.stop()  # reaps the killed process, keeps the data dir
    await hold(timing.hold_s)
    await stack.etcd.astart()
    fault.steps.append("etcd serving again")


async def edge_sigterm_streams(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    edge = stack.edges[0]
    streams = [asyncio.create_task(load.stream(stack.edge_urls[0])) for _ in range(STREAMS)]
    await asyncio.sleep(timing.stream_chunk_delay_s * 1.5)  # the streams have begun
    edge.signal(signal.SIGTERM)
    fault.steps.append(f"edge-1 SIGTERM with {STREAMS} streams in flight")
    exited = await edge.exited(60)
    fault.steps.append("edge-1 exited" if exited else "edge-1 still running after 60 s")
    await asyncio.gather(*streams)
    fault.steps.append("streams done")
    if not exited:
        edge.signal(signal.SIGKILL)
        await edge.exited(10)
    await stack.start_edge(0)
    fault.steps.append("edge-1 serving again")


async def storm(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    before = await sim_counts(stack.sim_url, load.http)
    await sim_script(stack, load.http, stack.key_secrets, load.model, None)
    fault.steps.append(f"every key answers 429 without RetryInfo for {timing.storm_s:g} s")
    await hold(timing.storm_s)
    await sim_clear(stack, load.http)
    after = await sim_counts(stack.sim_url, load.http)
    fault.upstream_429s = sum(after.get(s, 0) - before.get(s, 0) for s in stack.key_secrets)
    fault.steps.append("upstream recovered")
    recovered = time.time()
    deadline = recovered + max(RECOVERY_BOUND_S * 2, timing.base_cooldown_s * 4)
    while time.time() < deadline:
        if await cooling_keys(stack, load.model) == 0:
            fault.recovered_after_s = round(time.time() - recovered, 2)
            fault.steps.append("no key cooling")
            break
        await asyncio.sleep(0.25)
    else:
        fault.steps.append(f"keys still cooling {deadline - recovered:.0f} s after the recovery")


FaultFunction = Callable[[Stack, Load, Timing, Fault], Awaitable[None]]


def faults() -> dict[str, FaultFunction]:
    async def sigkill(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
        await keyring_signal(stack, load, timing, fault, signal.SIGKILL)

    async def sigterm(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
        await keyring_signal(stack, load, timing, fault, signal.SIGTERM)

    return {
        "keyring_sigkill": sigkill,
        "keyring_sigterm": sigterm,
        "etcd_sigstop": etcd_sigstop,
        "etcd_sigkill_restart": etcd_sigkill_restart,
        "edge_sigterm_streams": edge_sigterm_streams,
        "storm_429": storm,
    }


async def run_scenario(
    stack: Stack, http: aiohttp.ClientSession, index: int, name: str, timing: Timing
) -> dict[str, Any]:
    model = f"gemini-2.5-flash-chaos-{index}"
    quota_project = "proj-0"
    scripted = [s for s in stack.key_secrets if stack.key_projects[s] == quota_project]
    if name != "storm_429":
        await sim_script(stack, http, scripted, model, timing.retry_s)
    counts_before = await sim_counts(stack.sim_url, http)
    leases_before = await leases_in_flight(stack, http)
    usage_before = await usage_counted(stack)
    load = Load(stack, http, model)
    fault = Fault()
    began = time.time()
    load.start()
    await asyncio.sleep(timing.warm_s)
    fault.steps.append(f"{time.time() - began:.1f}s: fault")
    try:
        await faults()[name](stack, load, timing, fault)
    finally:
        fault.ended_at = time.time()
    fault.steps.append(f"{fault.ended_at - began:.1f}s: fault over")
    await asyncio.sleep(timing.after_s)
    await load.stop()
    seconds = time.time() - began
    await sim_clear(stack, http)
    await asyncio.sleep(1.0)  # releases in flight land
    in_flight = leases_left(leases_before, await leases_in_flight(stack, http))
    counts_after = await sim_counts(stack.sim_url, http)
    usage_after = await usage_counted(stack)
    upstream = sum(counts_after.get(s, 0) - counts_before.get(s, 0) for s in stack.key_secrets)
    # One 429 per key answering 429 per cooling window is the floor (the calls in flight on the
    # project when its quota event begins); the rest reached a pair keyring should have known was cooling.
    if name == "storm_429":
        answered_429 = fault.upstream_429s
        allowed_429 = math.ceil(timing.storm_s / timing.base_cooldown_s) * KEYS
    else:
        answered_429 = sum(counts_after.get(s, 0) - counts_before.get(s, 0) for s in scripted)
        allowed_429 = math.ceil(seconds / timing.retry_s) * len(scripted)
    errors = {status: n for status, n in sorted(load.statuses.items()) if status != "200"}
    if name == "storm_429":
        recovered = fault.recovered_after_s
    else:
        late = [t for t in load.error_times if t >= fault.ended_at]
        recovered = round(max(late) - fault.ended_at, 2) if late else 0.0
    result: dict[str, Any] = {
        "scenario": name,
        "seconds": round(seconds, 1),
        "requests": sum(load.statuses.values()),
        "ok": load.statuses.get("200", 0),
        "errors": errors,
        "max_latency_s": round(max(load.latencies, default=0.0), 3),
        "stream_max_s": round(max(load.stream_durations), 2) if load.stream_durations else None,
        "leases_in_flight_after": in_flight,
        "usage_counted": None if usage_before is None or usage_after is None else usage_after - usage_before,
        "upstream_calls": upstream,
        "extra_upstream_429s": max(0, answered_429 - allowed_429),
        "upstream_429s": answered_429,
        "recovered_after_s": recovered,
        "fault": fault.steps,
    }
    result["violations"] = violations(result)
    return result


def violations(result: dict[str, Any]) -> list[str]:
    """The acceptance bounds this scenario broke."""
    broken = []
    bad = {s: n for s, n in result["errors"].items() if s.startswith("5") or not s.isdigit()}
    if bad:
        broken.append(f"client-visible 5xx or connection errors: {bad}")
    if result["scenario"] != "storm_429" and result["errors"].get("429"):
        broken.append(f"{result['errors']['429']} client 429s while only one project of {PROJECTS} was over quota")
    # The storm's figure is reported, not bounded: when every key turns 429 at once, the calls in flight
    # fail over to keys whose project's cooldown has not reached the other replica yet (a report away),
    # so its count varies from run to run (1 to 12 seen); the storm is judged by its recovery instead.
    if result["scenario"] != "storm_429" and result["extra_upstream_429s"] > EXTRA_429_BOUND:
        broken.append(f"{result['extra_upstream_429s']} extra upstream 429s: cooldowns decided were not kept")
    if result["max_latency_s"] >= MAX_LATENCY_S:
        broken.append(f"max latency {result['max_latency_s']} s >= {MAX_LATENCY_S} s")
    if result["leases_in_flight_after"] != 0:
        broken.append(f"leases in flight after the load: {result['leases_in_flight_after']}")
    if result["usage_counted"] != result["upstream_calls"]:
        broken.append(f"usage counted {result['usage_counted']} != upstream calls {result['upstream_calls']}")
    if result["scenario"] == "storm_429":
        recovered = result["recovered_after_s"]
        if recovered is None or recovered > RECOVERY_BOUND_S:
            broken.append(f"storm: keys still cooling {recovered} s after the upstream recovered (bound 15 s)")
    return broken


async def main_async(options: argparse.Namespace) -> int:
    timing = QUICK if options.quick else FULL
    chosen = options.only.split(",") if options.only else list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    workdir = tempfile.mkdtemp(prefix="chaos-bench-")
    broken = 0
    try:
        stack = await start_stack(workdir, timing)
        try:
            connector = aiohttp.TCPConnector(limit=0, force_close=False)
            async with aiohttp.ClientSession(connector=connector) as http:
                for index, name in enumerate(SCENARIOS):
                    if name not in chosen:
                        continue
                    result = await run_scenario(stack, http, index, name, timing)
                    broken += bool(result["violations"])
                    print(json.dumps(result), flush=True)
        finally:
            stack.stop_all()
    finally:
        if options.keep_logs:
            shutil.copytree(workdir, options.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("etcd"))
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if options.check and broken else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every scenario in a reduced form (about a minute)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a scenario breaks an acceptance bound")
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--keep-logs", default="", metavar="DIR", help="copy the services' logs there")
    options = parser.parse_args()
    sys.exit(asyncio.run(main_async(options)))


if __name__ == "__main__":
    main()
