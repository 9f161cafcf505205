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
  scenario leaked counts once), usage_counted (the pool's requests counted by
  keyring, GetUsage after every replica flushed, this scenario's delta; read
  once no edge owes a release, 15 s at most, else releases_owed_when_counted
  says what each edge still owed), upstream_calls (the
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

Issue 19's scenarios (the end of a lease) run after those, on a second stack
of THREE keyring replicas (``KEYRING_MEMBERSHIP_TTL_S`` 10 s and
``KEYRING_STREAM_LEASE_GRACE_S`` 15 s, the defaults; --quick: 5 s and 5 s),
two edges given each replica's static address (no DNS name that stops
resolving), the same load and the same 429 project; replica C is the victim:

  frozen_replica         replica C stopped (SIGSTOP) for 20 s (--quick: 6 s), then SIGCONT
  edge_sigkill_streams   edge 1 SIGKILLed with long streams in flight on it, restarted
  token_budget_death     a second token with a budget of 300 requests a minute, sent
                         10 calls a second over an epoch minute's last 40 s (up to a
                         minute's wait for it); replica C SIGKILLed 15 s in (--quick:
                         12 s), the budget spent only after its death is detected; C
                         restarted once the minute is over
  replica_gone           replica C SIGKILLed and NOT restarted (until its figures are taken)

