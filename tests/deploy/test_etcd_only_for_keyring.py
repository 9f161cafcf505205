"""etcd only for keyring, in every deploy (issue 18, finding 1): Kubernetes, compose and the devstack.

etcd trusts a CA of its own that signs etcd's and keyring's etcd certificates and nothing the edge or admin
holds (``tests/integration/test_etcd_isolation.py`` shows a real etcd refusing those at the handshake); only
the edge's identity may lease (``KEYRING_LEASE_IDENTITIES``), and where an internal service's is switched on (the
devstack, the dev overlay) it is of the services' CA too; in Kubernetes etcd members speak TLS to each
other with certificates of etcd's CA, peer common name pinned. Checked statically (rendered manifests, compose),
with the certificates the secrets README's and the devstack's own commands make.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from services.devstack import certs as certs_cli
from services.devstack.__main__ import local_certificates
from services.devstack.etcd_server import EtcdServer

from .conftest import (
    INTERNAL_IDENTITY,
    ROOT,
    Manifest,
    app_services,
    compose,
    compose_env,
    container_env,
    find,
    one,
    render_overlay,
)

OVERLAYS = ("dev", "prod", "prod-external-etcd")
EDGE_IDENTITY = "keyring-edge"


# ------------------------------------------------------------------ Kubernetes
def _ca_secret_of_certificate(manifests: tuple[Manifest, ...], certificate: Manifest) -> str:
    """The Secret of the CA that issues ``certificate`` (through its Issuer); the self-signed root has none."""
    issuer = one(manifests, "Issuer", certificate["spec"]["issuerRef"]["name"])
    return str(issuer["spec"]["ca"]["secretName"]) if "ca" in issuer["spec"] else "self-signed"


def _certificate_of_secret(manifests: tuple[Manifest, ...], secret: str) -> Manifest:
    [certificate] = [c for c in find(manifests, "Certificate") if c["spec"]["secretName"] == secret]
    return certificate


def _mounted_secret(workload: Manifest, container: dict[str, Any], path: str) -> str:
    """The Secret a file the container reads comes from."""
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == Path(path).parent)
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    return str(volumes[mount["name"]]["secret"]["secretName"])


def _issuing_ca(manifests: tuple[Manifest, ...], workload: Manifest, container: dict[str, Any], path: str) -> str:
    certificate = _certificate_of_secret(manifests, _mounted_secret(workload, container, path))
    return _ca_secret_of_certificate(manifests, certificate)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_etcd_trusts_its_own_ca_and_only_the_edge_leases(overlay: str) -> None:
    manifests = render_overlay(overlay)
    keyring = one(manifests, "Deployment", "keyring")
    [keyring_container] = keyring["spec"]["template"]["spec"]["containers"]
    keyring_vars = container_env(manifests, keyring_container)
    etcd_ca = _issuing_ca(manifests, keyring, keyring_container, keyring_vars["KEYRING_ETCD_TLS_CERT_FILE"])
    assert _mounted_secret(keyring, keyring_container, keyring_vars["KEYRING_ETCD_TLS_CA_FILE"]) != "keyring-ca"
    services_ca = _issuing_ca(manifests, keyring, keyring_container, keyring_vars["KEYRING_TLS_CERT_FILE"])
    assert etcd_ca != services_ca, "etcd's CA must not be the services' CA"
    # etcd's CA signs etcd's and keyring's etcd certificates, nothing else.
    of_etcd_ca = {
        c["metadata"]["name"]
        for c in find(manifests, "Certificate")
        if _ca_secret_of_certificate(manifests, c) == etcd_ca
    }
    assert of_etcd_ca == {"keyring-etcd-client", "etcd-server", "etcd-peer"}
    identities: dict[str, str] = {}
    for name, variable in (("edge", "EDGE_KEYRING_TLS_CERT_FILE"), ("admin", "ADMIN_KEYRING_TLS_CERT_FILE")):
        workload = one(manifests, "Deployment", name)
        [container] = workload["spec"]["template"]["spec"]["containers"]
        path = container_env(manifests, container)[variable]
        assert _issuing_ca(manifests, workload, container, path) == services_ca != etcd_ca, name
        certificate = _certificate_of_secret(manifests, _mounted_secret(workload, container, path))
        identities[name] = certificate["spec"]["commonName"]
    # dev, as the demo stack, also lets an internal service's identity lease (components/internal-clients):
    # a certificate of the services' CA, never of etcd's (checked above: etcd's CA issues three certificates)
    internal = [INTERNAL_IDENTITY] if overlay == "dev" else []
    assert keyring_vars["KEYRING_LEASE_IDENTITIES"].split(",") == [identities["edge"], *internal]
    assert identities["edge"] == EDGE_IDENTITY
    for name in internal:
        assert _ca_secret_of_certificate(manifests, one(manifests, "Certificate", name)) == services_ca

    statefulsets = find(manifests, "StatefulSet", "etcd")
    if not statefulsets:  # external etcd: docs/deployment.md and the component's comment say what it must trust
        return
    [etcd] = statefulsets
    [etcd_container] = etcd["spec"]["template"]["spec"]["containers"]
    etcd_vars = {e["name"]: e.get("value", "") for e in etcd_container["env"]}
    assert etcd_vars["ETCD_CLIENT_CERT_AUTH"] == "true"
    assert _issuing_ca(manifests, etcd, etcd_container, etcd_vars["ETCD_TRUSTED_CA_FILE"]) == etcd_ca
    # Peer TLS: members to each other over https, both ways with certificates of etcd's CA, one common name.
    assert etcd_vars["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
    for variable in ("ETCD_LISTEN_PEER_URLS", "ETCD_INITIAL_ADVERTISE_PEER_URLS"):
        assert etcd_vars[variable].startswith("https://"), variable
    assert all(
        member.split("=", 1)[1].startswith("https://") for member in etcd_vars["ETCD_INITIAL_CLUSTER"].split(",")
    )
    for variable in ("ETCD_PEER_CERT_FILE", "ETCD_PEER_TRUSTED_CA_FILE"):
        assert _issuing_ca(manifests, etcd, etcd_container, etcd_vars[variable]) == etcd_ca, variable
    peer = _certificate_of_secret(manifests, _mounted_secret(etcd, etcd_container, etcd_vars["ETCD_PEER_CERT_FILE"]))
    assert etcd_vars["ETCD_PEER_CERT_ALLOWED_CN"] == peer["spec"]["commonName"]
    client = one(manifests, "Certificate", "keyring-etcd-client")
    assert client["spec"]["commonName"] != peer["spec"]["commonName"], "keyring's certificate must not be a peer"


# ------------------------------------------------------------------- compose
def _secret_file(name: str) -> Path:
    return ROOT / compose()["secrets"][name]["file"]


def _flag(command: list[str], flag: str) -> str:
    [value] = [item.split("=", 1)[1] for item in command if item.startswith(f"--{flag}=")]
    return value


def _issued_by(cert_file: Path, ca_file: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def test_compose_etcd_trusts_its_own_ca_made_as_the_secrets_readme_says(tmp_path: Path) -> None:
    services = compose()["services"]
    etcd_command = services["etcd"]["command"]
    etcd_ca = _flag(etcd_command, "trusted-ca-file").removeprefix("/run/secrets/")
    assert "--client-cert-auth" in etcd_command and etcd_ca != "tls_ca"
    assert _secret_file(etcd_ca) != _secret_file("tls_ca")
    etcd_secrets = {etcd_ca, _flag(etcd_command, "cert-file").removeprefix("/run/secrets/")}
    for name, service in app_services().items():
        env = compose_env(service)
        if "KEYRING_ETCD_TLS_CERT_FILE" in env:
            keyring_etcd = {
                env[f"KEYRING_ETCD_TLS_{part}_FILE"].removeprefix("/run/secrets/") for part in ("CERT", "KEY")
            }
            assert env["KEYRING_ETCD_TLS_CA_FILE"] == f"/run/secrets/{etcd_ca}", name
            assert env["KEYRING_LEASE_IDENTITIES"] == EDGE_IDENTITY, name
            etcd_secrets |= keyring_etcd
        else:  # the edge and admin mount nothing of etcd's CA
            assert not set(service.get("secrets", [])) & {etcd_ca, "keyring_etcd_crt", "keyring_etcd_key"}, name
    # The secrets README's commands make exactly these files, etcd's signed by etcd's CA only.
    readme = (ROOT / "deploy" / "compose" / "secrets" / "README").read_text()
    commands = re.findall(r"^\s*python -m services\.devstack\.certs (.+)$", readme, flags=re.MULTILINE)
    assert len(commands) == 3  # the services' CA, etcd's, and the optional internal-service identity
    for command in commands:
        argv = [str(tmp_path) if arg == "." else arg for arg in shlex.split(command)]
        assert certs_cli.main(argv) == 0
    made = {
        name: tmp_path / _secret_file(name).name for name in (*etcd_secrets, "tls_ca", "edge_crt", "admin_keyring_crt")
    }
    assert all(path.is_file() for path in made.values()), made
    for secret in ("etcd_crt", "keyring_etcd_crt"):
        assert _issued_by(made[secret], made[etcd_ca]) and not _issued_by(made[secret], made["tls_ca"]), secret
    for secret in ("edge_crt", "admin_keyring_crt"):
        assert _issued_by(made[secret], made["tls_ca"]) and not _issued_by(made[secret], made[etcd_ca]), secret
    # The internal-service identity (step 7): of the services' CA, its name what KEYRING_LEASE_IDENTITIES gains.
    internal = tmp_path / f"{INTERNAL_IDENTITY}.crt"
    assert _issued_by(internal, made["tls_ca"]) and not _issued_by(internal, made[etcd_ca])
    name = (
        x509.load_pem_x509_certificate(internal.read_bytes())
        .subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0]
        .value
    )
    assert name == INTERNAL_IDENTITY and f"KEYRING_LEASE_IDENTITIES={EDGE_IDENTITY},{name}" in readme


# ------------------------------------------------------------------ devstack
def test_devstack_etcd_trusts_its_own_ca_and_only_the_edge_leases(tmp_path: Path) -> None:
    from services.devstack.__main__ import keyring_env  # new with issue 18: older code fails here, not at import

    certs = local_certificates(tmp_path)
    env = keyring_env(tmp_path, EtcdServer(), "127.0.0.1:50051", "http://127.0.0.1:8090", certs)
    # the edge and the internal-service identity of the lease client's example (docs/internal-services.md)
    lease_identities = env["KEYRING_LEASE_IDENTITIES"].split(",")
    assert lease_identities == [certs["keyring-edge"].name, certs["keyring-internal"].name]
    assert lease_identities == [EDGE_IDENTITY, "keyring-internal"]
    etcd_ca = Path(certs["etcd"].ca_file)
    assert env["KEYRING_ETCD_TLS_CA_FILE"] == str(etcd_ca) != env["KEYRING_TLS_CA_FILE"]
    assert _issued_by(Path(env["KEYRING_ETCD_TLS_CERT_FILE"]), etcd_ca)
    for name in ("keyring-edge", "keyring-admin", "keyring-internal", "keyring"):
        assert not _issued_by(Path(certs[name].cert_file), etcd_ca), name
