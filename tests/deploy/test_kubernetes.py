"""deploy/k8s: every overlay renders, every object is schema-valid, and the manifests agree
with what the services actually read (settings names, ports, files, probes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv

from tests.docs import doc

from .conftest import (
    INTERNAL_PODS,
    K8S,
    MODULE_PREFIX,
    OVERLAYS,
    ROOT,
    Manifest,
    container_env,
    find,
    load_settings,
    module_of,
    one,
    render_overlay,
    setting_default,
    sources_to,
    unknown_settings,
    workloads,
)

# The oldest Kubernetes we claim (native gRPC probes are GA from 1.27) and the newest the
# installed kubernetes-validate knows.
K8S_VERSIONS = ("1.28.0", kv.latest_version() + ".0")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("cert-manager.io/v1", "Issuer"): "issuer.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.json",
}
# Secrets the manifests reference but never contain: created by the operator (docs/deployment.md).
EXTERNAL_SECRETS = {"keyring-kek", "admin-tokens", "edge-tls", "admin-tls"}
# Secrets cert-manager writes from components/cert-manager's Certificates (service identity).
ISSUED_SECRETS = {
    "keyring-grpc-tls", "keyring-edge-tls", "keyring-admin-tls", "keyring-etcd-client-tls", "etcd-server-tls",
}  # fmt: skip
# Metric names the alert rules may use (the names the services export).
KNOWN_METRICS = {
    "keyring_leases_denied_total",
    "keyring_keys",
    "keyring_live_replicas",
    "keyring_etcd_errors_total",
    "keyring_quota_limit",
    "keyring_quota_used",
    "edge_requests_total",
    "edge_request_duration_seconds_bucket",
}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "and", "or", "unless",
    "rate", "irate", "increase", "delta", "absent", "histogram_quantile", "le", "offset", "bool",
}  # fmt: skip
LABELS = {"pool", "route", "operation", "project", "model", "metric", "service_tier"}
OWN_SERVICES = ("keyring", "edge", "admin")


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def _pod_spec(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _containers(workload: Manifest) -> list[dict[str, Any]]:
    return _pod_spec(workload)["containers"]  # type: ignore[no-any-return]


def _own(manifests: tuple[Manifest, ...]) -> list[tuple[Manifest, dict[str, Any]]]:
    """(Deployment, container) of keyring, edge and admin."""
    own = [d for d in find(manifests, "Deployment") if d["metadata"]["name"] in OWN_SERVICES]
    return [(d, c) for d in own for c in _containers(d)]


def test_overlay_renders_and_validates_against_kubernetes_schemas(overlay: str) -> None:
    manifests = render_overlay(overlay)
    assert manifests
    for manifest in manifests:
        key = (manifest["apiVersion"], manifest["kind"])
        if key in CRD_SCHEMAS:
            schema = json.loads((Path(__file__).parent / "schemas" / CRD_SCHEMAS[key]).read_text())
            jsonschema.Draft202012Validator(schema).validate(manifest)
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(manifest, version, strict=True)
            except kv.ValidationError as error:
                where = f"{overlay}: {manifest['kind']}/{manifest['metadata']['name']}"
                pytest.fail(f"{where} invalid for {version}: {error}")


def test_strict_validation_rejects_unknown_fields(overlay: str) -> None:
    """Guard against a validator that accepts anything: a typo'd field must fail."""
    deployment = json.loads(json.dumps(one(render_overlay(overlay), "Deployment", "edge")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_env_vars_are_real_settings_and_validate(overlay: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    manifests = render_overlay(overlay)
    for deployment, container in _own(manifests):
        env = container_env(manifests, container)
        assert unknown_settings(env) == [], f"{deployment['metadata']['name']}: variables no settings class reads"
        module = module_of(container["command"])
        prefix = MODULE_PREFIX[module]
        assert f"services.{deployment['metadata']['name']}" == module
        # Build the real settings object from these values (secret files replaced by local ones).
        env = {name: value for name, value in env.items() if not value.startswith("<from ")}
        if "KEYRING_KEK_FILE" in env:
            (tmp_path / "kek").write_text("A" * 43 + "=")
            env["KEYRING_KEK_FILE"] = str(tmp_path / "kek")
        if "ADMIN_ADMIN_TOKENS_FILE" in env:
            (tmp_path / "tokens").write_text("ops:" + "x" * 32 + "\n")
            env["ADMIN_ADMIN_TOKENS_FILE"] = str(tmp_path / "tokens")
        load_settings(prefix, env, monkeypatch)


def test_ports_probes_and_services_match_settings(overlay: str) -> None:
    manifests = render_overlay(overlay)
    for deployment, container in _own(manifests):
        name = deployment["metadata"]["name"]
        prefix = MODULE_PREFIX[module_of(container["command"])]
        env = container_env(manifests, container)
        port = int(env.get(f"{prefix}PORT", setting_default(prefix, "port")))
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        main = "grpc" if name == "keyring" else "http"
        assert ports[main] == port, f"{name}: containerPort {ports[main]} but the service listens on {port}"
        for probe in ("readinessProbe", "livenessProbe"):
            spec = container[probe]
            if name == "keyring":  # the gRPC port wants a client certificate: the kubelet probes HTTP /healthz
                assert spec["httpGet"] == {"path": "/healthz", "port": "metrics"}, "keyring probes /healthz on metrics"
            else:
                assert spec["httpGet"]["port"] in (main, port)
                assert spec["httpGet"]["path"] == {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}[probe]
        if name == "keyring":
            assert ports["metrics"] == int(env["KEYRING_METRICS_PORT"])
        service = one(manifests, "Service", name)
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        for service_port in service["spec"]["ports"]:
            assert service_port["targetPort"] in ports, f"Service {name} targets a port the pod does not name"


def test_clients_reach_keyring_through_the_headless_service(overlay: str) -> None:
    manifests = render_overlay(overlay)
    keyring = one(manifests, "Service", "keyring")
    assert keyring["spec"]["clusterIP"] == "None", "headless: DNS returns every replica for client-side balancing"
    grpc_port = next(p["port"] for p in keyring["spec"]["ports"] if p["name"] == "grpc")
    for deployment, container in _own(manifests):
        env = container_env(manifests, container)
        for variable in ("EDGE_KEYRING_ADDRESSES", "ADMIN_KEYRING_ADDRESSES"):
            if variable in env:
                for address in env[variable].split(","):
                    host, _, port = address.partition(":")
                    assert (host, int(port)) == ("keyring", grpc_port), f"{deployment['metadata']['name']}: {address}"


def test_keyring_replicas_pdb_and_etcd(overlay: str) -> None:
    manifests = render_overlay(overlay)
    keyring = one(manifests, "Deployment", "keyring")
    assert keyring["spec"]["replicas"] >= 2
    pdb = one(manifests, "PodDisruptionBudget", "keyring")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= keyring["spec"]["template"]["metadata"]["labels"].items()
    assert 1 <= pdb["spec"]["minAvailable"] < keyring["spec"]["replicas"], "a PDB must still allow one eviction"
    container = _containers(keyring)[0]
    assert any(
        e["name"] == "KEYRING_REPLICA_ID" and e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        for e in container["env"]
    )
    endpoint = container_env(manifests, container)["KEYRING_ETCD_ENDPOINT"]
    statefulsets = find(manifests, "StatefulSet", "etcd")
    if statefulsets:  # in-cluster etcd: the endpoint is its client Service
        host, _, port = endpoint.partition(":")
        service = one(manifests, "Service", host)
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
        etcd = statefulsets[0]
        env = {e["name"]: e.get("value", "") for e in _containers(etcd)[0]["env"]}
        members = env["ETCD_INITIAL_CLUSTER"].split(",")
        assert len(members) == etcd["spec"]["replicas"], "ETCD_INITIAL_CLUSTER must list exactly the replicas"
        assert [m.split("=")[0] for m in members] == [f"etcd-{i}" for i in range(etcd["spec"]["replicas"])]
        assert etcd["spec"]["podManagementPolicy"] == "Parallel"
        if etcd["spec"]["replicas"] > 1:
            anti = _pod_spec(etcd)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
            assert one(manifests, "PodDisruptionBudget", "etcd")["spec"]["maxUnavailable"] == 1
    else:
        assert not endpoint.startswith("etcd:"), "no in-cluster etcd: the endpoint must point elsewhere"


def test_secret_files_are_mounted_where_settings_read_them(overlay: str) -> None:
    manifests = render_overlay(overlay)
    for deployment, container in _own(manifests):
        env = container_env(manifests, container)
        volumes = {v["name"]: v for v in _pod_spec(deployment).get("volumes", [])}
        tls_files = [v for v in env if re.fullmatch(r"[A-Z]+_(KEYRING_|ETCD_)?TLS_(CERT|KEY|CA)_FILE", v)]
        assert len(tls_files) >= 3, f"{deployment['metadata']['name']}: no TLS certificate for keyring"
        for variable in ("KEYRING_KEK_FILE", "ADMIN_ADMIN_TOKENS_FILE", *tls_files):
            if variable not in env:
                continue
            path = Path(env[variable])
            mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
            secret = volumes[mount["name"]]["secret"]
            assert path.name in {item["path"] for item in secret["items"]}
            assert secret["secretName"] in EXTERNAL_SECRETS | ISSUED_SECRETS


def test_secrets_are_referenced_not_shipped(overlay: str) -> None:
    manifests = render_overlay(overlay)
    assert find(manifests, "Secret") == [], "real secret values never live in the repo"
    referenced: set[str] = set()
    text = yaml.safe_dump_all(manifests)
    referenced |= set(re.findall(r"secretName: (\S+)", text))
    issued = {c["spec"]["secretName"] for c in find(manifests, "Certificate")}
    assert issued >= ISSUED_SECRETS, "components/cert-manager issues every service certificate"
    assert referenced <= EXTERNAL_SECRETS | issued
    deploying = doc("deployment")
    for secret in referenced:
        assert secret in deploying, f"docs/deployment.md must say how to create Secret {secret}"
    config_maps = {m["metadata"]["name"] for m in find(manifests, "ConfigMap")}
    for workload in workloads(manifests):
        for container in _containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps


def test_pods_are_hardened_and_bounded(overlay: str) -> None:
    manifests = render_overlay(overlay)
    for workload in workloads(manifests):
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][bound].keys(), f"{name}: {bound}"
            assert "readinessProbe" in container and "livenessProbe" in container, name
        if workload["kind"] == "Deployment":
            assert pod["topologySpreadConstraints"], f"{name}: spread replicas over nodes and zones"
            labels = workload["spec"]["template"]["metadata"]["labels"]
            for constraint in pod["topologySpreadConstraints"]:
                assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()


def test_edge_autoscaling_and_ingress(overlay: str) -> None:
    manifests = render_overlay(overlay)
    edge = one(manifests, "Deployment", "edge")
    assert "replicas" not in edge["spec"], "the HPA owns edge's replica count"
    hpa = one(manifests, "HorizontalPodAutoscaler", "edge")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "edge"}
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    env = container_env(manifests, _containers(edge)[0])
    annotations = one(manifests, "Ingress", "edge")["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-buffering"] == "off"
    assert annotations[prefix + "proxy-request-buffering"] == "off"
    read_timeout = float(env.get("EDGE_READ_TIMEOUT_S", setting_default("EDGE_", "read_timeout_s")))
    assert int(annotations[prefix + "proxy-read-timeout"]) >= read_timeout
    assert int(annotations[prefix + "proxy-send-timeout"]) >= read_timeout
    body = int(env.get("EDGE_MAX_BODY_BYTES", setting_default("EDGE_", "max_body_bytes")))
    assert int(annotations[prefix + "proxy-body-size"].removesuffix("m")) * 1024 * 1024 >= body
    for ingress in find(manifests, "Ingress"):
        for path in ingress["spec"]["rules"][0]["http"]["paths"]:
            backend = path["backend"]["service"]
            service = one(manifests, "Service", backend["name"])
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    ingress = one(manifests, "Ingress", "edge")
    edge_paths = {path["path"] for path in ingress["spec"]["rules"][0]["http"]["paths"]}
    # /metrics and the probes are not published; uploads and /ws are (issue 18: uploads could not work)
    assert edge_paths == {"/v1", "/v1beta", "/v1alpha", "/upload", "/ws"}  # v1alpha: tokens, newer kinds
    # upload URLs point at the Ingress's own host, https when it terminates TLS for it
    host = ingress["spec"]["rules"][0]["host"]
    tls = any(host in entry.get("hosts", ()) for entry in ingress["spec"].get("tls", ()))
    assert env["EDGE_PUBLIC_BASE_URL"] == f"{'https' if tls else 'http'}://{host}"


def test_network_policies(overlay: str) -> None:
    manifests = render_overlay(overlay)
    policies = {p["metadata"]["name"]: p for p in find(manifests, "NetworkPolicy")}
    if not policies:
        pytest.skip(f"{overlay} does not use components/network-policies")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny

    # dev lets an internal service's pods in too (components/internal-clients, as the demo stack)
    internal = {INTERNAL_PODS} if overlay == "dev" else set()
    assert sources_to(policies["keyring"]["spec"], 50051) == {"edge", "admin", *internal}, "who reaches keyring"
    assert sources_to(policies["etcd"]["spec"], 2379) == {"keyring"}, "only keyring reaches etcd's client port"


def test_monitoring_matches_compose_rules_and_services(overlay: str) -> None:
    manifests = render_overlay(overlay)
    rules = find(manifests, "PrometheusRule")
    if not rules:
        pytest.skip(f"{overlay} does not use components/monitoring")
    compose_rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "keyring.rules.yml").read_text())
    assert rules[0]["spec"]["groups"] == compose_rules["groups"], "PrometheusRule and the compose rules file differ"
    alerts = {rule["alert"] for group in compose_rules["groups"] for rule in group["rules"]}
    assert {"KeyringPoolNoEligibleKey", "KeyringInvalidKeysRising", "EdgeErrorRatioHigh", "EdgeLatencyP99High",
            "KeyringReplicasBelowTwo", "KeyringEtcdErrors"} <= alerts  # fmt: skip
    for group in compose_rules["groups"]:
        for rule in group["rules"]:
            expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", rule["expr"])
            names = set(re.findall(r"[a-z_][a-z0-9_]*", expr)) - PROMQL_WORDS - LABELS
            assert names <= KNOWN_METRICS, f"{rule['alert']} uses unknown names {names - KNOWN_METRICS}"
    services = find(manifests, "Service")
    for monitor in find(manifests, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"].items()
        matching = [s for s in services if selector <= s["metadata"].get("labels", {}).items()]
        if monitor["metadata"]["name"] == "etcd" and not find(manifests, "StatefulSet", "etcd"):
            continue
        port_names = {p["name"] for s in matching for p in s["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in port_names, monitor["metadata"]["name"]


def test_images_and_commands(overlay: str) -> None:
    manifests = render_overlay(overlay)
    images = {c["image"] for _, c in _own(manifests)}
    assert len(images) == 1, "keyring, edge and admin run one image"
    for _, container in _own(manifests):
        module_of(container["command"])


def test_every_component_is_used_by_an_overlay() -> None:
    used = set()
    for name in OVERLAYS:
        kustomization = yaml.safe_load((K8S / "overlays" / name / "kustomization.yaml").read_text())
        used |= {Path(c).name for c in kustomization.get("components", [])}
    assert used == {p.name for p in (K8S / "components").iterdir() if p.is_dir()}
