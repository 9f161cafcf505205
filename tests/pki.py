"""The test session's certificates: the services' CA and etcd's own CA, as deployed (services/devstack/certs.py).

Tests run with mutual TLS as production does: ``tests/conftest.py`` points the
KEYRING_TLS_*, KEYRING_ETCD_TLS_*, EDGE_KEYRING_TLS_* and ADMIN_KEYRING_TLS_*
variables at these files, and the session's etcd requires a client
certificate of etcd's CA, which only keyring holds (``etcd_client``).
``channel`` opens a gRPC channel to keyring as any identity.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass

import grpc

from services.common.tls import channel_credentials
from services.devstack.certs import ETCD_CA_NAME, HTTPS_CA_NAME, Certificate, LocalCA

KEYRING = "keyring"  # keyring's server certificate; its etcd client certificate has the name too (etcd's CA)
EDGE = "keyring-edge"  # a lease client
ADMIN = "keyring-admin"  # the default admin identity
ETCD = "etcd"
SERVICE = "billing-batch"  # an internal service leasing keys directly
HTTPS = "edge-https"  # the https listeners' certificate (localhost, 127.0.0.1, ::1)


@dataclass(frozen=True)
class Pki:
    directory: str
    keyring: Certificate
    edge: Certificate
    admin: Certificate
    etcd: Certificate
    service: Certificate
    stranger: Certificate  # admin's name signed by another CA (trusting ours): keyring and etcd must refuse it
    etcd_client: Certificate  # keyring's etcd client certificate, signed by etcd's CA (``etcd`` is signed by it too)
    https: Certificate  # a localhost server certificate of an https CA of its own (the edge's and the simulator's TLS)

    def environment(self) -> dict[str, str]:
        """The variables every service's settings read their certificates from."""
        env: dict[str, str] = {}
        for prefix, cert in (
            ("KEYRING_TLS", self.keyring),
            ("KEYRING_ETCD_TLS", self.etcd_client),
            ("EDGE_KEYRING_TLS", self.edge),
            ("ADMIN_KEYRING_TLS", self.admin),
        ):
            env.update(cert.env(prefix))
        return env


@functools.cache
def session_pki() -> Pki:
    directory = tempfile.mkdtemp(prefix="keyring-tls-")
    ca = LocalCA(directory)
    etcd_ca = LocalCA(os.path.join(directory, "etcd-ca"), name=ETCD_CA_NAME)
    other = LocalCA(os.path.join(directory, "other-ca"))
    return Pki(
        directory,
        keyring=ca.issue(KEYRING, dns_names=("localhost", "keyring-headless")),
        edge=ca.issue(EDGE),
        admin=ca.issue(ADMIN),
        etcd=etcd_ca.issue(ETCD),
        service=ca.issue(SERVICE),
        stranger=dataclasses.replace(other.issue(ADMIN), ca_file=ca.ca_file),
        etcd_client=etcd_ca.issue(KEYRING),
        https=https_ca(directory).issue(HTTPS),
    )


def https_ca(directory: str) -> LocalCA:
    """The session's https CA (its files under ``directory/https-ca``): tests issue further certificates with it."""
    return LocalCA(os.path.join(directory, "https-ca"), name=HTTPS_CA_NAME)


def remove_session_pki() -> None:
    if session_pki.cache_info().currsize:
        shutil.rmtree(session_pki().directory, ignore_errors=True)


def channel(address: str, cert: Certificate | None) -> grpc.aio.Channel:
    """A channel to keyring presenting ``cert`` (None: TLS without a client certificate)."""
    pki = session_pki()
    if cert is None:
        with open(pki.keyring.ca_file, "rb") as ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
    else:
        credentials = channel_credentials(cert.files)
    return grpc.aio.secure_channel(address, credentials)


def sync_channel(address: str, cert: Certificate) -> grpc.Channel:
    return grpc.secure_channel(address, channel_credentials(cert.files))
