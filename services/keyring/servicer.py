"""gRPC servicers: protobuf in, domain calls, protobuf out; nothing else lives here."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.telemetry import TRACEPARENT, context_from
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc

from . import convert
from .administration import Administration
from .checker import UpstreamChecker
from .core import Keyring
from .domain.errors import InvalidArgument, KeyringError
from .domain.models import ClientToken, Outcome
from .grpc_errors import retry_after_ms, status_code_of, to_rpc_status
from .transfer import export_document, import_document

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]

log = logging.getLogger(__name__)

MAX_MODEL_NAME = 200
MAX_EXCLUDED = 1000


def domain_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Turn a domain error into its gRPC status (one mapping, in grpc_errors)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await handler(self, request, context)
        except KeyringError as error:
            await context.abort_with_status(to_rpc_status(error))
            raise  # unreachable: abort raises

    return wrapper


tracer = trace.get_tracer("services.keyring")


def _span(name: str, traceparent: str) -> contextlib.AbstractContextManager[trace.Span | None]:
    """A server span joined to the caller's trace; nothing when the caller sent no context."""
    parent = context_from(traceparent)
    if parent is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER)


def _traceparent(context: grpc.aio.ServicerContext) -> str:
    return str(dict(context.invocation_metadata() or ()).get(TRACEPARENT, ""))


def _validated_acquire(request: pb.AcquireRequest) -> tuple[str, frozenset[str]]:
    if len(request.token_hash) != 64:
        raise InvalidArgument("token_hash must be the SHA-256 hex digest of the client token")
    if len(request.model) > MAX_MODEL_NAME or len(request.exclude_key_ids) > MAX_EXCLUDED:
        raise InvalidArgument("model name or exclusion list too long")
    return request.model.removeprefix("models/"), frozenset(request.exclude_key_ids)