Each waits, under its load, until every edge reports every replica healthy
(edge_keyring_replica_state, 40 s at most: a replica restarted after a long
death waits for the edges' next probe; replicas_in_use_after_s, a violation
when it does not happen: the fault would reach only the edges using it). Their own figures and bounds
(``--check``), besides the ones above (usage
equals upstream calls in each; leases_in_flight_after waits, where streams
ended, for the stream grace + 10 s: leases_reclaimed_after_s):

  frozen_replica         throughput_before/_during/_after (load answers 200 a second),
                         max_ and p99_latency_during_s (requests overlapping the freeze):
                         max latency under 2 s, throughput during >= half of before;
                         edge_log_lines_naming_frozen (reported only)
  edge_sigkill_streams   cut_by_kill (errors through edge 1 within 1 s of its death:
                         its streams, its requests, those sent before the Service saw
                         it; not counted as errors): its calls reached the upstream, so
                         usage counts them once keyring reclaims their leases, as calls
                         of unknown outcome (usage_unknown), whether or not each reached
                         the upstream (killed between grant and send): instead of
                         equality, known (usage_counted - usage_unknown) <= upstream_calls
                         <= usage_counted; usage_over_count (counted - upstream) reported
  token_budget_death     budget_served_in_minute (the 200s sent in the minute of the
                         death) <= budget_bound (docs/operator-guide.md: 300 + what the dead replica
                         admitted after its last usage flush, i.e. a third of the 200s
                         sent in the 5.5 s before the death: 317 at 10/s);
                         refused_with_budget_left by phase (a 429 answered while fewer
                         than budget_room calls were even sent before it): none
                         after_detection (the membership TTL + 1 s after the death);
                         budget_room is 300 less the leases charged that served nobody
                         (budget_charged_unserved: budget_attempts, the token's leases
                         keyring counted, less the 200s: a failover after an upstream
                         429 spends two) and 1 for the two survivors' shares rounded down;
                         grants_per_replica_after_death (keyring_leases_granted_total
                         deltas until the minute's end: how evenly the edges spread)
  replica_gone           releases_owed_* (edge_keyring_releases_owed on each edge, every
                         0.25 s): back to 0 within the membership TTL + 10 s of the
                         death; edge_log_lines_naming_it (lines of each edge's log
                         naming C's address from the kill until its figures are taken):
                         at most 4 each, one per state change, not one per attempt

``--quick`` runs issue 13's scenarios in a reduced form (about a minute in
all); issue 19's run in the full run, or by name with ``--only`` (quick forms
of 10-20 s each, the budget's wait for its minute aside). Only the processes
this run started are stopped, by PID.

    python bench/chaos_bench.py [--quick] [--check] [--only storm_429,frozen_replica,...] [--keep-logs DIR]
                                [--keyring-log-level DEBUG]
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
from typing import Any, NamedTuple

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
from services.keyring.housekeeping import USAGE_FLUSH_INTERVAL_S  # noqa: E402
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
# Issue 19's, on a stack of three replicas (and two edges): in the full run, and by name (--only) with --quick.
WIDE_SCENARIOS = ("frozen_replica", "edge_sigkill_streams", "token_budget_death", "replica_gone")
WIDE_REPLICAS = 3
VICTIM = 2  # keyring-c: frozen, killed
FREEZE_THROUGHPUT_SHARE = 0.5  # throughput while a replica is frozen, at least this share of before
OWED = "edge_keyring_releases_owed"
OWED_HANDOVER_BOUND_S = 10.0  # past the dead replica's membership expiry, nothing owed to it on any edge
GONE_LOG_LINES_BOUND = 4  # lines naming the dead replica per edge: one per state change (a retry each: 1.6/s)
KILL_CUT_S = 1.0  # errors through a SIGKILLed edge this soon after the kill are the kill's (the Service's lag)
RECLAIM_SLACK_S = 10.0  # past the stream grace, the leases of a killed edge reclaimed (the janitor's round)
BUDGET_RPM = 300
BUDGET_RATE = 10.0  # the budget token's calls a second, evenly spaced: twice the budget's even pace (5/s)
BUDGET_SPAN_S = 40.0  # sent for this long, ending with the minute: 400 calls offered against 300
# docs/operator-guide.md (client-token budgets): across a death a budget is exceeded by at most what the dead
# replica admitted after its last usage flush (it publishes its admissions with each); a flush started as it died
# may not have landed.
PUBLISH_SLACK_S = 0.5
DETECTION_SLACK_S = 1.0  # past the membership TTL: the expiry reaching the survivors' view
# Before usage is read: the edges re-send owed releases at most 5 s apart (a replica restarted after a long death
# hears them that late), so the figures wait (this long at most) until no edge owes any.
OWED_SETTLE_S = 15.0
# Before a fault of the three-replica stack: every edge uses every replica (edge_keyring_replica_state 0), or the
# victim restarted after a long death may still wait for its next probe (the edges' backoff grows to 30 s) and a
# fault dealt to it would be dealt to a replica nobody uses. The load runs meanwhile: a probe is a call.
REPLICAS_IN_USE_S = 40.0
REPLICA_STATE = "edge_keyring_replica_state"


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
    # The three-replica stack of issue 19's scenarios:
    freeze_s: float  # a replica stopped (SIGSTOP)
    membership_ttl_s: int  # KEYRING_MEMBERSHIP_TTL_S: how long a dead replica stays a member
    stream_grace_s: float  # KEYRING_STREAM_LEASE_GRACE_S: leases of an ended lease stream reclaimed after it
    budget_warm_s: float  # the budget token's load before its replica dies


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
    freeze_s=20,  # issue 19's run
    membership_ttl_s=10,  # the default
    stream_grace_s=15,  # the default
    budget_warm_s=15,
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
    freeze_s=6,
    membership_ttl_s=5,
    stream_grace_s=5,
    budget_warm_s=12,
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
    membership_ttl_s: float = 10.0  # the replicas' KEYRING_MEMBERSHIP_TTL_S
    stream_grace_s: float = 15.0  # the replicas' KEYRING_STREAM_LEASE_GRACE_S
    dead: set[int] = field(default_factory=set)  # replicas killed and not (yet) restarted: not asked

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


async def start_stack(workdir: str, timing: Timing, replicas: int = 2, keyring_log_level: str = "") -> Stack:
    """The stack of issue 13's scenarios (two replicas), or of issue 19's (three, with ``timing``'s membership
    TTL and stream grace); two edges given every replica's static address either way. ``keyring_log_level``: the
    replicas' LOG_LEVEL (DEBUG logs each cooldown decided; default WARNING, as every service here)."""
    os.makedirs(workdir, exist_ok=True)
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
        wide = replicas > 2
        if wide:
            stack.membership_ttl_s, stack.stream_grace_s = timing.membership_ttl_s, timing.stream_grace_s
        for name in "abc"[:replicas]:
            port, metrics_port = free_port(), free_port()
            stack.keyring_ports.append(port)
            stack.metrics_ports.append(metrics_port)
            env = keyring_env(
                ca, etcd, stack.sim_url, kek=kek, replica_id=f"replica-{name}", port=port, metrics_port=metrics_port,
                prefix="/chaos/",
            )  # fmt: skip
            env["KEYRING_SHUTDOWN_GRACE_S"] = str(timing.keyring_grace_s)
            if keyring_log_level:
                env["LOG_LEVEL"] = keyring_log_level
            if wide:
                env["KEYRING_MEMBERSHIP_TTL_S"] = str(timing.membership_ttl_s)
                env["KEYRING_STREAM_LEASE_GRACE_S"] = str(timing.stream_grace_s)
            stack.replicas.append(Service(f"keyring-{name}", "services.keyring", env, workdir))
        await asyncio.gather(*(stack.start_replica(i) for i in range(replicas)))
        await seed(stack, timing)
        addresses = [stack.keyring_address(i) for i in range(replicas)]
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
    """Per replica: (its start count, its keyring_leases_in_flight; None when it does not answer). A replica
    killed and not restarted (``stack.dead``) is (-1, None): its leases died with it."""
    found: list[tuple[int, int | None]] = []
    for index, (replica, port) in enumerate(zip(stack.replicas, stack.metrics_ports, strict=True)):
        if index in stack.dead:
            found.append((-1, None))
            continue
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
        if starts_after == -1:  # dead since: what it held is gone with it
            continue
        if held_after is None:
            return None
        earlier = (held_before or 0) if starts_before == starts_after else 0
        total += held_after - earlier
    return total


async def usage_replies(stack: Stack) -> list[pb.GetUsageResponse]:
    """The pool's usage over the last hour as each living replica reads it (GetUsage: each flushes its own counts
    when asked), in two rounds: the second reads the other replicas' flushed counts too."""
    replies: list[pb.GetUsageResponse] = []
    for _ in range(2):
        for index in range(len(stack.replicas)):
            if index in stack.dead:
                continue
            try:
                async with stack.admin_channel(index) as channel:
                    replies.append(
                        await pb_grpc.AdminServiceStub(channel).GetUsage(
                            pb.GetUsageRequest(pool=POOL, window_s=3600), timeout=10
                        )
                    )
            except grpc.aio.AioRpcError:
                continue
        await asyncio.sleep(0.3)
    return replies


async def usage_counted(stack: Stack) -> tuple[int, int] | None:
    """The pool's requests over the last hour and how many of them are of unknown outcome (leases reclaimed
    unreleased), the most any replica read (``usage_replies``)."""
    figures: list[tuple[int, int]] = []
    for reply in await usage_replies(stack):
        rows = [row.figures for row in reply.pools if row.id == POOL]
        figures.append((sum(f.requests for f in rows), sum(f.unknown for f in rows)))
    return max(figures) if figures else None


async def token_requests(stack: Stack, token_id: str) -> int | None:
    """The requests keyring counted for one client token over the last hour (its leases released or reclaimed),
    the most any replica read (``usage_replies``)."""
    counts = [
        sum(row.figures.requests for row in reply.tokens if row.id == token_id) for reply in await usage_replies(stack)
    ]
    return max(counts) if counts else None


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
        if index in stack.dead:
            continue
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


class Completion(NamedTuple):
    """One answered (or failed) request of the load: when it ended, how long it took, through which edge."""

    ended: float  # time.time()
    latency_s: float
    status: str
    edge: str
    stream: bool


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
        self.completions: list[Completion] = []  # load requests and streams alike
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

    def _record(self, status: str, started: float, edge: str, stream: bool = False) -> None:
        now = time.time()
        self.statuses[status] += 1
        if status != "200":
            self.error_times.append(now)
        self.completions.append(Completion(now, time.monotonic() - started, status, edge, stream))

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
            self._record(status, started, edge)
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
        self._record(status, started, edge, stream=True)


# -- scenarios ---------------------------------------------------------------


@dataclass
class Fault:
    """What a scenario did: its steps (seconds since the load started) and when the fault was over."""

    steps: list[str] = field(default_factory=list)
    ended_at: float = 0.0
    recovered_after_s: float | None = None
    upstream_429s: int = 0  # the storm's, counted between its start and the upstream's recovery
    window: tuple[float, float] | None = None  # a replica frozen from, until (time.time())
    killed_edge: tuple[str, float] | None = None  # the edge SIGKILLed, when: errors through it then are the kill's
    # Lease streams ended from then on (an edge killed, or gave up on a frozen replica): their leases are reclaimed
    # a stream grace later, so leases_in_flight_after waits for that before it is judged.
    streams_ended_at: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)  # the scenario's own figures, in its result
    restore: Callable[[], Awaitable[None]] | None = None  # after the figures are taken: make the stack whole


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


