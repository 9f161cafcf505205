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
            assert "--listen-client-urls=https://0.0.0.0:2379" in compose()["services"]["etcd"]["command"]
            assert "--client-cert-auth" in compose()["services"]["etcd"]["command"]  # keyring shows its certificate


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
    # uploads reach the edges through "location /" (EDGE_PUBLIC_BASE_URL points at lb); /ws upgrades
    assert compose_env(app_services()["edge-1"])["EDGE_PUBLIC_BASE_URL"] == f"http://localhost:{listen}"
    websocket = re.search(r"location /ws \{(.*?)\}", conf, re.S)
    assert websocket is not None and "proxy_set_header Upgrade $http_upgrade;" in websocket.group(1)
    assert "proxy_read_timeout 3600s;" in websocket.group(1)


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


def test_admin_is_published_only_over_tls() -> None:
    """Admin's plain HTTP stays inside the compose network; browsers reach it through nginx with TLS."""
    services = compose()["services"]
    admin = services["admin"]
    assert not admin.get("ports"), "admin must not publish its plain-HTTP port"
    env = compose_env(admin)
    assert env["ADMIN_COOKIE_SECURE"] == "true"
    proxy = services["admin-tls"]
    conf = (ROOT / "deploy" / "compose" / "admin-nginx.conf").read_text()
    assert "./deploy/compose/admin-nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    listen = re.search(r"listen (\d+) ssl;", conf)
    assert listen, "admin-tls must listen with ssl"
    assert [str(p).rsplit(":", 1)[1] for p in proxy["ports"]] == [listen.group(1)]
    assert len(re.findall(r"^\s*listen\s", conf, re.MULTILINE)) == 1, "no second (plain) listener"
    for directive, secret in (("ssl_certificate", "admin_tls_cert"), ("ssl_certificate_key", "admin_tls_key")):
        assert f"{directive} /run/secrets/{secret};" in conf
        assert secret in proxy["secrets"]
    assert re.search(r"ssl_protocols TLSv1\.2 TLSv1\.3;", conf)
    assert f"server admin:{_listen_port(admin)} resolve;" in conf
    # The one proxy admin trusts for X-Forwarded-For is this one, and it replaces the header.
    assert env["ADMIN_TRUSTED_PROXIES"] == proxy["networks"]["default"]["ipv4_address"]
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    subnet = compose()["networks"]["default"]["ipam"]["config"][0]["subnet"]
    import ipaddress

    assert ipaddress.ip_address(env["ADMIN_TRUSTED_PROXIES"]) in ipaddress.ip_network(subnet)
    body = int(env.get("ADMIN_MAX_BODY_BYTES", setting_default("ADMIN_", "max_body_bytes")))
    size = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))  # type: ignore[union-attr]
    assert size * 1024 * 1024 >= body


def test_prometheus_lifecycle_api_is_off() -> None:
    """--web.enable-lifecycle lets anyone who reaches Prometheus shut it down or reload it."""
    command = compose()["services"]["prometheus"]["command"]
    assert not [flag for flag in command if "enable-lifecycle" in flag or "enable-admin-api" in flag]


def test_secrets_guide_keeps_secret_files_private() -> None:
    """The guide never makes a secret group- or world-readable (it used to chmod 0644 the KEK)."""
    guide = (ROOT / "deploy" / "compose" / "secrets" / "README").read_text()
    modes = re.findall(r"chmod\s+(?:-\w+\s+)*([0-7]{3,4}|[ugoa]*[+=][rwx]+)\s+([^\n]+)", guide)
    assert modes, "the guide sets the files' modes"
    for mode, files in modes:
        assert re.fullmatch(r"0?[0-7]00", mode), f"chmod {mode} {files}: only the owner may read a secret"
    chmodded = " ".join(files for _, files in modes)
    for secret in compose()["secrets"].values():
        assert Path(secret["file"]).name in chmodded, f"the guide leaves {secret['file']} at its default mode"
    assert "umask 077" in guide
    assert not re.search(r"\b0?6[4-7][4-7]\b|\b0?4[4-7][4-7]\b|o\+r|a\+r", guide)
