"""deploy/helm/keyring (issue 22): the chart lints, renders with its defaults and every profile into manifests
that validate against the Kubernetes schemas (as the kustomize tree does), agrees with what the services read,
keeps the kustomize tree's secure defaults, and cannot drift from the kustomize prod overlay."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import utils as kv

from services.admin.config import parse_networks
from tests.docs import section

from .conftest import (
    CHART,
    CHART_PROFILES,
    INTERNAL_IDENTITY,
    INTERNAL_PODS,
    MODULE_PREFIX,
    ROOT,
    WITH_INTERNAL_CLIENTS,
    Manifest,
    container_env,
    find,
    helm,
    load_settings,
    module_of,
    one,
    profile_args,
    render_chart,
    render_overlay,
    sources_to,
    unknown_settings,
    workloads,
)
from .test_admin_exposure import INTERNAL, PUBLISHED, _matches
from .test_kubernetes import CRD_SCHEMAS, K8S_VERSIONS

PROFILES = tuple(CHART_PROFILES)
# The chart's objects (release "keyring") -> the kustomize tree's.
KUSTOMIZE_NAME = {"keyring": "keyring", "keyring-edge": "edge", "keyring-admin": "admin", "keyring-etcd": "etcd"}
# Secrets the chart references but never contains (values.yaml `secrets` and the Ingress TLS Secrets).
EXTERNAL_SECRETS = {"keyring-kek", "admin-tokens", "edge-upload-session", "edge-tls", "admin-tls"}


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def _spec(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _own(manifests: tuple[Manifest, ...]) -> dict[str, tuple[Manifest, dict[str, Any]]]:
    """Service module (services.edge...) -> (Deployment, container) running it."""
    own = {}
    for deployment in find(manifests, "Deployment"):
        [container] = _spec(deployment)["containers"]
        own[module_of(container["command"])] = (deployment, container)
    assert own.keys() == set(MODULE_PREFIX), own.keys()
    return own


def _env(manifests: tuple[Manifest, ...], module: str) -> dict[str, str]:
    return container_env(manifests, _own(manifests)[module][1])


def test_chart_lints_with_every_profile(profile: str) -> None:
    done = helm("lint", "--strict", str(CHART), *profile_args(profile))
    assert done.returncode == 0, done.stdout + done.stderr


_VALIDATED: set[str] = set()  # objects several profiles render alike are validated once


def test_chart_renders_manifests_valid_against_the_kubernetes_schemas(profile: str) -> None:
    manifests = render_chart(profile)
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "Certificate", "ConfigMap"} <= kinds  # fmt: skip
    for manifest in manifests:
        text = json.dumps(manifest, sort_keys=True)
        if text in _VALIDATED:
            continue
        _VALIDATED.add(text)
        key = (manifest["apiVersion"], manifest["kind"])
        if key in CRD_SCHEMAS:
            schema = json.loads((Path(__file__).parent / "schemas" / CRD_SCHEMAS[key]).read_text())
            jsonschema.Draft202012Validator(schema).validate(manifest)
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(manifest, version, strict=True)
            except kv.ValidationError as error:
                pytest.fail(
                    f"{profile}: {manifest['kind']}/{manifest['metadata']['name']} invalid for {version}: {error}"
                )


def test_env_vars_are_real_settings_and_validate(profile: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    manifests = render_chart(profile)
    for module, (deployment, container) in _own(manifests).items():
        env = container_env(manifests, container)
        assert unknown_settings(env) == [], f"{deployment['metadata']['name']}: variables no settings class reads"
        env = {name: value for name, value in env.items() if not value.startswith("<from ")}
        if "KEYRING_KEK_FILE" in env:
            (tmp_path / "kek").write_text("A" * 43 + "=")
            env["KEYRING_KEK_FILE"] = str(tmp_path / "kek")
        if "ADMIN_ADMIN_TOKENS_FILE" in env:
            (tmp_path / "tokens").write_text("ops:" + "x" * 32 + "\n")
            env["ADMIN_ADMIN_TOKENS_FILE"] = str(tmp_path / "tokens")
        load_settings(MODULE_PREFIX[module], env, monkeypatch)


def test_pods_are_hardened_and_bounded(profile: str) -> None:
    for workload in workloads(render_chart(profile)):
        name = f"{profile}: {workload['kind']}/{workload['metadata']['name']}"
        pod = _spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert all({"cpu", "memory"} <= container["resources"][bound].keys() for bound in ("requests", "limits"))
            assert "readinessProbe" in container and "livenessProbe" in container, name


def test_wiring_identities_and_etcd_of_its_own_ca(profile: str) -> None:
    manifests = render_chart(profile)
    keyring = _env(manifests, "services.keyring")
    certificates = {c["spec"]["secretName"]: c for c in find(manifests, "Certificate")}

    def issuer_of(workload: Manifest, container: dict[str, Any], path: str) -> str:
        mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == Path(path).parent)
        volume = next(v for v in _spec(workload)["volumes"] if v["name"] == mount["name"])
        return str(certificates[volume["secret"]["secretName"]]["spec"]["issuerRef"]["name"])

    identities = {}
    for module, variable in (
        ("services.edge", "EDGE_KEYRING_TLS_CERT_FILE"),
        ("services.admin", "ADMIN_KEYRING_TLS_CERT_FILE"),
    ):
        deployment, container = _own(manifests)[module]
        env = container_env(manifests, container)
        assert env[variable.replace("TLS_CERT_FILE", "ADDRESSES")] == "keyring:50051"
        assert one(manifests, "Service", "keyring")["spec"]["clusterIP"] == "None"
        assert issuer_of(deployment, container, env[variable]) == "keyring-ca"
        mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == Path(env[variable]).parent)
        volume = next(v for v in _spec(deployment)["volumes"] if v["name"] == mount["name"])
        identities[module] = certificates[volume["secret"]["secretName"]]["spec"]["commonName"]
    internal = [INTERNAL_IDENTITY] if profile in WITH_INTERNAL_CLIENTS else []  # off by default
    assert keyring["KEYRING_LEASE_IDENTITIES"].split(",") == [identities["services.edge"], *internal]
    assert identities["services.edge"] == "keyring-edge"
    assert keyring["KEYRING_ADMIN_IDENTITIES"] == identities["services.admin"] == "keyring-admin"
    deployment, container = _own(manifests)["services.keyring"]
    assert issuer_of(deployment, container, keyring["KEYRING_TLS_CERT_FILE"]) == "keyring-ca"
    assert issuer_of(deployment, container, keyring["KEYRING_ETCD_TLS_CERT_FILE"]) == "keyring-etcd-ca"
    of_etcd_ca = {
        c["metadata"]["name"] for c in certificates.values() if c["spec"]["issuerRef"]["name"] == "keyring-etcd-ca"
    }
    statefulsets = find(manifests, "StatefulSet")
    if not statefulsets:  # external etcd: the endpoint given, keyring's certificate the only one of etcd's CA
        assert keyring["KEYRING_ETCD_ENDPOINT"] == "etcd.example.internal:2379"
        assert of_etcd_ca == {"keyring-etcd-client"}
        return
    assert of_etcd_ca == {"keyring-etcd-client", "keyring-etcd-peer", "keyring-etcd-server"}
    [etcd] = statefulsets
    [etcd_container] = _spec(etcd)["containers"]
    env = {e["name"]: e.get("value", "") for e in etcd_container["env"]}
    assert keyring["KEYRING_ETCD_ENDPOINT"] == "keyring-etcd:2379"
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    for variable in ("ETCD_TRUSTED_CA_FILE", "ETCD_PEER_CERT_FILE", "ETCD_PEER_TRUSTED_CA_FILE"):
        assert issuer_of(etcd, etcd_container, env[variable]) == "keyring-etcd-ca", variable
    assert env["ETCD_PEER_CERT_ALLOWED_CN"] == certificates["keyring-etcd-peer-tls"]["spec"]["commonName"]
    members = env["ETCD_INITIAL_CLUSTER"].split(",")
    assert [m.split("=")[0] for m in members] == [f"keyring-etcd-{i}" for i in range(etcd["spec"]["replicas"])]
    assert all(m.split("=", 1)[1].startswith("https://") for m in members)
    assert etcd["spec"]["replicas"] == {"dev": 1}.get(profile, 3)
    assert bool(find(manifests, "PodDisruptionBudget", "keyring-etcd")) == (etcd["spec"]["replicas"] > 1)


def test_ingresses_publish_only_the_api_and_upload_urls_follow_the_host(profile: str) -> None:
    manifests = render_chart(profile)
    edge = one(manifests, "Ingress", "keyring-edge")
    rule = edge["spec"]["rules"][0]
    assert {p["path"] for p in rule["http"]["paths"]} == {"/v1", "/v1beta", "/v1alpha", "/upload", "/ws"}
    tls = any(rule["host"] in entry["hosts"] for entry in edge["spec"].get("tls", ()))
    assert _env(manifests, "services.edge")["EDGE_PUBLIC_BASE_URL"] == f"{'https' if tls else 'http'}://{rule['host']}"
    assert tls == (profile != "dev")
    admin_rules = [r for r in one(manifests, "Ingress", "keyring-admin")["spec"]["rules"][0]["http"]["paths"]]
    assert all(any(_matches(r, path) for r in admin_rules) for path in PUBLISHED)
    assert not any(_matches(r, path) for r in admin_rules for path in INTERNAL)
    admin = _env(manifests, "services.admin")
    assert admin["ADMIN_COOKIE_SECURE"] == str(profile != "dev").lower()
    networks = parse_networks(admin["ADMIN_TRUSTED_PROXIES"])
    assert networks and all(network.is_private for network in networks)


def test_secrets_are_referenced_not_shipped(profile: str) -> None:
    manifests = render_chart(profile)
    assert find(manifests, "Secret") == []
    text = yaml.safe_dump_all(manifests)
    referenced = set(re.findall(r"secretName: (\S+)", text)) | set(
        re.findall(r"secretKeyRef:\s+key: \S+\s+name: (\S+)", text)
    )
    issued = {c["spec"]["secretName"] for c in find(manifests, "Certificate")}
    assert referenced - issued <= EXTERNAL_SECRETS, referenced - issued


def test_network_policies(profile: str) -> None:
    manifests = render_chart(profile)
    policies = {p["metadata"]["name"]: p["spec"] for p in find(manifests, "NetworkPolicy")}
    assert set(policies["keyring-default-deny"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in policies["keyring-default-deny"]

    internal = {INTERNAL_PODS} if profile in WITH_INTERNAL_CLIENTS else set()
    assert sources_to(policies["keyring"], 50051) == {"edge", "admin", *internal}
    if "keyring-etcd" in policies:
        assert sources_to(policies["keyring-etcd"], 2379) == {"keyring"}
    else:
        blocks = [
            peer["ipBlock"]["cidr"]
            for rule in policies["keyring"]["egress"]
            for peer in rule["to"]
            if "ipBlock" in peer
        ]
        assert "192.0.2.0/24" in blocks, "keyring may reach the external etcd"


def test_monitoring_uses_the_repo_rules_and_dashboard(profile: str) -> None:
    manifests = render_chart(profile)
    dashboard = json.loads(one(manifests, "ConfigMap", "keyring-dashboard")["data"]["keyring.json"])
    assert dashboard == json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "keyring.json").read_text())
    rules = find(manifests, "PrometheusRule")
    if profile == "prod":
        compose_rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules" / "keyring.rules.yml").read_text())
        assert rules[0]["spec"]["groups"] == compose_rules["groups"]
    services = find(manifests, "Service")
    for monitor in find(manifests, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"].items()
        ports = {p["name"] for s in services if selector <= s["metadata"]["labels"].items() for p in s["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports, monitor["metadata"]["name"]
    monitored = profile in ("prod", "external-etcd", "internal-clients")  # the profiles over prod.yaml
    assert bool(rules) == bool(find(manifests, "ServiceMonitor")) == monitored


def test_external_etcd_without_an_endpoint_or_its_addresses_is_a_clear_error() -> None:
    for given, missing in (("etcd.external.cidr=192.0.2.0/24", "etcd.external.endpoint (host:port)"),
                           ("etcd.external.endpoint=etcd.internal:2379", "etcd.external.cidr")):  # fmt: skip
        done = helm("template", "keyring", str(CHART), "--set", "etcd.bundled.enabled=false", "--set", given)
        assert done.returncode != 0 and missing in done.stderr and "is required" in done.stderr, done.stderr


def test_uploads_without_the_edge_ingress_need_a_public_base_url() -> None:
    """The edge refuses to start without EDGE_PUBLIC_BASE_URL while uploads are on: the chart says so first."""
    done = helm("template", "keyring", str(CHART), "--set", "ingress.edge.enabled=false")
    assert done.returncode != 0 and "edge.publicBaseUrl (https://host" in done.stderr, done.stderr
    off = render_chart("default", "ingress.edge.enabled=false", "edge.config.EDGE_UPLOADS=false")
    assert _env(off, "services.edge")["EDGE_UPLOADS"] == "false"
    assert find(off, "Ingress", "keyring-edge") == []


def test_a_setting_the_chart_wires_cannot_be_overridden_by_config() -> None:
    """keyring.config.KEYRING_LEASE_IDENTITIES would otherwise be a second, silently ignored or winning, value."""
    done = helm("template", "keyring", str(CHART), "--set", "keyring.config.KEYRING_LEASE_IDENTITIES=anyone")
    assert done.returncode != 0 and "keyring.config.KEYRING_LEASE_IDENTITIES is set by the chart" in done.stderr


def test_notes_print_how_to_get_the_first_client_token() -> None:
    done = helm("install", "keyring", str(CHART), "--dry-run=client", "--namespace", "keyring")
    assert done.returncode == 0, done.stderr
    notes = done.stdout[done.stdout.index("NOTES:") :]
    assert "svc/keyring-admin" in notes and "secret admin-tokens" in notes
    assert "/api/pools" in notes and "/api/tokens" in notes and "CLIENT_TOKEN=" in notes
    assert "https://gemini.example.com/v1beta/models/" in notes


def test_helm_guide_names_every_profile() -> None:
    helm_guide = section("deployment", "## Kubernetes (Helm)")
    assert "helm install" in helm_guide
    for name in {n for names in CHART_PROFILES.values() for n in names}:
        assert f"profiles/{name}" in helm_guide, name
    for secret in ("keyring-kek", "admin-tokens"):
        assert secret in helm_guide


# ----------------------------------------------------------------- no drift
def _by_kustomize_name(manifests: tuple[Manifest, ...], kind: str) -> dict[str, Manifest]:
    return {KUSTOMIZE_NAME.get(m["metadata"]["name"], m["metadata"]["name"]): m for m in find(manifests, kind)}


# Values that differ only because the chart prefixes its objects with the release name.
NAMED_VALUES = {"KEYRING_ETCD_ENDPOINT"}


def test_chart_and_kustomize_prod_overlay_do_not_drift() -> None:
    chart, kustomize = render_chart("prod"), render_overlay("prod")
    chart_deployments = _by_kustomize_name(chart, "Deployment")
    for name, expected in _by_kustomize_name(kustomize, "Deployment").items():
        got = chart_deployments[name]
        assert got["spec"].get("replicas") == expected["spec"].get("replicas"), name
        assert got["spec"].get("strategy") == expected["spec"].get("strategy"), name
        pod, want_pod = _spec(got), _spec(expected)
        for field in ("securityContext", "automountServiceAccountToken", "terminationGracePeriodSeconds"):
            assert pod[field] == want_pod[field], f"{name}: {field}"
        [container], [want] = pod["containers"], want_pod["containers"]
        for field in ("command", "ports", "startupProbe", "readinessProbe", "livenessProbe", "securityContext",
                      "resources", "volumeMounts"):  # fmt: skip
            assert container.get(field) == want.get(field), f"{name}: {field}"
        env, want_env = container_env(chart, container), container_env(kustomize, want)
        assert env.keys() == want_env.keys(), f"{name}: {env.keys() ^ want_env.keys()}"
        differing = {k for k in env if env[k] != want_env[k]}
        assert differing <= NAMED_VALUES, f"{name}: {[(k, env[k], want_env[k]) for k in differing]}"
    for kind, field in (("PodDisruptionBudget", "minAvailable"), ("PodDisruptionBudget", "maxUnavailable"),
                        ("HorizontalPodAutoscaler", "minReplicas"), ("HorizontalPodAutoscaler", "maxReplicas"),
                        ("HorizontalPodAutoscaler", "metrics"), ("HorizontalPodAutoscaler", "behavior")):  # fmt: skip
        got_all = _by_kustomize_name(chart, kind)
        for name, expected in _by_kustomize_name(kustomize, kind).items():
            assert got_all[name]["spec"].get(field) == expected["spec"].get(field), f"{kind}/{name}: {field}"
    for name, expected in _by_kustomize_name(kustomize, "Service").items():
        got_service = _by_kustomize_name(chart, "Service")[name.replace("etcd-peer", "keyring-etcd-peer")]
        assert got_service["spec"]["ports"] == expected["spec"]["ports"], name
        assert got_service["spec"].get("clusterIP") == expected["spec"].get("clusterIP"), name
    chart_ingresses = _by_kustomize_name(chart, "Ingress")
    for name, expected in _by_kustomize_name(kustomize, "Ingress").items():
        got = chart_ingresses[name]
        paths = {(p["path"], p["pathType"]) for p in got["spec"]["rules"][0]["http"]["paths"]}
        want_paths = {(p["path"], p["pathType"]) for p in expected["spec"]["rules"][0]["http"]["paths"]}
        assert want_paths <= paths and paths - want_paths <= {("/v1alpha", "Prefix")}, name
        assert got["metadata"]["annotations"] == expected["metadata"]["annotations"], name
        assert got["spec"]["tls"] == expected["spec"]["tls"] and got["spec"]["ingressClassName"] == "nginx", name
    [etcd], [want_etcd] = find(chart, "StatefulSet"), find(kustomize, "StatefulSet")
    [container], [want] = _spec(etcd)["containers"], _spec(want_etcd)["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    want_env = {e["name"]: e.get("value") for e in want["env"]}
    assert env.keys() == want_env.keys()
    named = {"ETCD_ADVERTISE_CLIENT_URLS", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "ETCD_INITIAL_CLUSTER",
             "ETCD_PEER_CERT_ALLOWED_CN", "ETCD_INITIAL_CLUSTER_TOKEN"}  # fmt: skip
    assert {k for k in env if env[k] != want_env[k]} <= named
    for field in ("image", "ports", "startupProbe", "readinessProbe", "livenessProbe", "resources", "securityContext"):
        assert container[field] == want[field], f"etcd: {field}"
    assert etcd["spec"]["replicas"] == want_etcd["spec"]["replicas"]


def _undocumented_values(text: str) -> list[str]:
    """Keys of values.yaml with no comment (above or inline) on themselves or an ancestor below the top level,
    and no group whose children are all so documented: every field an operator may set says what it does."""
    lines = text.splitlines()
    keys: list[tuple[int, str, bool]] = []  # (indent, dotted path, has its own comment)
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([\w.-]+|\"[^\"]+\"):(.*)$", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [match.group(2)])
        stack.append((indent, match.group(2)))
        commented = (index > 0 and lines[index - 1].strip().startswith("#")) or " #" in match.group(3)
        keys.append((indent, path, commented))
    commented_paths = {path for _, path, commented in keys if commented}

    def documented(path: str) -> bool:
        parts = path.split(".")
        # a field's own comment, or its group's below the top level (a section's comment documents no field)
        if path in commented_paths or any(".".join(parts[:n]) in commented_paths for n in range(2, len(parts))):
            return True
        children = [p for _, p, _ in keys if p.startswith(path + ".") and p.count(".") == path.count(".") + 1]
        return bool(children) and all(documented(child) for child in children)

    return [path for _, path, _ in keys if not documented(path)]


def test_values_are_documented_field_by_field() -> None:
    assert _undocumented_values((CHART / "values.yaml").read_text()) == []
    assert _undocumented_values("a:\n  # what b is\n  b: 1\n  c: 2\n") == ["a", "a.c"], "the check must find a gap"
