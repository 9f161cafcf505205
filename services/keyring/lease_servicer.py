"""The lease service: protobuf in, the lease desk, protobuf out.

Live sessions (issue 20, the contract in the proto's "Live sessions"): an
acquire with ``session`` is a held lease, kept by ``renew`` calls on the
stream (a renew on a new stream adopts the lease into it, so it is orphaned
with that stream); browser tokens are minted and redeemed through
``live_tokens.py``, each answered alone once its write is committed.

A lease stream answers each batch (acquires, token checks, releases) at once
from memory: a release gives its slot back, counts the call and learns from
the outcome (the decision holds in memory at once and is written behind, see
``write_behind.py``), then answers; it never waits for the store. Reports
(a peer's outcome, no slot) are learnt the same way and get an empty result. Only
a release carrying bindings answers later, alone, once they are committed,
and so does an acquire naming a resource this replica's view lacks (read
from the store first): no other call waits for either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from opentelemetry import trace

from services.common.naming import model_id
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.telemetry import TRACEPARENT, context_from

from . import convert
from .authorization import caller
from .desk import CreditMatch, HeldCredit, LeaseDesk, Released
from .domain.affinity import AffinityMiss
from .domain.allocator import Grant
from .domain.demand import LeaseRequest
from .domain.errors import InvalidArgument, KeyringError
from .domain.models import SERVICE_TIERS
from .grpc_errors import domain_errors, stream_error

MAX_MODEL_NAME = 200
MAX_EXCLUDED = 1000
MAX_GRANT = 200  # a session grant is ~60 characters (``domain/live_tokens.py`` ``Grants``)
MAX_CREDITS = 64  # credits one acquire asks at most (``AcquireRequest.credits``): more are asked as this many
_NONE: frozenset[str] = frozenset()

tracer = trace.get_tracer("services.keyring")


def _span(name: str, traceparent: str) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A server span joined to the caller's trace; nothing when the caller sent no context."""
    parent = context_from(traceparent)
    if parent is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER)


def _traceparent(context: grpc.aio.ServicerContext) -> str:
    return str(dict(context.invocation_metadata() or ()).get(TRACEPARENT, ""))


def _validated_hash(token_hash: str) -> str:
    if len(token_hash) != 64:
        raise InvalidArgument("token_hash must be the SHA-256 hex digest of the client token")
    return token_hash


def _lease(grant: Grant, secret: str, token_tag: str) -> pb.Lease:
    lease = grant.lease
    return pb.Lease(
        token_id=lease.token_id,
        token_tag=token_tag,
        lease_id=lease.lease_id,
        key_id=grant.key.key_id,
        secret=secret,
        project=grant.key.project,
        pool=grant.pool.name,
        expires_at_ms=convert.ms(lease.expires_at),
        egress_slot=int(grant.key.key_id[2:10], 16),
        renew_every_ms=convert.ms((lease.expires_at - lease.granted_at) / 3) if lease.session else 0,
    )


Bindings = tuple[list[tuple[str, float]], list[str]]
NO_BINDINGS: Bindings = ([], [])


def _bindings(release: pb.ReleaseRequest) -> Bindings:
    """(name, lifetime in s) bound and names unbound; checked by the desk (``domain/affinity.py``)."""
    if not release.bind and not release.unbind:
        return NO_BINDINGS
    return [(b.name, b.ttl_ms / 1000) for b in release.bind], list(release.unbind)


