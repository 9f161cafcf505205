"""The lease service: protobuf in, the lease desk, protobuf out.

A lease stream answers each batch (acquires, token checks, releases) at once
from memory; a release whose outcome must be written answers later, alone,
so no other call waits for the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc
from opentelemetry import trace

from services.common.naming import model_id
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc
from services.common.telemetry import TRACEPARENT, context_from

from . import convert
from .desk import LeaseDesk
from .domain.errors import InvalidArgument, KeyringError
from .domain.models import Outcome
from .grpc_errors import domain_errors, stream_error
from .writer import Change

MAX_MODEL_NAME = 200
MAX_EXCLUDED = 1000

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


def _validated_acquire(request: pb.AcquireRequest) -> tuple[str, frozenset[str]]:
    _validated_hash(request.token_hash)
    if len(request.model) > MAX_MODEL_NAME or len(request.exclude_key_ids) > MAX_EXCLUDED:
        raise InvalidArgument("model name or exclusion list too long")
    return model_id(request.model), frozenset(request.exclude_key_ids)


class LeaseServicer(pb_grpc.LeaseServiceServicer):
    def __init__(self, desk: LeaseDesk) -> None:
        self._desk = desk

    def _acquire(self, request: pb.AcquireRequest, traceparent: str = "") -> pb.AcquireResponse:
        with _span("keyring.v1.LeaseService/Acquire", traceparent) as span:
            model, exclude = _validated_acquire(request)
            grant, secret = self._desk.acquire(request.token_hash, model, exclude)
            if span is not None:
                span.set_attributes(
                    {"keyring.pool": grant.pool.name, "keyring.key_id": grant.key.key_id, "gen_ai.request.model": model}
                )
        lease = grant.lease
        return pb.AcquireResponse(
            lease=pb.Lease(
                lease_id=lease.lease_id,
                key_id=grant.key.key_id,
                secret=secret,
                project=grant.key.project,
                pool=grant.pool.name,
                expires_at_ms=convert.ms(lease.expires_at),
                egress_slot=int(grant.key.key_id[2:10], 16),
            ),
            allowed_models=list(grant.pool.allowed_models),
        )

    def _check_token(self, request: pb.CheckTokenRequest) -> pb.CheckTokenResponse:
        return pb.CheckTokenResponse(pool=self._desk.check_token(_validated_hash(request.token_hash)))

    @domain_errors
    async def Acquire(self, request: pb.AcquireRequest, context: grpc.aio.ServicerContext) -> pb.AcquireResponse:
        return self._acquire(request, _traceparent(context))

    @domain_errors
    async def CheckToken(
        self, request: pb.CheckTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckTokenResponse:
        with _span("keyring.v1.LeaseService/CheckToken", _traceparent(context)):
            return self._check_token(request)

    @domain_errors
    async def Release(self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext) -> pb.ReleaseResponse:
        outcome = convert.outcome_from_pb(request.outcome)
        with _span("keyring.v1.LeaseService/Release", _traceparent(context)):
            known = await self._desk.release(request.lease_id, request.key_id, model_id(request.model), outcome)
        return pb.ReleaseResponse(known=known)

    async def LeaseStream(
        self, requests: AsyncIterator[pb.LeaseStreamRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Answer each batch at once from memory; releases that must write answer later, alone.

        A call is an acquire, a release or a token check (``CheckToken``); a
        call naming none of them (a newer client) is an INVALID_ARGUMENT result.
        Replies go out through a ``_ReplyWriter``, so reading the next batch
        never waits for the previous answer's write to complete.
        """
        replies = _ReplyWriter(context)
        pending: set[asyncio.Task[None]] = set()

        async def report_then_answer(
            call_id: int, known: bool, key_id: str, model: str, outcome: Outcome, judged: Sequence[Change]
        ) -> None:
            try:
                await self._desk.report(key_id, model, outcome, judged)
                result = pb.LeaseResult(id=call_id, release=pb.ReleaseResponse(known=known))
            except KeyringError as error:
                result = stream_error(call_id, error)
            replies.send([result])

        try:
            async for batch in requests:
                results = []
                for call in batch.calls:
                    if call.HasField("release"):
                        release = call.release
                        outcome = convert.outcome_from_pb(release.outcome)
                        with _span("keyring.v1.LeaseService/Release", call.traceparent):
                            known, key_id, model = self._desk.release_slot(
                                release.lease_id, release.key_id, model_id(release.model), outcome
                            )
                            judged = self._desk.judge(key_id, model, outcome)
                            if judged:
                                answer = report_then_answer(call.id, known, key_id, model, outcome, judged)
                                task = asyncio.create_task(answer)
                                pending.add(task)
                                task.add_done_callback(pending.discard)
                            else:
                                results.append(pb.LeaseResult(id=call.id, release=pb.ReleaseResponse(known=known)))
                        continue
                    try:
                        if call.HasField("acquire"):
                            acquired = self._acquire(call.acquire, call.traceparent)
                            results.append(pb.LeaseResult(id=call.id, acquire=acquired))
                        elif call.HasField("check_token"):
                            with _span("keyring.v1.LeaseService/CheckToken", call.traceparent):
                                checked = self._check_token(call.check_token)
                            results.append(pb.LeaseResult(id=call.id, check_token=checked))
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
            if pending:  # the caller went away: what keyring learnt is still written
                await asyncio.gather(*pending, return_exceptions=True)
            replies.cancel()


class _ReplyWriter:
    """Writes a lease stream's results, coalescing those that pile up while a write is in flight."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._buffer: list[pb.LeaseResult] = []
        self._ready = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    def send(self, results: list[pb.LeaseResult]) -> None:
        self._buffer.extend(results)
        self._ready.set()

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            results, self._buffer = self._buffer, []
            await self._context.write(pb.LeaseStreamResponse(results=results))

    async def close(self) -> None:
        """Return once everything sent so far is written."""
        self._closing = True
        self._ready.set()
        await self._task

    def cancel(self) -> None:
        self._task.cancel()
