"""Keyring's settings, from KEYRING_* environment variables, validated at start-up."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .codec import DEFAULT_PREFIX
from .domain.identity import GEMINI_KEY_PATTERN
from .sealing import SecretBox, parse_keks


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
    replica_id: str = Field(default_factory=_default_replica_id)
    membership_ttl_s: int = 10
    key_pattern: str = GEMINI_KEY_PATTERN
    max_keys_per_import: int = 5000
    max_message_bytes: int = 16 * 1024 * 1024
    shutdown_grace_s: float = 10.0
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

    @model_validator(mode="after")
    def _one_kek(self) -> KeyringSettings:
        if not self.kek and not self.kek_file:
            raise ValueError("set KEYRING_KEK or KEYRING_KEK_FILE (base64 of 32 random bytes)")
        return self

    def secret_box(self) -> SecretBox:
        """The current KEK seals; it and every KEK in open_keks(_file) open."""
        others = parse_keks(self.open_keks)
        if self.open_keks_file:
            others += parse_keks(Path(self.open_keks_file).read_text())
        current = Path(self.kek_file).read_text() if self.kek_file else self.kek
        return SecretBox.from_base64(current, others)
