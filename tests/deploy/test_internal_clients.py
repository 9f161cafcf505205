"""An internal service's lease identity in every deploy (issue 22): off by default, one switch each.

Helm ``internalClients`` (``profiles/internal-clients.yaml``), kustomize ``components/internal-clients`` (in the
dev overlay, as the demo stack) and compose (``KEYRING_LEASE_IDENTITIES`` from ``.env``, the secrets README's
step 7) issue ``keyring-internal`` from the services' CA, client auth only, and let it lease; the certificate
reaches the lease client's example (docs/internal-services.md) under the file names it reads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.docs import doc, section

from .conftest import (
    CHART,
    INTERNAL_IDENTITY,
    INTERNAL_PODS,
    Manifest,
    compose_env,
    compose_raw,
    container_env,
    find,
    helm,
    load_settings,
    one,
    render_chart,
    render_overlay,
    sources_to,
)

PROFILE = "internal-clients"


def _keyring_env(manifests: tuple[Manifest, ...]) -> dict[str, str]:
    [deployment] = [d for d in find(manifests, "Deployment") if d["metadata"]["name"] == "keyring"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container_env(manifests, container)


def _internal_rule(policy: Manifest) -> list[dict[str, Any]]:
    """keyring's NetworkPolicy ingress rules that let pods other than ours in."""
    return [
        rule
        for rule in policy["spec"]["ingress"]
        if any("app.kubernetes.io/name" not in peer["podSelector"]["matchLabels"] for peer in rule["from"])
    ]


def _example_file_names() -> tuple[str, str, str]:
    """The certificate, key and CA file names the lease client's example reads from KEYRING_TLS_DIR."""
    files = r'f"\{TLS\}/([^"]+)"'
    found = re.search(rf"Identity\({files}, {files}, {files}\)", doc("internal-services"))
    assert found, "docs/internal-services.md's example builds no Identity from KEYRING_TLS_DIR"
    return found.group(1), found.group(2), found.group(3)


def test_off_by_default_only_the_edge_leases() -> None:
    for manifests in (render_chart("default"), render_chart("prod"), render_overlay("prod")):
        assert _keyring_env(manifests)["KEYRING_LEASE_IDENTITIES"] == "keyring-edge"
        assert not [c for c in find(manifests, "Certificate") if c["spec"]["commonName"] == INTERNAL_IDENTITY]
        for policy in find(manifests, "NetworkPolicy"):
            if policy["metadata"]["name"] == "keyring":
                assert _internal_rule(policy) == []
    assert _keyring_env(render_chart(PROFILE))["KEYRING_LEASE_IDENTITIES"] == f"keyring-edge,{INTERNAL_IDENTITY}"


@pytest.mark.parametrize("source", ["helm", "kustomize"])
def test_the_identity_is_a_client_certificate_of_the_services_ca_that_may_only_lease(source: str) -> None:
    manifests = render_chart(PROFILE) if source == "helm" else render_overlay("dev")
    env = _keyring_env(manifests)
    [certificate] = [c for c in find(manifests, "Certificate") if c["spec"]["commonName"] == INTERNAL_IDENTITY]
    spec = certificate["spec"]
    assert spec["usages"] == ["client auth"] and spec["secretName"] == "keyring-internal-tls"
    assert spec["issuerRef"] == {"name": "keyring-ca", "kind": "Issuer"}  # the services' CA, never etcd's
    assert one(manifests, "Issuer", "keyring-ca")["spec"]["ca"]["secretName"] == "keyring-ca"
    assert INTERNAL_IDENTITY in env["KEYRING_LEASE_IDENTITIES"].split(",")
    assert INTERNAL_IDENTITY not in env["KEYRING_ADMIN_IDENTITIES"].split(",")
    keyring = one(manifests, "NetworkPolicy", "keyring")
    assert sources_to(keyring["spec"], 50051) == {"edge", "admin", INTERNAL_PODS}
    [rule] = _internal_rule(keyring)
    assert rule["ports"] == [{"protocol": "TCP", "port": 50051}], "the internal pods reach the gRPC port only"


def test_chart_and_kustomize_component_do_not_drift() -> None:
    chart, kustomize = render_chart(PROFILE), render_overlay("dev")

    def internal(manifests: tuple[Manifest, ...]) -> tuple[Any, ...]:
        certificate = one(manifests, "Certificate", "keyring-internal")["spec"]
        return (
            certificate,
            _keyring_env(manifests)["KEYRING_LEASE_IDENTITIES"],
            _internal_rule(one(manifests, "NetworkPolicy", "keyring")),
        )

    assert internal(chart) == internal(kustomize)


def test_admins_identity_cannot_be_made_a_lease_identity() -> None:
    done = helm("template", "keyring", str(CHART), "--set", "internalClients.enabled=true",
                "--set", "internalClients.identity=keyring-admin")  # fmt: skip
    assert done.returncode != 0 and "must not be admin's identity" in done.stderr, done.stderr


def test_the_certificate_reaches_the_example_under_the_names_it_reads() -> None:
    cert, key, ca = _example_file_names()
    items = [f"- {{key: tls.crt, path: {cert}}}", f"- {{key: tls.key, path: {key}}}", f"- {{key: ca.crt, path: {ca}}}"]
    # Kubernetes: the release's notes and docs/deployment.md mount the Secret's keys as those files.
    done = helm("install", "keyring", str(CHART), "--dry-run=client", "--namespace", "keyring",
                "--set", "internalClients.enabled=true")  # fmt: skip
    assert done.returncode == 0, done.stderr
    notes = done.stdout[done.stdout.index("NOTES:") :]
    guide = section("deployment", "## Kubernetes (Helm)")
    for text in (notes, guide):
        assert "secretName: keyring-internal-tls" in text and all(item in text for item in items)
        assert "KEYRING_TLS_DIR=/var/run/secrets/keyring-lease" in text and "KEYRING_ADDRESS=keyring:50051" in text
    # compose: the secrets README's step issues <identity>.crt/.key next to ca.crt in deploy/compose/secrets/.
    readme = (Path(__file__).parents[2] / "deploy" / "compose" / "secrets" / "README").read_text()
    assert f"python -m services.devstack.certs . {INTERNAL_IDENTITY}\n" in readme
    assert (cert, key, ca) == (f"{INTERNAL_IDENTITY}.crt", f"{INTERNAL_IDENTITY}.key", "ca.crt")


def test_compose_lets_it_lease_only_when_env_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    raw = compose_raw()["services"]["keyring-1"]["environment"]["KEYRING_LEASE_IDENTITIES"]

    def interpolated(env: dict[str, str]) -> str:  # compose's ${VAR:-default}: unset or empty -> the default
        match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", raw)
        assert match, raw
        return env.get(match.group(1)) or match.group(2)

    assert interpolated({}) == interpolated({"KEYRING_LEASE_IDENTITIES": ""}) == "keyring-edge"
    value = interpolated({"KEYRING_LEASE_IDENTITIES": f"keyring-edge,{INTERNAL_IDENTITY}"})
    env = {**compose_env(compose_raw()["services"]["keyring-1"]), "KEYRING_LEASE_IDENTITIES": value}
    env = {name: v for name, v in env.items() if name.startswith("KEYRING_") and "${" not in v}
    (tmp_path / "kek").write_text("A" * 43 + "=")
    env["KEYRING_KEK_FILE"] = str(tmp_path / "kek")
    settings = load_settings("KEYRING_", env, monkeypatch)
    assert settings.lease_identities == f"keyring-edge,{INTERNAL_IDENTITY}"  # type: ignore[attr-defined]
