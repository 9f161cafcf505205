"""Thousands of concurrent slow streams through ONE edge: errors, time to last byte, the edge's memory and CPU.

Starts a local etcd, one keyring replica, the simulator (slow: the first
chunk after ``--chunk-delay-s``, then one every ``--chunk-delay-s``, so an
answer takes chunks x delay upstream) and one edge, each a subprocess on
127.0.0.1 over mutual TLS (``processes.py``), seeds a pool so that no cap is
the limit (``--keys`` keys, no in-flight cap or per-minute budget on a key, a
token without budgets, the simulator's quotas off), then opens ``--streams``
``streamGenerateContent?alt=sse`` streams at once (or spread over
``--ramp-s``) with one aiohttp client, each timed to its last byte and
bounded by ``--timeout-s``. With ``--direct`` the same load goes to the
simulator first, without the edge: what the client and the simulator
themselves cost at that scale.

Prints JSON: streams, errors by kind (``http_<status>``, the client
exception's name, ``client_timeout``, ``incomplete``: fewer events than the
upstream sends), p50/p99/max time to last byte beside the upstream's own
duration, the most streams open at once, the edge's peak RSS (VmHWM), its
RSS before the load, file descriptors at peak and CPU seconds, keyring's and
the simulator's RSS, the kernel's listen-queue overflows during the run,
and what keyring counted: usage equal to the upstream's calls and no lease
left held (``guarantees``). RLIMIT_NOFILE is raised for this process and so
for every process it starts (a stream holds two descriptors in the edge:
``edge_stream_ceiling`` is what the limit allows; where the hard limit cannot
be raised, more streams than that cannot run through one edge). Opened all
at once, thousands of streams measure the edge's CPU for the burst (its event
loop falls behind: time to first byte, and 503s once an acquire waits past
EDGE_KEYRING_TIMEOUT_S); ``--ramp-s`` spreads them so that they are all open
together without that. Only the processes it started are stopped, by PID.
Loopback only.

    python bench/stream_scale_bench.py [--streams 1000] [--chunks 5] [--chunk-delay-s 2] [--keys 100]
                                       [--timeout-s 60] [--ramp-s 0] [--direct] [--edge-env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from edge_bench import BODY, MODEL, seed  # noqa: E402
from processes import Service, admin_channel, edge_env, etcd_ca, keyring_env, sim_counts, start_keyring  # noqa: E402

from services.common.proto.keyring.v1 import keyring_pb2 as pb  # noqa: E402
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc  # noqa: E402
from services.devstack.certs import LocalCA  # noqa: E402
from services.devstack.etcd_server import EtcdServer, free_port  # noqa: E402
from services.devstack.fake_keys import fake_gemini_key  # noqa: E402
from services.keyring.sealing import generate_kek  # noqa: E402

PATH = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
SAMPLE_EVERY_S = 0.5
IN_FLIGHT = "keyring_leases_in_flight "


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Soft (and, when allowed, hard) RLIMIT_NOFILE up to ``wanted``; inherited by the processes started after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        except (ValueError, OSError):  # not privileged: the hard limit stays
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    elif soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- what /proc says about a process -------------------------------------------


def status_kb(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status, in kB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def listen_overflows() -> int:
    """The kernel's ListenOverflows counter (connections dropped because an accept queue was full), all sockets."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:], strict=True))["ListenOverflows"])
    return 0


def prompt(size: int) -> bytes:
    """The benchmark's body, its text padded to ``size`` bytes (0: as it is): a conversation's worth of prompt."""
    if size <= 0:
        return BODY
    text = ("Say hello to the benchmark. " * (size // 28 + 1))[:size]
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]}).encode()


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


# -- the load --------------------------------------------------------------------


