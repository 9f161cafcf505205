"""The edge's client of keyring: acquire a lease, check a token, the names a pool bound, readiness.

Each call travels on a replica's lease stream (``transport``), in the turn
the replica set gives (``replicas``), hedged (``asking``): a replica gone or
draining passes the call on to the next; one that has not answered within
its hedge delay (``health.py``) is marked slow and the call is also sent to
the next healthy replica: the first answer wins, a grant that comes later is
released at once (as cancelled, to its granter). Keyring's refusals are raised as edge
exceptions (``refusals``). ``acquire`` takes one ``LeaseRequest`` (built once at the
edge) and returns a ``HeldLease``, whose ``release`` is the one way its
lease ends (``releases`` delivers it).

The channels are mutual TLS (``services/common/tls.py``): the edge presents
its certificate and verifies keyring's against the CA, under the name of the
address it resolved (a replica's IP is checked against the Service name).
Plaintext only when the caller passes ``tls=None`` (the explicit switch).

``check_token`` asks keyring whether a client token is one it would lease
for, before the edge reads a request body; accepted token hashes are
remembered for a short TTL (a bounded dict), refusals never.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

import grpc
from opentelemetry import trace

from services.common.grpc_options import CLIENT_KEEPALIVE_S, CLIENT_KEEPALIVE_TIMEOUT_S, client_keepalive
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.telemetry import current_traceparent
from services.common.tls import TLSFiles, channel_credentials

from ..errors import EdgeError, InvalidLeaseRequest, NoKeyFree
from .asking import Asker, Late
from .background import detached_later, detached_task
from .credits import Credit, Credits, Shelf, shelf_of
from .health import ReplicaHealth
from .lease import CANCELLED, UNUSED, HeldLease, LeaseRequest
from .releases import Releases
from .replicas import ReplicaSet, Resolver, resolve_all
from .spans import traced, tracer
from .transport import LeaseStream

log = logging.getLogger(__name__)

MAX_BOUND_NAMES = 1000  # names one bound-names question asks about (keyring's affinity.MAX_LISTED_NAMES)


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
        hedge_delay_s: float = 0.05,
        max_hedge_delay_s: float = 0.25,
        max_reconnect_backoff_s: float = 30.0,
        handover_after_s: float = 1.0,
        release_window_s: float = 0.0,
        credits: int = 0,
        credit_idle_s: float = 0.25,
        credit_release_window_s: float | None = None,
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

        ``hedge_delay_s``, ``max_hedge_delay_s``: the bounds of a replica's hedge delay (a few times its recent
        latency); ``max_reconnect_backoff_s``: the longest a slow or down replica waits for its next probe or
        reconnect (``health.py``); ``handover_after_s``: how long a replica is down before what it is owed is
        handed over to a live one, once its instance has left keyring's membership (``handover.py``).
        ``release_window_s``: how long the release of a finished request may wait to share the next call's
        message to its replica (0: sent at once; ``transport.LeaseStream.send``).
        ``credits``, ``credit_idle_s``: leases kept ahead of need per (token, model, service class), each given
        back unused after that long (0: none; ``credits.py``). ``credit_release_window_s``: how long the routine
        release of a call served from a credit may wait to share a message (None: ``release_window_s``).
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
            health=partial(ReplicaHealth, hedge_delay_s, max_hedge_delay_s, max_backoff_s=max_reconnect_backoff_s),
            handover_after_s=handover_after_s,
            release_window_s=release_window_s,
        )
        self._timeout_s = timeout_s
        self.releases = Releases(self.replicas, timeout_s)
        self._token_check_ttl_s = token_check_ttl_s
        self._token_check_entries = token_check_entries
        self._accepted: dict[str, float] = {}  # token hash -> the clock's time its acceptance expires
        self._clock = clock
        self._warned_no_check = False
        self._asker = Asker(self.replicas, timeout_s)
        self.credits = Credits(credits, credit_idle_s, clock) if credits > 0 else None
        self._sweep: asyncio.TimerHandle | None = None
        self._asking: dict[asyncio.Task[None], Shelf] = {}  # calls asking credits, not answered yet
        self._closing = False
        if self.credits is not None:
            self.releases.on_news = self._key_news
            self.replicas.on_revoked = self._revoked
            self.releases.defer_last = True
            self.releases.credit_window_s = credit_release_window_s

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """Deliver the releases still in flight (bounded), then end every stream after what is queued on it."""
        if self.credits is not None:
            self._closing = True  # a credit granted from now on goes back at once (``_ask_credit``)
            if self._sweep is not None:
                self._sweep.cancel()
            if self._asking:
                await asyncio.wait(set(self._asking), timeout=flush_timeout_s)
            self._give_back(self.credits.all())
        await self.releases.drain(flush_timeout_s)
        await self.replicas.close()

    async def acquire(self, wanted: LeaseRequest, exclude: Sequence[str] = ()) -> HeldLease:
        """A lease for ``wanted``; ``exclude``: key ids already tried for this request.

        ``wanted.affinity``: resources the call names ("files/abc", "cachedContents/x"...):
        the lease goes to their owner key, else another key of its project
        (``NoKeyFree`` with the retry time when that project's keys are all
        busy or cooling; ``InvalidLeaseRequest`` when the names belong to
        different projects; ``UnknownResource`` when the pool knows no such
        resource). ``exclude_projects``: projects a list call has already
        covered. ``input_tokens``: the call's input as the edge estimates it,
        for keyring's tokens-per-minute pacing. ``binds``: the call creates a
        resource to bind (``NoKeyFree`` when the pool's or the token's
        bindings are at their cap).
        """
        credits = self.credits
        shelf = shelf_of(wanted) if credits is not None else None
        if shelf is not None:
            assert credits is not None
            credit = credits.take(shelf, wanted.input_tokens, exclude)
            if credit is not None:  # no round trip: keyring granted it ahead of this call
                self._refill(shelf, wanted)
                return self._held(credit)
        try:
            if not traced():  # nothing is traced: no span work on the lease path
                held = await self._acquire(wanted, exclude)
            else:
                with tracer.start_as_current_span("keyring.acquire", kind=trace.SpanKind.CLIENT) as span:
                    held = await self._acquire(wanted, exclude)
                    span.set_attributes({"keyring.key_id": held.lease.key_id, "keyring.pool": held.lease.pool})
        except NoKeyFree:
            # Credits asked before this call may hold the place its own acquire lacked (a project's tokens a
            # minute, a key's calls a minute): their answers are on their way (asked first), and one serves.
            credit = await self._credit_after_refusal(shelf, wanted, exclude) if shelf is not None else None
            if credit is None:
                raise
            return self._held(credit)
        if shelf is not None:  # after the call's own lease: credits never take what the call itself needs
            self._refill(shelf, wanted)
        return held

    async def _acquire(self, wanted: LeaseRequest, exclude: Sequence[str]) -> HeldLease:
        granted, replica = await self._grant(wanted, exclude)
        return HeldLease(
            self.releases, granted.lease, tuple(granted.allowed_models), replica, wanted.model, wanted.service_tier
        )

    async def _grant(
        self, wanted: LeaseRequest, exclude: Sequence[str], credits: int = 0
    ) -> tuple[pb.AcquireResponse, str]:
        """Keyring's grant for ``wanted`` and the replica that granted it.

        ``credits``: that many asked ahead of need in this one call (``AcquireRequest.credits``): the first is
        ``lease``, those keyring could grant beyond it ``more_credits`` (fewer than asked is no refusal).
        """
        request = pb.AcquireRequest(
            token_hash=wanted.token_hash, model=wanted.model, exclude_key_ids=exclude,
            estimated_input_tokens=wanted.input_tokens, binds=wanted.binds,
            session=wanted.session, session_grant=wanted.session_grant, service_tier=wanted.service_tier,
            credit=credits > 0, credits=credits,
        )  # fmt: skip
        if wanted.affinity:
            request.affinity.extend(wanted.affinity)
        if wanted.exclude_projects:
            request.exclude_projects.extend(wanted.exclude_projects)
        traceparent = current_traceparent()

        def late(replica: LeaseStream, reply: pb.LeaseResult) -> None:
            """A grant that lost the race (hedged): released at once to its granter (cancelled; credits unused)."""
            if reply.HasField("acquire"):
                for lease in (reply.acquire.lease, *reply.acquire.more_credits):
                    late_lease = HeldLease(self.releases, lease, (), replica.address, wanted.model, wanted.service_tier)
                    late_lease.release(UNUSED if credits else CANCELLED, confirm=False)

        reply, replica = await self._ask(
            lambda: pb.LeaseCall(acquire=request, traceparent=traceparent), wanted.affinity, late
        )
        return reply.acquire, replica

    # -- credits (``credits.py``) -------------------------------------------

    async def _credit_after_refusal(
        self, shelf: Shelf, wanted: LeaseRequest, exclude: Sequence[str]
    ) -> Credit | None:
        """A credit of ``shelf`` for a call keyring refused, once the shelf's credits asked meanwhile are answered."""
        assert self.credits is not None
        asked = [task for task, of in self._asking.items() if of == shelf]
        if asked:
            await asyncio.wait(asked, timeout=self._timeout_s)
        return self.credits.take(shelf, wanted.input_tokens, exclude)

    def _asked(self, task: asyncio.Task[None]) -> None:
        self._asking.pop(task, None)

    def _held(self, credit: Credit) -> HeldLease:
        return HeldLease(
            self.releases, credit.lease, credit.allowed_models, credit.replica, credit.model, credit.service_tier,
            credit=True,
        )  # fmt: skip

    def _refill(self, shelf: Shelf, wanted: LeaseRequest) -> None:
        """Ask for the credits ``shelf`` lacks, all in one call on the lease stream (``AcquireRequest.credits``)."""
        assert self.credits is not None
        if self._closing:
            return
        asked = self.credits.wanted(shelf)
        if asked:
            task = detached_task(self._ask_credit(shelf, wanted, asked))
            self._asking[task] = shelf
            task.add_done_callback(self._asked)

    async def _ask_credit(self, shelf: Shelf, wanted: LeaseRequest, asked: int) -> None:
        """``asked`` credits of ``shelf`` in one call; those granted (maybe fewer) shelved."""
        assert self.credits is not None
        credits: list[Credit] = []
        try:
            granted, replica = await self._grant(wanted, (), asked)
        except EdgeError as refused:  # the token's rate, no key free, keyring away...: no credit, no harm
            log.debug("no credit for a shelf: %s", type(refused).__name__)
        else:
            expires_at = self._clock() + self.credits.idle_s
            allowed_models = tuple(granted.allowed_models)
            credits = [
                Credit(
                    lease, allowed_models, replica, wanted.model, wanted.service_tier, wanted.input_tokens, expires_at
                )
                for lease in (granted.lease, *granted.more_credits)
            ]
            if self._closing:  # granted as the edge closes: back at once, not left for keyring to reclaim
                self._give_back(credits)
                credits = []
        self.credits.answered(shelf, asked, credits)
        if credits and self._sweep is None:  # shelved: they go back unused after their idle time
            self._sweep = detached_later(self.credits.idle_s, self._sweep_expired)

    def _sweep_expired(self) -> None:
        """Credits past their time go back unused; again after half that while any is left."""
        assert self.credits is not None
        self._sweep = None
        self._give_back(self.credits.expired())
        if len(self.credits):
            self._sweep = detached_later(self.credits.idle_s / 2, self._sweep_expired)

    def _key_news(self, key_id: str) -> None:
        """A release of ``key_id`` told news (a 429, a refused key...): its credits go back at once."""
        assert self.credits is not None
        self._give_back(self.credits.of_key(key_id))

    def _revoked(self, lease_ids: Sequence[str]) -> None:
        """Keyring revoked these credits (their key or project cools): those still on a shelf go back unused."""
        assert self.credits is not None
        self._give_back(self.credits.of_leases(frozenset(lease_ids)))

    def _give_back(self, credits: Sequence[Credit]) -> None:
        for credit in credits:
            self._held(credit).release(UNUSED, confirm=False)

    async def _ask(
        self, make_call: Callable[[], pb.LeaseCall], names: Sequence[str] = (), late: Late | None = None,
        hedge: bool = True,
    ) -> tuple[pb.LeaseResult, str]:  # fmt: skip
        """A call answered by the first replica able to, hedged (``asking.Asker.ask``); (its result, that replica)."""
        return await self._asker.ask(make_call, names, late, hedge)

    @property
    def hedged(self) -> int:
        """Calls also sent to a second replica because the first had not answered within its hedge delay."""
        return self._asker.hedged

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
            if not traced():
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

    async def mint_session_token(
        self, token_hash: str, model: str, ttl_s: float = 0.0, uses: int = 0
    ) -> pb.MintSessionTokenResponse:
        """A browser token (``auth_tokens/...``) for the client token's pool and ``model`` (keyring proto:
        ``MintSessionTokenRequest``; 0: 60 s, one use). Refusals raised as for ``acquire``."""
        request = pb.MintSessionTokenRequest(token_hash=token_hash, model=model, ttl_ms=round(ttl_s * 1000), uses=uses)
        traceparent = current_traceparent()
        reply, _ = await self._ask(lambda: pb.LeaseCall(mint_session_token=request, traceparent=traceparent))
        return reply.mint_session_token

    async def redeem_session_token(
        self, token: str, model: str, resumption: bool = False
    ) -> pb.RedeemSessionTokenResponse:
        """Spend a use of a browser token for a session of ``model`` (none when ``resumption``); its ``grant``
        goes in ``LeaseRequest.session_grant``. ``TokenRejected``: unknown, forged, spent or expired;
        ``ModelNotAllowed``: minted for another model. Never hedged: a use is spent once."""
        request = pb.RedeemSessionTokenRequest(token=token, model=model, resumption=resumption)
        traceparent = current_traceparent()
        reply, _ = await self._ask(
            lambda: pb.LeaseCall(redeem_session_token=request, traceparent=traceparent), hedge=False
        )
        return reply.redeem_session_token

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

    def replica_states(self) -> dict[str, int]:
        """Each replica's state by address: 0 healthy, 1 slow, 2 down (``health.State``)."""
        return self.replicas.states()

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
