"""The keyring replicas an internal service leases from, over mutual TLS, with its client token.

The client token never leaves the process: only its SHA-256 is sent (``AcquireRequest.token_hash``), as
the edge does. The certificate's identity (its common name) must be in keyring's
``KEYRING_LEASE_IDENTITIES`` when that list is set. Acquires go round the replicas, and on to the next one
when a replica cannot be reached; a lease is released on the replica that granted it.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from keyring_lease._proto.keyring.v1 import keyring_pb2 as pb
from keyring_lease._proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from keyring_lease.errors import KeyringUnavailable, from_rpc
from keyring_lease.lease import Attempts, Lease, Release

__all__ = ["Identity", "LeasePool"]


@dataclass(frozen=True, slots=True)
class Identity:
    """This service's certificate, its private key and the CA that signs keyring's certificate (PEM files)."""

    cert_file: str
    key_file: str
    ca_file: str

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials from the files, read now; a clear error when one cannot be read."""
        parts: list[bytes] = []
        for what, path in (("certificate", self.cert_file), ("private key", self.key_file), ("CA", self.ca_file)):
            try:
                parts.append(Path(path).read_bytes())
            except OSError as error:
                raise KeyringUnavailable(f"the TLS {what} file {path!r} cannot be read: {error.strerror}") from None
        return grpc.ssl_channel_credentials(
            root_certificates=parts[2], private_key=parts[1], certificate_chain=parts[0]
        )


class LeasePool:
    """Leases upstream keys of the client token's pool from keyring; use as ``async with LeasePool(...)``.

    ``addresses``: one or more ``host:port`` of keyring replicas (a comma-separated string is split).
    ``server_name``: the name keyring's certificate is checked against when it differs from the host.
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        token: str,
        identity: Identity,
        timeout_s: float = 5.0,
        server_name: str = "",
    ) -> None:
        listed = addresses.split(",") if isinstance(addresses, str) else list(addresses)
        self._addresses = [address.strip() for address in listed if address.strip()]
        if not self._addresses:
            raise ValueError("no keyring address given")
        if not token:
            raise ValueError("no client token given")
        self._token_hash = hashlib.sha256(token.encode()).hexdigest()
        self._identity = identity
        self._timeout_s = timeout_s
        self._options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._turn = itertools.count()

    def lease(self, model: str) -> Lease:
        """A key for one call to ``model`` (with or without ``models/``): ``async with pool.lease(model) as lease``."""
        return Lease(self, model)

    def attempts(self, model: str, *, max_attempts: int = 3) -> Attempts:
        """Leases for one call, another key each time the previous answer blamed the key (``Attempts``)."""
        return Attempts(self, model, max_attempts)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> LeasePool:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def _acquire(self, model: str, exclude_key_ids: Sequence[str]) -> tuple[pb.Lease, Release]:
        """A lease from the next replica that answers, and how to release it there."""
        request = pb.AcquireRequest(token_hash=self._token_hash, model=model, exclude_key_ids=list(exclude_key_ids))
        start = next(self._turn)
        last: grpc.aio.AioRpcError | None = None
        for offset in range(len(self._addresses)):
            stub = pb_grpc.LeaseServiceStub(self._channel(self._addresses[(start + offset) % len(self._addresses)]))
            try:
                reply: pb.AcquireResponse = await stub.Acquire(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise from_rpc(error) from None
                last = error
                continue
            return reply.lease, self._releaser(stub)
        assert last is not None
        raise from_rpc(last) from None

    def _releaser(self, stub: pb_grpc.LeaseServiceStub) -> Release:
        async def release(request: pb.ReleaseRequest) -> object:
            return await stub.Release(request, timeout=self._timeout_s)

        return release

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            credentials = self._identity.credentials()
            self._channels[address] = grpc.aio.secure_channel(address, credentials, options=self._options)
        return self._channels[address]
