"""What the edge asks keyring for (``LeaseRequest``), and a lease it holds (``HeldLease``): the one owner of its end.

A lease's end returns the slot, teaches keyring the key's health, commits
the resources the call bound and counts its usage, exactly once. Whatever
ends a lease (an answer, a failover, a settling stream before its end is
sent, a client gone, an exception) calls ``HeldLease.release``: the first
call sends the release (``releases.Releases``), any later one does nothing.
Used as ``async with``, a lease left without a release is released as
cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, overload

from services.common.proto.keyring.v1 import keyring_pb2 as pb

if TYPE_CHECKING:
    from .releases import Releases

log = logging.getLogger(__name__)

# The outcome of a lease whose call never got an answer (the client left, the call was cut short).
CANCELLED: Final = pb.Outcome(transport=pb.Outcome.TRANSPORT_CANCELLED)
# The outcome of a credit (``credits.py``) no call used: keyring refunds its grant.
UNUSED: Final = pb.Outcome(transport=pb.Outcome.TRANSPORT_UNUSED)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRequest:
    """What one client request asks keyring for, built once at the edge and carried as such to ``acquire``.

    ``upstream.Call`` extends it (a call is what it leases for plus what it sends upstream).
    """

    token_hash: str
    # Without "models/"; empty for calls about no model (listing).
    model: str
    # The call's input tokens as estimated from its parsed content (``estimates.py``; 0: not estimated).
    input_tokens: int = 0
    # Project-bound resources the call names ("files/abc"...): the lease goes to their owner (keyring).
    affinity: tuple[str, ...] = ()
    # Projects a list call has covered already (keyring leases a key of another one; ``key:<id>`` without one).
    exclude_projects: tuple[str, ...] = ()
    # The call creates a resource its settle binds: keyring refuses it (429) when the bindings are full.
    binds: bool = False
    # A Live session: a lease held for the whole session, renewed (``HeldLease.renew``), under the session caps.
    session: bool = False
    # A redeemed browser token's grant (``KeyringClient.redeem_session_token``), leased instead of token_hash.
    session_grant: str = ""
    # The request's service_tier ("", "standard", "flex", "priority"): priority is leased Tier 2/3 keys only.
    service_tier: str = ""


@dataclass(frozen=True, slots=True)
class Binding:
    """A resource a call created under its lease's key, and how long keyring routes to that key (its lifetime)."""

    name: str  # e.g. "files/abc": the spelling later acquires name in ``affinity``
    ttl_s: float


class HeldLease:
    """A lease keyring granted and the edge holds until ``release`` (module docstring: the one owner of its end)."""

    __slots__ = (
        "_bindings", "_releases", "allowed_models", "credit", "lease", "model", "released", "replica", "service_tier",
    )  # fmt: skip

    def __init__(
        self,
        releases: Releases,
        lease: pb.Lease,
        allowed_models: tuple[str, ...],
        replica: str,
        model: str,
        service_tier: str = "",
        credit: bool = False,
    ) -> None:
        self._releases = releases
        releases.holding += 1  # until ``release`` (``Releases.send``, exactly once)
        self.lease = lease
        self.allowed_models = allowed_models
        self.replica = replica  # the address of the replica that granted it
        self.model = model
        self.released = False
        self.credit = credit  # taken from a credit (``credits.py``): no cap of keyring waits on its release
        self._bindings: asyncio.Task[bool] | None = None
        # The call's service class when not standard ("flex", "priority"): its outcome says so (issue 21), so
        # keyring cools and learns that class only, never the project's standard traffic.
        self.service_tier = service_tier if service_tier in ("flex", "priority") else ""

    def keep_alone(self) -> None:
        """Hold a copy of the lease instead of the reply message it came in (the copy is its own, a few hundred bytes).

        A lease read from a reply keeps that whole reply alive (protobuf's arena: every result it carried);
        a stream holds its lease for minutes (issue 23), so a committed stream keeps only this.
        """
        lease = pb.Lease()
        lease.CopyFrom(self.lease)
        self.lease = lease

    @overload
    def release(
        self,
        outcome: pb.Outcome,
        *,
        confirm: Literal[True] = True,
        bind: Sequence[Binding] = (),
        unbind: Sequence[str] = (),
    ) -> asyncio.Task[bool]: ...

    @overload
    def release(
        self, outcome: pb.Outcome, *, confirm: bool, bind: Sequence[Binding] = (), unbind: Sequence[str] = ()
    ) -> asyncio.Task[bool] | None: ...

    def release(
        self, outcome: pb.Outcome, *, confirm: bool = True, bind: Sequence[Binding] = (), unbind: Sequence[str] = ()
    ) -> asyncio.Task[bool] | None:
        """End the lease with its outcome, once; synchronous, so no cancellation comes between a caller and it.

        ``confirm=False`` (a finished request: nobody waits): queued on the
        granting replica's open stream, no reply awaited, None returned.
        Otherwise (a failover, which must not pick the next key before keyring
        has learnt from this one), or when that stream is not open, a task
        delivers it and resolves once keyring answered; await it to wait too.
        ``bind`` (resources the call created, with their lifetime) and
        ``unbind`` (resources it deleted) make it confirmed whatever ``confirm``
        says: the task resolves to True once keyring committed them
        (``committed``). A second call does nothing and returns None.
        """
        if self.released:
            return None
        self.released = True
        if self.service_tier:  # a copy: outcomes such as CANCELLED are shared
            classed = pb.Outcome()
            classed.CopyFrom(outcome)
            classed.service_tier = self.service_tier
            outcome = classed
        task = self._releases.send(self, outcome, confirm, bind, unbind)
        if bind or unbind:
            self._bindings = task
        return task

    async def renew(self) -> bool:
        """Keep a session lease (``LeaseRequest.session``) another TTL; call it every ``lease.renew_every_ms``.

        True: keyring still holds it. False: it is not held any more (expired, reclaimed, released): end the
        session. ``KeyringUnavailable``: its granting replica could not be asked now; try again at the next tick.
        """
        if self.released:
            return False
        return await self._releases.renew(self)

    async def committed(self) -> bool:
        """Wait until keyring committed the bindings this lease's release carried (True when it carried none).

        Awaited before the client gets the answer that created a resource, so
        its next call, through any edge and replica, finds the owner. Not
        committed: logged (the answer still goes out: the resource exists upstream).
        """
        if self._bindings is None:
            return True
        if await asyncio.shield(self._bindings):
            return True
        log.warning(
            "keyring did not commit the resources of lease %s: later calls naming them may not find their owner",
            self.lease.lease_id,
        )
        return False

    async def __aenter__(self) -> HeldLease:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release(CANCELLED, confirm=False)  # nothing if released already