# -- issue 19: the end of a lease (three replicas) ----------------------------


async def frozen_replica(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    """Replica c stops answering without closing anything (a GC pause, CPU starvation, dropped packets)."""
    replica = stack.replicas[VICTIM]
    offsets = log_offsets(stack)
    replica.signal(signal.SIGSTOP)
    frozen_at = time.time()
    fault.steps.append(f"keyring-c SIGSTOP for {timing.freeze_s:g} s")
    try:
        await hold(timing.freeze_s)
    finally:
        replica.signal(signal.SIGCONT)
    fault.window = (frozen_at, time.time())
    fault.streams_ended_at = fault.window[1]  # streams the edges gave up on end when the replica sees it
    fault.steps.append("keyring-c SIGCONT")
    address = stack.keyring_address(VICTIM)
    # Reported, not bounded: the edges should say a replica is slow or silent (once, not per request).
    fault.figures["edge_log_lines_naming_frozen"] = [
        log_lines_naming(edge, offset, address) for edge, offset in zip(stack.edges, offsets, strict=True)
    ]


async def granted(stack: Stack, http: aiohttp.ClientSession) -> list[float | None]:
    """keyring_leases_granted_total of the pool, per replica (None: dead or not answering)."""
    found: list[float | None] = []
    for index, port in enumerate(stack.metrics_ports):
        value: float | None = None
        if index not in stack.dead:
            try:
                async with http.get(
                    f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=3)
                ) as reply:
                    text = await reply.text()
                prefix = f'keyring_leases_granted_total{{pool="{POOL}"}} '
                value = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))
            except (aiohttp.ClientError, TimeoutError):
                pass
        found.append(value)
    return found


