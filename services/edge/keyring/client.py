"""The edge's client of keyring: acquire, check a token, release (and report), the names a pool bound.

Each call travels on a replica's lease stream (``transport``), chosen by the
replica set (``replicas``); keyring's refusals are raised as edge exceptions
(``refusals``). A release goes back to the replica that granted the lease,
because the in-flight slot lives there; if that replica is gone the outcome
still reaches another one (the key's health is shared through etcd), and the
granting one is owed the release (``kept``). A release whose outcome is news
(not a 2xx, not cancelled) also goes, as an outcome-only report
(``LeaseCall.report``), to every other replica with an open stream,
unanswered: each applies what it decides in memory at once, so a cooldown
holds everywhere without waiting for etcd (a routine success sends nothing
more).

The channels are mutual TLS (``services/common/tls.py``): the edge presents
its certificate and verifies keyring's against the CA, under the name of the
address it resolved (a replica's IP is checked against the Service name).
Plaintext only when the caller passes ``tls=None`` (the explicit switch).

``check_token`` asks keyring whether a client token is one it would lease
for, before the edge reads a request body; accepted token hashes are
remembered for a short TTL (a bounded dict), refusals never.

Affinity (resources that live in one upstream project): ``acquire(...,
affinity=[names])`` leases the owner key of those resources (or another key
of its project; ``errors.UnknownResource`` when the pool knows none),
``exclude_projects`` skips projects a list call has covered;
``release(..., bind=[Binding(name, ttl_s)], unbind=[names])`` records or
forgets owners. A release carrying either is always confirmed: the task it
returns resolves to True once keyring has committed the records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final, Literal, overload

import grpc
from opentelemetry import trace

from services.common.grpc_options import CLIENT_KEEPALIVE_S, CLIENT_KEEPALIVE_TIMEOUT_S, client_keepalive
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.telemetry import current_traceparent
from services.common.tls import TLSFiles, channel_credentials

from ..errors import InvalidLeaseRequest, KeyringUnavailable
from .kept import plain
from .lease import Binding, GrantedLease
from .refusals import refusal, status_of
from .replicas import ReplicaSet, Resolver, resolve_all
from .transport import LeaseStream

log = logging.getLogger(__name__)

MAX_BOUND_NAMES = 1000  # names one bound-names question asks about (keyring's affinity.MAX_LISTED_NAMES)
tracer = trace.get_tracer("services.edge")
_NO_SPAN: Final = contextlib.nullcontext()


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


class KeyringClient:
    """Leases from every keyring replica the configured addresses name (``replicas.ReplicaSet``)."""

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
        self.replicas = ReplicaSet(
            addresses,
            credentials=channel_credentials(tls) if tls is not None else None,
            server_name=server_name,
            keepalive=client_keepalive(keepalive_s, keepalive_timeout_s),
            max_owed=max_owed_releases,
            timeout_s=timeout_s,
            resolve_every_s=resolve_every_s,
            resolver=resolver,
        )
        self._timeout_s = timeout_s
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
        await self.replicas.close()

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
        different projects; ``UnknownResource`` when the pool knows no such
        resource). ``exclude_projects``: projects a list
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
        reply, replica = await self._ask(lambda: pb.LeaseCall(acquire=request, traceparent=traceparent), affinity)
        granted = reply.acquire
        return GrantedLease(granted.lease, tuple(granted.allowed_models), replica)

    async def _ask(
        self, make_call: Callable[[], pb.LeaseCall], names: Sequence[str] = ()
    ) -> tuple[pb.LeaseResult, str]:
        """A call answered by the first replica able to (a fresh call per replica); (its result, that replica).

        A refusal is raised as the edge exception that answers the client; a
        replica that is gone, late or draining (UNAVAILABLE) passes the call on.
        """
        for replica in await self.replicas.rotation():
            try:
                reply = await replica.call(make_call(), self._timeout_s)
            except KeyringUnavailable:
                continue
            if reply.HasField("error"):
                error = reply.error
                code = status_of(error.code)
                if code is grpc.StatusCode.UNAVAILABLE:
                    continue  # that replica is draining: ask another
                raise refusal(code, error.message, error.retry_after_ms / 1000, names)
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
                replica = self.replicas.get(granted.replica)
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
        for replica in self.replicas.current:
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
        granter = self.replicas.get(granted.replica)
        for replica in await self.replicas.rotation(first=granted.replica):
            # Another replica learns the outcome; the usage is counted where the release is kept for (once).
            call.release.kept_for_granter = granter is not None and replica is not granter
            try:
                reply = await replica.call(call, self._timeout_s)
            except KeyringUnavailable:
                continue
            if binding and reply.HasField("error"):
                code = status_of(reply.error.code)
                if code is grpc.StatusCode.UNAVAILABLE:
                    continue  # draining, or its store unreachable: another replica may commit them
                log.warning("keyring refused the bindings of lease %s: %s", granted.lease.lease_id, reply.error.message)
                self._owe_granter(granter, replica, call)
                return False
            self._owe_granter(granter, replica, call)
            return True
        if granter is not None:
            granter.owe(plain(call))
        log.warning("lease %s: no keyring replica reachable, its release is kept", granted.lease.lease_id)
        return False

    @staticmethod
    def _owe_granter(granter: LeaseStream | None, answered: LeaseStream, call: pb.LeaseCall) -> None:
        if granter is not None and answered is not granter:
            granter.owe(plain(call))

    def owed_releases(self) -> int:
        """Releases waiting for their replica's stream to come back (all replicas)."""
        return self.replicas.owed()

    def unconfirmed_releases(self) -> int:
        """Releases counted in a usage epoch not yet written (all replicas): kept to be re-sent if one dies."""
        return self.replicas.unconfirmed()

    async def ready(self) -> bool:
        """True when at least one replica answers its health check as SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        for replica in await self.replicas.rotation():
            try:
                reply = await health_pb2_grpc.HealthStub(replica.channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
            except grpc.aio.AioRpcError:
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return True
        return False
