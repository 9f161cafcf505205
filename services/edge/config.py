"""The edge's settings, from EDGE_* environment variables, validated at start-up."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.grpc_options import CLIENT_KEEPALIVE_S, CLIENT_KEEPALIVE_TIMEOUT_S
from services.common.tls import KeyringClientTLS


def _loopback(host: str) -> bool:
    """localhost (and *.localhost, RFC 6761), 127.0.0.0/8 or ::1."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class EdgeSettings(KeyringClientTLS, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8080
    # SO_REUSEPORT on the http and https listeners: several edge processes on one machine serve the same port,
    # the kernel spreading connections over them (one process per core on a VM). Each process keeps its own
    # /metrics, so on Kubernetes run one process per pod and scale pods instead (docs/deployment.md "Scaling").
    reuse_port: bool = False
    # Connections the kernel keeps waiting to be accepted, per listener (aiohttp's default, 128, drops the SYNs of a
    # burst: each dropped client retries a second later, then 3 s, 7 s); capped by net.core.somaxconn.
    listen_backlog: int = Field(default=2048, ge=1)
    # Comma-separated host:port of keyring replicas (in Kubernetes: one headless Service name per replica).
    keyring_addresses: str = "127.0.0.1:50051"
    # The longest wait for keyring's answer to a call, over every replica asked (a replica late by its hedge
    # delay is marked slow and the call also sent to another, below).
    keyring_timeout_s: float = Field(default=5.0, gt=0)
    # --- gRPC keepalive (docs/configuration.md "gRPC keepalive", services/common/grpc_options.py) ---
    # Each lease stream is pinged after this long without traffic, and given up when a ping is not answered
    # within the timeout. Never below keyring's KEYRING_GRPC_MIN_PING_INTERVAL_S (5 s): GOAWAY too_many_pings.
    keyring_keepalive_s: float = Field(default=CLIENT_KEEPALIVE_S, gt=0)
    keyring_keepalive_timeout_s: float = Field(default=CLIENT_KEEPALIVE_TIMEOUT_S, gt=0)
    # Releases kept per keyring replica while its stream is away (re-sent when it is back), the oldest
    # dropped past this (keyring reclaims the slots of a broken stream's leases after its own grace).
    keyring_max_owed_releases: int = Field(default=10_000, ge=1)
    # --- A keyring replica that does not answer (docs/configuration.md: replicas that are slow or gone) ---
    # A call unanswered for its replica's hedge delay (three times its recent latency, between these two) is
    # also sent to the next healthy replica (the first answer wins, a later grant is released at once), and a
    # replica silent that long is marked slow: asked last until a probe, after a backoff doubling each time.
    keyring_hedge_delay_s: float = Field(default=0.05, gt=0)
    keyring_max_hedge_delay_s: float = Field(default=0.25, gt=0)
    # The longest wait between two probes of a slow replica, or two reconnects to a down one.
    keyring_max_reconnect_backoff_s: float = Field(default=30.0, gt=0)
    # Releases owed to a replica down this long are handed over to a live one once keyring's membership no
    # longer names the instance that granted them (counted there, once).
    keyring_handover_after_s: float = Field(default=1.0, ge=0)
    # The release of a finished request (nobody waits for it) may wait this long for the next call to its
    # replica and share its message: one gRPC message each way per request instead of two. The key's slot
    # returns that much later at most (concurrency caps are held up to this long after an answer). 0: at once.
    keyring_release_window_s: float = Field(default=0.002, ge=0, le=0.05)
    # Credits: leases kept ahead of need per (client token, model, service class), so a plain call takes one
    # instead of asking keyring (keyring/credits.py). Each holds its key's slot and counts against the token and
    # the project until used, or given back unused (refunded) after keyring_credit_idle_s. A shelf holds only what
    # its calls can use (twice its calls of the last idle time, at most this many). 0: none.
    keyring_credits: int = Field(default=16, ge=0, le=64)
    keyring_credit_idle_s: float = Field(default=0.25, gt=0, le=5.0)
    # How long the routine release of a call served from a credit may wait to share a message with the next
    # call to its replica (credits exist only where no in-flight cap waits on a slot): fewer messages each way.
    keyring_credit_release_window_s: float = Field(default=0.02, ge=0, le=0.25)
    # Google, or a relay in front of it (Cloudflare AI Gateway...): may carry a path prefix.
    upstream_base_url: str = "https://generativelanguage.googleapis.com"
    # One proxy for every upstream call, unless egress_proxies is set.
    http_proxy: str = ""
    # Comma-separated proxies; a lease's egress_slot picks one (keys spread over egress IPs).
    egress_proxies: str = ""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # The longest silence between two bytes of an answer (thinking models are slow), not the whole answer.
    read_timeout_s: float = Field(default=600.0, gt=0)
    # --- Long silences in a stream (docs/configuration.md "Long silences in a stream") ---
    # After this many seconds without an upstream chunk, an SSE answer gets an empty line between two events
    # (SSE clients ignore it; idle timeouts of proxies between client and edge are reset). 0 turns it off. The
    # first keep-alive commits the stream as a first chunk would (no other key is tried after it).
    stream_keepalive_s: float = Field(default=15.0, ge=0)
    # --- Bounded resources (docs/configuration.md, edge: the memory arithmetic) ---
    # Gemini's own limit for a request with inline data; never decompressed (compressed bodies get a 415).
    max_body_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    # The memory budget of the bodies being read, in bodies of max_body_bytes (~3 x max_body_bytes +
    # 72 B x max_json_elements each, worst case); a smaller body takes its share (body_reads.worst_cost).
    max_concurrent_bodies: int = Field(default=4, ge=1)
    # Bodies one client token may have being read at once; one more is a 429 at once (its stalled bodies
    # never hold another token's reads).
    max_bodies_per_token: int = Field(default=2, ge=1)
    # A body (waiting for room in the budget included) must arrive within this, or 408.
    body_timeout_s: float = Field(default=30.0, gt=0)
    # Structural characters ({ [ ,) above which a body is not parsed (Gemini: shape check only; OpenAI: 413).
    max_json_elements: int = Field(default=200_000, ge=1)
    # A request head (request line and headers) must be complete this long after its first byte, or the
    # connection is closed; an idle keep-alive connection is closed after keepalive_timeout_s.
    head_timeout_s: float = Field(default=10.0, gt=0)
    keepalive_timeout_s: float = Field(default=75.0, gt=0)
    # Distinct model label values in the metrics; models past it are labelled "other".
    max_model_labels: int = Field(default=64, ge=1)
    # Upstream keys tried per client request (failover).
    max_attempts: int = Field(default=3, ge=1)
    # Size of the one upstream connection pool of the process: a stream holds one for its whole length, and a
    # request past the pool waits for one (its lease held). Held to (RLIMIT_NOFILE - 64) / 2, since a stream also
    # holds its client's connection; the edge raises its soft RLIMIT_NOFILE to the hard limit at start
    # (services/edge/capacity.py). bench/stream_scale_bench.py: ten thousand slow streams.
    upstream_connection_limit: int = Field(default=10_000, ge=1)
    # --- Shutting down (docs/configuration.md "Shutting down"; deploy/k8s/base/edge.yaml: grace period 120 s) ---
    # On SIGTERM /readyz answers 503 at once and the listener keeps accepting this long (the Service and the
    # ingress stop routing here meanwhile), then closes; requests in flight (long streams) then get
    # shutdown_timeout_s to finish, one wait that ends when none is left. delay + timeout + ~10 s (keyring
    # releases flushed, streams closed) must fit the pod's termination grace: 5 + 100 + 10 <= 120.
    shutdown_delay_s: float = Field(default=5.0, ge=0)
    shutdown_timeout_s: float = Field(default=100.0, ge=0)
    # Run on uvloop (when installed). Off by default: grpc.aio's poller on uvloop measured
    # ~3x slower through the edge (bench/edge_bench.py: 331 vs 962 req/s at concurrency 16).
    uvloop: bool = False

    # --- Files, caches, batches, operations, interactions (docs/configuration.md "Files, caches, batches,
    # operations and interactions") ---
    # Serve resumable uploads (POST /upload/{version}/files). On, the edge needs public_base_url (it refuses
    # to start without it); off, the upload route answers 404.
    uploads: bool = True
    # The edge's address as clients reach it (https://gemini.example.com): where upload URLs point, never the
    # request's own Host or scheme. https unless its host is a loopback one (localhost, 127.x, ::1) or
    # public_base_url_allow_http (development only) is set.
    public_base_url: str = ""
    public_base_url_allow_http: bool = False
    # How long an upload session handed out lives (its sealed URL and its binding to the key in keyring): the
    # slowest upload to finish, not Google's week.
    upload_session_ttl_s: float = Field(default=6 * 3600, ge=60, le=7 * 24 * 3600)
    # Seals upload sessions into upload URLs; every edge replica must share it, so that the bytes of an upload
    # may reach any of them. Empty: a random key of this process (the bytes must come back to this replica).
    upload_session_key: str = Field(default="", repr=False)
    # The largest file an upload may declare (Google's limit: 2 GiB).
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    # List calls merge the lists of the pool's projects: at most this many projects and items.
    list_max_projects: int = Field(default=50, ge=1)
    list_max_items: int = Field(default=1000, ge=1)

    # --- Token check before the body (docs/configuration.md, edge) ---
    # A POST's client token is checked at keyring (CheckToken) before its body is read; accepted token hashes
    # are remembered this long (0: ask every time), so a revoked token may pass this pre-check for up to this
    # long (Acquire still refuses it). Refusals are never remembered.
    token_check_ttl_s: float = Field(default=30.0, ge=0)
    # Accepted token hashes remembered at most (~200 B each), the oldest forgotten first.
    token_check_entries: int = Field(default=4096, ge=1)

    # --- https next to plain http (docs/configuration.md "https on the edge"; services/edge/https.py) ---
    # The edge's server certificate chain (leaf first) and private key, PEM: both or neither (neither: plain http
    # only, TLS left to the ingress). Read again when the files change (checked at each TLS handshake), so a renewed
    # certificate is served without a restart. Not the EDGE_KEYRING_TLS_* files (the edge's identity towards keyring).
    https_cert_file: str = ""
    https_key_file: str = ""
    https_port: int = Field(default=8443, ge=0, le=65535)

    # --- Live API sessions (docs/configuration.md "Live API sessions"; services/edge/live/) ---
    # The client's first frame (setup) must arrive this long after the upgrade, or the socket is closed (1007).
    live_setup_timeout_s: float = Field(default=10.0, gt=0)
    # A session with no frame either way for this long is closed (1008); pings do not count.
    live_idle_timeout_s: float = Field(default=300.0, gt=0)
    # The longest session the edge relays (Google closes its own at about 10 min per connection, 58 min at most).
    live_max_duration_s: float = Field(default=3600.0, gt=0)
    # A frame larger than this, either way, closes the session with 1009 (each session buffers one frame at most).
    live_max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

    # --- Service identity: mutual TLS to keyring (docs/configuration.md): KeyringClientTLS's fields ---

    @field_validator("public_base_url")
    @classmethod
    def _public_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("EDGE_PUBLIC_BASE_URL must start with https:// (or http:// for a loopback host)")
        return value

    @model_validator(mode="after")
    def _uploads_need_a_public_base(self) -> EdgeSettings:
        """Upload URLs point at EDGE_PUBLIC_BASE_URL: required while uploads are on, https unless told otherwise."""
        if not self.uploads:
            return self
        if not self.public_base_url:
            raise ValueError(
                "EDGE_PUBLIC_BASE_URL is required while uploads are served (EDGE_UPLOADS=true): the https address"
                " clients reach the edges by (https://gemini.example.com), where upload URLs point; or set"
                " EDGE_UPLOADS=false"
            )
        url = urlsplit(self.public_base_url)
        if not url.hostname or url.username or url.password or url.query or url.fragment:
            raise ValueError("EDGE_PUBLIC_BASE_URL must be scheme://host[:port][/path]: no user, query or fragment")
        if url.scheme == "http" and not (self.public_base_url_allow_http or _loopback(url.hostname)):
            raise ValueError(
                f"EDGE_PUBLIC_BASE_URL must be https:// ({self.public_base_url} would send upload bytes in clear);"
                " http:// is accepted for a loopback host, or with EDGE_PUBLIC_BASE_URL_ALLOW_HTTP=true in development"
            )
        return self

    @model_validator(mode="after")
    def _https_files_together(self) -> EdgeSettings:
        if bool(self.https_cert_file) != bool(self.https_key_file):
            raise ValueError("EDGE_HTTPS_CERT_FILE and EDGE_HTTPS_KEY_FILE go together: set both (https) or neither")
        return self

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
