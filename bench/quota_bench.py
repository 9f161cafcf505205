"""Quota intelligence under load (issue 14): how much of the projects' quota keyring spends, and at what cost in 429s.

Starts the whole stack as subprocesses on 127.0.0.1 with mutual TLS (a local
CA from services/devstack/certs.py): one etcd, two keyring replicas, one edge
and the Gemini simulator (50 ms think time). Per scenario one pool of 12 keys
in 4 projects of its own (3 each, mapped in the simulator through ``POST
/_sim/projects``; a Google project belongs to one pool) and a client token. The simulator enforces per-(project,
model) limits (``POST /_sim/quotas``) and answers a refused request 429 with
QuotaFailure but WITHOUT RetryInfo.

A closed-loop aiohttp client (concurrency 8 per scenario) posts
``generateContent`` to the edge for ``--seconds`` (default 90) per scenario;
a client 429 is waited out (its Retry-After, at most 1 s) and the worker goes
on (any other error: 0.1 s). Four scenarios, each on its own model and pool
(so nothing learnt in one helps another):

  rpm           every project: 600 requests per minute (``--rpm``); one small
                prompt; keyring knows no limit in advance: it learns them
                from the 429s and paces leases
  tpm           every project: 120,000 input tokens per minute (``--tpm``), no
                request limit; prompts of about 25, 200 and 800 tokens in turn
                (about 342 on average); learnt likewise
  rpm_operator  60 requests per minute (``--operator-rpm``), and the pool's
                policy says so (``quota_requests_per_minute``): nothing to learn
  tpm_operator  12,000 input tokens per minute (``--operator-tpm``), the pool's
                ``quota_input_tokens_per_minute`` says so

Why the learnt scenarios' limits are large: learning a limit costs the 429s of
the calls in flight to the project when it is first hit (about 2-3 per
project at this concurrency, once per model), a fixed cost; the acceptance
share of 0.5 % then needs about 2,000 or more upstream calls per run. At the
issue's original limits (60/min, 12,000 tokens/min) a 90 s run makes about
500 calls, so the same dozen 429s are 2-3 %: the operator variants show those
limits without the learning cost. ``--parallel`` runs the chosen scenarios at
once (one run's time; they share the machine).

Each scenario's load starts 0.2 s after a simulator window begins (windows are
fixed and epoch-aligned, as in the simulator and in keyring), so the run is
``--seconds`` from a window's start. The ceiling is what the simulator could
admit over the run: the 4 projects' limits times the windows the run touches
(``windows_touched``, partial last window included: a window's quota can be
spent in a couple of seconds at this concurrency, so a partial window is a
whole one's worth of ceiling). ``ceiling_pro_rata`` (limits x seconds /
window) is printed too; it is the lenient reading (served may exceed it).
For ``tpm`` the ceiling, and what is served, are input tokens (the
``promptTokenCount`` the simulator reports on each 200).

Figures per scenario (one JSON line each): seconds, windows_touched,
ceiling, served (requests answered 200; for tpm also served_tokens),
served_share_of_ceiling, upstream_calls (the simulator's per-key counts,
this scenario's delta), upstream_429s (= upstream_calls - client 200s: the
simulator fails nothing else here, a refused request consumes nothing, and
every client 200 is exactly one admitted upstream call, even when the edge
failed over from a 429), upstream_429_share, client_429s, other client
errors, learnt limits (admin ListQuotas), the targets and ``meets_targets``;
and split at the end of the first window (the cold start, when limits are
learnt, and the steady state after it): upstream_429s_first_window,
upstream_calls_after_first_window, upstream_429s_after_first_window.

Acceptance targets (issue 14): served >= 95 % of the ceiling and upstream
429s <= 0.5 % of upstream calls, in each scenario.

``--window-s`` shortens the SIMULATOR's minute for a quick smoke run. Keyring
counts its windows in fixed 60 s epoch minutes (services/keyring/domain/limits.py
``window``), so with a shorter simulator window keyring paces a learnt limit
per 60 s while the simulator frees it every ``window_s``: the served share
then falls to about window_s / 60 by construction. Such a run exercises the
stack end to end; its ``meets_targets`` says nothing (it is printed with
``honest: false``). Only ``--window-s 60`` (the default) measures keyring.

Only the processes this run started are stopped, by PID.

    python bench/quota_bench.py [--seconds 90] [--window-s 60] [--only rpm,tpm,...] [--parallel] [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
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

PROJECTS = 4
KEYS_PER_PROJECT = 3
CONCURRENCY = 8
THINK_S = 0.05
REQUEST_TIMEOUT_S = 30.0
CLIENT_429_WAIT_MAX_S = 1.0
ERROR_PAUSE_S = 0.1
START_AFTER_BOUNDARY_S = 0.2
RPM = 600
TPM = 120_000
# The operator variants learn nothing, so the issue's original limits measure them.
OPERATOR_RPM = 60
OPERATOR_TPM = 12_000
TARGET_SERVED_SHARE = 0.95
TARGET_UPSTREAM_429_SHARE = 0.005
SMALL = "Say hello to the quota. "
# About 25, 200 and 800 tokens as the simulator counts them (4 characters a token).
SIZES = (100, 800, 3200)
# Each scenario has its own pool (12 keys in 4 projects of its own), token and model; "_operator": the pool's
# policy sets the simulator's limit (quota_requests_per_minute / quota_input_tokens_per_minute), nothing to learn.
SCENARIOS = ("rpm", "tpm", "rpm_operator", "tpm_operator")


def body(chars: int) -> bytes:
    text = (SMALL * (chars // len(SMALL) + 1))[:chars]
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]}).encode()


@dataclass
class Stack:
    workdir: str
    ca: LocalCA
    etcd: EtcdServer
    simulator: Service
    sim_url: str = ""
    edge_url: str = ""

    def __post_init__(self) -> None:
        self.replicas: list[Service] = []
        self.keyring_ports: list[int] = []
        self.edge: Service | None = None
        self.key_projects: dict[str, str] = {}
        self.pool_keys: dict[str, list[str]] = {}  # scenario -> its pool's secrets
        self.tokens: dict[str, str] = {}  # scenario -> its pool's client token

    def admin_channel(self, index: int = 0) -> grpc.aio.Channel:
        return admin_channel(self.ca, f"127.0.0.1:{self.keyring_ports[index]}")

    def stop_all(self) -> None:
        for service in [*([self.edge] if self.edge else []), *self.replicas, self.simulator]:
            service.stop()
        self.etcd.stop()


async def start_stack(workdir: str, limits: dict[str, int]) -> Stack:
    ca = LocalCA(os.path.join(workdir, "tls"))
    etcd = EtcdServer(
        data_dir=os.path.join(workdir, "etcd"),
        port=free_port(),
        peer_port=free_port(),
        tls=etcd_ca(ca).issue("etcd").files,
    )
    simulator = Service("simulator", "services.simulator", {}, workdir, ["--port", str(free_port())])
    stack = Stack(workdir, ca, etcd, simulator)
    try:
        await etcd.astart()
        simulator.start()
        stack.sim_url = await simulator.announced(r"simulator listening on (\S+)")
        kek = generate_kek()
        for name in ("a", "b"):
            port = free_port()
            stack.keyring_ports.append(port)
            env = keyring_env(
                ca, etcd, stack.sim_url, kek=kek, replica_id=f"replica-{name}", port=port, metrics_port=free_port(),
                prefix="/quota/",
            )  # fmt: skip
            stack.replicas.append(Service(f"keyring-{name}", "services.keyring", env, workdir))

        addresses = [f"127.0.0.1:{port}" for port in stack.keyring_ports]
        await asyncio.gather(*(start_keyring(r, a, ca) for r, a in zip(stack.replicas, addresses, strict=True)))
        await seed(stack, limits)
        port = free_port()
        stack.edge = Service("edge", "services.edge", edge_env(ca, stack.sim_url, addresses, port), workdir)
        stack.edge.start()
        await stack.edge.announced(r"edge listening on (\S+)")
        stack.edge_url = f"http://127.0.0.1:{port}"
    except BaseException:
        stack.stop_all()
        raise
    return stack


def policy_of(name: str, limit: int) -> pb.Policy:
    """An operator scenario's pool says the simulator's limit; the others know nothing in advance."""
    if name == "rpm_operator":
        return pb.Policy(quota_requests_per_minute=limit)
    if name == "tpm_operator":
        return pb.Policy(quota_input_tokens_per_minute=limit)
    return pb.Policy()


async def seed(stack: Stack, limits: dict[str, int]) -> None:
    async with stack.admin_channel() as channel:
        admin = pb_grpc.AdminServiceStub(channel)
        for name in SCENARIOS:
            policy = policy_of(name, limits[name])
            await admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=name, policy=policy)))
            secrets = [fake_gemini_key(f"quota-{name}-{i}") for i in range(PROJECTS * KEYS_PER_PROJECT)]
            projects = {secret: f"proj-{name}-{i % PROJECTS}" for i, secret in enumerate(secrets)}
            inputs = [pb.KeyInput(secret=s, project=p) for s, p in projects.items()]
            reply = await admin.AddKeys(pb.AddKeysRequest(pool=name, keys=inputs))
            assert reply.added == len(secrets), reply.added
            stack.key_projects.update(projects)
            stack.pool_keys[name] = secrets
            stack.tokens[name] = (await admin.CreateToken(pb.CreateTokenRequest(pool=name, name="quota"))).token


async def sim_post(stack: Stack, http: aiohttp.ClientSession, path: str, data: dict[str, Any]) -> Any:
    async with http.post(f"{stack.sim_url}{path}", json=data) as reply:
        reply.raise_for_status()
        return await reply.json()


async def learnt_limits(stack: Stack, pool: str, model: str) -> list[dict[str, Any]] | str:
    """What keyring says it knows of ``model``'s limits (ListQuotas), or why it could not say."""
    try:
        async with stack.admin_channel() as channel:
            reply = await pb_grpc.AdminServiceStub(channel).ListQuotas(pb.ListQuotasRequest(pool=pool), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return f"ListQuotas failed: {exc}"
    rows = []
    for row in reply.quotas:
        if row.model == model:
            rows.append({"project": row.project, "metric": row.metric, "limit": row.limit, "source": row.source})
    return rows


class Load:
    """``CONCURRENCY`` closed-loop workers posting to the edge until stopped."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession, model: str, bodies: list[bytes], token: str) -> None:
        self.stack, self.http, self.bodies = stack, http, bodies
        self.url = f"{stack.edge_url}/v1beta/models/{model}:generateContent"
        self.headers = {"x-goog-api-key": token, "Content-Type": "application/json"}
        self.statuses: Counter[str] = Counter()
        self.served_tokens = 0
        self._turn = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(CONCURRENCY)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _worker(self) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        while not self._stop.is_set():
            self._turn += 1
            data = self.bodies[self._turn % len(self.bodies)]
            wait = 0.0
            try:
                async with self.http.post(self.url, data=data, headers=self.headers, timeout=timeout) as reply:
                    payload = await reply.read()
                    status = str(reply.status)
                    if reply.status == 200:
                        usage = json.loads(payload).get("usageMetadata", {})
                        self.served_tokens += int(usage.get("promptTokenCount", 0))
                    elif reply.status == 429:
                        try:
                            wait = float(reply.headers.get("Retry-After", "1"))
                        except ValueError:
                            wait = 1.0
            except TimeoutError:
                status = "timeout"
            except aiohttp.ClientError:
                status = "connection"
            self.statuses[status] += 1
            if status not in ("200", "429"):
                wait = ERROR_PAUSE_S  # counted, not hammered
            if wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(max(wait, 0.05), CLIENT_429_WAIT_MAX_S))


async def run_scenario(
    stack: Stack,
    http: aiohttp.ClientSession,
    name: str,
    seconds: float,
    window_s: float,
    limit: int,
    start_at: float | None = None,
) -> dict[str, Any]:
    """One scenario's load from ``start_at`` (default: just after the next window starts) for ``seconds``."""
    model = f"gemini-3.5-flash-quota-{name.replace('_', '-')}"
    rule: dict[str, Any] = {"model": model, "retry_info": False}
    if name.startswith("rpm"):
        rule["rpm"] = limit
        bodies, unit = [body(len(SMALL))], "requests"
    else:
        rule["tpm"] = limit
        bodies, unit = [body(chars) for chars in SIZES], "input_tokens"
    await sim_post(stack, http, "/_sim/quotas", rule)
    counts_before = await sim_counts(stack.sim_url, http)
    if start_at is None:  # just after a simulator window begins (epoch-aligned, like keyring's minute)
        start_at = next_window_start(window_s)
    await asyncio.sleep(max(start_at - time.time(), 0.0))
    load = Load(stack, http, model, bodies, stack.tokens[name])
    began = time.time()
    load.start()
    # At the end of the first window, what the cold start (learning the limits) cost so far.
    first_window_end = (math.floor(began / window_s) + 1) * window_s
    at_first_end: tuple[dict[str, int], int] | None = None
    if first_window_end < began + seconds:
        await asyncio.sleep(first_window_end - time.time())
        at_first_end = (await sim_counts(stack.sim_url, http), load.statuses.get("200", 0))
    await asyncio.sleep(max(began + seconds - time.time(), 0.0))
    await load.stop()
    ended = time.time()
    await asyncio.sleep(0.5)
    counts_after = await sim_counts(stack.sim_url, http)
    upstream = sum(counts_after.get(s, 0) - counts_before.get(s, 0) for s in stack.pool_keys[name])
    windows_touched = math.floor(ended / window_s) - math.floor(began / window_s) + 1
    elapsed = ended - began
    ceiling = PROJECTS * limit * windows_touched
    ceiling_pro_rata = PROJECTS * limit * elapsed / window_s
    ok = load.statuses.get("200", 0)
    served = ok if unit == "requests" else load.served_tokens
    upstream_429s = max(0, upstream - ok)
    share_served = served / ceiling if ceiling else 0.0
    share_429 = upstream_429s / upstream if upstream else 0.0
    later: dict[str, Any] = {}
    if at_first_end is not None:  # calls in flight at the boundary may land on either side: about
        first_counts, first_ok = at_first_end
        first = sum(first_counts.get(s, 0) - counts_before.get(s, 0) for s in stack.pool_keys[name])
        later_calls = upstream - first
        later_429s = max(0, later_calls - (ok - first_ok))
        later = {
            "upstream_429s_first_window": max(0, first - first_ok),
            "upstream_calls_after_first_window": later_calls,
            "upstream_429s_after_first_window": later_429s,
        }
    result: dict[str, Any] = {
        "scenario": name,
        "model": model,
        "limits_known": "operator (pool policy quota_*)" if name.endswith("_operator") else "learnt from 429s",
        "limit_per_project": {unit + "_per_window": limit, "retry_info": False},
        "projects": PROJECTS,
        "keys_per_project": KEYS_PER_PROJECT,
        "concurrency": CONCURRENCY,
        "window_s": window_s,
        "honest": window_s == 60,
        "seconds": round(elapsed, 1),
        "windows_touched": windows_touched,
        "ceiling_unit": unit,
        "ceiling": ceiling,
        "ceiling_pro_rata": round(ceiling_pro_rata, 1),
        "served_requests": ok,
        "served": served,
        "served_share_of_ceiling": round(share_served, 4),
        "served_share_of_pro_rata_ceiling": round(served / ceiling_pro_rata, 4) if ceiling_pro_rata else None,
        "upstream_calls": upstream,
        "upstream_429s": upstream_429s,
        "upstream_429_share": round(share_429, 4),
        **later,
        "client_429s": load.statuses.get("429", 0),
        "client_other_errors": {s: n for s, n in sorted(load.statuses.items()) if s not in ("200", "429")},
        "learnt_limits": await learnt_limits(stack, name, model),
        "targets": {
            "served_share_of_ceiling_min": TARGET_SERVED_SHARE,
            "upstream_429_share_max": TARGET_UPSTREAM_429_SHARE,
        },
    }
    result["meets_targets"] = share_served >= TARGET_SERVED_SHARE and share_429 <= TARGET_UPSTREAM_429_SHARE
    return result


def next_window_start(window_s: float) -> float:
    now = time.time()
    return (math.floor(now / window_s) + 1) * window_s + START_AFTER_BOUNDARY_S


async def main_async(options: argparse.Namespace) -> int:
    chosen = options.only.split(",") if options.only else list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if not 0 < options.seconds <= 3600 or not 0 < options.window_s <= 60:
        raise SystemExit("--seconds must be in (0, 3600] and --window-s in (0, 60]")
    limits = {
        "rpm": options.rpm,
        "tpm": options.tpm,
        "rpm_operator": options.operator_rpm,
        "tpm_operator": options.operator_tpm,
    }
    if min(limits.values()) < 1:
        raise SystemExit("every limit must be at least 1")
    workdir = tempfile.mkdtemp(prefix="quota-bench-")
    try:
        stack = await start_stack(workdir, limits)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                await sim_post(stack, http, "/_sim/config", {"default_delay_s": THINK_S})
                await sim_post(stack, http, "/_sim/projects", {"projects": stack.key_projects})
                await sim_post(stack, http, "/_sim/quotas", {"clear": True, "window_s": options.window_s})
                names = [name for name in SCENARIOS if name in chosen]
                if options.parallel:
                    start_at = next_window_start(options.window_s)
                    results = await asyncio.gather(
                        *(
                            run_scenario(stack, http, n, options.seconds, options.window_s, limits[n], start_at)
                            for n in names
                        )
                    )
                    for result in results:
                        print(json.dumps({**result, "parallel_with": [n for n in names if n != result["scenario"]]}))
                else:
                    for name in names:
                        result = await run_scenario(stack, http, name, options.seconds, options.window_s, limits[name])
                        print(json.dumps(result), flush=True)
        finally:
            stack.stop_all()
    finally:
        if options.keep_logs:
            shutil.copytree(workdir, options.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("etcd"))
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90.0, help="load per scenario (default 90)")
    parser.add_argument(
        "--window-s", type=float, default=60.0, help="the simulator's quota window (default 60; shorter: smoke only)"
    )
    parser.add_argument("--only", default="", help="comma-separated scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--parallel", action="store_true", help="run the chosen scenarios at once (one run's time)")
    parser.add_argument("--rpm", type=int, default=RPM, help=f"rpm: requests per project per window ({RPM})")
    parser.add_argument("--tpm", type=int, default=TPM, help=f"tpm: input tokens per project per window ({TPM})")
    parser.add_argument("--operator-rpm", type=int, default=OPERATOR_RPM, help=f"rpm_operator's limit ({OPERATOR_RPM})")
    parser.add_argument("--operator-tpm", type=int, default=OPERATOR_TPM, help=f"tpm_operator's limit ({OPERATOR_TPM})")
    parser.add_argument("--keep-logs", default="", metavar="DIR", help="copy the services' logs there")
    options = parser.parse_args()
    sys.exit(asyncio.run(main_async(options)))


if __name__ == "__main__":
    main()
