"""Service identity: mutual TLS between edge/admin and keyring, from certificate files.

Every service loads its certificate, private key and the CA that signs its
peers from files (Kubernetes Secrets written by cert-manager). Secure by
default: a service with no TLS files refuses to start (``TLSConfigError``)
unless its explicit plaintext switch is set, and then it logs a loud warning.

A peer's identity is what its certificate names, verified against the CA:
the subject common name and every subject alternative name (``identities``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from pydantic import BaseModel, model_validator

log = logging.getLogger(__name__)


class TLSConfigError(ValueError):
    """TLS files missing, incomplete or unreadable, and no explicit plaintext switch."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A certificate chain, its private key and the CA bundle that verifies the other side (PEM files)."""

    cert_file: str
    key_file: str
    ca_file: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, private key, CA bundle) as bytes; a clear error when a file cannot be read."""
        parts = []
        for what, path in (("certificate", self.cert_file), ("private key", self.key_file), ("CA", self.ca_file)):
            try:
                parts.append(Path(path).read_bytes())
            except OSError as error:
                raise TLSConfigError(f"the TLS {what} file {path!r} cannot be read: {error.strerror}") from None
        return parts[0], parts[1], parts[2]


def tls_files(
    variables: str, cert_file: str, key_file: str, ca_file: str, *, insecure_plaintext: bool, switch: str
) -> TLSFiles | None:
    """The configured files, or None under the explicit plaintext switch; raises when neither is set.

    ``variables`` names the environment variables in the message (e.g. ``KEYRING_TLS_*``);
    ``switch`` names the plaintext switch.
    """
    given = [bool(cert_file), bool(key_file), bool(ca_file)]
    if all(given):
        if insecure_plaintext:
            raise TLSConfigError(f"{variables} files are set and so is {switch}: choose one")
        return TLSFiles(cert_file, key_file, ca_file)
    if any(given):
        raise TLSConfigError(f"{variables}: the certificate, private key and CA files go together; set all three")
    if insecure_plaintext:
        return None
    raise TLSConfigError(
        f"no TLS certificate configured: set {variables}_CERT_FILE, _KEY_FILE and _CA_FILE "
        f"(mutual TLS), or {switch}=true to run without any authentication (development only)"
    )


def warn_plaintext(service: str, what: str) -> None:
    """The loud warning a service logs when it starts under its plaintext switch."""
    log.warning(
        "%s: INSECURE PLAINTEXT %s: no TLS, no peer identity, anyone who reaches the port is trusted. "
        "Development only; configure the TLS files in production.",
        service.upper(),
        what,
    )


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Server side of mutual TLS: clients must present a certificate the CA signed."""
    cert, key, ca = files.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(files: TLSFiles) -> grpc.ChannelCredentials:
    """Client side of mutual TLS: the server is verified against the CA, our certificate is presented."""
    cert, key, ca = files.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def target_name_options(server_name: str) -> list[tuple[str, str]]:
    """Channel options verifying the server's certificate against ``server_name`` rather than the address.

    A DNS name resolved to replica IPs (the edge connects to each IP of a
    headless Service) keeps being verified against the name it was resolved from.
    """
    if server_name:
        return [("grpc.ssl_target_name_override", server_name)]
    return []


def identities(auth_context: Mapping[str, Iterable[bytes]]) -> frozenset[str]:
    """Every name a verified peer certificate carries: its common name and subject alternative names."""
    names: set[str] = set()
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            names.add(value.decode(errors="replace"))
    return frozenset(names)


def primary_identity(auth_context: Mapping[str, Iterable[bytes]]) -> str:
    """The name used for a peer in logs and the audit log: its common name, else its first SAN."""
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            return value.decode(errors="replace")
    return ""


class KeyringClientTLS(BaseModel):
    """The settings of a service that calls keyring over mutual TLS (edge, admin), mixed into its settings.

    The environment variables carry the service's prefix (``EDGE_KEYRING_TLS_CERT_FILE``...). Secure by
    default: the service does not start without the three files, unless the plaintext switch is on.
    """

    # This service's certificate and key, and the CA that signs keyring's certificate.
    keyring_tls_cert_file: str = ""
    keyring_tls_key_file: str = ""
    keyring_tls_ca_file: str = ""
    # The name keyring's certificate must carry; empty: the host of each keyring address.
    keyring_tls_server_name: str = ""
    # Without the TLS files the service refuses to start, unless this switch is on (dev only).
    keyring_insecure_plaintext: bool = False

    def keyring_tls(self) -> TLSFiles | None:
        """The TLS files for keyring; None under the plaintext switch; raises when neither is set."""
        prefix = str(self.model_config.get("env_prefix", ""))
        return tls_files(
            f"{prefix}KEYRING_TLS", self.keyring_tls_cert_file, self.keyring_tls_key_file, self.keyring_tls_ca_file,
            insecure_plaintext=self.keyring_insecure_plaintext, switch=f"{prefix}KEYRING_INSECURE_PLAINTEXT",
        )  # fmt: skip

    @model_validator(mode="after")
    def _keyring_tls_or_plaintext(self) -> KeyringClientTLS:
        self.keyring_tls()
        return self
