"""One keyring replica's channel and its multiplexed ``LeaseStream``: calls out, replies matched by id.

Acquire, Release and CheckToken travel on a long-lived ``LeaseStream``
(cheaper per call than unary RPCs; see bench/keyring_bench.py). Calls are
queued; the stream's writer sends everything queued so far as one batch, so
under load many calls share one gRPC message.

A call nobody waits for (a release, a report) is kept by ``kept.KeptReleases``
until keyring answers it; when the stream breaks, awaited calls fail (the
caller asks another replica), kept releases become owed and are re-sent on the
next stream, opened again after a backoff (doubling per consecutive break, at
most ``MAX_RECONNECT_BACKOFF_S``).

The channel is mutual TLS when ``credentials`` are given (``services/common/tls.py``),
verified under ``server_name`` when one is given.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from services.common.grpc_options import client_keepalive, client_reconnect
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.tls import target_name_options

from ..errors import KeyringUnavailable
from .background import detached_later, detached_task
from .kept import KeptReleases

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = 0.5
MAX_RECONNECT_BACKOFF_S = 5.0  # owed releases are re-sent at most this long apart while their replica is away


class LeaseStream:
    """One replica's channel and lease stream; ``kept``: the releases it is owed (module docstring)."""

    MAX_BATCH = 256

    def __init__(
        self,
        address: str,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str = "",
        *,
        keepalive: Sequence[tuple[str, int]] = (),
        max_owed: int = 10_000,
    ) -> None:
        self.address = address
        options = [*(keepalive or client_keepalive()), *client_reconnect(), *target_name_options(server_name)]
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(address, options=options)
        else:
            self.channel = grpc.aio.secure_channel(address, credentials, options=options)
        self.stub = pb_grpc.LeaseServiceStub(self.channel)
        self.kept = KeptReleases(address, max_owed)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.LeaseResult]] = {}
        self._outgoing: asyncio.Queue[pb.LeaseCall | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._failures = 0  # consecutive broken streams: the backoff of re-sending owed releases
        self._closed = False
        self.down_until = 0.0
        self.opened = 0  # streams opened (a reconnect opens another)

    @property
    def usable(self) -> bool:
        return time.monotonic() >= self.down_until

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def send(self, call: pb.LeaseCall) -> None:
        """Queue a call whose reply nobody waits for (a release, a report); kept (owed) until keyring answers it."""
        if not self.connected:
            self._open()
        call.id = next(self._ids)
        self.kept.sent(call)
        self._outgoing.put_nowait(call)

    def owe(self, call: pb.LeaseCall) -> None:
        """Keep a release for this replica; re-sent once its stream is back (bounded, the oldest dropped)."""
        if self._closed:
            return
        self.kept.owe(call)
        if self.connected and self.usable:
            self._flush_owed()
        else:
            self._schedule_retry()

    async def call(self, call: pb.LeaseCall, timeout_s: float) -> pb.LeaseResult:
        """Send ``call`` and wait for its reply; ``KeyringUnavailable`` when the replica is late or gone."""
        if not self.connected:
            self._open()
        call.id = next(self._ids)
        future: asyncio.Future[pb.LeaseResult] = asyncio.get_running_loop().create_future()
        self._pending[call.id] = future
        self._outgoing.put_nowait(call)
        try:
            async with asyncio.timeout(timeout_s):
                result = await future
        except TimeoutError as error:
            self._mark_down()
            raise KeyringUnavailable(f"keyring replica {self.address} did not answer in time") from error
        finally:
            self._pending.pop(call.id, None)
        self.kept.keep_counted(call, result)
        return result

    def _open(self) -> None:
        """A new stream, read by a task of its own: outside the context of the request that happened to open it."""
        queue: asyncio.Queue[pb.LeaseCall | None] = asyncio.Queue()
        self._outgoing = queue
        self.opened += 1
        self._reader = detached_task(self._read(queue), name=f"lease-stream-{self.address}")

    def _flush_owed(self) -> None:
        self._retry = None
        if self._closed:
            return
        for call in self.kept.take_owed():
            self.send(call)

    def _schedule_retry(self) -> None:
        if self._retry is not None or self._closed or not self.kept.owed:
            return
        delay = min(RECONNECT_BACKOFF_S * 2 ** min(self._failures, 4), MAX_RECONNECT_BACKOFF_S)
        self._retry = detached_later(delay, self._flush_owed)

    @classmethod
    async def _batches(cls, queue: asyncio.Queue[pb.LeaseCall | None]) -> AsyncIterator[pb.LeaseStreamRequest]:
        while (first := await queue.get()) is not None:
            calls = [first]
            while not queue.empty() and len(calls) < cls.MAX_BATCH:
                following = queue.get_nowait()
                if following is None:
                    yield pb.LeaseStreamRequest(calls=calls)
                    return
                calls.append(following)
            yield pb.LeaseStreamRequest(calls=calls)

    async def _read(self, queue: asyncio.Queue[pb.LeaseCall | None]) -> None:
        kept, pending = self.kept, self._pending
        try:
            async for reply in self.stub.LeaseStream(self._batches(queue)):
                self._failures = 0
                for result in reply.results:
                    kept.answered(result)
                    future = pending.get(result.id)
                    if future is not None and not future.done():
                        future.set_result(result)
                kept.forget_durable(reply.durable_epoch)
        except grpc.aio.AioRpcError as error:
            self._failures += 1
            log.warning("lease stream to %s broke: %s", self.address, error.code().name)
        finally:
            if self._reader is asyncio.current_task():
                self._mark_down()

    def _mark_down(self) -> None:
        """Give up on this stream: awaited calls fail (the caller asks another replica), releases are owed."""
        self.down_until = time.monotonic() + RECONNECT_BACKOFF_S
        for future in self._pending.values():
            if not future.done():
                future.set_exception(KeyringUnavailable(f"keyring replica {self.address} went away"))
        if self._reader is not None and not self._reader.done():
            self._outgoing.put_nowait(None)
            self._reader.cancel()
        self._reader = None
        self.kept.broke()
        self._schedule_retry()

    async def close(self, flush_timeout_s: float = 2.0) -> None:
        """End the stream after what is queued (releases sent without waiting, owed ones) has gone out."""
        if self._retry is not None:
            self._retry.cancel()
        if self.kept.owed and self.connected:
            self._flush_owed()
        self._closed = True
        self._outgoing.put_nowait(None)
        reader = self._reader
        if reader is not None:
            # The request stream ends after the queued calls; keyring answers them and ends its side.
            await asyncio.wait({reader}, timeout=flush_timeout_s)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self.channel.close()
