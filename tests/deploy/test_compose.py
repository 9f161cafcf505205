"""docker-compose.yml: valid against the Compose specification, and consistent with what the
services read (settings names and values, ports), with its support files and with secrets kept
out of git. Checked statically: there is no Docker engine here."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import (
    MODULE_PREFIX,
    ROOT,
    app_services,
    compose,
    compose_env,
    compose_raw,
    load_settings,
    module_of,
    setting_default,
    unknown_settings,
)


def _compose_schema() -> dict[str, object]:
    """The Compose specification schema as vendored by check-jsonschema (with its license)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    assert (vendor / "licenses" / "LICENSE.compose-spec").is_file()
    return json.loads((vendor / "compose-spec.json").read_text())  # type: ignore[no-any-return]


def _listen_port(service: dict[str, object]) -> int:
    module = module_of(service["command"])  # type: ignore[arg-type]
    env = compose_env(service)
    if module == "services.simulator":
        return int(env["SIMULATOR_PORT"])
    prefix = MODULE_PREFIX[module]
    return int(env.get(f"{prefix}PORT", setting_default(prefix, "port")))


def test_valid_against_the_compose_specification() -> None:
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose_raw())]
    assert errors == []
    # and the schema does reject a typo, so the check above means something
    broken = json.loads(json.dumps(compose_raw()))
    broken["services"]["etcd"]["comand"] = ["etcd"]
    assert list(validator.iter_errors(broken))


def test_stack_has_the_expected_services_and_profiles() -> None:
    services = compose()["services"]
    modules = {name: module_of(s["command"]) for name, s in app_services().items()}
    assert sorted(n for n, m in modules.items() if m == "services.keyring") == ["keyring-1", "keyring-2"]
    assert sorted(n for n, m in modules.items() if m == "services.edge") == ["edge-1", "edge-2"]
    assert [n for n, m in modules.items() if m == "services.admin"] == ["admin"]
    assert services["simulator"]["profiles"] == ["demo"]
    assert services["otel-collector"]["profiles"] == ["otel"]
    assert {"etcd", "lb", "prometheus", "grafana"} <= services.keys()
    for name, service in app_services().items():
        assert service["image"] == app_services()["edge-1"]["image"], f"{name} runs the project image"
        assert service["build"]["dockerfile"] == "Dockerfile"


def test_env_vars_are_real_settings_and_validate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, service in app_services().items():
        env = compose_env(service)
        assert unknown_settings(env) == [], f"{name}: variables no settings class reads"
        module = module_of(service["command"])
        if module not in MODULE_PREFIX:
            continue
        if "KEYRING_KEK_FILE" in env:
            (tmp_path / "kek").write_text("A" * 43 + "=")
            env["KEYRING_KEK_FILE"] = str(tmp_path / "kek")
        if "ADMIN_ADMIN_TOKENS_FILE" in env:
            (tmp_path / "tokens").write_text("ops:" + "x" * 32 + "\n")
            env["ADMIN_ADMIN_TOKENS_FILE"] = str(tmp_path / "tokens")
        load_settings(MODULE_PREFIX[module], env, monkeypatch)


def test_ports_agree_with_settings() -> None:
    services = app_services()
    for name, service in services.items():
        port = _listen_port(service)
        for published in service.get("ports", []):
            assert int(str(published).rsplit(":", 1)[1]) == port, f"{name} publishes {published} but listens on {port}"
        url = compose_env(service).get("HEALTHCHECK_URL")
        if url:
            assert f":{port}/" in url, f"{name}: HEALTHCHECK_URL {url} misses port {port}"
    for name, service in services.items():
        env = compose_env(service)
        for variable in ("EDGE_KEYRING_ADDRESSES", "ADMIN_KEYRING_ADDRESSES"):
            for address in filter(None, env.get(variable, "").split(",")):
                host, _, port = address.partition(":")
                assert module_of(services[host]["command"]) == "services.keyring", f"{name}: {address}"
                assert int(port) == _listen_port(services[host]), f"{name}: {address}"
        if "KEYRING_ETCD_ENDPOINT" in env:
            assert env["KEYRING_ETCD_ENDPOINT"] == "etcd:2379"
            assert "--listen-client-urls=http://0.0.0.0:2379" in compose()["services"]["etcd"]["command"]


def test_secrets_come_from_git_ignored_files() -> None:
    spec = compose()
    for name, secret in spec["secrets"].items():
        path = ROOT / secret["file"]
        assert path.parent == ROOT / "deploy" / "compose" / "secrets", name
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{secret['file']} must be git-ignored"
        assert path.name in (path.parent / "README").read_text(), f"secrets/README must explain {path.name}"
    mounted = {s for service in spec["services"].values() for s in service.get("secrets", [])}
    assert mounted == spec["secrets"].keys()
    for name, service in app_services().items():
        for variable, value in compose_env(service).items():
            if variable.endswith("_FILE") and value.startswith("/run/secrets/"):
                assert value.removeprefix("/run/secrets/") in service["secrets"], f"{name}: {variable}"
            assert not re.fullmatch(r"[A-Za-z0-9+/]{43}=", value), f"{name}: {variable} looks like an inline key"


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    services = app_services()
    for name, service in services.items():
        module = module_of(service["command"])
        if module == "services.simulator":
            continue
        env = compose_env(service)
        port = int(env["KEYRING_METRICS_PORT"]) if module == "services.keyring" else _listen_port(service)
        assert f"{name}:{port}" in targets, f"Prometheus does not scrape {name}:{port}"
    assert "etcd:2381" in targets
    assert "--listen-metrics-urls=http://0.0.0.0:2381" in compose()["services"]["etcd"]["command"]
    rules_mount = next(v for v in compose()["services"]["prometheus"]["volumes"] if "rules" in v)
    assert rules_mount.split(":")[1].rstrip("/") + "/*.yml" in config["rule_files"]


def test_load_balancer_streams_to_both_edges() -> None:
    conf = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    servers = set(re.findall(r"server\s+([\w.-]+:\d+)", conf))
    edges = {f"{n}:{_listen_port(s)}" for n, s in app_services().items() if module_of(s["command"]) == "services.edge"}
    assert servers == edges
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_read_timeout 3600s;"):
        assert directive in conf
    body = int(compose_env(app_services()["edge-1"])["EDGE_MAX_BODY_BYTES"])
    size = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))  # type: ignore[union-attr]
    assert size * 1024 * 1024 >= body
    listen = int(re.search(r"listen (\d+);", conf).group(1))  # type: ignore[union-attr]
    assert any(str(p).endswith(f":{listen}") for p in compose()["services"]["lb"]["ports"])


def test_grafana_provisioning() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "keyring.yml").read_text())
    volumes = compose()["services"]["grafana"]["volumes"]
    dashboards_mount = next(v for v in volumes if v.startswith("./deploy/grafana/dashboards:"))
    assert provider["providers"][0]["options"]["path"] == dashboards_mount.split(":")[1]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


def test_mounted_support_files_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and "grafana/dashboards" not in source:  # dashboards: another issue's files
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
