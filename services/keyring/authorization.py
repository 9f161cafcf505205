"""Who may call what on keyring's gRPC port: decided by the caller's certificate, in one place.

Under mutual TLS the TLS handshake already refuses a client without a
certificate signed by the CA. Then, per RPC:

- ``grpc.health.v1.Health``: any verified client;
- ``keyring.v1.LeaseService`` (lease and release): any verified client, or only
  the identities of ``lease_identities`` when that list is set;
- ``keyring.v1.AdminService``: only the identities of ``admin_identities``;
  for them only, the operator named in ``x-keyring-actor`` is trusted for the
  audit log (``actor``); anyone else would be recorded by certificate identity;
- server reflection (when switched on): any verified client;
- anything else: PERMISSION_DENIED.

The caller's identity (``caller``) also names whose budget an outcome that
blames a key spends (``domain/blames.py``): an edge is trusted with a key's
health only as far as that budget.

An identity is the certificate's common name or any subject alternative name.
The check wraps the method handlers (``Authorizer``, a server interceptor): an
interceptor cannot see the peer's certificate, the handler's context can.
Services every verified client may call are not wrapped at all, so the lease
path pays nothing beyond TLS.

Under the explicit plaintext switch there is no identity: every RPC is allowed
and ``x-keyring-actor`` is taken as given (the server logs a loud warning).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.tls import identities, primary_identity

log = logging.getLogger(__name__)

ACTOR_METADATA = "x-keyring-actor"
LEASE_SERVICE = pb.DESCRIPTOR.services_by_name["LeaseService"].full_name
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


class Authorization:
    """The rules: which identities may administer, which may lease (empty: every verified client)."""

    def __init__(
        self, *, admin_identities: Iterable[str], lease_identities: Iterable[str] = (), plaintext: bool = False
    ) -> None:
        self.admin_identities = frozenset(admin_identities)
        self.lease_identities = frozenset(lease_identities)
        self.plaintext = plaintext
        if not plaintext and not self.admin_identities:
            raise ValueError("no admin identity configured: nobody could call AdminService")

    def allowed(self, service: str) -> frozenset[str] | None:
        """The identities allowed to call ``service``; None when every verified client is."""
        if service == ADMIN_SERVICE:
            return self.admin_identities
        if service == LEASE_SERVICE:
            return self.lease_identities or None
        if service == HEALTH_SERVICE or service in REFLECTION_SERVICES:
            return None
        return frozenset()

    def actor(self, context: grpc.aio.ServicerContext) -> str:
        """Who the audit log records for this call: the operator admin names, else the certificate identity."""
        named = str(dict(context.invocation_metadata() or ()).get(ACTOR_METADATA, ""))
        if self.plaintext:
            return named or "unknown"
        auth = context.auth_context()
        identity = primary_identity(auth)
        if identities(auth) & self.admin_identities:
            return named or identity
        return f"cert:{identity}" if identity else "unknown"

    def interceptor(self) -> Authorizer:
        return Authorizer(self)


def caller(context: grpc.aio.ServicerContext) -> str:
    """The identity a call comes from (its certificate's primary name; "" under the plaintext switch): whose
    budget of key-blaming outcomes it spends (``domain/blames.py``)."""
    return primary_identity(context.auth_context())


class Authorizer(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types for it
    """Wraps each method handler whose service not every verified client may call (cached per method)."""

    def __init__(self, authorization: Authorization) -> None:
        self._authorization = authorization
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service = method.lstrip("/").partition("/")[0]
        allowed = self._authorization.allowed(service)
        wrapped = handler if allowed is None else _guarded(handler, method, allowed)
        self._handlers[method] = wrapped
        return wrapped


async def _check(context: grpc.aio.ServicerContext, method: str, allowed: frozenset[str]) -> None:
    auth = context.auth_context()
    if identities(auth) & allowed:
        return
    who = primary_identity(auth) or "a client without identity"
    log.warning("refused %s to %s: not an identity allowed to call it", method, who)
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{who} may not call {method}")


def _guarded(handler: grpc.RpcMethodHandler, method: str, allowed: frozenset[str]) -> grpc.RpcMethodHandler:
    """The same handler, its behaviour preceded by the identity check."""
    for field in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behaviour = getattr(handler, field)
        if behaviour is not None:
            return handler._replace(**{field: _wrap(behaviour, method, allowed)})
    return handler


def _wrap(behaviour: Callable[..., Any], method: str, allowed: frozenset[str]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _check(context, method, allowed)
            async for response in behaviour(request, context):
                yield response

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _check(context, method, allowed)
        return await behaviour(request, context)

    return unary
