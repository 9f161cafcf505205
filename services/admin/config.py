"""The admin service's settings, from ADMIN_* environment variables, validated at start-up.

Admin tokens come inline (``ADMIN_ADMIN_TOKENS="ops:secret1,ci:secret2"``)
or from a file (``ADMIN_ADMIN_TOKENS_FILE``, one ``name:token`` per line,
``#`` comments allowed: a mounted Kubernetes Secret). At least one is required.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_TOKEN_LENGTH = 16


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def parse_admin_tokens(entries: list[str]) -> dict[str, str]:
    """``name:token`` entries -> {name: token}; the token itself never appears in an error."""
    tokens: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        name, colon, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not colon or not TOKEN_NAME.fullmatch(name):
            raise ValueError(f"admin token entry {number} is not 'name:token' with a name of [A-Za-z0-9._-]")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"admin token {name!r} is shorter than {MIN_TOKEN_LENGTH} characters")
        if name in tokens:
            raise ValueError(f"admin token name {name!r} appears twice")
        if token in tokens.values():
            raise ValueError(f"admin token {name!r} reuses another admin token")
        tokens[name] = token
    return tokens


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADMIN_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(default=8081, ge=0, le=65535)
    # Comma-separated host:port of keyring replicas; calls rotate over them and skip unreachable ones.
    keyring_addresses: str = "127.0.0.1:50051"
    keyring_timeout_s: float = Field(default=10.0, gt=0)
    # VerifyKeys makes real upstream calls: it gets a longer deadline.
    verify_timeout_s: float = Field(default=120.0, gt=0)
    admin_tokens: SecretStr = Field(default=SecretStr(""))
    admin_tokens_file: str = ""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    session_ttl_s: int = Field(default=8 * 3600, gt=0)
    # True behind TLS (the ingress): session cookies then travel over HTTPS only.
    cookie_secure: bool = False
    shutdown_timeout_s: float = 10.0

    _tokens: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _load_tokens(self) -> AdminSettings:
        entries = list(_split(self.admin_tokens.get_secret_value()))
        if self.admin_tokens_file:
            try:
                lines = Path(self.admin_tokens_file).read_text().splitlines()
            except OSError as error:
                raise ValueError(f"ADMIN_ADMIN_TOKENS_FILE cannot be read: {error.strerror}") from None
            entries += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        self._tokens = parse_admin_tokens(entries)
        if not self._tokens:
            raise ValueError("set ADMIN_ADMIN_TOKENS ('name:token,...') or ADMIN_ADMIN_TOKENS_FILE")
        if not self.keyring_address_list:
            raise ValueError("ADMIN_KEYRING_ADDRESSES names no keyring replica")
        return self

    @property
    def keyring_address_list(self) -> tuple[str, ...]:
        return _split(self.keyring_addresses)

    @property
    def admin_token_map(self) -> dict[str, str]:
        """{name: token}; the names become the audit actor (``admin:<name>``)."""
        return dict(self._tokens)