async def edge_metric(stack: Stack, http: aiohttp.ClientSession, name: str) -> list[float | None]:
    """``name`` summed over its label sets, per edge (None when the edge does not answer)."""
    found: list[float | None] = []
    for url in stack.edge_urls:
        try:
            async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=3)) as reply:
                text = await reply.text()
            lines = [line for line in text.splitlines() if line.startswith((name + " ", name + "{"))]
            found.append(sum(float(line.rsplit(" ", 1)[1]) for line in lines))
        except (aiohttp.ClientError, TimeoutError):
            found.append(None)
    return found


def log_offsets(stack: Stack) -> list[int]:
    """Where each edge's log ends now (bytes)."""
    return [edge.log_path.stat().st_size if edge.log_path.exists() else 0 for edge in stack.edges]


def log_lines_naming(service: Service, offset: int, text: str) -> int:
    """Lines of ``service``'s log after ``offset`` (bytes) that contain ``text``."""
    with open(service.log_path, "rb") as log:
        log.seek(offset)
        return sum(text.encode() in line for line in log)


async def replica_gone(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    """Replica c SIGKILLed and never restarted at its (static) address: what the edges owe it must reach a live
    replica once its membership has expired, and each edge must say so in a few lines, not one per retry."""
    replica = stack.replicas[VICTIM]
    address = stack.keyring_address(VICTIM)
    offsets = log_offsets(stack)
    replica.signal(signal.SIGKILL)
    killed = time.time()
    await replica.exited(10)
    stack.dead.add(VICTIM)
    fault.steps.append("keyring-c SIGKILL, not restarted")
    expired = killed + stack.membership_ttl_s
    deadline = expired + OWED_HANDOVER_BOUND_S
    owed_max, last_owing = 0.0, killed
    owed: list[float | None] = [None for _ in stack.edges]
    while time.time() < deadline:
        owed = await edge_metric(stack, load.http, OWED)
        now = time.time()
        owing = sum(value or 0 for value in owed) > 0 or None in owed
        owed_max = max(owed_max, sum(value or 0 for value in owed))
        if owing:
            last_owing = now
        elif now >= expired and now - last_owing >= 1.0:  # nothing owed for a second, past the expiry
            break
        await asyncio.sleep(0.25)
    fault.steps.append(f"{time.time() - killed:.1f}s after the kill: releases owed per edge {owed}")
    fault.figures["releases_owed_max"] = owed_max
    fault.figures["releases_owed_end"] = owed
    fault.figures["releases_owed_cleared_after_s"] = (
        round(last_owing - killed, 2) if not any(owed) and None not in owed else None
    )
    fault.figures["owed_bound_s"] = round(expired + OWED_HANDOVER_BOUND_S - killed, 1)

    async def restore() -> None:
        lines = [log_lines_naming(edge, offset, address) for edge, offset in zip(stack.edges, offsets, strict=True)]
        fault.figures["edge_log_lines_naming_it"] = lines
        fault.figures["seconds_dead"] = round(time.time() - killed, 1)
        await stack.start_replica(VICTIM)
        stack.dead.discard(VICTIM)

    fault.restore = restore


async def edge_sigkill_streams(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    """Edge 1 SIGKILLed with long streams (and its share of the load) in flight: their calls reached the upstream,
    so keyring must count them (unknown outcome) when it reclaims their leases after the stream grace."""
    edge = stack.edges[0]
    streams = [asyncio.create_task(load.stream(stack.edge_urls[0])) for _ in range(STREAMS)]
    await asyncio.sleep(timing.stream_chunk_delay_s * 1.5)  # the streams have begun
    edge.signal(signal.SIGKILL)
    fault.killed_edge = (stack.edge_urls[0], time.time())
    fault.streams_ended_at = fault.killed_edge[1]
    fault.steps.append(f"edge-1 SIGKILL with {STREAMS} streams in flight")
    await edge.exited(10)
    await asyncio.gather(*streams)
    fault.steps.append("streams done")
    await stack.start_edge(0)
    fault.steps.append("edge-1 serving again")


class BudgetClient:
    """Requests of the budget token sent at a fixed rate (an open loop: a refusal slows nothing)."""

    def __init__(self, load: Load, token: str, rate: float) -> None:
        self.load, self.token, self.rate = load, token, rate
        self.answers: list[tuple[float, float, str]] = []  # (sent, answered, status: "200", "429"...)

    async def run(self, until: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        due = time.time()
        while due < until:
            await asyncio.sleep(max(0.0, due - time.time()))
            tasks.add(asyncio.create_task(self._one()))
            due += 1 / self.rate
        await asyncio.gather(*tasks)

    async def _one(self) -> None:
        edge = self.load._edge()
        sent = time.time()
        if edge is None:
            self.answers.append((sent, sent, "no_edge"))
            return
        headers = {"x-goog-api-key": self.token, "Content-Type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        try:
            async with self.load.http.post(edge + self.load.path, data=BODY, headers=headers, timeout=timeout) as reply:
                await reply.read()
                status = str(reply.status)
        except TimeoutError:
            status = "timeout"
        except aiohttp.ClientError:
            status = "connection"
        self.answers.append((sent, time.time(), status))


def budget_figures(
    answers: list[tuple[float, float, str]], killed: float, detection_s: float, replicas: int, attempts: int | None
) -> dict[str, Any]:
    """The minute of the death: calls served against the documented bound, and refusals that came while the budget
    still had room.

    The bound is the budget plus what the dead replica admitted after its last usage flush: the calls served that
    were sent in the flush interval (+ PUBLISH_SLACK_S) before the death, over the replicas (each edge turns round
    them). A refusal counts as one with room left when, even counting every call sent before its answer came (a
    call is admitted after it is sent), fewer than the budget's room were served: races near the end cannot make
    one up. The room is what the documented rules leave of BUDGET_RPM: a request counts when a lease is granted,
    so an attempt that served nobody (a failover after an upstream 429, a grant lost with the dead replica) spends
    one (``attempts``: the token's leases as keyring counted them, less the calls served), and each survivor's
    share of what the dead one left is rounded down (at most one each)."""
    minute = math.floor(killed / 60) * 60
    in_minute = [a for a in answers if minute <= a[0] < minute + 60]
    served = sorted(sent for sent, _, status in in_minute if status == "200")
    unpublished = sum(1 for t in served if killed - USAGE_FLUSH_INTERVAL_S - PUBLISH_SLACK_S <= t < killed)
    charged_unserved = max(0, attempts - len(served)) if attempts is not None else 0
    room = BUDGET_RPM - charged_unserved - (replicas - 2)  # two survivors' shares, each rounded down: one lost
    refused: Counter[str] = Counter()
    with_room: list[float] = []  # when they were sent, seconds after the death
    for sent, answered, status in in_minute:
        if status == "429" and sum(1 for t in served if t < answered) < room:
            with_room.append(sent - killed)
            phase = (
                "before_death"
                if sent < killed
                else "within_detection"
                if sent < killed + detection_s
                else "after_detection"
            )
            refused[phase] += 1
    statuses = Counter(status for _, _, status in in_minute)
    return {
        "budget_per_minute": BUDGET_RPM,
        "budget_served_in_minute": len(served),
        "budget_attempts": attempts,  # the token's leases (keyring's usage): served calls and attempts that were not
        "budget_charged_unserved": charged_unserved,
        "budget_room": room,
        "budget_served_before_death": sum(1 for t in served if t < killed),
        "budget_bound": BUDGET_RPM + math.ceil(unpublished / replicas),
        "budget_statuses": dict(sorted(statuses.items())),
        "refused_with_budget_left": dict(refused),
        "refused_with_budget_left_s": [round(min(with_room), 1), round(max(with_room), 1)] if with_room else None,
        "detection_s": detection_s,
        "death_at_s_of_minute": round(killed - minute, 1),
    }


async def token_budget_death(stack: Stack, load: Load, timing: Timing, fault: Fault) -> None:
    """A token with a per-minute budget under load; replica c SIGKILLed with a third of its budget spent.

    Aligned on keyring's epoch minute: the budget client sends BUDGET_RATE calls a second for the minute's last
    BUDGET_SPAN_S, replica c dies ``budget_warm_s`` in (what it admitted then is many times what it admitted
    after its last flush, so a budget that forgot it shows beyond the bound) and the rest of the budget is spent
    only after the survivors have detected the death (membership TTL + DETECTION_SLACK_S)."""
    async with stack.admin_channel() as channel:
        budget = pb.TokenBudget(model="", requests_per_minute=BUDGET_RPM)
        request = pb.CreateTokenRequest(pool=POOL, name="chaos-budget", budgets=[budget])
        created = await pb_grpc.AdminServiceStub(channel).CreateToken(request)
        token, token_id = created.token, created.info.token_id
    detection_s = stack.membership_ttl_s + DETECTION_SLACK_S
    assert timing.budget_warm_s + detection_s < BUDGET_RPM / BUDGET_RATE < BUDGET_SPAN_S, "spent after the detection"
    minute_end = math.floor(time.time() / 60) * 60 + 60
    start = minute_end - BUDGET_SPAN_S - 0.5
    if start < time.time():
        start += 60
        minute_end += 60
    fault.steps.append(f"budget client waits {start - time.time():.1f} s for its place in the minute")
    await asyncio.sleep(start - time.time())
    client = BudgetClient(load, token, BUDGET_RATE)
    sending = asyncio.create_task(client.run(minute_end - 0.2))
    await asyncio.sleep(timing.budget_warm_s)
    stack.replicas[VICTIM].signal(signal.SIGKILL)
    killed = time.time()
    stack.dead.add(VICTIM)
    fault.steps.append(
        f"keyring-c SIGKILL at second {killed % 60:.1f} of the minute, budget client at {BUDGET_RATE:g}/s"
    )
    granted_at_death = await granted(stack, load.http)
    await sending
    granted_at_end = await granted(stack, load.http)
    # How the edges spread the pool's leases (the load's and the budget token's) over the survivors: split
    # budgets assume an even spread.
    fault.figures["grants_per_replica_after_death"] = [
        None if a is None or b is None else int(b - a) for a, b in zip(granted_at_death, granted_at_end, strict=True)
    ]
    await stack.replicas[VICTIM].exited(10)
    attempts = await token_requests(stack, token_id)
    fault.figures.update(budget_figures(client.answers, killed, detection_s, len(stack.replicas), attempts))
    await stack.start_replica(VICTIM)
    stack.dead.discard(VICTIM)
    fault.steps.append("keyring-c serving again")


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
        "frozen_replica": frozen_replica,
        "edge_sigkill_streams": edge_sigkill_streams,
        "token_budget_death": token_budget_death,
        "replica_gone": replica_gone,
    }


async def run_scenario(
    stack: Stack, http: aiohttp.ClientSession, index: int, name: str, timing: Timing
) -> dict[str, Any]:
    model = f"gemini-3.5-flash-chaos-{index}"
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
    if name in WIDE_SCENARIOS:
        in_use, states = await edges_use_every_replica(stack, http)
        fault.figures["replicas_in_use_after_s"] = in_use
        if in_use is None:
            fault.figures["replica_states_per_edge"] = states
        fault.steps.append(
            f"every edge uses every replica after {in_use} s" if in_use is not None
            else f"some edge still does not use every replica after {REPLICAS_IN_USE_S:g} s: states {states}"
        )  # fmt: skip
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
    if fault.streams_ended_at is not None and in_flight != 0:  # such leases end when keyring reclaims them
        deadline = fault.streams_ended_at + stack.stream_grace_s + RECLAIM_SLACK_S
        while in_flight != 0 and time.time() < deadline:
            await asyncio.sleep(0.25)
            in_flight = leases_left(leases_before, await leases_in_flight(stack, http))
        fault.figures["leases_reclaimed_after_s"] = round(time.time() - fault.streams_ended_at, 1)
    owed_at_end = await owed_settled(stack, http)
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
    cut = cut_by_kill(load, fault)
    errors = {status: n for status, n in sorted((load.statuses - cut).items()) if status != "200"}
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
        "usage_counted": None if usage_before is None or usage_after is None else usage_after[0] - usage_before[0],
        "usage_unknown": None if usage_before is None or usage_after is None else usage_after[1] - usage_before[1],
        "upstream_calls": upstream,
        "extra_upstream_429s": max(0, answered_429 - allowed_429),
        "upstream_429s": answered_429,
        "recovered_after_s": recovered,
        **({"releases_owed_when_counted": owed_at_end} if any(owed_at_end) else {}),
        **({"cut_by_kill": dict(cut)} if fault.killed_edge else {}),
        **(
            {"usage_over_count": usage_after[0] - usage_before[0] - upstream}
            if fault.killed_edge and usage_before is not None and usage_after is not None
            else {}
        ),
        **(phases(load, began, timing.warm_s, fault.window) if fault.window else {}),
        **fault.figures,
        "fault": fault.steps,
    }
    if fault.restore is not None:
        await fault.restore()
        result.update(fault.figures)
        result["fault"].append("stack whole again")
    result["violations"] = violations(result)
    return result


async def edges_use_every_replica(stack: Stack, http: aiohttp.ClientSession) -> tuple[float | None, list[list[Any]]]:
    """Seconds until every edge says every replica is healthy (REPLICAS_IN_USE_S at most: None), and the states
    each edge last gave the replicas in order (0 healthy, 1 slow, 2 down; None: not named)."""
    addresses = [stack.keyring_address(i) for i in range(len(stack.replicas))]
    began = time.time()
    seen: list[list[Any]] = []
    while time.time() < began + REPLICAS_IN_USE_S:
        healthy, seen = True, []
        for url in stack.edge_urls:
            try:
                async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=3)) as reply:
                    text = await reply.text()
            except (aiohttp.ClientError, TimeoutError):
                healthy = False
                break
            states = {
                line.split('replica="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith(REPLICA_STATE + "{")
            }
            if not states:  # an edge that does not say (before issue 19): nothing to wait for
                return 0.0, seen
            seen.append([states.get(address) for address in addresses])
            healthy = healthy and all(states.get(address) == 0 for address in addresses)
        if healthy:
            return round(time.time() - began, 1), seen
        await asyncio.sleep(0.25)
    return None, seen


async def owed_settled(stack: Stack, http: aiohttp.ClientSession) -> list[float | None]:
    """Wait (OWED_SETTLE_S at most) until no edge owes a release; what each edge still owes then."""
    deadline = time.time() + OWED_SETTLE_S
    while True:
        owed = await edge_metric(stack, http, OWED)
        if (not any(owed) and None not in owed) or time.time() >= deadline:
            return owed
        await asyncio.sleep(0.25)


def cut_by_kill(load: Load, fault: Fault) -> Counter[str]:
    """Errors through the SIGKILLed edge as it died (streams cut, requests reset, sent before the Service saw it)."""
    if fault.killed_edge is None:
        return Counter()
    edge, killed = fault.killed_edge
    return Counter(
        c.status
        for c in load.completions
        if c.edge == edge and c.status != "200" and killed <= c.ended <= killed + KILL_CUT_S
    )


def phases(load: Load, began: float, warm_s: float, window: tuple[float, float]) -> dict[str, Any]:
    """Answers per second before, during and after a replica was frozen; latency of the requests it overlapped."""
    frozen, thawed = window
    stopped = max((c.ended for c in load.completions), default=thawed)

    def rate(start: float, end: float) -> float:
        ok = sum(1 for c in load.completions if c.status == "200" and not c.stream and start <= c.ended < end)
        return round(ok / max(end - start, 1e-9), 1)

    during = sorted(
        c.latency_s for c in load.completions if not c.stream and c.ended >= frozen and c.ended - c.latency_s < thawed
    )
    p99 = during[min(len(during) - 1, math.ceil(len(during) * 0.99) - 1)] if during else None
    return {
        # The warm phase: not the workers' first connections (half a second), nor the wait for replicas in use.
        "throughput_before": rate(max(began + 0.5, frozen - warm_s), frozen),
        "throughput_during": rate(frozen, thawed),
        "throughput_after": rate(thawed, stopped),
        "max_latency_during_s": round(during[-1], 3) if during else None,
        "p99_latency_during_s": round(p99, 3) if p99 is not None else None,
    }


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
    broken += usage_violations(result)
    if result["scenario"] == "storm_429":
        recovered = result["recovered_after_s"]
        if recovered is None or recovered > RECOVERY_BOUND_S:
            broken.append(f"storm: keys still cooling {recovered} s after the upstream recovered (bound 15 s)")
    return broken + lease_end_violations(result)


def usage_violations(result: dict[str, Any]) -> list[str]:
    """Usage against the upstream's count: equal, except where an edge was killed with calls in flight.

    There a lease reclaimed unreleased counts as a call of unknown outcome, whether or not its call reached
    the upstream (killed between grant and send, or a hedge's losing grant not yet released): what holds, and
    what docs/configuration.md ("Shutting down") states, is known outcomes <= upstream calls <= known + unknown
    (``usage_over_count``, the reclaimed leases whose call never reached the upstream, is reported).
    """
    counted, unknown, upstream = result["usage_counted"], result.get("usage_unknown"), result["upstream_calls"]
    if result.get("cut_by_kill") is None or counted is None or unknown is None:
        if counted != upstream:
            return [f"usage counted {counted} != upstream calls {upstream}"]
        return []
    known = counted - unknown
    if not known <= upstream <= counted:
        return [f"usage: known {known} <= upstream calls {upstream} <= known + unknown {counted} does not hold"]
    return []


def lease_end_violations(result: dict[str, Any]) -> list[str]:
    """Issue 19's bounds, for the scenarios whose figures name them."""
    broken = []
    if "replicas_in_use_after_s" in result and result["replicas_in_use_after_s"] is None:
        broken.append(
            f"an edge did not use every replica within {REPLICAS_IN_USE_S:g} s under load (states per edge"
            f" {result['replica_states_per_edge']}: 2 down): the fault reached only the edges that did"
        )
    if (
        "throughput_during" in result
        and result["throughput_during"] < FREEZE_THROUGHPUT_SHARE * result["throughput_before"]
    ):
        broken.append(
            f"throughput {result['throughput_during']}/s with a replica frozen < {FREEZE_THROUGHPUT_SHARE:g}"
            f" x {result['throughput_before']}/s before"
        )
    if "releases_owed_end" in result and result["releases_owed_cleared_after_s"] is None:
        broken.append(
            f"releases still owed to the dead replica {result['owed_bound_s']} s after its death:"
            f" {result['releases_owed_end']} per edge"
        )
    lines = result.get("edge_log_lines_naming_it", [])
    if any(n > GONE_LOG_LINES_BOUND for n in lines):
        broken.append(
            f"edges logged {lines} lines naming the dead replica in {result['seconds_dead']} s"
            f" (bound {GONE_LOG_LINES_BOUND} each: one per state change)"
        )
    if "budget_served_in_minute" in result:
        if result["budget_served_in_minute"] > result["budget_bound"]:
            broken.append(
                f"budget: {result['budget_served_in_minute']} served in the minute of the death"
                f" > {result['budget_bound']} ({BUDGET_RPM} + what the dead replica admitted after its last flush)"
            )
        late = result["refused_with_budget_left"].get("after_detection", 0)
        if late:
            broken.append(
                f"budget: {late} refused while the budget had room, over {result['detection_s']} s after the death"
            )
        other = {s: n for s, n in result["budget_statuses"].items() if s not in ("200", "429")}
        if other:
            broken.append(f"budget client errors: {other}")
    return broken


async def main_async(options: argparse.Namespace) -> int:
    timing = QUICK if options.quick else FULL
    every = (*SCENARIOS, *WIDE_SCENARIOS)
    default = SCENARIOS if options.quick else every
    chosen = options.only.split(",") if options.only else list(default)
    unknown = set(chosen) - set(every)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(every)}")
    workdir = tempfile.mkdtemp(prefix="chaos-bench-")
    broken = 0
    try:
        for replicas, names, subdir in ((2, SCENARIOS, ""), (WIDE_REPLICAS, WIDE_SCENARIOS, "wide")):
            if not set(names) & set(chosen):
                continue
            stack = await start_stack(os.path.join(workdir, subdir), timing, replicas, options.keyring_log_level)
            try:
                connector = aiohttp.TCPConnector(limit=0, force_close=False)
                async with aiohttp.ClientSession(connector=connector) as http:
                    for name in names:
                        if name not in chosen:
                            continue
                        result = await run_scenario(stack, http, every.index(name), name, timing)
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
    parser.add_argument(
        "--quick", action="store_true", help="issue 13's scenarios in a reduced form (about a minute); with --only, any"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a scenario breaks an acceptance bound")
    parser.add_argument(
        "--only", default="", help="comma-separated scenarios: " + ", ".join((*SCENARIOS, *WIDE_SCENARIOS))
    )
    parser.add_argument("--keep-logs", default="", metavar="DIR", help="copy the services' logs there")
    parser.add_argument(
        "--keyring-log-level", default="", metavar="LEVEL", help="the replicas' LOG_LEVEL (DEBUG: cooldowns decided)"
    )
    options = parser.parse_args()
    sys.exit(asyncio.run(main_async(options)))


if __name__ == "__main__":
    main()
