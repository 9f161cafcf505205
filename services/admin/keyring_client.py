"""The admin service's client of keyring's AdminService: one channel per replica.

Calls rotate over the replicas (client-side round robin). A replica that
answers UNAVAILABLE (unreachable, draining, no view yet) is skipped and the
call goes to the next one: UNAVAILABLE means the call was not carried out.
Every call names its actor in the ``x-keyring-actor`` metadata, which keyring
records in its audit log (trusted because the channel presents admin's
certificate: mutual TLS, ``services/common/tls.py``). gRPC errors leave this module as they are; they
become HTTP answers in ``errors.from_rpc_error`` only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Final

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_options import client_keepalive, client_reconnect
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.tls import TLSFiles, channel_credentials, target_name_options

from .errors import from_rpc_error

ACTOR_METADATA: Final = "x-keyring-actor"
ADMIN_SERVICE: Final = pb.DESCRIPTOR.services_by_name["AdminService"]
_METHODS: Final = frozenset(method.name for method in ADMIN_SERVICE.methods)
_CHANNEL_OPTIONS: Final = [
    *client_reconnect(),  # a restarted replica is reached again within seconds
    *client_keepalive(),  # the keepalive policy keyring's server accepts (services/common/grpc_options.py)
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # A name with several records (a headless Service) spreads calls over every replica.
    ("grpc.lb_policy_name", "round_robin"),
]


class KeyringAdmin:
    """AdminService over several replicas; create and close it inside the event loop."""

    def __init__(
        self, addresses: Sequence[str], timeout_s: float, *, tls: TLSFiles | None, server_name: str = ""
    ) -> None:
        """``tls``: admin's certificate (its identity is what keyring lets administer), key and CA;
        None only under the explicit plaintext switch. ``server_name``: the name keyring's
        certificate must carry when it differs from the address's host."""
        if not addresses:
            raise ValueError("at least one keyring address is needed")
        options = [*_CHANNEL_OPTIONS, *target_name_options(server_name)]
        if tls is None:
            self._channels = [grpc.aio.insecure_channel(address, options=options) for address in addresses]
        else:
            credentials = channel_credentials(tls)
            self._channels = [grpc.aio.secure_channel(address, credentials, options=options) for address in addresses]
        self._stubs = [pb_grpc.AdminServiceStub(channel) for channel in self._channels]
        self._turn = itertools.count()
        self._timeout_s = timeout_s

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def call(self, method: str, request: Message, actor: str, timeout_s: float | None = None) -> Any:
        """Call ``method`` on the first replica that can take it; raises ``ApiError`` on failure."""
        if method not in _METHODS:
            raise ValueError(f"AdminService has no method {method}")
        start = next(self._turn)
        last: grpc.aio.AioRpcError | None = None
        for offset in range(len(self._stubs)):
            stub = self._stubs[(start + offset) % len(self._stubs)]
            try:
                return await getattr(stub, method)(
                    request, metadata=((ACTOR_METADATA, actor),), timeout=timeout_s or self._timeout_s
                )
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc_error(error, method) from None
                last = error
        assert last is not None
        raise from_rpc_error(last, method) from None

    async def ready(self) -> bool:
        """True when at least one replica reports AdminService as SERVING."""
        for channel in self._channels:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=ADMIN_SERVICE.full_name), timeout=1.0
                )
            except grpc.aio.AioRpcError:
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return True
        return False