class Load:
    """``streams`` SSE streams at once, each timed to its last byte; what went wrong, by kind."""

    def __init__(self, streams: int, events: int, timeout_s: float, ramp_s: float, body: bytes = BODY) -> None:
        self.streams, self.events, self.timeout_s, self.ramp_s, self.body = streams, events, timeout_s, ramp_s, body
        self.durations: list[float] = []
        self.first_bytes: list[float] = []  # until the status line: the edge commits at the first chunk
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}  # an error's first answer or message, by kind
        self.open = self.peak_open = 0

    async def run(self, session: aiohttp.ClientSession, url: str, key: str) -> float:
        """Every stream to its end; the run's wall time."""
        headers = {"x-goog-api-key": key, "Content-Type": "application/json"}
        began = time.perf_counter()

        async def one(index: int) -> None:
            if self.ramp_s:
                await asyncio.sleep(self.ramp_s * index / self.streams)
            await self._stream(session, url, headers)

        await asyncio.gather(*(one(index) for index in range(self.streams)))
        return time.perf_counter() - began

    async def _stream(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        started = time.perf_counter()
        events = 0
        opened = False
        try:
            async with asyncio.timeout(self.timeout_s):
                async with session.post(url, data=self.body, headers=headers) as response:
                    if response.status != 200:
                        self._error(f"http_{response.status}", (await response.read())[:300].decode(errors="replace"))
                        return
                    opened = True
                    self.first_bytes.append(time.perf_counter() - started)
                    self.open += 1
                    self.peak_open = max(self.peak_open, self.open)
                    async for line in response.content:
                        if line.startswith(b"data:"):
                            events += 1
        except TimeoutError:
            self._error("client_timeout", f"no end within {self.timeout_s} s")
            return
        except aiohttp.ClientError as error:
            self._error(type(error).__name__, str(error)[:300])
            return
        finally:
            self.open -= opened
        if events < self.events:
            self._error("incomplete", f"{events} of {self.events} events")
            return
        self.durations.append(time.perf_counter() - started)

    def _error(self, kind: str, sample: str) -> None:
        self.errors[kind] += 1
        self.samples.setdefault(kind, sample)

    def figures(self, wall_s: float) -> dict[str, Any]:
        def quantiles(values: list[float]) -> dict[str, float | None]:
            ordered = sorted(values)

            def quantile(q: float) -> float | None:
                return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None

            return {"p50": quantile(0.5), "p99": quantile(0.99), "max": quantile(1.0)}

        return {
            "streams": self.streams,
            "completed": len(self.durations),
            "errors": dict(sorted(self.errors.items())),
            "error_samples": self.samples,
            "peak_open_streams": self.peak_open,
            "time_to_first_byte_s": quantiles(self.first_bytes),
            "time_to_last_byte_s": quantiles(self.durations),
            "wall_s": round(wall_s, 1),
        }


async def sample_peak(pid: int, peak: dict[str, int], stop: asyncio.Event) -> None:
    """The edge's most open descriptors while the load runs (its peak RSS is the kernel's VmHWM)."""
    while not stop.is_set():
        peak["fds"] = max(peak.get("fds", 0), open_fds(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY_S)


async def events_per_answer(session: aiohttp.ClientSession, sim_url: str) -> tuple[int, float]:
    """The simulator's own answer, once, alone: its events and its duration (the upstream's own time)."""
    headers = {"x-goog-api-key": fake_gemini_key("stream-bench-direct"), "Content-Type": "application/json"}
    started = time.perf_counter()
    async with session.post(sim_url + PATH, data=BODY, headers=headers) as response:
        response.raise_for_status()
        events = sum([line.startswith(b"data:") async for line in response.content])
    return events, time.perf_counter() - started


# -- what keyring counted -----------------------------------------------------------


async def keyring_figures(ca: LocalCA, address: str, metrics_port: int, http: aiohttp.ClientSession) -> dict[str, int]:
    """The pool's requests counted (usage, flushed when asked), of unknown outcome, and leases still held."""
    async with admin_channel(ca, address) as channel:
        reply = await pb_grpc.AdminServiceStub(channel).GetUsage(
            pb.GetUsageRequest(pool="bench", window_s=3600), timeout=10
        )
    rows = [row.figures for row in reply.pools if row.id == "bench"]
    async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as answer:
        text = await answer.text()
    held = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(IN_FLIGHT))
    return {"usage": sum(f.requests for f in rows), "unknown": sum(f.unknown for f in rows), "held": held}


async def settled(
    ca: LocalCA, address: str, metrics_port: int, http: aiohttp.ClientSession, calls: int, deadline_s: float = 20.0
) -> dict[str, int]:
    """Keyring's figures once usage reaches the upstream's calls and no lease is held (or the deadline passed)."""
    stop_at = time.monotonic() + deadline_s
    while True:
        found = await keyring_figures(ca, address, metrics_port, http)
        if (found["usage"] >= calls and not found["held"]) or time.monotonic() > stop_at:
            return found
        await asyncio.sleep(0.5)


# -- the run -------------------------------------------------------------------------


async def run(options: argparse.Namespace, limits: tuple[int, int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        logs = options.log_dir or workdir
        os.makedirs(logs, exist_ok=True)
        ca = LocalCA(os.path.join(workdir, "tls"))
        etcd = EtcdServer(data_dir=os.path.join(workdir, "etcd"), tls=etcd_ca(ca).issue("etcd").files)
        simulator = Service("simulator", "services.simulator", {}, logs, ["--port", str(free_port())])
        started: list[Service] = [simulator]
        try:
            await etcd.astart()
            simulator.start()
            sim_url = await simulator.announced(r"simulator listening on (\S+)")
            port, metrics_port = free_port(), free_port()
            env = keyring_env(
                ca, etcd, sim_url, kek=generate_kek(), replica_id="streams", port=port, metrics_port=metrics_port,
                prefix="/stream-bench/",
            )  # fmt: skip
            keyring = Service("keyring", "services.keyring", env, logs)
            started.append(keyring)
            address = f"127.0.0.1:{port}"
            await start_keyring(keyring, address, ca)
            token = await seed(address, options.keys, ca.issue("keyring-admin"))
            edge_port = free_port()
            env = edge_env(ca, sim_url, [address], edge_port)
            env.update(dict(pair.split("=", 1) for pair in options.edge_env))
            edge = Service("edge", "services.edge", env, logs)
            started.append(edge)
            edge.start()
            edge_url = await edge.announced(r"edge listening on (\S+)")
            return await measure(options, limits, ca, address, metrics_port, sim_url, edge_url, token, started)
        finally:
            for service in reversed(started):
                service.stop()
            await etcd.astop()


async def measure(
    options: argparse.Namespace,
    limits: tuple[int, int],
    ca: LocalCA,
    address: str,
    metrics_port: int,
    sim_url: str,
    edge_url: str,
    token: str,
    services: list[Service],
) -> dict[str, Any]:
    simulator, keyring, edge = (service.process.pid for service in services if service.process is not None)
    print(f"pids: edge {edge}, keyring {keyring}, simulator {simulator}", file=sys.stderr, flush=True)  # py-spy
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # one connection per stream, as separate clients
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=options.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        config = {
            "default_chunks": options.chunks,
            "default_delay_s": options.chunk_delay_s,
            "default_chunk_delay_s": options.chunk_delay_s,
        }
        async with http.post(f"{sim_url}/_sim/config", json=config) as reply:
            reply.raise_for_status()
        events, upstream_s = await events_per_answer(http, sim_url)
        result: dict[str, Any] = {}
        if options.direct:
            load = Load(options.streams, events, options.timeout_s, options.ramp_s, prompt(options.prompt_bytes))
            wall = await load.run(http, sim_url + PATH, fake_gemini_key("stream-bench-direct"))
            result["direct"] = load.figures(wall)
            print(f"direct: {json.dumps(result['direct'])}", file=sys.stderr, flush=True)
        calls_before = sum((await sim_counts(sim_url, http)).values())
        idle_kb, idle_fds = status_kb(edge, "VmRSS"), open_fds(edge)
        pids = {"edge": edge, "keyring": keyring, "simulator": simulator}
        cpu_before = {name: cpu_s(pid) for name, pid in pids.items()}
        overflows_before = listen_overflows()
        peak: dict[str, int] = {}
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peak(edge, peak, stop))
        load = Load(options.streams, events, options.timeout_s, options.ramp_s, prompt(options.prompt_bytes))
        wall = await load.run(http, edge_url + PATH, token)
        stop.set()
        await sampler
        through_edge = load.figures(wall)
        through_edge["listen_overflows"] = listen_overflows() - overflows_before
        through_edge["cpu_s"] = {name: round(cpu_s(pid) - cpu_before[name], 1) for name, pid in pids.items()}
        through_edge["edge"] = {
            "peak_rss_mb": mb(status_kb(edge, "VmHWM")),
            "rss_before_load_mb": mb(idle_kb),
            "peak_open_fds": peak.get("fds", 0),
            # Two descriptors a stream in the edge (its client's connection, its upstream one).
            "peak_streams_held": (peak.get("fds", 0) - idle_fds) // 2,
        }
        through_edge["keyring"] = {
            "peak_rss_mb": mb(status_kb(keyring, "VmHWM")),
            "rss_mb": mb(status_kb(keyring, "VmRSS")),
        }
        through_edge["simulator_peak_rss_mb"] = mb(status_kb(simulator, "VmHWM"))
        held = through_edge["edge"]["peak_streams_held"]
        if held:
            through_edge["edge"]["rss_per_stream_kb"] = round((status_kb(edge, "VmHWM") - idle_kb) / held, 1)
        result["edge"] = through_edge
        calls = sum((await sim_counts(sim_url, http)).values()) - calls_before
        counted = await settled(ca, address, metrics_port, http, calls)
        result["guarantees"] = {
            "upstream_calls": calls,
            "usage_counted": counted["usage"],
            "usage_unknown": counted["unknown"],
            "leases_still_held": counted["held"],
            # Checked on a run without errors: a call whose client left is released as cancelled and not counted
            # (keyring/desk.py), a connect that failed is counted though it never reached the simulator.
            "kept": not counted["held"] and (counted["usage"] == calls if not load.errors else None),
        }
    return {
        "benchmark": "concurrent slow SSE streams through one edge",
        "streams": options.streams,
        "upstream": {
            "chunks": options.chunks,
            "chunk_delay_s": options.chunk_delay_s,
            "events_per_answer": events,
            "own_duration_s": round(upstream_s, 2),
        },
        "caps": f"none in the way: {options.keys} keys without in-flight cap or per-minute budget, a token without"
        " budgets, the simulator's quotas off",
        "client": {
            "timeout_s": options.timeout_s,
            "ramp_s": options.ramp_s,
            "connector_limit": 0,
            "body_bytes": len(prompt(options.prompt_bytes)),
        },
        "edge_env": dict(pair.split("=", 1) for pair in options.edge_env),
        "rlimit_nofile": list(limits),
        # The most streams one edge can hold here: two descriptors each, 64 kept (services/edge/capacity.py).
        "edge_stream_ceiling": (limits[0] - 64) // 2,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "note": "client, simulator, keyring, etcd and edge share this machine's CPUs and its loopback",
        "results": result,
        "targets": {"errors": 0, "edge_peak_rss_mb": 300},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--chunk-delay-s", type=float, default=2.0)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--timeout-s", type=float, default=60.0, help="a stream not ended by then is an error")
    parser.add_argument("--ramp-s", type=float, default=0.0, help="spread the streams' starts over this long")
    parser.add_argument("--prompt-bytes", type=int, default=0, help="pad the prompt's text to this many bytes")
    parser.add_argument("--direct", action="store_true", help="the same load to the simulator first, no edge")
    parser.add_argument("--log-dir", default="", help="keep the services' logs there (default: removed)")
    parser.add_argument("--edge-env", action="append", default=[], metavar="NAME=VALUE", help="an edge setting")
    options = parser.parse_args()
    # Per stream: two descriptors in the edge (client, upstream), one in the simulator, one here; and room.
    limits = raise_nofile(4 * options.streams + 4096)
    print(json.dumps(asyncio.run(run(options, limits)), indent=2))


if __name__ == "__main__":
    main()
