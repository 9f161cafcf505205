"""Keyring's gRPC server: the factory (for tests, port 0) apart from serving (``run``)."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common.grpc_options import server_keepalive
from services.common.metrics_http import start_metrics_server
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.tls import server_credentials, warn_plaintext

from .admin_servicer import AdminServicer
from .administration import Administration
from .checker import UpstreamChecker
from .codec import Layout
from .config import KeyringSettings
from .core import Keyring
from .domain.affinity import BindingCaps
from .domain.blames import BlameBudget
from .lease_servicer import LeaseServicer
from .metrics import KeyringMetrics
from .store import EtcdStore, Store

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    pb.DESCRIPTOR.services_by_name["LeaseService"].full_name,
    pb.DESCRIPTOR.services_by_name["AdminService"].full_name,
)


class KeyringServer:
    """A running replica: its gRPC server, health service and keyring core."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        keyring: Keyring,
        health: HealthServicer,
        metrics: KeyringMetrics,
        settings: KeyringSettings,
    ) -> None:
        self.server = server
        self.port = port
        self.keyring = keyring
        self.health = health
        self.metrics = metrics
        self.metrics_port = 0
        self._settings = settings
        self._metrics_runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Serve NOT_SERVING until the view is built, then SERVING."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._settings.metrics_port >= 0:
            self._metrics_runner, self.metrics_port = await start_metrics_server(
                self.metrics.registry,
                self._settings.metrics_host,
                self._settings.metrics_port,
                lambda: self.keyring.ready,
            )
        await self.server.start()
        await self.keyring.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info("keyring replica %s serving on port %d", self.keyring.replica_id, self.port)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Refuse new leases and drop the membership at once, then finish in-flight RPCs (up to ``grace_s``), stop."""
        await self.keyring.leave()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        await self.keyring.stop()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)


def create_server(
    settings: KeyringSettings,
    store: Store,
    host: str | None = None,
    port: int | None = None,
    metrics: KeyringMetrics | None = None,
) -> KeyringServer:
    """Build a replica bound to host:port (port 0 picks a free one); nothing runs yet."""
    checker = UpstreamChecker(settings.upstream_base_url, settings.http_proxy, settings.check_timeout_s)
    keyring = Keyring(
        store,
        settings.secret_box(),
        checker,
        replica_id=settings.replica_id,
        layout=Layout(settings.prefix),
        membership_ttl_s=settings.membership_ttl_s,
        janitor_interval_s=settings.janitor_interval_s,
        recheck_interval_s=settings.recheck_interval_s,
        lease_key=settings.lease_key(),
    )
    keyring.desk.allocator.binding_caps = BindingCaps(settings.affinity_max_per_pool, settings.affinity_max_per_token)
    keyring.desk.allocator.session_ttl_s = settings.session_lease_ttl_s
    administration = Administration(
        keyring, key_pattern=settings.key_pattern, max_keys_per_import=settings.max_keys_per_import
    )
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
        *server_keepalive(settings.grpc_min_ping_interval_s),  # clients' pings accepted (grpc_options.py)
    ]
    tls = settings.grpc_tls()  # refuses to go on without certificates unless plaintext is asked for
    authorization = settings.authorization()
    interceptors = [] if tls is None else [authorization.interceptor()]
    server = grpc.aio.server(options=options, interceptors=interceptors)
    keyring.desk.blames = BlameBudget(settings.key_blames_per_minute)  # outcomes blaming keys, per caller identity
    leases = LeaseServicer(
        keyring.desk,
        stream_lease_grace_s=settings.stream_lease_grace_s,
        max_input_estimate=settings.max_input_estimate,
    )
    pb_grpc.add_LeaseServiceServicer_to_server(leases, server)
    pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(keyring, administration, authorization), server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
    address = f"{host or settings.host}:{settings.port if port is None else port}"
    if tls is None:
        warn_plaintext("keyring", "gRPC (every RPC allowed, the audit actor taken as sent)")
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials(tls))
    metrics = metrics or KeyringMetrics(settings.metrics_per_key)
    metrics.observe(keyring)
    if isinstance(store, EtcdStore):
        store.observe_operations(metrics.etcd_operation)
    return KeyringServer(server, bound, keyring, health, metrics, settings)


async def run(settings: KeyringSettings) -> None:
    settings.grpc_tls()  # no certificate and no plaintext switch: refuse before touching etcd
    etcd_tls = settings.etcd_tls()
    if etcd_tls is None:
        warn_plaintext("keyring", "etcd connection")
    store = await EtcdStore.open(
        settings.etcd_endpoint, timeout_s=settings.etcd_timeout_s, tls=etcd_tls, credentials=settings.etcd_credentials()
    )
    replica = create_server(settings, store)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await replica.start()
        print(f"keyring listening on {settings.host}:{replica.port}", flush=True)
        await stopping.wait()
        log.info("shutting down: membership dropped, in-flight RPCs drained up to %.0f s", settings.shutdown_grace_s)
    finally:
        await replica.stop(settings.shutdown_grace_s)
        await store.close()
