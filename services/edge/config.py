"""The edge's settings, from EDGE_* environment variables, validated at start-up."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class EdgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8080
    # Comma-separated host:port of keyring replicas (in Kubernetes: one headless Service name per replica).
    keyring_addresses: str = "127.0.0.1:50051"
    keyring_timeout_s: float = Field(default=5.0, gt=0)
    # Google, or a relay in front of it (Cloudflare AI Gateway...): may carry a path prefix.
    upstream_base_url: str = "https://generativelanguage.googleapis.com"
    # One proxy for every upstream call, unless egress_proxies is set.
    http_proxy: str = ""
    # Comma-separated proxies; a lease's egress_slot picks one (keys spread over egress IPs).
    egress_proxies: str = ""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # The longest silence between two bytes of an answer (thinking models are slow), not the whole answer.
    read_timeout_s: float = Field(default=600.0, gt=0)
    max_body_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    # Upstream keys tried per client request (failover).
    max_attempts: int = Field(default=3, ge=1)
    # Size of the one upstream connection pool of the process.
    upstream_connection_limit: int = Field(default=1000, ge=1)
    shutdown_timeout_s: float = 10.0
    # Run on uvloop (when installed). Off by default: grpc.aio's poller on uvloop measured
    # ~3x slower through the edge (bench/edge_bench.py: 331 vs 962 req/s at concurrency 16).
    uvloop: bool = False

    @field_validator("upstream_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("EDGE_UPSTREAM_BASE_URL must start with http:// or https://")
        return value

    @property
    def keyring_address_list(self) -> tuple[str, ...]:
        return _split(self.keyring_addresses)

    @property
    def egress_proxy_list(self) -> tuple[str, ...]:
        return _split(self.egress_proxies)
