"""The admin service's settings, from ADMIN_* environment variables, validated at start-up.

Admin tokens come inline (``ADMIN_ADMIN_TOKENS="ops:operator:secret1,ci:viewer:secret2"``)
or from a file (``ADMIN_ADMIN_TOKENS_FILE``, one entry per line, ``#`` comments
allowed: a mounted Kubernetes Secret). At least one is required. An entry is
``name:role:token`` with role ``viewer`` (reads only), ``operator`` (changes)
or ``operator+export`` (may also export upstream secrets in clear;
``viewer+export`` is accepted and exports nothing); the older ``name:token``
still works and means ``operator``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.tls import KeyringClientTLS

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_TOKEN_LENGTH = 16


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
EXPORT_SUFFIX = "+export"


@dataclass(frozen=True, slots=True)
class AdminAccount:
    """One admin token: its secret, its role and whether it may export secrets in clear."""

    token: str
    role: Role = "operator"
    export: bool = False

    @property
    def can_change(self) -> bool:
        return self.role == "operator"

    def __repr__(self) -> str:  # never the token
        return f"AdminAccount(role={self.role!r}, export={self.export})"


def _role_of(text: str) -> tuple[Role, bool] | None:
    """``viewer``, ``operator``, ``viewer+export``, ``operator+export`` -> (role, export); None otherwise."""
    role, export = (text[: -len(EXPORT_SUFFIX)], True) if text.endswith(EXPORT_SUFFIX) else (text, False)
    for known in ROLES:
        if role == known:
            return known, export
    return None


def parse_admin_accounts(entries: list[str]) -> dict[str, AdminAccount]:
    """``name:role:token`` or ``name:token`` entries -> {name: account}; a token never appears in an error."""
    accounts: dict[str, AdminAccount] = {}
    for number, entry in enumerate(entries, start=1):
        name, colon, rest = entry.partition(":")
        name, rest = name.strip(), rest.strip()
        if not colon or not TOKEN_NAME.fullmatch(name):
            raise ValueError(f"admin token entry {number} is not 'name:role:token' with a name of [A-Za-z0-9._-]")
        role_text, colon, token = rest.partition(":")
        parsed = _role_of(role_text.strip()) if colon else None
        role: Role = "operator"
        export = False
        if parsed is None:  # no role given: 'name:token' (a token may hold ':' itself)
            token = rest
        else:
            (role, export), token = parsed, token.strip()
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"admin token {name!r} is shorter than {MIN_TOKEN_LENGTH} characters")
        if name in accounts:
            raise ValueError(f"admin token name {name!r} appears twice")
        if any(account.token == token for account in accounts.values()):
            raise ValueError(f"admin token {name!r} reuses another admin token")
        accounts[name] = AdminAccount(token, role, export)
    return accounts


def parse_admin_tokens(entries: list[str]) -> dict[str, str]:
    """Entries -> {name: token} (roles dropped)."""
    return {name: account.token for name, account in parse_admin_accounts(entries).items()}


def parse_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part, strict=False) for part in _split(value))
    except ValueError as error:
        raise ValueError(f"ADMIN_TRUSTED_PROXIES: {error}") from None


class AdminSettings(KeyringClientTLS, BaseSettings):
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
    # The routes carrying many keys (adding keys, importing; authenticated callers only): their body's size and
    # structural JSON characters (services/admin/bodies.py; login and the other routes have small fixed limits).
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_json_elements: int = Field(default=500_000, ge=1)
    session_ttl_s: int = Field(default=8 * 3600, gt=0)
    # True behind TLS (the ingress): session cookies then travel over HTTPS only.
    cookie_secure: bool = False
    shutdown_timeout_s: float = 10.0
    # --- Slow clients (services/common/head_timeout.py, services/admin/bodies.py) ---
    # A request head must be complete this long after its first byte; idle keep-alive connections close after
    # keepalive_timeout_s. A request body must be complete this long after the handler asks for it (408).
    head_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    keepalive_timeout_s: float = Field(default=75.0, gt=0)

    # --- Service identity: mutual TLS to keyring (docs/configuration.md): KeyringClientTLS's fields ---
    # Failed logins (a wrong token at /api/login or in a bearer header) per client address and per
    # admin name: after this many within login_window_s, 429 with Retry-After until the window ends.
    login_max_failures: int = Field(default=10, ge=1)
    login_window_s: float = Field(default=300.0, gt=0)
    # Comma-separated addresses or CIDRs of reverse proxies (the compose nginx) whose
    # X-Forwarded-For names the client; empty: the peer address is the client.
    trusted_proxies: str = ""

    _accounts: dict[str, AdminAccount] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _load_tokens(self) -> AdminSettings:
        entries = list(_split(self.admin_tokens.get_secret_value()))
        if self.admin_tokens_file:
            try:
                lines = Path(self.admin_tokens_file).read_text().splitlines()
            except OSError as error:
                raise ValueError(f"ADMIN_ADMIN_TOKENS_FILE cannot be read: {error.strerror}") from None
            entries += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        self._accounts = parse_admin_accounts(entries)
        if not self._accounts:
            raise ValueError("set ADMIN_ADMIN_TOKENS ('name:role:token,...') or ADMIN_ADMIN_TOKENS_FILE")
        parse_networks(self.trusted_proxies)
        if not self.keyring_address_list:
            raise ValueError("ADMIN_KEYRING_ADDRESSES names no keyring replica")
        return self

    @property
    def keyring_address_list(self) -> tuple[str, ...]:
        return _split(self.keyring_addresses)

    @property
    def admin_token_map(self) -> dict[str, str]:
        """{name: token}; the names become the audit actor (``admin:<name>``)."""
        return {name: account.token for name, account in self._accounts.items()}

    @property
    def admin_accounts(self) -> dict[str, AdminAccount]:
        """{name: account}: token, role and the export permission."""
        return dict(self._accounts)

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return parse_networks(self.trusted_proxies)