class LeaseServicer(pb_grpc.LeaseServiceServicer):
    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def _acquire(self, request: pb.AcquireRequest, traceparent: str = "") -> pb.AcquireResponse:
        with _span("keyring.v1.LeaseService/Acquire", traceparent) as span:
            model, exclude = _validated_acquire(request)
            grant, secret = self._keyring.acquire(request.token_hash, model, exclude)
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

    @domain_errors
    async def Acquire(self, request: pb.AcquireRequest, context: grpc.aio.ServicerContext) -> pb.AcquireResponse:
        return self._acquire(request, _traceparent(context))

    @domain_errors
    async def Release(self, request: pb.ReleaseRequest, context: grpc.aio.ServicerContext) -> pb.ReleaseResponse:
        outcome = convert.outcome_from_pb(request.outcome)
        with _span("keyring.v1.LeaseService/Release", _traceparent(context)):
            known = await self._keyring.release(request.lease_id, request.key_id, request.model, outcome)
        return pb.ReleaseResponse(known=known)

    async def LeaseStream(
        self, requests: AsyncIterator[pb.LeaseStreamRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Answer each batch at once from memory; releases that must write answer later, alone.

        Replies go out through a ``_ReplyWriter``, so reading the next batch
        never waits for the previous answer's write to complete.
        """
        replies = _ReplyWriter(context)
        pending: set[asyncio.Task[None]] = set()

        async def report_then_answer(call_id: int, known: bool, key_id: str, model: str, outcome: Outcome) -> None:
            try:
                await self._keyring.report(key_id, model, outcome)
                result = pb.LeaseResult(id=call_id, release=pb.ReleaseResponse(known=known))
            except KeyringError as error:
                result = _stream_error(call_id, error)
            replies.send([result])

        try:
            async for batch in requests:
                results = []
                for call in batch.calls:
                    if call.HasField("release"):
                        release = call.release
                        outcome = convert.outcome_from_pb(release.outcome)
                        with _span("keyring.v1.LeaseService/Release", call.traceparent):
                            known, key_id, model = self._keyring.release_slot(
                                release.lease_id, release.key_id, release.model, outcome
                            )
                            if self._keyring.outcome_is_news(key_id, model, outcome):
                                task = asyncio.create_task(report_then_answer(call.id, known, key_id, model, outcome))
                                pending.add(task)
                                task.add_done_callback(pending.discard)
                            else:
                                results.append(pb.LeaseResult(id=call.id, release=pb.ReleaseResponse(known=known)))
                        continue
                    try:
                        results.append(pb.LeaseResult(id=call.id, acquire=self._acquire(call.acquire, call.traceparent)))
                    except KeyringError as error:
                        results.append(_stream_error(call.id, error))
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


def _stream_error(call_id: int, error: KeyringError) -> pb.LeaseResult:
    return pb.LeaseResult(
        id=call_id,
        error=pb.StreamError(
            code=status_code_of(error).value[0], message=str(error), retry_after_ms=retry_after_ms(error)
        ),
    )


ACTOR_METADATA = "x-keyring-actor"
USAGE_WINDOWS = (3600, 86400)


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Every change is recorded in the audit log with the caller's x-keyring-actor."""

    def __init__(self, keyring: Keyring, administration: Administration, checker: UpstreamChecker) -> None:
        self._keyring = keyring
        self._admin = administration
        self._checker = checker

    async def _audit(self, context: grpc.aio.ServicerContext, action: str, target: str, detail: str = "") -> None:
        actor = dict(context.invocation_metadata() or ()).get(ACTOR_METADATA, "unknown")
        try:
            await self._keyring.record_audit(str(actor), action, target, detail)
        except KeyringError:
            log.warning("could not record audit entry for %s on %s", action, target)

    def _key_info(self, key_id: str) -> pb.KeyInfo:
        key = self._admin.get_key(key_id)
        return convert.key_to_pb(key, self._admin.cooldowns_of(key), self._keyring.last_used.get(key_id, 0.0))

    def _token_info(self, token: ClientToken) -> pb.TokenInfo:
        return convert.token_to_pb(token, self._keyring.last_used.get(token.token_id, 0.0))

    @domain_errors
    async def CreatePool(self, request: pb.CreatePoolRequest, context: grpc.aio.ServicerContext) -> pb.Pool:
        pool = await self._admin.create_pool(convert.pool_from_pb(request.pool))
        await self._audit(context, "CreatePool", pool.name)
        return convert.pool_to_pb(pool)

    @domain_errors
    async def GetPool(self, request: pb.GetPoolRequest, context: grpc.aio.ServicerContext) -> pb.Pool:
        return convert.pool_to_pb(self._admin.get_pool(request.name))

    @domain_errors
    async def ListPools(self, request: pb.ListPoolsRequest, context: grpc.aio.ServicerContext) -> pb.ListPoolsResponse:
        return pb.ListPoolsResponse(pools=[convert.pool_to_pb(pool) for pool in self._admin.list_pools()])

    @domain_errors
    async def UpdatePool(self, request: pb.UpdatePoolRequest, context: grpc.aio.ServicerContext) -> pb.Pool:
        changes = convert.pool_changes_from_pb(request)
        pool = await self._admin.update_pool(request.pool.name, changes)
        await self._audit(context, "UpdatePool", pool.name, ", ".join(request.update_fields) or "all fields")
        return convert.pool_to_pb(pool)

    @domain_errors
    async def DeletePool(
        self, request: pb.DeletePoolRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePoolResponse:
        keys, tokens = await self._admin.delete_pool(request.name, request.force)
        await self._audit(context, "DeletePool", request.name, f"{keys} keys and {tokens} tokens deleted")
        return pb.DeletePoolResponse(keys_deleted=keys, tokens_deleted=tokens)

    @domain_errors
    async def AddKeys(self, request: pb.AddKeysRequest, context: grpc.aio.ServicerContext) -> pb.AddKeysResponse:
        inputs = [convert.key_input_from_pb(item) for item in request.keys]
        results = await self._admin.add_keys(request.pool, inputs)
        added = sum(result.status == "added" for result in results)
        if added:
            await self._audit(context, "AddKeys", request.pool, f"{added} of {len(results)} added")
        return pb.AddKeysResponse(
            results=[convert.add_result_to_pb(result) for result in results],
            added=sum(result.status == "added" for result in results),
        )

    @domain_errors
    async def ListKeys(self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext) -> pb.ListKeysResponse:
        page = self._admin.list_keys(convert.key_filter_from_pb(request.filter))
        now = self._keyring.clock()
        return pb.ListKeysResponse(
            keys=[
                convert.key_to_pb(key, self._admin.cooldowns_of(key, now), self._keyring.last_used.get(key.key_id, 0.0))
                for key in page.keys
            ],
            next_page_token=page.next_page_token,
            total=page.total,
        )

    @domain_errors
    async def GetKey(self, request: pb.GetKeyRequest, context: grpc.aio.ServicerContext) -> pb.KeyInfo:
        return self._key_info(request.key_id)

    @domain_errors
    async def UpdateKey(self, request: pb.UpdateKeyRequest, context: grpc.aio.ServicerContext) -> pb.KeyInfo:
        changes = convert.key_input_from_pb(request.changes)
        await self._admin.update_key(request.key_id, changes, request.update_fields)
        await self._audit(context, "UpdateKey", request.key_id, ", ".join(request.update_fields) or "all fields")
        return self._key_info(request.key_id)

    @domain_errors
    async def SetKeyState(self, request: pb.SetKeyStateRequest, context: grpc.aio.ServicerContext) -> pb.KeyInfo:
        action = pb.SetKeyStateRequest.Action.Name(request.action).lower()
        await self._admin.set_key_state(request.key_id, action)
        await self._audit(context, "SetKeyState", request.key_id, action)
        return self._key_info(request.key_id)

    @domain_errors
    async def DeleteKey(self, request: pb.DeleteKeyRequest, context: grpc.aio.ServicerContext) -> pb.DeleteKeyResponse:
        await self._admin.delete_key(request.key_id)
        await self._audit(context, "DeleteKey", request.key_id)
        return pb.DeleteKeyResponse()

    @domain_errors
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        token, secret = await self._admin.create_token(
            request.pool, request.name, request.expires_at_ms / 1000, request.requests_per_minute
        )
        await self._audit(context, "CreateToken", token.token_id, f"pool {token.pool}")
        return pb.CreateTokenResponse(info=self._token_info(token), token=secret)

    @domain_errors
    async def ListTokens(self, request: pb.ListTokensRequest, context: grpc.aio.ServicerContext) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(tokens=[self._token_info(token) for token in self._admin.list_tokens(request.pool)])

    @domain_errors
    async def RotateToken(
        self, request: pb.RotateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        token, secret = await self._admin.rotate_token(request.token_id)
        await self._audit(context, "RotateToken", request.token_id, f"replaced by {token.token_id}")
        return pb.CreateTokenResponse(info=self._token_info(token), token=secret)

    @domain_errors
    async def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.aio.ServicerContext) -> pb.TokenInfo:
        token = await self._admin.revoke_token(request.token_id)
        await self._audit(context, "RevokeToken", token.token_id)
        return self._token_info(token)

    @domain_errors
    async def ExportConfig(
        self, request: pb.ExportConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportConfigResponse:
        document = export_document(self._keyring, request.include_secrets_in_clear)
        detail = "secrets in clear" if request.include_secrets_in_clear else "secrets sealed"
        await self._audit(context, "ExportConfig", "all", detail)
        return pb.ExportConfigResponse(document=document)

    @domain_errors
    async def ImportConfig(
        self, request: pb.ImportConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImportConfigResponse:
        pools, keys, tokens = await import_document(self._keyring, request.document)
        await self._audit(context, "ImportConfig", "all", f"{pools} pools, {keys} keys, {tokens} tokens created")
        return pb.ImportConfigResponse(pools=pools, keys=keys, tokens=tokens)

    @domain_errors
    async def VerifyKeys(self, request: pb.VerifyKeysRequest, context: grpc.aio.ServicerContext) -> pb.VerifyKeysResponse:
        key_ids = list(dict.fromkeys(request.key_ids))
        for key_id in key_ids:
            self._admin.get_key(key_id)  # unknown ids fail before any upstream call
        if request.all_unhealthy:
            if request.pool:
                self._admin.get_pool(request.pool)
            key_ids += [k for k in self._keyring.unhealthy_keys(request.pool) if k not in key_ids]
        checked = await self._keyring.verify(self._checker, key_ids)
        await self._audit(context, "VerifyKeys", request.pool or "keys", f"{len(checked)} keys checked")
        return pb.VerifyKeysResponse(
            results=[
                pb.VerifyResult(
                    key_id=key_id,
                    ok=200 <= outcome.http_status < 300,
                    http_status=outcome.http_status,
                    error_status=outcome.error_status or ("" if outcome.http_status else outcome.transport.name),
                    error_reason=outcome.error_reason,
                    state=convert.state_to_pb(self._admin.get_key(key_id).state),
                )
                for key_id, outcome in checked
                if key_id in self._keyring.view.keys
            ]
        )

    @domain_errors
    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext) -> pb.GetUsageResponse:
        window = request.window_s or USAGE_WINDOWS[0]
        if window not in USAGE_WINDOWS:
            raise InvalidArgument("window_s must be 3600 (last hour) or 86400 (last day)")
        if request.pool:
            self._admin.get_pool(request.pool)
        summary = await self._keyring.usage_summary(window, request.pool)
        return pb.GetUsageResponse(
            window_s=window,
            keys=[convert.usage_row(key_id, pool, figures) for key_id, (pool, figures) in sorted(summary.keys.items())],
            tokens=[convert.usage_row(token_id, pool, figures) for token_id, (pool, figures) in sorted(summary.tokens.items())],
            pools=[convert.usage_row(pool, pool, figures) for pool, figures in sorted(summary.pools.items())],
        )

    @domain_errors
    async def ListAudit(self, request: pb.ListAuditRequest, context: grpc.aio.ServicerContext) -> pb.ListAuditResponse:
        limit = min(max(request.limit or 100, 1), 1000)
        return pb.ListAuditResponse(
            entries=[
                pb.AuditEntry(
                    at_ms=convert.ms(float(entry["at"])), actor=str(entry["actor"]), action=str(entry["action"]),
                    target=str(entry["target"]), detail=str(entry["detail"]),
                )
                for entry in self._keyring.audit_entries(limit)
            ]
        )
