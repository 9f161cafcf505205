"""The admin service: protobuf in, administration and housekeeping, protobuf out.

Every change is recorded in the audit log with its actor: the operator named in
x-keyring-actor when the caller's certificate is admin's, else the certificate
identity (``authorization.Authorization.actor``; only admin's identity reaches
these handlers at all under mutual TLS).
"""

from __future__ import annotations

import logging

import grpc

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.proto.keyring.v1 import keyring_pb2_grpc as pb_grpc

from . import convert
from .administration import Administration
from .authorization import ACTOR_METADATA, Authorization
from .core import Keyring
from .domain.errors import InvalidArgument, KeyringError
from .domain.models import ClientToken
from .domain.usage import BUCKET_S
from .grpc_errors import domain_errors
from .transfer import export_document, import_document

log = logging.getLogger(__name__)

__all__ = ["ACTOR_METADATA", "AdminServicer"]
USAGE_WINDOWS = (3600, 86400)


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, keyring: Keyring, administration: Administration, authorization: Authorization) -> None:
        self._authorization = authorization
        self._cache = keyring.cache
        self._housekeeping = keyring.housekeeping
        self._box = keyring.box
        self._writer = keyring.writer
        self._clock = keyring.clock
        self._pools = administration.pools
        self._keys = administration.keys
        self._tokens = administration.tokens
        self._sessions = administration.sessions
        self._desk = keyring.desk

    async def _audit(self, context: grpc.aio.ServicerContext, action: str, target: str, detail: str = "") -> None:
        actor = self._authorization.actor(context)
        try:
            await self._housekeeping.record_audit(str(actor), action, target, detail)
        except KeyringError:
            log.warning("could not record audit entry for %s on %s", action, target)

    def _key_info(self, key_id: str) -> pb.KeyInfo:
        key = self._keys.get_key(key_id)
        return convert.key_to_pb(key, self._keys.cooldowns_of(key), self._cache.last_used.get(key_id, 0.0))

    def _token_info(self, token: ClientToken) -> pb.TokenInfo:
        return convert.token_to_pb(token, self._cache.last_used.get(token.token_id, 0.0))

    @domain_errors
    async def CreatePool(self, request: pb.CreatePoolRequest, context: grpc.aio.ServicerContext) -> pb.Pool:
        pool = await self._pools.create_pool(convert.pool_from_pb(request.pool))
        await self._audit(context, "CreatePool", pool.name)
        return convert.pool_to_pb(pool)

    @domain_errors
    async def GetPool(self, request: pb.GetPoolRequest, context: grpc.aio.ServicerContext) -> pb.Pool:
        return convert.pool_to_pb(self._pools.get_pool(request.name))

    @domain_errors
    async def ListPools(self, request: pb.ListPoolsRequest, context: grpc.aio.ServicerContext) -> pb.ListPoolsResponse:
        return pb.ListPoolsResponse(pools=[convert.pool_to_pb(pool) for pool in self._pools.list_pools()])

    @domain_errors
    async def UpdatePool(self, request: pb.UpdatePoolRequest, context: grpc.aio.ServicerContext) -> pb.Pool:
        changes = convert.pool_changes_from_pb(request)
        pool = await self._pools.update_pool(request.pool.name, changes)
        await self._audit(context, "UpdatePool", pool.name, ", ".join(request.update_fields) or "all fields")
        return convert.pool_to_pb(pool)

    @domain_errors
    async def DeletePool(
        self, request: pb.DeletePoolRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeletePoolResponse:
        keys, tokens = await self._pools.delete_pool(request.name, request.force)
        await self._audit(context, "DeletePool", request.name, f"{keys} keys and {tokens} tokens deleted")
        return pb.DeletePoolResponse(keys_deleted=keys, tokens_deleted=tokens)

    @domain_errors
    async def AddKeys(self, request: pb.AddKeysRequest, context: grpc.aio.ServicerContext) -> pb.AddKeysResponse:
        inputs = [convert.key_input_from_pb(item) for item in request.keys]
        results = await self._keys.add_keys(request.pool, inputs)
        added = sum(result.status == "added" for result in results)
        if added:
            await self._audit(context, "AddKeys", request.pool, f"{added} of {len(results)} added")
        return pb.AddKeysResponse(
            results=[convert.add_result_to_pb(result) for result in results],
            added=sum(result.status == "added" for result in results),
        )

    @domain_errors
    async def ListKeys(self, request: pb.ListKeysRequest, context: grpc.aio.ServicerContext) -> pb.ListKeysResponse:
        page = self._keys.list_keys(convert.key_filter_from_pb(request.filter))
        now = self._clock()
        return pb.ListKeysResponse(
            keys=[
                convert.key_to_pb(key, self._keys.cooldowns_of(key, now), self._cache.last_used.get(key.key_id, 0.0))
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
        await self._keys.update_key(request.key_id, changes, request.update_fields)
        await self._audit(context, "UpdateKey", request.key_id, ", ".join(request.update_fields) or "all fields")
        return self._key_info(request.key_id)

    @domain_errors
    async def SetKeyState(self, request: pb.SetKeyStateRequest, context: grpc.aio.ServicerContext) -> pb.KeyInfo:
        action = pb.SetKeyStateRequest.Action.Name(request.action).lower()
        await self._keys.set_key_state(request.key_id, action)
        await self._audit(context, "SetKeyState", request.key_id, action)
        return self._key_info(request.key_id)

    @domain_errors
    async def DeleteKey(self, request: pb.DeleteKeyRequest, context: grpc.aio.ServicerContext) -> pb.DeleteKeyResponse:
        await self._keys.delete_key(request.key_id)
        await self._audit(context, "DeleteKey", request.key_id)
        return pb.DeleteKeyResponse()

    @domain_errors
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        token, secret = await self._tokens.create_token(
            request.pool,
            request.name,
            request.expires_at_ms / 1000,
            request.requests_per_minute,
            convert.budgets_from_pb(request.budgets),
        )
        await self._audit(context, "CreateToken", token.token_id, f"pool {token.pool}")
        return pb.CreateTokenResponse(info=self._token_info(token), token=secret)

    @domain_errors
    async def ListTokens(
        self, request: pb.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTokensResponse:
        return pb.ListTokensResponse(
            tokens=[self._token_info(token) for token in self._tokens.list_tokens(request.pool)]
        )

    @domain_errors
    async def RotateToken(
        self, request: pb.RotateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        token, secret = await self._tokens.rotate_token(request.token_id)
        await self._audit(context, "RotateToken", request.token_id, f"replaced by {token.token_id}")
        return pb.CreateTokenResponse(info=self._token_info(token), token=secret)

    @domain_errors
    async def RevokeToken(self, request: pb.RevokeTokenRequest, context: grpc.aio.ServicerContext) -> pb.TokenInfo:
        token = await self._tokens.revoke_token(request.token_id)
        await self._audit(context, "RevokeToken", token.token_id)
        return self._token_info(token)

    @domain_errors
    async def UpdateToken(self, request: pb.UpdateTokenRequest, context: grpc.aio.ServicerContext) -> pb.TokenInfo:
        token = await self._tokens.update_token(
            request.token_id,
            name=request.name if request.HasField("name") else None,
            requests_per_minute=request.requests_per_minute if request.HasField("requests_per_minute") else None,
            budgets=convert.budgets_from_pb(request.budgets) if request.replace_budgets else None,
        )
        await self._audit(context, "UpdateToken", token.token_id, f"{len(token.budgets)} budgets")
        return self._token_info(token)

    @domain_errors
    async def ExportConfig(
        self, request: pb.ExportConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportConfigResponse:
        document = export_document(self._cache.view, self._box, self._clock(), request.include_secrets_in_clear)
        detail = "secrets in clear" if request.include_secrets_in_clear else "secrets sealed"
        await self._audit(context, "ExportConfig", "all", detail)
        return pb.ExportConfigResponse(document=document)

    @domain_errors
    async def ImportConfig(
        self, request: pb.ImportConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImportConfigResponse:
        pools, keys, tokens = await import_document(
            self._cache.view,
            self._writer,
            self._box,
            request.document,
            key_pattern=self._keys.key_pattern,
            keep_client_tokens=request.keep_client_tokens,
            now=self._clock(),
        )
        await self._audit(context, "ImportConfig", "all", f"{pools} pools, {keys} keys, {tokens} tokens created")
        return pb.ImportConfigResponse(pools=pools, keys=keys, tokens=tokens)

    @domain_errors
    async def VerifyKeys(
        self, request: pb.VerifyKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyKeysResponse:
        key_ids = list(dict.fromkeys(request.key_ids))
        for key_id in key_ids:
            self._keys.get_key(key_id)  # unknown ids fail before any upstream call
        if request.all_unhealthy:
            if request.pool:
                self._pools.get_pool(request.pool)
            key_ids += [k for k in self._housekeeping.unhealthy_keys(request.pool) if k not in key_ids]
        checked = await self._housekeeping.verify(key_ids)
        await self._audit(context, "VerifyKeys", request.pool or "keys", f"{len(checked)} keys checked")
        return pb.VerifyKeysResponse(
            results=[
                pb.VerifyResult(
                    key_id=key_id,
                    ok=200 <= outcome.http_status < 300,
                    http_status=outcome.http_status,
                    error_status=outcome.error_status or ("" if outcome.http_status else outcome.transport.name),
                    error_reason=outcome.error_reason,
                    state=convert.state_to_pb(self._keys.get_key(key_id).state),
                )
                for key_id, outcome in checked
                if key_id in self._cache.view.keys
            ]
        )

    @domain_errors
    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext) -> pb.GetUsageResponse:
        window = request.window_s or USAGE_WINDOWS[0]
        if window not in USAGE_WINDOWS:
            raise InvalidArgument("window_s must be 3600 (last hour) or 86400 (last day)")
        if request.pool:
            self._pools.get_pool(request.pool)
        summary = await self._housekeeping.usage_summary(window, request.pool)
        return pb.GetUsageResponse(
            window_s=window,
            keys=[convert.usage_row(key_id, pool, figures) for key_id, (pool, figures) in sorted(summary.keys.items())],
            tokens=[
                convert.usage_row(token_id, pool, figures)
                for token_id, (pool, figures) in sorted(summary.tokens.items())
            ],
            pools=[convert.usage_row(pool, pool, figures) for pool, figures in sorted(summary.pools.items())],
            series=[
                convert.usage_point(
                    start,
                    pool,
                    figures,
                    summary.series_errors.get((start, pool), {}),
                    summary.series_tiers.get((start, pool), {}),
                )
                for (start, pool), figures in summary.series.items()
            ],
            bucket_s=BUCKET_S,
        )

    @domain_errors
    async def ListQuotas(
        self, request: pb.ListQuotasRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListQuotasResponse:
        if request.pool:
            self._pools.get_pool(request.pool)
        return pb.ListQuotasResponse(
            quotas=[convert.quota_row_to_pb(row) for row in self._desk.quota_rows(request.pool, request.project)]
        )

    @domain_errors
    async def ListAudit(self, request: pb.ListAuditRequest, context: grpc.aio.ServicerContext) -> pb.ListAuditResponse:
        limit = min(max(request.limit or 100, 1), 1000)
        return pb.ListAuditResponse(
            entries=[
                pb.AuditEntry(
                    at_ms=convert.ms(float(entry["at"])),
                    actor=str(entry["actor"]),
                    action=str(entry["action"]),
                    target=str(entry["target"]),
                    detail=str(entry["detail"]),
                )
                for entry in self._housekeeping.audit_entries(limit)
            ]
        )

    @domain_errors
    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeSessionResponse:
        await self._sessions.revoke(request.session_hash, request.expires_at_ms / 1000)
        await self._audit(context, "RevokeSession", request.session_hash[:12])
        return pb.RevokeSessionResponse()

    @domain_errors
    async def CheckSession(
        self, request: pb.CheckSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckSessionResponse:
        return pb.CheckSessionResponse(revoked=self._sessions.revoked(request.session_hash))
