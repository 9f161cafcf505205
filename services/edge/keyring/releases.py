"""How a release reaches keyring: the granting replica first, its news to every replica, nothing lost.

A release goes back to the replica that granted the lease, because the
in-flight slot lives there: queued on its open stream when nobody waits
(a finished request), else delivered by a task that waits for keyring's
answer (a failover, bindings to commit, or that stream not open). If the
granting replica does not answer, the outcome still reaches another one (the
key's health is shared through etcd; the lease id vouches for it) and the
granting one is owed the release (``kept``), re-sent when its stream is back.
A release whose outcome is news (not a 2xx, not cancelled) also goes, as an
outcome-only report (``LeaseCall.report``), to every other replica with an
open stream, unanswered: each applies what it decides in memory at once, so
a cooldown holds everywhere without waiting for etcd (a routine success
sends nothing more). Best effort: a release lost for good is reclaimed by
keyring after its grace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.common.telemetry import current_traceparent

from ..errors import KeyringUnavailable
from .kept import plain
from .lease import Binding, HeldLease
from .refusals import status_of
from .replicas import ReplicaSet
from .spans import client_span
from .transport import LeaseStream

log = logging.getLogger(__name__)

# Outcomes that say nothing of the key: the client left, or a credit no call used.
_NO_NEWS = (pb.Outcome.TRANSPORT_CANCELLED, pb.Outcome.TRANSPORT_UNUSED)


class Releases:
    """Sends the releases of the leases one client granted; ``drain`` waits for those still in flight."""

    def __init__(self, replicas: ReplicaSet, timeout_s: float) -> None:
        self._replicas = replicas
        self._timeout_s = timeout_s
        self._in_flight: set[asyncio.Task[bool]] = set()
        # Leases granted and not released yet (``HeldLease`` counts itself in): while others are held, more
        # calls are coming, and a routine release waits to share one's message; the last one goes at once.
        self.holding = 0
        # Told the key of each release whose outcome is news (the key may be cooling): its credits go back.
        self.on_news: Callable[[str], None] | None = None
        # With credits, the next call takes one and sends nothing: even the last release held may wait.
        self.defer_last = False
        # How long a routine release of a lease taken from a credit may wait to share a message: keyring grants
        # credits only where no in-flight cap is, so nothing waits on its slot (None: the stream's window).
        self.credit_window_s: float | None = None

    def send(
        self, held: HeldLease, outcome: pb.Outcome, confirm: bool, bind: Sequence[Binding], unbind: Sequence[str]
    ) -> asyncio.Task[bool] | None:
        """The release of ``held`` (``HeldLease.release`` says when a task comes back); the span covers the sending."""
        lease = held.lease
        self.holding -= 1
        request = pb.ReleaseRequest(
            lease_id=lease.lease_id, key_id=lease.key_id, model=held.model, outcome=outcome,
            token_id=lease.token_id, token_tag=lease.token_tag,
        )  # fmt: skip
        binding = bool(bind or unbind)
        if binding:
            request.bind.extend(pb.ResourceBinding(name=b.name, ttl_ms=max(1, round(b.ttl_s * 1000))) for b in bind)
            request.unbind.extend(unbind)
        with client_span("keyring.release", lease.key_id):
            call = pb.LeaseCall(release=request, traceparent=current_traceparent())
            if outcome.http_status // 100 != 2 and outcome.transport not in _NO_NEWS:
                self._report(request, held.replica)  # news: every replica learns it now
                if self.on_news is not None:
                    self.on_news(lease.key_id)
            if not confirm and not binding:
                replica = self._replicas.get(held.replica)
                if replica is not None and replica.connected and replica.usable:
                    # Other leases held: their calls will follow, this may share one's message (its window). The
                    # last one goes now: an idle edge's next acquire would otherwise carry it on its own path.
                    patient = held.credit and outcome.http_status // 100 == 2
                    window = self.credit_window_s if patient else None
                    replica.send(call, defer=self.holding > 0 or self.defer_last, window_s=window)
                    return None
            task = asyncio.get_running_loop().create_task(self._deliver(call, held, binding))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            return task

    async def renew(self, held: HeldLease) -> bool:
        """A session lease renewed on its granting replica, the one that holds it (``HeldLease.renew``)."""
        replica = self._replicas.get(held.replica)
        if replica is None:
            raise KeyringUnavailable(f"keyring replica {held.replica} is no longer named")
        lease = held.lease
        renew = pb.RenewRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=held.model)
        call = pb.LeaseCall(renew=renew, traceparent=current_traceparent())
        reply = await replica.call(call, self._timeout_s)
        if reply.HasField("error"):
            if status_of(reply.error.code) is grpc.StatusCode.UNAVAILABLE:
                raise KeyringUnavailable(reply.error.message)
            return False  # a keyring that does not know renew holds no session lease
        return reply.renew.held

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the releases still being delivered."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout_s)

    def _report(self, request: pb.ReleaseRequest, granting: str) -> None:
        """The outcome alone to every other replica with an open stream: no reply awaited, no slot, no usage.

        Each replica judges it once (by lease id) and applies what it decides in
        memory, so a cooldown holds on every replica without waiting for etcd.
        """
        for replica in self._replicas.current:
            if replica.address != granting and replica.connected and replica.usable:
                replica.send(pb.LeaseCall(report=request))

    async def _deliver(self, call: pb.LeaseCall, held: HeldLease, binding: bool = False) -> bool:
        """True once a replica answered the release (with bindings: answered without an error).

        The slot lives on the granting replica: when another one answered (it learns
        the outcome: the lease id vouches for it), the granting one is still owed the
        release, outcome included, re-sent when its stream is back: it frees the slot
        and counts the call's usage (the holder of a lease counts it; the replica that
        answered does not while the granter lives), and its judgement of the outcome
        merges with the other replica's (one decision per lease id). When none
        answered, it is owed the whole release.
        """
        granter = self._replicas.get(held.replica)
        replicas = await self._replicas.rotation(first=held.replica)
        for replica in replicas:
            attempt = pb.LeaseCall()  # its own message: one left in flight on a late replica must not change
            attempt.CopyFrom(call)
            # Another replica learns the outcome; the usage is counted where the release is kept for (once).
            attempt.release.kept_for_granter = granter is not None and replica is not granter
            # A silent replica holds a failover back no longer than its hedge delay while another may answer.
            wait_s = self._timeout_s if replica is replicas[-1] else replica.health.hedge_delay_s
            try:
                reply = await replica.call(attempt, wait_s)
            except KeyringUnavailable:
                continue
            if binding and reply.HasField("error"):
                if status_of(reply.error.code) is grpc.StatusCode.UNAVAILABLE:
                    continue  # draining, or its store unreachable: another replica may commit them
                log.warning("keyring refused the bindings of lease %s: %s", held.lease.lease_id, reply.error.message)
                _owe_granter(granter, replica, call)
                return False
            _owe_granter(granter, replica, call)
            return True
        if granter is not None:
            granter.owe(plain(call))
        log.warning("lease %s: no keyring replica reachable, its release is kept", held.lease.lease_id)
        return False


def _owe_granter(granter: LeaseStream | None, answered: LeaseStream, call: pb.LeaseCall) -> None:
    if granter is not None and answered is not granter:
        granter.owe(plain(call))
