"""The image's entry points run: each service started exactly as the container would start it.

The command is the compose service's ``command`` (the Dockerfile's CMD form, ``python -m
services.X``, with ``python`` being this virtualenv's interpreter as it is /opt/venv's in the
image), the environment is the compose service's, rewritten only where a container differs from
this machine: service host names become 127.0.0.1, ports become free ports, /run/secrets files
become temporary files. etcd is a real one from services.devstack.etcd_server. Each service must
then pass the very health check the image (or compose, for keyring) declares, within a deadline.
Only the processes started here are stopped.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.etcd_server import EtcdServer, free_port
from tests.pki import session_pki

from .conftest import app_services, compose, compose_env, module_of
from .test_dockerfile import healthcheck

START_DEADLINE_S = 30.0
pytestmark = pytest.mark.etcd


class Started:
    """A service process started by this test, with its log."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.env, self.log = name, env, log
        argv = [sys.executable, *command[1:]] if command[0] == "python" else command
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.wait_stopped()

    def wait_stopped(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def wait_until_healthy(service: Started, check: list[str]) -> None:
    """Run the declared health check until it exits 0 (the container's notion of healthy)."""
    argv = [sys.executable, *check[1:]] if check[0] == "python" else check
    deadline = time.monotonic() + START_DEADLINE_S
    last = ""
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")
        env = {**os.environ, **service.env}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10, check=False)
        if done.returncode == 0:
            return
        last = done.stderr.strip().splitlines()[-1:] and done.stderr.strip().splitlines()[-1]
        time.sleep(0.3)
    pytest.fail(f"{service.name} not healthy within {START_DEADLINE_S} s (last: {last}):\n{service.log_tail()}")


def container_env(name: str, ports: dict[str, int], files: dict[str, Path], etcd: EtcdServer) -> dict[str, str]:
    """The compose environment of ``name`` mapped onto this machine."""
    env = compose_env(app_services()[name])
    for variable, value in list(env.items()):
        if value.startswith("/run/secrets/"):
            env[variable] = str(files[value.removeprefix("/run/secrets/")])
        elif variable == "KEYRING_ETCD_ENDPOINT":
            env[variable] = etcd.endpoint
        elif variable.endswith("_KEYRING_ADDRESSES"):
            env[variable] = ",".join(f"127.0.0.1:{ports[a.split(':')[0]]}" for a in value.split(","))
        elif variable in ("KEYRING_PORT", "EDGE_PORT", "ADMIN_PORT", "SIMULATOR_PORT"):
            env[variable] = str(ports[name])
        elif variable == "KEYRING_METRICS_PORT":
            env[variable] = str(ports[f"{name}/metrics"])
        elif variable == "HEALTHCHECK_URL":
            env[variable] = value.replace(value.split("/")[2], f"127.0.0.1:{ports[name]}")
        elif variable.endswith("_HOST"):
            env[variable] = "127.0.0.1"
    return env


@pytest.fixture(scope="module")
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from services.keyring.sealing import generate_kek

    root = tmp_path_factory.mktemp("secrets")
    files = {"keyring_kek": root / "kek", "admin_tokens": root / "admin_tokens"}
    files["keyring_kek"].write_text(generate_kek())
    files["admin_tokens"].write_text("ops:" + "t" * 32 + "\n")
    # Service identity: the session's certificates (the session etcd trusts etcd's CA, as compose's does).
    pki = session_pki()
    for name, cert in (
        ("keyring", pki.keyring), ("edge", pki.edge), ("admin_keyring", pki.admin), ("keyring_etcd", pki.etcd_client)
    ):
        files[f"{name}_crt"], files[f"{name}_key"] = Path(cert.cert_file), Path(cert.key_file)
    files["tls_ca"], files["etcd_ca"] = Path(pki.keyring.ca_file), Path(pki.etcd.ca_file)
    secrets = compose()["secrets"]
    assert files.keys() <= secrets.keys()
    return files


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    keyrings = [n for n, s in app_services().items() if module_of(s["command"]) == "services.keyring"]
    names = [*app_services(), *(f"{n}/metrics" for n in keyrings)]
    chosen: dict[str, int] = {}
    for name in names:
        port = free_port()
        while port in chosen.values():
            port = free_port()
        chosen[name] = port
    return chosen


@pytest.fixture(scope="module")
def stack(
    etcd_server: EtcdServer,
    ports: dict[str, int],
    secret_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Started]]:
    """Both keyring replicas first (edge and admin need them), then everything else at once."""
    logs = tmp_path_factory.mktemp("logs")
    started: dict[str, Started] = {}
    order = sorted(app_services(), key=lambda n: module_of(app_services()[n]["command"]) != "services.keyring")
    try:
        for name in order:
            module = module_of(app_services()[name]["command"])
            if importlib.util.find_spec(f"{module}.__main__") is None:
                continue  # reported by test_service_starts_and_is_healthy
            env = container_env(name, ports, secret_files, etcd_server)
            if "EDGE_SHUTDOWN_DELAY_S" in env:  # no load balancer here to stop routing first (tests/conftest.py)
                env["EDGE_SHUTDOWN_DELAY_S"] = "0"
            started[name] = Started(name, app_services()[name]["command"], env, logs / f"{name}.log")
        yield started
    finally:  # all told at once, then waited for: each edge's shutdown delay runs beside the others'
        for service in started.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in started.values():
            service.wait_stopped()


def _health_check(name: str) -> list[str]:
    declared = app_services()[name].get("healthcheck")
    return declared["test"][1:] if declared else healthcheck()


@pytest.mark.parametrize("name", sorted(app_services()))
def test_service_starts_and_is_healthy(name: str, stack: dict[str, Started]) -> None:
    module = module_of(app_services()[name]["command"])
    if name not in stack:
        pytest.skip(f"{module}.__main__ does not exist in this tree yet")
    wait_until_healthy(stack[name], _health_check(name))


@pytest.mark.parametrize("name", ["edge-1", "admin"])
def test_readiness_path_of_the_kubernetes_probe_answers(
    name: str, stack: dict[str, Started], ports: dict[str, int]
) -> None:
    """/readyz (the k8s readinessProbe) turns 200 once keyring is reachable."""
    if name not in stack:
        pytest.skip(f"{name}'s entry point does not exist in this tree yet")
    wait_until_healthy(stack[name], _health_check(name))
    url = f"http://127.0.0.1:{ports[name]}/readyz"
    deadline = time.monotonic() + START_DEADLINE_S
    status = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                status = answer.status
                if status == 200:
                    return
        except OSError as error:
            status = getattr(error, "code", str(error))
        time.sleep(0.3)
    pytest.fail(f"{url} answered {status}:\n{stack[name].log_tail()}")


def test_keyring_health_check_is_grpc_and_compose_overrides_the_image_check() -> None:
    for name, service in app_services().items():
        if module_of(service["command"]) == "services.keyring":
            test = service["healthcheck"]["test"]
            assert test[0] == "CMD" and "grpc_health" in test[-1] and "KEYRING_PORT" in test[-1], name
