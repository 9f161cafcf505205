"""Keyring's settings, from KEYRING_* environment variables, validated at start-up."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.grpc_options import SERVER_MIN_PING_INTERVAL_S
from services.common.tls import TLSFiles, tls_files

from .authorization import Authorization
from .codec import DEFAULT_PREFIX
from .domain.identity import GEMINI_KEY_PATTERN
from .sealing import SecretBox, parse_keks


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class KeyringSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYRING_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 50051
    # host:port of etcd's client endpoint (in Kubernetes: the etcd client Service).
    etcd_endpoint: str = "127.0.0.1:2379"
    etcd_timeout_s: float = 5.0
    prefix: str = DEFAULT_PREFIX
    # The key-encryption key: base64 of 32 bytes, inline or in a file (a mounted Secret).
    kek: str = Field(default="", repr=False)
    kek_file: str = ""
    # Secrets at rest (SECURITY.md, "Rotating the KEK"): more KEKs this replica opens with but never
    # seals with (the next KEK before it becomes current, the previous one until the reseal command
    # has run), base64 values separated by commas or whitespace, inline or in a file.
    open_keks: str = Field(default="", repr=False)
    open_keks_file: str = ""
    # Upgrades only: client-token records from before keyed hashes (a bare SHA-256) are refused at Acquire
    # unless this is on; `python -m services.keyring.reseal` keys them (its --check counts unkeyed_tokens).
    accept_unkeyed_tokens: bool = False
    replica_id: str = Field(default_factory=_default_replica_id)
    membership_ttl_s: int = 10
    # What an upstream key string must match (a Python regular expression, whole string): by default either
    # kind, auth keys (AQ. + 20-200 of [0-9A-Za-z_-]) or standard keys (AIza + 35 of them).
    key_pattern: str = GEMINI_KEY_PATTERN
    max_keys_per_import: int = 5000
    max_message_bytes: int = 16 * 1024 * 1024
    # --- Shutdown (docs/configuration.md "Shutting down") ---
    # On SIGTERM: membership dropped at once, new leases refused, in-flight RPCs (open lease streams) given this
    # long to finish; keep it under the pod's terminationGracePeriodSeconds (deploy/k8s: 30).
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    # Leases granted on a lease stream that ended (its edge went away or gave up on this replica) are reclaimed
    # this long after the stream ended, unless a release (re-sent by the edge on a new stream) comes first.
    stream_lease_grace_s: float = Field(default=15.0, ge=0)
    # A Live session's lease (issue 20) lives this long without a renew; the edge renews it every third of it.
    # An edge that dies leaves its sessions' leases to be reclaimed within it (counted as calls of unknown outcome).
    session_lease_ttl_s: float = Field(default=30.0, gt=0, le=600)
    # The largest input-token estimate an edge may reserve for one lease (tokens-per-minute pacing); a larger
    # one is clamped to it and counted (keyring_input_estimates_clamped_total): an edge is trusted only as far
    # as a lease. Default: twice the largest Gemini input window (1,048,576 tokens).
    max_input_estimate: int = Field(default=2 * 1_048_576, ge=0)
    # Project-bound resources (docs/configuration.md "Files, caches, batches, operations and interactions"): the
    # live affinity records (etcd records, held in every replica's memory) a pool, and one client token, may hold;
    # a call that would create one more is refused (429) before it reaches the upstream. 0: no cap.
    affinity_max_per_pool: int = Field(default=100_000, ge=0)
    affinity_max_per_token: int = Field(default=10_000, ge=0)
    # Outcomes blaming a key (a strike, a cooldown, a key marked invalid or forbidden) judged per caller identity
    # (its certificate) and minute, on each replica; past it the key is left as it is (the slot still released,
    # the call counted) and keyring_key_blames_refused_total{identity} counts it (services/keyring/domain/blames.py).
    key_blames_per_minute: int = Field(default=300, ge=1)
    # --- gRPC keepalive (docs/configuration.md "gRPC keepalive", services/common/grpc_options.py) ---
    # The shortest interval between a client's pings this server accepts; must not exceed any client's
    # keepalive (EDGE_KEYRING_KEEPALIVE_S, 20 s by default), or the server answers GOAWAY too_many_pings.
    grpc_min_ping_interval_s: float = Field(default=SERVER_MIN_PING_INTERVAL_S, gt=0)
    janitor_interval_s: float = 1.0
    # Prometheus /metrics (and an HTTP /healthz) on their own port; 0 picks a free one, -1 turns it off.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9102
    # Per-key series (key ids as labels); turn off for pools of many thousands of keys.
    metrics_per_key: bool = True
    # The check path (VerifyKeys and the periodic re-check of invalid and suspended keys).
    upstream_base_url: str = "https://generativelanguage.googleapis.com"
    http_proxy: str = ""
    check_timeout_s: float = 10.0
    recheck_interval_s: float = 900.0  # 0: no periodic re-check

    # --- Service identity and etcd TLS (docs/configuration.md, docs/architecture.md) ---
    # Mutual TLS on the gRPC port: this replica's certificate and key, and the CA that signs its clients.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_file: str = ""
    # Without the TLS files keyring refuses to start, unless this switch is on (no identity at all: dev only).
    insecure_plaintext: bool = False
    # Certificate identities (CN or SAN) allowed to call AdminService; comma-separated.
    admin_identities: str = "keyring-admin"
    # Identities allowed to lease and release; empty: every client certificate the CA signed.
    lease_identities: str = ""
    # gRPC server reflection (service discovery for grpcurl); off unless switched on.
    reflection: bool = False
    # Key that signs lease ids (all replicas must share it): a file of at least 32 random bytes;
    # empty: derived from the key-encryption key (HKDF).
    lease_key_file: str = ""
    # etcd over TLS with a client certificate (etcd --client-cert-auth); the CA verifies etcd's certificate.
    etcd_tls_cert_file: str = ""
    etcd_tls_key_file: str = ""
    etcd_tls_ca_file: str = ""
    etcd_insecure_plaintext: bool = False
    # Optional etcd user (etcd auth enabled): the password inline or in a file.
    etcd_username: str = ""
    etcd_password: str = Field(default="", repr=False)
    etcd_password_file: str = ""

    @model_validator(mode="after")
    def _one_kek(self) -> KeyringSettings:
        if not self.kek and not self.kek_file:
            raise ValueError("set KEYRING_KEK or KEYRING_KEK_FILE (base64 of 32 random bytes)")
        return self

    @model_validator(mode="after")
    def _tls_or_plaintext(self) -> KeyringSettings:
        """Secure by default: no start without certificates (gRPC and etcd), unless plaintext is asked for."""
        self.grpc_tls()
        self.etcd_tls()
        return self

    def grpc_tls(self) -> TLSFiles | None:
        """The gRPC port's TLS files; None under KEYRING_INSECURE_PLAINTEXT; raises when neither is set."""
        return tls_files(
            "KEYRING_TLS", self.tls_cert_file, self.tls_key_file, self.tls_ca_file,
            insecure_plaintext=self.insecure_plaintext, switch="KEYRING_INSECURE_PLAINTEXT",
        )  # fmt: skip

    def etcd_tls(self) -> TLSFiles | None:
        """etcd's TLS files; None under KEYRING_ETCD_INSECURE_PLAINTEXT; raises when neither is set."""
        return tls_files(
            "KEYRING_ETCD_TLS", self.etcd_tls_cert_file, self.etcd_tls_key_file, self.etcd_tls_ca_file,
            insecure_plaintext=self.etcd_insecure_plaintext, switch="KEYRING_ETCD_INSECURE_PLAINTEXT",
        )  # fmt: skip

    def etcd_credentials(self) -> tuple[str, str] | None:
        """(user, password) for etcd auth, or None."""
        if not self.etcd_username:
            return None
        password = Path(self.etcd_password_file).read_text().strip() if self.etcd_password_file else self.etcd_password
        return self.etcd_username, password

    def authorization(self) -> Authorization:
        return Authorization(
            admin_identities=_split(self.admin_identities),
            lease_identities=_split(self.lease_identities),
            plaintext=self.grpc_tls() is None,
        )

    def lease_key(self) -> bytes:
        """The key every replica signs lease ids with: the lease key file, else derived from the KEK."""
        if self.lease_key_file:
            key = Path(self.lease_key_file).read_bytes().strip()
            if len(key) < 32:
                raise ValueError("KEYRING_LEASE_KEY_FILE must hold at least 32 bytes")
            return key
        material = (Path(self.kek_file).read_text() if self.kek_file else self.kek).strip().encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyring lease ids v1").derive(material)

    def secret_box(self) -> SecretBox:
        """The current KEK seals; it and every KEK in open_keks(_file) open."""
        others = parse_keks(self.open_keks)
        if self.open_keks_file:
            others += parse_keks(Path(self.open_keks_file).read_text())
        current = Path(self.kek_file).read_text() if self.kek_file else self.kek
        return SecretBox.from_base64(current, others, accept_unkeyed_tokens=self.accept_unkeyed_tokens)
