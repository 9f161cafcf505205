"""One keyring replica's channel and its multiplexed ``LeaseStream``: calls out, replies matched by id.

Acquire, Release and CheckToken travel on a long-lived ``LeaseStream``
(cheaper per call than unary RPCs; see bench/keyring_bench.py). Calls are
queued; the stream's writer sends everything queued so far as one batch, so
under load many calls share one gRPC message.

A call nobody waits for (a release, a report) is kept by ``kept.KeptReleases``
until keyring answers it; when the stream breaks, awaited calls fail (the
caller asks another replica), kept releases become owed and are re-sent on the
next stream. The replica's health (``health.ReplicaHealth``: healthy, slow,
down) is kept here: an answer's latency teaches it, a call left overdue makes
the replica slow, a broken stream makes it down; no new stream is opened to a
down replica before its backoff has passed (growing, at most
``max_backoff_s``), and a replica not answering is sent one owed release at
a time as its probe, the rest when it answers; each change of state is
logged once, not each attempt. A down replica is also tried again in the
background each time its backoff passes (``_reprobe``: a stream opened and
one empty call, which keyring answers from memory), whether or not anything
is owed to it: after a handover nothing is, and calls no longer ask it, so
without this an edge might never go back to a restarted replica.

The channel is mutual TLS when ``credentials`` are given (``services/common/tls.py``),
verified under ``server_name`` when one is given.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

import grpc

from services.common.grpc_options import client_keepalive, client_reconnect
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.tls import target_name_options

from ..errors import KeyringUnavailable
from .background import detached_later, detached_task
from .health import ReplicaHealth, State
from .kept import KeptReleases

log = logging.getLogger(__name__)

MIN_RETRY_S = 0.05  # the soonest owed releases are re-sent after they became owed
# A call whose stream went away is answered with this (never raised into a future nobody may read).
GONE: Final = pb.LeaseResult(error=pb.StreamError(code=grpc.StatusCode.UNAVAILABLE.value[0], message="gone"))
# What a flight's future resolves to when its caller stopped waiting for it (``asking``: its hedge delay).
OVERDUE: Final = pb.LeaseResult(error=pb.StreamError(code=grpc.StatusCode.DEADLINE_EXCEEDED.value[0]))


class Flight:
    """An awaited call on its way: the future its reply resolves, and the reply itself once it came.

    The future may be done before the reply (``asking`` resolves it with ``OVERDUE`` when its hedge delay
    passes, or it was cancelled with the caller): the reply still lands in ``reply``, and goes to ``late``
    when one is set (a grant nobody waits for any more is released).
    """

    __slots__ = ("call", "future", "late", "reply", "sent_at")

    def __init__(self, call: pb.LeaseCall, future: asyncio.Future[pb.LeaseResult], sent_at: float) -> None:
        self.call = call
        self.future = future
        self.sent_at = sent_at
        self.reply: pb.LeaseResult | None = None
        self.late: Callable[[pb.LeaseResult], None] | None = None


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
        health: ReplicaHealth | None = None,
        release_window_s: float = 0.0,
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
        self._pending: dict[int, Flight] = {}  # awaited calls by id
        self._outgoing: asyncio.Queue[pb.LeaseCall | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._probe: asyncio.TimerHandle | None = None  # a down replica's next background reconnect
        self._closed = False
        self.health = health or ReplicaHealth()
        self.members: tuple[str, ...] | None = None  # the live instances this replica last told (None: not yet)
        self.opened = 0  # streams opened (a reconnect opens another)
        self._last_reply = 0.0  # when a reply last came (monotonic seconds)
        # Releases held back to share the next call's message (``send(..., defer=True)``), at most this long.
        self.release_window_s = release_window_s
        self._deferred: list[pb.LeaseCall] = []
        self._deferred_flush: asyncio.TimerHandle | None = None
        # Told the credits this replica revoked (``LeaseStreamResponse.revoked_credits``; ``credits.py``).
        self.on_revoked: Callable[[Sequence[str]], None] | None = None

    @property
    def usable(self) -> bool:
        """Healthy: answering in time (``health.py``)."""
        return self.health.state is State.HEALTHY

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    def send(self, call: pb.LeaseCall, *, defer: bool = False, window_s: float | None = None) -> None:
        """Queue a call whose reply nobody waits for (a release, a report); kept (owed) until keyring answers it.

        ``defer``: a routine release may wait up to ``release_window_s`` (or its own ``window_s``) for the next
        call to this replica and go out in the same message (one gRPC message each way per request instead of
        two, on both sides); the slot returns to keyring that much later at most. Kept from the moment it is
        queued, as any other.
        """
        if not self.connected:
            self._open()
        call.id = next(self._ids)
        self.kept.sent(call)
        window = self.release_window_s if window_s is None else window_s
        if defer and window > 0:
            self._deferred.append(call)
            flush = self._deferred_flush
            if flush is None or asyncio.get_running_loop().time() + window < flush.when():  # the soonest window
                if flush is not None:
                    flush.cancel()
                self._deferred_flush = detached_later(window, self._send_deferred)
            return
        if self._deferred:
            self._send_deferred()  # they share this call's message
        self._outgoing.put_nowait(call)

    def _send_deferred(self) -> None:
        """The held-back releases onto the stream, ahead of the call that takes them along (or their window's end)."""
        if self._deferred_flush is not None:
            self._deferred_flush.cancel()
            self._deferred_flush = None
        deferred, self._deferred = self._deferred, []
        for call in deferred:
            self._outgoing.put_nowait(call)

    def owe(self, call: pb.LeaseCall) -> None:
        """Keep a release for this replica; re-sent once its stream is back (bounded, the oldest dropped).

        A closed stream (a replica no longer named) keeps it for a handover (``replicas.ReplicaSet``).
        """
        self.kept.owe(call)
        if self._closed:
            return
        if self.connected and self.usable:
            self._flush_owed()
        else:
            self._schedule_retry()

    def submit(self, call: pb.LeaseCall) -> Flight:
        """Send ``call``; its ``Flight`` (its future resolves to the reply, or ``GONE`` if the stream goes first).

        ``KeyringUnavailable`` at once when the replica is down and no reconnect is due (its backoff).
        """
        if not self.connected:
            health = self.health
            if health.state is State.DOWN and not health.probing and not health.claim(time.monotonic()):
                raise KeyringUnavailable(f"keyring replica {self.address} is down")
            self._open()
        call.id = next(self._ids)
        flight = self._pending[call.id] = Flight(call, asyncio.get_running_loop().create_future(), time.monotonic())
        if self._deferred:
            self._send_deferred()  # they share this call's message
        self._outgoing.put_nowait(call)
        return flight

    async def call(self, call: pb.LeaseCall, timeout_s: float) -> pb.LeaseResult:
        """Send ``call`` and wait for its reply; ``KeyringUnavailable`` when the replica is down, late or gone.

        Late: the replica is marked slow (the call stays in flight; its answer, if it comes, is kept).
        """
        future = self.submit(call).future
        done, _ = await asyncio.wait({future}, timeout=timeout_s)
        if not done:
            self.overdue()
            raise KeyringUnavailable(f"keyring replica {self.address} did not answer in time")
        result = future.result()
        if result is GONE:
            raise KeyringUnavailable(f"keyring replica {self.address} went away")
        return result

    def overdue(self) -> None:
        """A call to this replica went unanswered past its hedge delay: slow (logged once, ``health.py``) when
        nothing else came from it meanwhile either (a busy event loop here makes one reply late, not a replica)."""
        now = time.monotonic()
        if now - self._last_reply < self.health.hedge_delay_s and self.health.state is State.HEALTHY:
            return
        if self.health.overdue(now) is State.SLOW:
            # The replica's news, not the request's that noticed it: logged outside its trace (finding 5).
            contextvars.Context().run(
                log.warning,
                "keyring replica %s is slow: no answer within %d ms; calls go to the other replicas until it answers",
                self.address, round(self.health.hedge_delay_s * 1000),
            )  # fmt: skip

    def _open(self) -> None:
        """A new stream, read by a task of its own: outside the context of the request that happened to open it."""
        queue: asyncio.Queue[pb.LeaseCall | None] = asyncio.Queue()
        self._outgoing = queue
        self.opened += 1
        self._reader = detached_task(self._read(queue), name=f"lease-stream-{self.address}")

    def _flush_owed(self) -> None:
        """Re-send what is owed: all of it when the replica is healthy, else one release as a probe once one is
        due (the rest stay owed, to be handed over if it is gone for good, and follow when it answers)."""
        self._retry = None
        if self._closed or not self.kept.owed:
            return
        if self.health.state is State.HEALTHY:
            for call in self.kept.take_owed():
                self.send(call)
        elif self.health.claim(time.monotonic()):
            self.send(self.kept.take_oldest())
        self._schedule_retry()

    def _schedule_probe(self) -> None:
        if self._probe is None and not self._closed and self.health.state is State.DOWN:
            delay = max(self.health.retry_at - time.monotonic(), MIN_RETRY_S)
            self._probe = detached_later(delay, self._reprobe)

    def _reprobe(self) -> None:
        """A down replica's backoff passed: reconnect and send an empty call (answered INVALID_ARGUMENT from
        memory, changing nothing); its answer makes the replica healthy (``_read``), a failure backs off more."""
        self._probe = None
        if self._closed or self.health.state is not State.DOWN:
            return
        if self.health.claim(time.monotonic()):
            self.submit(pb.LeaseCall())  # claimed: a stream opens (``probing``)
        self._schedule_probe()

    def _schedule_retry(self) -> None:
        if self._retry is not None or self._closed or not self.kept.owed:
            return
        delay = max(self.health.retry_at - time.monotonic(), MIN_RETRY_S)
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
        kept, pending, health = self.kept, self._pending, self.health
        reason = "ended"
        try:
            async for reply in self.stub.LeaseStream(self._batches(queue)):
                self._last_reply = now = time.monotonic()
                was = health.state
                for result in reply.results:
                    flight = pending.pop(result.id, None)
                    if flight is None:
                        kept.answered(result)
                        continue
                    kept.keep_counted(flight.call, result)
                    flight.reply = result
                    if not flight.future.done():
                        flight.future.set_result(result)
                    elif flight.late is not None:
                        flight.late(result)  # nobody waits for it any more
                    if health.answered(now - flight.sent_at, now) is not None:
                        log.info("keyring replica %s answers again", self.address)
                kept.forget_durable(reply.durable_epoch)
                if reply.revoked_credits and self.on_revoked is not None:
                    self.on_revoked(reply.revoked_credits)
                if reply.members:
                    self.members = tuple(reply.members)
                if was is not State.HEALTHY and reply.results:
                    if health.heard(now) is not None:
                        log.info("keyring replica %s answers again", self.address)
                    self._flush_owed()  # what waited for it follows the probe
        except grpc.aio.AioRpcError as error:
            reason = error.code().name
        finally:
            if self._reader is asyncio.current_task():
                self._mark_down(reason)

    def _mark_down(self, reason: str) -> None:
        """The stream broke: awaited calls fail (the caller asks another replica), releases are owed."""
        if self._closed:
            pass
        elif self.health.broke(time.monotonic()) is State.DOWN:
            log.warning(
                "lease stream to %s broke (%s): keyring replica down; calls go to the other replicas, "
                "reconnects back off (up to %g s), its releases are kept",
                self.address, reason, self.health.max_backoff_s,
            )  # fmt: skip
        else:
            log.debug("lease stream to %s broke again (%s): next attempt in %.1f s", self.address, reason,
                      self.health.retry_at - time.monotonic())  # fmt: skip
        self.members = None
        if self._deferred_flush is not None:
            self._deferred_flush.cancel()
            self._deferred_flush = None
        self._deferred = []  # never sent: kept as unanswered, owed below (``kept.broke``)
        pending, self._pending = self._pending, {}
        for flight in pending.values():
            if not flight.future.done():
                flight.future.set_result(GONE)
        if self._reader is not None and not self._reader.done():
            self._outgoing.put_nowait(None)
            self._reader.cancel()
        self._reader = None
        self.kept.broke()
        self._schedule_retry()
        self._schedule_probe()

    async def close(self, flush_timeout_s: float = 2.0) -> None:
        """End the stream after what is queued (releases sent without waiting, owed ones) has gone out."""
        if self._retry is not None:
            self._retry.cancel()
        if self._probe is not None:
            self._probe.cancel()
        if self.connected:
            self._send_deferred()
            if self.kept.owed:
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
