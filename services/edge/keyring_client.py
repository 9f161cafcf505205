"""The edge's client of keyring, and its only gRPC module: leases over one multiplexed stream per replica.

Acquire, Release and CheckToken travel on a long-lived ``LeaseStream``
(cheaper per call than unary RPCs; see bench/keyring_bench.py), matched to
replies by id.
Acquires rotate over the replicas (client-side round robin); a replica whose
stream breaks is skipped and reconnected, and the call is tried on the next
one. A release goes back to the replica that granted the lease, because
the in-flight slot lives there; if that replica is gone the outcome still
reaches another one (the key's health is shared through etcd). A release
whose outcome is news (not a 2xx, not cancelled) also goes, as an
outcome-only report (``LeaseCall.report``), to every other replica with an
open stream, unanswered: each applies what it decides in memory at once, so
a cooldown holds everywhere without waiting for etcd (a routine success
sends nothing more).

The channels are mutual TLS (``services/common/tls.py``): the edge presents
its certificate and verifies keyring's against the CA, under the name of the
address it resolved (a replica's IP is checked against the Service name).
Plaintext only when the caller passes ``tls=None`` (the explicit switch).

``check_token`` asks keyring whether a client token is one it would lease
for, before the edge reads a request body; accepted token hashes are
remembered for a short TTL (a bounded dict), refusals never.

Keyring's refusals become edge exceptions here and nowhere else
(``errors.LeaseRefused``: token rejected, model not allowed, no key free with
its retry time, invalid request, keyring unavailable); nothing above this
module sees a gRPC status. A resource named in ``affinity`` that keyring does
not know (NOT_FOUND) is a ``KeyringUnavailable`` whose ``reason`` is
``"NOT_FOUND"``.

Affinity (resources that live in one upstream project): ``acquire(...,
affinity=[names])`` leases the owner key of those resources (or another key
of its project), ``exclude_projects`` skips projects a list call has covered;
``release(..., bind=[Binding(name, ttl_s)], unbind=[names])`` records or
forgets owners. A release carrying either is always confirmed: the task it
returns resolves to True once keyring has committed the records.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal, overload

import grpc
from opentelemetry import trace

from services.common.grpc_options import (
    CLIENT_KEEPALIVE_S,
    CLIENT_KEEPALIVE_TIMEOUT_S,
    client_keepalive,
    client_reconnect,
)
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.telemetry import current_traceparent
from services.common.tls import TLSFiles, channel_credentials, target_name_options

from .errors import (
    InvalidLeaseRequest,
    KeyringUnavailable,
    LeaseRefused,
    ModelNotAllowed,
    NoKeyFree,
    TokenRejected,
)

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = 0.5
MAX_RECONNECT_BACKOFF_S = 5.0  # owed releases are re-sent at most this long apart while their replica is away
MAX_BOUND_NAMES = 1000  # names one bound-names question asks about (keyring's affinity.MAX_LISTED_NAMES)
tracer = trace.get_tracer("services.edge")
_NO_SPAN: Final = contextlib.nullcontext()

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def refusal(code: grpc.StatusCode, message: str, retry_after_s: float = 0.0) -> LeaseRefused:
    """Keyring's refusal of a lease as the edge exception that answers the client."""
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return TokenRejected()
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return ModelNotAllowed(message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return NoKeyFree(message, retry_after_s)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidLeaseRequest(message)
    return KeyringUnavailable(message, reason=code.name)


@dataclass(frozen=True, slots=True)
class Binding:
    """A resource a call created under its lease's key, and how long keyring routes to that key (its lifetime)."""

    name: str  # e.g. "files/abc": the spelling later acquires name in ``affinity``
    ttl_s: float


@dataclass(frozen=True, slots=True)
class GrantedLease:
    lease: pb.Lease
    allowed_models: tuple[str, ...]
    replica: str  # the address of the replica that granted it


class _ReplicaStream:
    """One replica's channel and its multiplexed lease stream.

    Calls are queued; the stream's writer sends everything queued so far as
    one batch, so under load many calls share one gRPC message.

    Releases are kept until keyring answers them: when the stream breaks, those
    sent but unanswered (and those still queued) are owed to this replica, and
    so are releases delivered elsewhere while it was away (``owe``: the slot
    lives here). Owed releases are re-sent on the next stream, opened again
    after a backoff, at most ``max_owed`` of them (the oldest dropped first: keyring
    reclaims the slots of a broken stream's leases itself, after its grace).

    A release answered with a usage epoch (``counted_epoch``) is kept until the
    replica says that epoch is in the store (``durable_epoch`` on its replies);
    when the stream breaks first, it is owed too, epoch included: a replica
    killed before its usage flush loses no count, because its successor counts
    the releases whose epoch it never wrote (keyring ``ledger.py``).
    """

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
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.LeaseResult]] = {}
        self._unanswered: dict[int, pb.LeaseCall] = {}  # releases sent or queued on this stream, not answered yet
        self._owed: collections.deque[pb.LeaseCall] = collections.deque()
        self._counted: collections.deque[pb.LeaseCall] = collections.deque()  # answered, counted, not durable yet
        self._durable = 0  # the replica's usage epoch known to be in its store
        self._max_owed = max_owed
        self._outgoing: asyncio.Queue[pb.LeaseCall | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._failures = 0  # consecutive broken streams: the backoff of re-sending owed releases
        self._closed = False
        self.down_until = 0.0
        self.opened = 0  # streams opened (a reconnect opens another)
        self.dropped = 0  # owed releases dropped over the bound

    @property
    def usable(self) -> bool:
        return time.monotonic() >= self.down_until

    @property
    def connected(self) -> bool:
        return self._reader is not None and not self._reader.done()

    @property
    def owed(self) -> int:
        """Releases waiting for this replica's stream to come back."""
        return len(self._owed)

    @property
    def unconfirmed(self) -> int:
        """Releases counted in a usage epoch this replica has not said is written."""
        return len(self._counted)

    def send(self, call: pb.LeaseCall) -> None:
        """Queue a call whose reply nobody waits for (a release, a report); kept (owed) until keyring answers it."""
        if not self.connected:
            self._open()
        call.id = next(self._ids)
        self._unanswered[call.id] = call
        self._outgoing.put_nowait(call)

    def owe(self, call: pb.LeaseCall) -> None:
        """Keep a release for this replica; re-sent once its stream is back (bounded, the oldest dropped)."""
        if self._closed:
            return
        self._owed.append(call)
        while len(self._owed) > self._max_owed:
            self._owed.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d releases owed to %s dropped (keyring reclaims their slots)", self.dropped, self.address)
        if self.connected and self.usable:
            self._flush_owed()
        else:
            self._schedule_retry()

    async def call(self, call: pb.LeaseCall, timeout_s: float) -> pb.LeaseResult:
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
        self._keep_counted(call, result)
        return result

    def _keep_counted(self, call: pb.LeaseCall, result: pb.LeaseResult) -> None:
        """Keep a release counted in a usage epoch not yet durable (bounded like the owed ones)."""
        epoch = result.release.counted_epoch if result.HasField("release") else 0
        if epoch > self._durable and call.HasField("release"):
            if call.release.bind or call.release.unbind:
                call = _plain(call)  # its bindings are committed: a re-send counts, it does not bind again
            call.release.counted_epoch = epoch
            self._counted.append(call)
            if len(self._counted) > self._max_owed:
                self._counted.popleft()
                self.dropped += 1

    def _forget_durable(self, epoch: int) -> None:
        """The replica wrote its usage up to ``epoch``: the releases counted in it need no keeping."""
        if epoch > self._durable:
            self._durable = epoch
            self._counted = collections.deque(c for c in self._counted if c.release.counted_epoch > epoch)

    def _open(self) -> None:
        self._outgoing = asyncio.Queue()
        self.opened += 1
        stream = self.stub.LeaseStream(self._batches(self._outgoing))
        self._reader = asyncio.create_task(self._read(stream), name=f"lease-stream-{self.address}")

    def _flush_owed(self) -> None:
        self._retry = None
        if self._closed or not self._owed:
            return
        owed, self._owed = self._owed, collections.deque()
        for call in owed:
            self.send(call)

    def _schedule_retry(self) -> None:
        if self._retry is not None or self._closed or not self._owed:
            return
        delay = min(RECONNECT_BACKOFF_S * 2 ** min(self._failures, 4), MAX_RECONNECT_BACKOFF_S)
        self._retry = asyncio.get_running_loop().call_later(delay, self._flush_owed)

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

    async def _read(self, stream: grpc.aio.StreamStreamCall) -> None:
        try:
            async for reply in stream:
                self._failures = 0
                for result in reply.results:
                    sent = self._unanswered.pop(result.id, None)
                    if sent is not None:
                        self._keep_counted(sent, result)
                    future = self._pending.get(result.id)
                    if future is not None and not future.done():
                        future.set_result(result)
                self._forget_durable(reply.durable_epoch)
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
        if self._unanswered or self._counted:
            # Counted but not durable (the replica may have died before writing them), then never answered.
            unanswered = [*self._counted, *self._unanswered.values()]
            self._unanswered.clear()
            self._counted.clear()
            self._durable = 0  # the next stream may reach another instance, with epochs of its own
            self._owed.extendleft(reversed(unanswered))  # before those owed since: the older first
            while len(self._owed) > self._max_owed:
                self._owed.popleft()
                self.dropped += 1
        self._schedule_retry()

    async def close(self, flush_timeout_s: float = 2.0) -> None:
        """End the stream after what is queued (releases sent without waiting, owed ones) has gone out."""
        if self._retry is not None:
            self._retry.cancel()
        if self._owed and self.connected:
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

    def take_owed(self) -> list[pb.LeaseCall]:
        """The owed releases, handed over (this replica is gone for good)."""
        owed = list(self._owed)
        self._owed.clear()
        return owed


Resolver = Callable[[str], Awaitable[list[str]]]


def _plain(call: pb.LeaseCall) -> pb.LeaseCall:
    """A copy of a release call to re-send: no bindings (they were committed elsewhere, or refused)."""
    copy = pb.LeaseCall()
    copy.CopyFrom(call)
    copy.release.ClearField("bind")
    copy.release.ClearField("unbind")
    copy.release.kept_for_granter = False
    return copy


def _traced() -> bool:
    """Whether the current request is sampled (its span may have ended: releases run after the answer)."""
    span_context = trace.get_current_span().get_span_context()
    return span_context.is_valid and span_context.trace_flags.sampled


def _span(name: str, granted: GrantedLease) -> contextlib.AbstractContextManager[Any]:
    """A client span for a sampled request; a shared no-op otherwise (nothing allocated)."""
    if not _traced():
        return _NO_SPAN
    attributes = {"keyring.key_id": granted.lease.key_id}
    return tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


async def resolve_all(address: str) -> list[str]:
    """``host:port`` to ``ip:port`` for every A/AAAA record of host; [address] when it does not resolve."""
    host, _, port = address.rpartition(":")
    try:
        records = await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return [address]
    targets: list[str] = []
    for family, _, _, _, sockaddr in records:
        ip, port_number = sockaddr[0], sockaddr[1]
        if not isinstance(ip, str) or not isinstance(port_number, int):
            continue  # not an IP address family
        target = f"[{ip}]:{port_number}" if family == socket.AF_INET6 else f"{ip}:{port_number}"
        if target not in targets:
            targets.append(target)
    return targets or [address]


class KeyringClient:
    """Leases from every keyring replica the configured addresses name.

    An address may be a DNS name with several records (a Kubernetes headless
    Service): it is resolved to every replica, one stream each, and resolved
    again every ``resolve_every_s`` so replicas that come and go are followed.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        timeout_s: float = 5.0,
        resolve_every_s: float = 30.0,
        resolver: Resolver = resolve_all,
        *,
        tls: TLSFiles | None,
        server_name: str = "",
        token_check_ttl_s: float = 30.0,
        token_check_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        keepalive_s: float = CLIENT_KEEPALIVE_S,
        keepalive_timeout_s: float = CLIENT_KEEPALIVE_TIMEOUT_S,
        max_owed_releases: int = 10_000,
    ) -> None:
        """``tls``: the edge's certificate, key and CA; None only under the explicit plaintext switch.

        ``server_name``: the name keyring's certificate must carry; by default the
        host of the address a replica was resolved from.

        ``token_check_ttl_s``, ``token_check_entries``: how long and how many token
        hashes ``check_token`` remembers as accepted (0 s: none, every check asks),
        on ``clock`` (monotonic seconds).

        ``keepalive_s``, ``keepalive_timeout_s``: each stream's pings (``services/common/grpc_options.py``:
        never below keyring's KEYRING_GRPC_MIN_PING_INTERVAL_S). ``max_owed_releases``: releases kept per
        replica while its stream is away, re-sent when it is back.
        """
        if token_check_entries < 1:
            raise ValueError("token_check_entries must be at least 1")
        if not addresses:
            raise ValueError("at least one keyring address is needed")
        self._addresses = list(addresses)
        self._credentials = channel_credentials(tls) if tls is not None else None
        self._server_name = server_name
        self._keepalive = client_keepalive(keepalive_s, keepalive_timeout_s)
        self._max_owed = max_owed_releases
        # Until the first resolution, the addresses as given (grpc resolves them itself).
        self._replicas = [self._stream(address, address) for address in addresses]
        self._by_target = {replica.address: replica for replica in self._replicas}
        self._retired: set[_ReplicaStream] = set()
        self._turn = itertools.count()
        self._timeout_s = timeout_s
        self._resolve_every_s = resolve_every_s
        self._resolver = resolver
        self._next_resolution = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._releases: set[asyncio.Task[bool]] = set()
        self._token_check_ttl_s = token_check_ttl_s
        self._token_check_entries = token_check_entries
        self._accepted: dict[str, float] = {}  # token hash -> the clock's time its acceptance expires
        self._clock = clock
        self._warned_no_check = False

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """Deliver the releases still in flight (bounded), then end every stream after what is queued on it."""
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=flush_timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        streams = [*self._by_target.values(), *self._retired]
        await asyncio.gather(*(replica.close() for replica in streams))

    def _stream(self, target: str, address: str) -> _ReplicaStream:
        host = _host(address)
        name = self._server_name or ("" if _is_ip(host) or _host(target) == host else host)
        if self._credentials is None:
            name = ""
        return _ReplicaStream(target, self._credentials, name, keepalive=self._keepalive, max_owed=self._max_owed)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rotation(self, first: str | None = None) -> list[_ReplicaStream]:
        now = time.monotonic()
        if now >= self._next_resolution:
            first_time = self._next_resolution == 0.0
            self._next_resolution = now + self._resolve_every_s
            if first_time:
                await self._resolve()  # the first call waits for it; later ones never do
            else:
                self._spawn(self._resolve())
        replicas = self._replicas
        start = next(self._turn) if first is None else self._index_of(first)
        ordered = [replicas[(start + i) % len(replicas)] for i in range(len(replicas))]
        return sorted(ordered, key=lambda replica: not replica.usable)  # stable: usable ones first

    def _index_of(self, target: str) -> int:
        for index, replica in enumerate(self._replicas):
            if replica.address == target:
                return index
        return next(self._turn)

    async def _resolve(self) -> None:
        """New replicas get a stream; a replica no longer named keeps its stream until its calls are done."""
        targets: list[str] = []
        origins: dict[str, str] = {}
        for address in self._addresses:
            for target in await self._resolver(address):
                if target not in targets:
                    targets.append(target)
                    origins[target] = address
        if targets == [replica.address for replica in self._replicas]:
            return
        for target in targets:
            if target not in self._by_target:
                self._by_target[target] = self._stream(target, origins[target])
        self._replicas = [self._by_target[target] for target in targets]
        for target in [t for t in self._by_target if t not in targets]:
            gone = self._by_target.pop(target)
            self._retired.add(gone)
            self._spawn(self._retire(gone))

    async def _retire(self, replica: _ReplicaStream) -> None:
        await asyncio.sleep(self._timeout_s * 2)  # calls in flight on it finish or time out first
        self._retired.discard(replica)
        # Gone for good: its slots with it; what the owed releases teach still reaches another replica.
        for call in replica.take_owed():
            if call.HasField("release") and call.release.outcome.transport != pb.Outcome.TRANSPORT_CANCELLED:
                self._spawn(self._tell_others(call))
        await replica.close()

    async def _tell_others(self, call: pb.LeaseCall) -> None:
        for replica in await self._rotation():
            if replica.address in self._by_target:
                with contextlib.suppress(KeyringUnavailable):
                    await replica.call(call, self._timeout_s)
                    return

    async def acquire(
        self,
        token_hash: str,
        model: str,
        exclude: Sequence[str] = (),
        *,
        affinity: Sequence[str] = (),
        exclude_projects: Sequence[str] = (),
        estimated_input_tokens: int = 0,
        binds: bool = False,
    ) -> GrantedLease:
        """A lease for ``model``; ``exclude``: key ids already tried for this request.

        ``affinity``: resources the call names ("files/abc", "cachedContents/x"...):
        the lease goes to their owner key, else another key of its project
        (``NoKeyFree`` with the retry time when that project's keys are all
        busy or cooling; ``InvalidLeaseRequest`` when the names belong to
        different projects; ``KeyringUnavailable`` with reason "NOT_FOUND" when
        the pool knows no such resource). ``exclude_projects``: projects a list
        call has already covered (a key without a project is ``key:<key id>``).
        ``estimated_input_tokens``: the call's input as the edge estimates it
        (``estimates.py``), for keyring's tokens-per-minute pacing. ``binds``: the call creates a
        resource to bind (``NoKeyFree`` when the pool's or the token's bindings are at their cap).
        """
        tokens = estimated_input_tokens
        if not _traced():  # nothing is traced: no span work on the lease path
            return await self._acquire(token_hash, model, exclude, affinity, exclude_projects, tokens, binds)
        with tracer.start_as_current_span("keyring.acquire", kind=trace.SpanKind.CLIENT) as span:
            granted = await self._acquire(token_hash, model, exclude, affinity, exclude_projects, tokens, binds)
            span.set_attributes({"keyring.key_id": granted.lease.key_id, "keyring.pool": granted.lease.pool})
            return granted

    async def _acquire(
        self,
        token_hash: str,
        model: str,
        exclude: Sequence[str],
        affinity: Sequence[str] = (),
        exclude_projects: Sequence[str] = (),
        estimated_input_tokens: int = 0,
        binds: bool = False,
    ) -> GrantedLease:
        request = pb.AcquireRequest(
            token_hash=token_hash, model=model, exclude_key_ids=exclude, estimated_input_tokens=estimated_input_tokens,
            binds=binds,
        )  # fmt: skip
        if affinity:
            request.affinity.extend(affinity)
        if exclude_projects:
            request.exclude_projects.extend(exclude_projects)
        traceparent = current_traceparent()
        reply, replica = await self._ask(lambda: pb.LeaseCall(acquire=request, traceparent=traceparent))
        granted = reply.acquire
        return GrantedLease(granted.lease, tuple(granted.allowed_models), replica)

    async def _ask(self, make_call: Callable[[], pb.LeaseCall]) -> tuple[pb.LeaseResult, str]:
        """A call answered by the first replica able to (a fresh call per replica); (its result, that replica).

        A refusal is raised as the edge exception that answers the client; a
        replica that is gone, late or draining (UNAVAILABLE) passes the call on.
        """
        for replica in await self._rotation():
            try:
                reply = await replica.call(make_call(), self._timeout_s)
            except KeyringUnavailable:
                continue
            if reply.HasField("error"):
                error = reply.error
                code = _CODES.get(error.code, grpc.StatusCode.UNKNOWN)
                if code is grpc.StatusCode.UNAVAILABLE:
                    continue  # that replica is draining: ask another
                raise refusal(code, error.message, error.retry_after_ms / 1000)
            return reply, replica.address
        raise KeyringUnavailable()

    async def check_token(self, token_hash: str) -> None:
        """Return when keyring would lease for this token hash; else raise (``TokenRejected``: a 401).

        The edge asks before it reads a request body, so a client without a
        valid token never costs one. Accepted hashes are remembered for
        ``token_check_ttl_s`` (at most ``token_check_entries`` of them, the
        oldest forgotten first): a hit is one dict lookup and no round trip.
        Refusals are never remembered: each costs one round trip, and no body.
        A token revoked meanwhile may pass this check until its entry expires;
        ``acquire`` still refuses it, authoritatively.
        """
        if self.accepted(token_hash):
            return
        try:
            if not _traced():
                await self._check_remote(token_hash)
            else:
                with tracer.start_as_current_span("keyring.check_token", kind=trace.SpanKind.CLIENT):
                    await self._check_remote(token_hash)
        except InvalidLeaseRequest:
            # A keyring that predates CheckToken reads the call as an empty Acquire (a rolling upgrade with the
            # edge first): skip the pre-check, as before it existed; Acquire authenticates the request.
            if not self._warned_no_check:
                self._warned_no_check = True
                log.warning("keyring does not know CheckToken yet: tokens are checked only by Acquire, after the body")
            return
        self._remember(token_hash)

    def accepted(self, token_hash: str) -> bool:
        """Whether keyring accepted this token hash within the TTL (no round trip: one dict lookup)."""
        expires_at = self._accepted.get(token_hash)
        return expires_at is not None and expires_at > self._clock()

    async def bound_names(self, token_hash: str, names: Sequence[str]) -> set[str]:
        """Those of ``names`` the token's pool bound (keyring's affinity records): what a list may show.

        Asked in batches of ``MAX_BOUND_NAMES`` on the lease stream; a refusal is raised as for ``acquire``.
        """
        bound: set[str] = set()
        for start in range(0, len(names), MAX_BOUND_NAMES):
            request = pb.BoundNamesRequest(token_hash=token_hash, names=names[start : start + MAX_BOUND_NAMES])
            reply, _ = await self._ask(partial(pb.LeaseCall, bound_names=request))
            bound.update(reply.bound_names.names)
        return bound

    async def _check_remote(self, token_hash: str) -> None:
        """One CheckToken round trip on the lease stream (raises keyring's refusal)."""
        request = pb.CheckTokenRequest(token_hash=token_hash)
        traceparent = current_traceparent()
        await self._ask(lambda: pb.LeaseCall(check_token=request, traceparent=traceparent))

    def _remember(self, token_hash: str) -> None:
        if self._token_check_ttl_s <= 0:
            return
        accepted = self._accepted
        accepted.pop(token_hash, None)  # re-inserted last: insertion order stays expiry order
        while len(accepted) >= self._token_check_entries:
            del accepted[next(iter(accepted))]  # the oldest
        accepted[token_hash] = self._clock() + self._token_check_ttl_s

    @overload
    def release(
        self,
        granted: GrantedLease,
        model: str,
        outcome: pb.Outcome,
        *,
        confirm: Literal[True] = True,
        bind: Sequence[Binding] = (),
        unbind: Sequence[str] = (),
    ) -> asyncio.Task[bool]: ...

    @overload
    def release(
        self,
        granted: GrantedLease,
        model: str,
        outcome: pb.Outcome,
        *,
        confirm: bool,
        bind: Sequence[Binding] = (),
        unbind: Sequence[str] = (),
    ) -> asyncio.Task[bool] | None: ...

    def release(
        self,
        granted: GrantedLease,
        model: str,
        outcome: pb.Outcome,
        *,
        confirm: bool = True,
        bind: Sequence[Binding] = (),
        unbind: Sequence[str] = (),
    ) -> asyncio.Task[bool] | None:
        """Give the lease back with its outcome; synchronous, so no cancellation comes between a caller and it.

        ``confirm=False`` (a finished request: nobody waits): the release is queued
        on the granting replica's open stream, no reply awaited, and None is
        returned. Otherwise (a failover, which must not pick the next key before
        keyring has learnt from this one), or when that stream is not open, a
        task delivers it and waits for keyring's reply; await it to wait too.
        Best effort either way: a lost release is reclaimed by the lease TTL.
        The span (only for sampled requests) covers the sending.

        ``bind`` (resources the call created under this key, with their
        lifetime) and ``unbind`` (resources it deleted) make the release
        confirmed whatever ``confirm`` says: the task resolves to True once
        keyring has committed them (a replica that cannot, e.g. draining or
        without its store, passes it on to the next), False when no replica
        could. Await it before answering the call that created the resource,
        so the client's next call finds its owner on every replica.
        """
        request = pb.ReleaseRequest(
            lease_id=granted.lease.lease_id, key_id=granted.lease.key_id, model=model, outcome=outcome
        )
        binding = bool(bind or unbind)
        if binding:
            request.bind.extend(pb.ResourceBinding(name=b.name, ttl_ms=max(1, round(b.ttl_s * 1000))) for b in bind)
            request.unbind.extend(unbind)
        with _span("keyring.release", granted):
            call = pb.LeaseCall(release=request, traceparent=current_traceparent())
            if outcome.http_status // 100 != 2 and outcome.transport != pb.Outcome.TRANSPORT_CANCELLED:
                self._report(request, granted.replica)  # news: every replica learns it now
            if not confirm and not binding:
                replica = self._by_target.get(granted.replica)
                if replica is not None and replica.connected and replica.usable:
                    replica.send(call)
                    return None
            task = asyncio.get_running_loop().create_task(self._deliver(call, granted, binding))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
            return task

    def _report(self, request: pb.ReleaseRequest, granting: str) -> None:
        """The outcome alone to every other replica with an open stream: no reply awaited, no slot, no usage.

        Each replica judges it once (by lease id) and applies what it decides in
        memory, so a cooldown holds on every replica without waiting for etcd.
        """
        for replica in self._replicas:
            if replica.address != granting and replica.connected and replica.usable:
                replica.send(pb.LeaseCall(report=request))

    async def _deliver(self, call: pb.LeaseCall, granted: GrantedLease, binding: bool = False) -> bool:
        """True once a replica answered the release (with bindings: answered without an error).

        The slot lives on the granting replica: when another one answered (it learns
        the outcome: the lease id vouches for it), the granting one is still owed the
        release, outcome included, re-sent when its stream is back: it frees the slot
        and counts the call's usage (the holder of a lease counts it; the replica that
        answered does not while the granter lives), and its judgement of the outcome
        merges with the other replica's (one decision per lease id). When none
        answered, it is owed the whole release.
        """
        granter = self._by_target.get(granted.replica)
        for replica in await self._rotation(first=granted.replica):
            # Another replica learns the outcome; the usage is counted where the release is kept for (once).
            call.release.kept_for_granter = granter is not None and replica is not granter
            try:
                reply = await replica.call(call, self._timeout_s)
            except KeyringUnavailable:
                continue
            if binding and reply.HasField("error"):
                code = _CODES.get(reply.error.code, grpc.StatusCode.UNKNOWN)
                if code is grpc.StatusCode.UNAVAILABLE:
                    continue  # draining, or its store unreachable: another replica may commit them
                log.warning("keyring refused the bindings of lease %s: %s", granted.lease.lease_id, reply.error.message)
                self._owe_granter(granter, replica, call)
                return False
            self._owe_granter(granter, replica, call)
            return True
        if granter is not None:
            granter.owe(_plain(call))
        log.warning("lease %s: no keyring replica reachable, its release is kept", granted.lease.lease_id)
        return False

    @staticmethod
    def _owe_granter(granter: _ReplicaStream | None, answered: _ReplicaStream, call: pb.LeaseCall) -> None:
        if granter is not None and answered is not granter:
            granter.owe(_plain(call))

    def owed_releases(self) -> int:
        """Releases waiting for their replica's stream to come back (all replicas)."""
        return sum(replica.owed for replica in self._by_target.values())

    def unconfirmed_releases(self) -> int:
        """Releases counted in a usage epoch not yet written (all replicas): kept to be re-sent if one dies."""
        return sum(replica.unconfirmed for replica in self._by_target.values())

    async def ready(self) -> bool:
        """True when at least one replica answers its health check as SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        for replica in await self._rotation():
            try:
                reply = await health_pb2_grpc.HealthStub(replica.channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
            except grpc.aio.AioRpcError:
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return True
        return False