class LeaseServicer(pb_grpc.LeaseServiceServicer):
    def __init__(
        self, desk: LeaseDesk, *, stream_lease_grace_s: float = 15.0, max_input_estimate: int = 2 * 1_048_576
    ) -> None:
        """``stream_lease_grace_s``: how long leases granted on a lease stream outlive its end, unreleased.
        ``max_input_estimate``: the largest input-token estimate one lease reserves (``KEYRING_MAX_INPUT_ESTIMATE``).
        """
        self._desk = desk
        self._stream_lease_grace_s = stream_lease_grace_s
        self._max_input_estimate = max_input_estimate

    def _estimate(self, request: pb.AcquireRequest) -> int:
        """The edge's estimate of the call's input, trusted only as far as one lease: clamped and counted."""
        tokens = max(request.estimated_input_tokens, 0)
        if tokens > self._max_input_estimate:
            self._desk.observer.estimate_clamped()
            return self._max_input_estimate
        return tokens

    def _lease_request(self, request: pb.AcquireRequest) -> LeaseRequest:
        """The wire's acquire as one value (``domain/demand.py``), checked and its estimate clamped, once per call."""
        if len(request.model) > MAX_MODEL_NAME or len(request.exclude_key_ids) > MAX_EXCLUDED:
            raise InvalidArgument("model name or exclusion list too long")
        if request.service_tier not in SERVICE_TIERS:
            raise InvalidArgument("service_tier must be standard, flex or priority")
        if request.credit and (
            request.affinity or request.exclude_projects or request.binds or request.session or request.session_grant
        ):
            raise InvalidArgument("a credit is only for a plain call: no affinity, projects, binding or session")
        if request.session_grant:
            if not request.session or len(request.session_grant) > MAX_GRANT:
                raise InvalidArgument("a session grant leases only a session (AcquireRequest.session)")
            holder = self._desk.live_tokens.grant_holder(request.session_grant, request.model)
        else:
            _validated_hash(request.token_hash)
            holder = ""
        return LeaseRequest(
            request.token_hash,
            model_id(request.model),
            frozenset(request.exclude_key_ids) if request.exclude_key_ids else _NONE,
            tuple(request.affinity) if request.affinity else (),
            frozenset(request.exclude_projects) if request.exclude_projects else _NONE,
            self._estimate(request),
            request.binds,
            request.session,
            holder,
            request.service_tier,
            request.credit,
        )

    def _acquire(
        self, request: LeaseRequest, traceparent: str = "", final: bool = True, credits: int = 1
    ) -> pb.AcquireResponse:
        """``final=False``: an ``AffinityMiss`` is raised for ``_acquire_after_read`` (an affinity acquire only).
        ``credits``: a credit's ``AcquireRequest.credits`` (on a lease stream; capped at ``MAX_CREDITS``): those
        beyond the first are ``more_credits``, as many as the desk grants before its first refusal."""
        with _span("keyring.v1.LeaseService/Acquire", traceparent) as span:
            grant, secret = self._desk.lease(request, final=final)
            if span is not None:
                span.set_attributes(
                    {
                        "keyring.pool": grant.pool.name,
                        "keyring.key_id": grant.key.key_id,
                        "gen_ai.request.model": request.model,
                    }
                )
        book = self._desk.book
        lease = _lease(grant, secret, book.token_tag(grant.lease))
        acquired = pb.AcquireResponse(lease=lease, allowed_models=list(grant.pool.allowed_models))
        if request.credit and credits > 1:
            more = self._desk.more_credits(request, min(credits, MAX_CREDITS) - 1)
            acquired.more_credits.extend(_lease(g, s, book.token_tag(g.lease)) for g, s in more)
        return acquired

    async def _acquire_after_read(
        self, request: LeaseRequest, traceparent: str, miss: AffinityMiss
    ) -> pb.AcquireResponse:
        """The records an affinity acquire missed, read from the store; then the acquire, final."""
        await self._desk.read_affinity(miss)
        return self._acquire(request, traceparent)

    def _check_token(self, request: pb.CheckTokenRequest) -> pb.CheckTokenResponse:
        return pb.CheckTokenResponse(pool=self._desk.check_token(_validated_hash(request.token_hash)))

    @domain_errors
    async def Acquire(self, request: pb.AcquireRequest, context: grpc.aio.ServicerContext) -> pb.AcquireResponse:
        traceparent = _traceparent(context)
        lease_request = self._lease_request(request)
        try:
            return self._acquire(lease_request, traceparent, final=False)
        except AffinityMiss as miss:
            return await self._acquire_after_read(lease_request, traceparent, miss)

    @domain_errors
    async def CheckToken(
        self, request: pb.CheckTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckTokenResponse:
        with _span("keyring.v1.LeaseService/CheckToken", _traceparent(context)):
            return self._check_token(request)

    def _renew(self, request: pb.RenewRequest) -> pb.RenewResponse:
        lease = self._desk.renew(request.lease_id, request.key_id, model_id(request.model))
        if lease is None:
            return pb.RenewResponse(held=False)
        return pb.RenewResponse(held=True, expires_at_ms=convert.ms(lease.expires_at))

    async def _mint(self, request: pb.MintSessionTokenRequest) -> pb.MintSessionTokenResponse:
        if len(request.model) > MAX_MODEL_NAME:
            raise InvalidArgument("model name too long")
        minted = await self._desk.live_tokens.mint(
            _validated_hash(request.token_hash), request.model, request.ttl_ms / 1000, request.uses
        )
        record = minted.record
        return pb.MintSessionTokenResponse(
            token=minted.token, expires_at_ms=convert.ms(record.expires_at), model=record.model, uses=record.uses
        )

    async def _redeem(self, request: pb.RedeemSessionTokenRequest) -> pb.RedeemSessionTokenResponse:
        if len(request.model) > MAX_MODEL_NAME:
            raise InvalidArgument("model name too long")
        redeemed = await self._desk.live_tokens.redeem(request.token, request.model, request.resumption)
        return pb.RedeemSessionTokenResponse(
            pool=redeemed.pool, model=redeemed.model, grant=redeemed.grant,
            expires_at_ms=convert.ms(redeemed.expires_at),
        )  # fmt: skip

    @domain_errors
    async def MintSessionToken(
        self, request: pb.MintSessionTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.MintSessionTokenResponse:
        with _span("keyring.v1.LeaseService/MintSessionToken", _traceparent(context)):
            return await self._mint(request)

    @domain_errors
    async def RedeemSessionToken(
        self, request: pb.RedeemSessionTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedeemSessionTokenResponse:
        with _span("keyring.v1.LeaseService/RedeemSessionToken", _traceparent(context)):
            return await self._redeem(request)

    def _release(
        self, release: pb.ReleaseRequest, traceparent: str, identity: str
    ) -> tuple[pb.ReleaseResponse, Released, Bindings]:
        """Every release, unary or on a stream: the desk's one release (``LeaseDesk.settle``), from memory.

        Returns the answer, what was released and the bindings still to commit
        (``LeaseDesk.bind``) before the answer may go out.
        """
        outcome = convert.outcome_from_pb(release.outcome)
        with _span("keyring.v1.LeaseService/Release", traceparent):
            released = self._desk.settle(
                release.lease_id, release.key_id, model_id(release.model), outcome,
                counted_epoch=release.counted_epoch, kept_for_granter=release.kept_for_granter,
                handover=release.handover, caller=identity, token_id=release.token_id, token_tag=release.token_tag,
            )  # fmt: skip
        answer = pb.ReleaseResponse(
            known=released.known, counted_epoch=released.counted_epoch, granter_alive=released.granter_alive
        )
        return answer, released, _bindings(release)

    @domain_errors
    async def Release(self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext) -> pb.ReleaseResponse:
        answer, released, bindings = self._release(request, _traceparent(context), caller(context))
        if bindings is not NO_BINDINGS:
            await self._desk.bind(released.key_id, *bindings, released.token_id)
        return answer

    async def LeaseStream(
        self, requests: AsyncIterator[pb.LeaseStreamRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Answer each batch at once from memory; releases with bindings answer later, alone.

        A call is an acquire, a release, a report (a peer's outcome: an empty result),
        a token check (``CheckToken``) or a bound-names question (a list answer's
        names the pool owns, ``LeaseDesk.bound_names``); a call naming none of them (a newer
        client) is an INVALID_ARGUMENT result. An acquire of several credits (``AcquireRequest.credits``)
        is answered with those granted before the first refusal, each held as a credit of this stream
        (revoked with its key, project, token or pool). Answered later, alone: a release
        with bindings, once they are committed; an acquire naming a resource
        the view lacks, once that record is read.
        Replies go out through a ``_ReplyWriter``, so reading the next batch
        never waits for the previous answer's write to complete.

        Leases granted on the stream and not released on it are orphaned when
        it ends (the edge went away, gave up on this replica, or never got the
        reply): reclaimed ``stream_lease_grace_s`` later unless a release, re-sent
        by the edge on a new stream, comes first (``LeaseDesk.orphan``).
        """
        replies = _ReplyWriter(context, lambda: self._desk.ledger.usage.durable, self._desk.members)
        identity = caller(context)  # whose budget of outcomes blaming keys this stream spends (domain/blames.py)
        pending: set[asyncio.Task[None]] = set()
        granted: set[str] = set()  # lease ids granted on this stream, not released on it
        credits: dict[str, HeldCredit] = {}  # credits granted on it and not released, by lease id

        def revoke(matches: CreditMatch) -> None:
            """Credits that may not be used any more (``LeaseDesk.watch_credits``): the edge gives them back."""
            gone = [lease_id for lease_id, held in credits.items() if matches(held)]
            for lease_id in gone:
                del credits[lease_id]
            if gone:
                replies.revoke(gone)

        unwatch = self._desk.watch_credits(revoke)

        def orphan() -> None:
            if granted:
                self._desk.orphan(tuple(granted), self._stream_lease_grace_s)
                granted.clear()

        def later(answer: Coroutine[Any, Any, None]) -> None:
            task = asyncio.create_task(answer)
            pending.add(task)
            task.add_done_callback(pending.discard)

        async def bind_then_answer(
            call_id: int, answer: pb.ReleaseResponse, key_id: str, bindings: Bindings, token_id: str
        ) -> None:
            try:
                await self._desk.bind(key_id, *bindings, token_id)
                result = pb.LeaseResult(id=call_id, release=answer)
            except KeyringError as error:
                result = stream_error(call_id, error)
            replies.send([result])

        async def minted_then_answer(call: pb.LeaseCall) -> None:
            try:
                with _span("keyring.v1.LeaseService/MintSessionToken", call.traceparent):
                    result = pb.LeaseResult(id=call.id, mint_session_token=await self._mint(call.mint_session_token))
            except KeyringError as error:
                result = stream_error(call.id, error)
            replies.send([result])

        async def redeemed_then_answer(call: pb.LeaseCall) -> None:
            try:
                with _span("keyring.v1.LeaseService/RedeemSessionToken", call.traceparent):
                    redeemed = await self._redeem(call.redeem_session_token)
                result = pb.LeaseResult(id=call.id, redeem_session_token=redeemed)
            except KeyringError as error:
                result = stream_error(call.id, error)
            replies.send([result])

        async def read_then_acquire(call: pb.LeaseCall, request: LeaseRequest, miss: AffinityMiss) -> None:
            try:
                acquired = await self._acquire_after_read(request, call.traceparent, miss)
                granted.add(acquired.lease.lease_id)
                result = pb.LeaseResult(id=call.id, acquire=acquired)
            except KeyringError as error:
                result = stream_error(call.id, error)
            replies.send([result])

        try:
            async for batch in requests:
                results = []
                for call in batch.calls:
                    if call.HasField("release"):
                        granted.discard(call.release.lease_id)
                        if credits:
                            credits.pop(call.release.lease_id, None)
                        answer, released, bindings = self._release(call.release, call.traceparent, identity)
                        if bindings is not NO_BINDINGS:
                            later(bind_then_answer(call.id, answer, released.key_id, bindings, released.token_id))
                        else:
                            results.append(pb.LeaseResult(id=call.id, release=answer))
                        continue
                    if call.HasField("report"):
                        report = call.report
                        outcome = convert.outcome_from_pb(report.outcome)
                        self._desk.report(
                            report.lease_id, report.key_id, model_id(report.model), outcome, caller=identity
                        )
                        results.append(pb.LeaseResult(id=call.id))  # empty: received (nobody waits for it)
                        continue
                    try:
                        if call.HasField("acquire"):
                            request = self._lease_request(call.acquire)
                            try:
                                acquired = self._acquire(
                                    request, call.traceparent, final=False, credits=call.acquire.credits
                                )
                            except AffinityMiss as miss:
                                later(read_then_acquire(call, request, miss))
                                continue
                            granted.add(acquired.lease.lease_id)
                            if request.credit:  # each revoked with its key, project, token or pool (``revoke``)
                                for lease in (acquired.lease, *acquired.more_credits):
                                    granted.add(lease.lease_id)
                                    token_id = self._desk.book.holder(lease.lease_id)
                                    credits[lease.lease_id] = HeldCredit(
                                        lease.key_id, lease.project, token_id, lease.pool
                                    )
                            results.append(pb.LeaseResult(id=call.id, acquire=acquired))
                        elif call.HasField("renew"):
                            renewed = self._renew(call.renew)
                            if renewed.held:  # adopted: orphaned with this stream if the edge goes away
                                granted.add(call.renew.lease_id)
                            results.append(pb.LeaseResult(id=call.id, renew=renewed))
                        elif call.HasField("mint_session_token"):
                            later(minted_then_answer(call))
                        elif call.HasField("redeem_session_token"):
                            later(redeemed_then_answer(call))
                        elif call.HasField("check_token"):
                            with _span("keyring.v1.LeaseService/CheckToken", call.traceparent):
                                checked = self._check_token(call.check_token)
                            results.append(pb.LeaseResult(id=call.id, check_token=checked))
                        elif call.HasField("bound_names"):
                            asked = call.bound_names
                            bound = self._desk.bound_names(_validated_hash(asked.token_hash), asked.names)
                            results.append(pb.LeaseResult(id=call.id, bound_names=pb.BoundNamesResponse(names=bound)))
                        else:
                            raise InvalidArgument("a lease call names no call this replica knows")
                    except KeyringError as error:
                        results.append(stream_error(call.id, error))
                if results:
                    replies.send(results)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await replies.close()
        finally:
            unwatch()
            orphan()
            if pending:  # the caller went away: its bindings are still written
                await asyncio.gather(*pending, return_exceptions=True)
                orphan()  # granted after a store read meanwhile
            replies.cancel()


class _ReplyWriter:
    """Writes a lease stream's results, coalescing those that pile up while a write is in flight."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        durable_epoch: Callable[[], int],
        members: Callable[[], tuple[str, ...]],
    ) -> None:
        self._context = context
        self._durable_epoch = durable_epoch  # told with every reply: the edge forgets releases counted up to it
        self._members = members  # the live instances: told on the first reply and when they change
        self._members_told: tuple[str, ...] | None = None
        self._buffer: list[pb.LeaseResult] = []
        self._revoked: list[str] = []  # credits to revoke, told with the next reply (written at once)
        self._ready = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    def send(self, results: list[pb.LeaseResult]) -> None:
        self._buffer.extend(results)
        self._ready.set()

    def revoke(self, lease_ids: list[str]) -> None:
        """Tell the edge these credits may not be used (``LeaseStreamResponse.revoked_credits``)."""
        self._revoked.extend(lease_ids)
        self._ready.set()

    async def _run(self) -> None:
        while True:
            if not self._buffer and not self._revoked:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            results, self._buffer = self._buffer, []
            reply = pb.LeaseStreamResponse(results=results, durable_epoch=self._durable_epoch())
            if self._revoked:
                reply.revoked_credits.extend(self._revoked)
                self._revoked = []
            members = self._members()
            if members is not self._members_told and members != self._members_told:
                reply.members.extend(members)
            self._members_told = members
            await self._context.write(reply)

    async def close(self) -> None:
        """Return once everything sent so far is written."""
        self._closing = True
        self._ready.set()
        await self._task

    def cancel(self) -> None:
        self._task.cancel()
