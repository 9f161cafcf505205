"""One call asked of the replicas, hedged: the first answer wins, a replica silent past its hedge delay is passed by.

The call goes to the first replica of the turn (``replicas.ReplicaSet.rotation``:
healthy ones first). A replica gone or draining (UNAVAILABLE) passes it on to
the next; one that has not answered within its hedge delay (``health.py``) is
marked slow (``LeaseStream.overdue``) and the call also goes to the next
healthy replica, the first answer winning; answers that come after it go to
``late`` (a grant is released at once by the caller). Hedges away from a
replica not marked slow (its other replies keep coming: this edge is busy,
or that one answer is slow) are budgeted (``HEDGE_RATIO``), so an overloaded
edge does not double its load on keyring. A refusal is raised as
the edge exception that answers the client (``refusals``), except that a
replica whose share of the client token's rate limit or budget is spent
(``refusals.SHARE_SPENT``) passes the call on to the next healthy replica
not yet asked: shares are split over the live replicas, one may still have
room (each replica asked at most once; nothing more on a grant). Waiting on one reply
costs no task and no set: its future awaited, a timer for the hedge delay beside it (``_answered``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import grpc

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from ..errors import KeyringUnavailable, LeaseRefused
from .refusals import SHARE_SPENT, refusal, status_of
from .replicas import ReplicaSet
from .transport import GONE, OVERDUE, Flight, LeaseStream

Late = Callable[[LeaseStream, pb.LeaseResult], None]

# Hedges from a replica still healthy (its replies keep coming: a busy edge, a slow answer) are budgeted, so an
# overloaded edge does not double its calls: each call earns HEDGE_RATIO of a hedge, at most HEDGE_BURST saved
# (gRPC's retry throttling). A replica marked slow or down is not budgeted: its calls are the ones to move.
HEDGE_RATIO = 0.1
HEDGE_BURST = 20.0


class Asker:
    """Asks the replicas a call (module docstring); ``hedged`` counts the calls also sent to a second replica."""

    def __init__(self, replicas: ReplicaSet, timeout_s: float) -> None:
        self._replicas = replicas
        self._timeout_s = timeout_s
        self.hedged = 0
        self._hedge_budget = HEDGE_BURST

    async def ask(
        self, make_call: Callable[[], pb.LeaseCall], names: Sequence[str] = (), late: Late | None = None,
        hedge: bool = True,
    ) -> tuple[pb.LeaseResult, str]:  # fmt: skip
        """A call answered by the first replica able to (a fresh call per replica); (its result, that replica).

        ``names``: the resources the call names (a NOT_FOUND refusal names them). ``hedge=False``: one replica
        at a time, for a call that must not run twice (a browser token's redeem spends a use).
        """
        remaining = await self._replicas.rotation()
        flights: dict[Flight, LeaseStream] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        self._hedge_budget = min(self._hedge_budget + HEDGE_RATIO, HEDGE_BURST)
        send_next, look_again, hedged = True, False, False
        refused: LeaseRefused | None = None  # a replica's share of the token's limit spent: others asked first
        try:
            while True:
                wait_s = deadline - loop.time()
                if send_next:
                    send_next = False
                    sent = _send(remaining, make_call, flights, hedging=bool(flights))
                    if not flights:
                        raise refused or KeyringUnavailable()
                    if sent is not None and remaining and hedge:  # another replica to hedge to: its hedge delay first
                        wait_s = min(wait_s, sent.health.hedge_delay_s)
                elif look_again:  # not hedged for want of budget: look again after another hedge delay
                    wait_s = min(wait_s, min(replica.health.hedge_delay_s for replica in flights.values()))
                answered = await _answered(flights, max(wait_s, 0))
                if not answered:
                    if loop.time() >= deadline:
                        raise refused or KeyringUnavailable("no keyring replica answered in time")
                    if not hedge:
                        continue  # a timer may fire a hair early: wait out the deadline
                    for replica in flights.values():
                        replica.overdue()
                    look_again = not self._may_hedge(flights.values())
                    if look_again:
                        continue
                    if not hedged:
                        hedged = True
                        self.hedged += 1
                    send_next = True
                    continue
                for flight in answered:
                    replica = flights.pop(flight)
                    reply = flight.reply if flight.reply is not None else GONE
                    if reply.HasField("error"):
                        code = status_of(reply.error.code)
                        if code is grpc.StatusCode.UNAVAILABLE:
                            continue  # gone, or draining: ask another
                        error = reply.error
                        refused = refusal(code, error.message, error.retry_after_ms / 1000, names, error.reason)
                        if error.reason == SHARE_SPENT and any(other.usable for other in remaining):
                            continue  # this replica's share is spent, another's may not be: ask it (once each)
                        raise refused
                    return reply, replica.address
                send_next = not flights  # every reply so far said unavailable: the next replica
        finally:
            if late is not None:
                for flight, replica in flights.items():
                    _hand_to_late(flight, partial(late, replica))

    def _may_hedge(self, late: Iterable[LeaseStream]) -> bool:
        """Whether the call may go to another replica too: one it waits on is slow or down, or the budget allows."""
        if not all(replica.usable for replica in late):
            return True
        if self._hedge_budget >= 1:
            self._hedge_budget -= 1
            return True
        return False


async def _answered(flights: dict[Flight, LeaseStream], wait_s: float) -> list[Flight]:
    """The flights answered (a reply, or GONE) within ``wait_s``; [] when none was.

    One flight, the usual case: its future awaited with a timer beside it (no task, no set, nothing
    cancelled); when the timer wins, the future is resolved with ``OVERDUE`` and replaced, so the reply,
    when it comes, still finds a future (or ``Flight.late``).
    """
    if len(flights) == 1:
        flight = next(iter(flights))
        loop = asyncio.get_running_loop()
        timer = loop.call_later(wait_s, _time_up, flight.future)
        try:
            result = await flight.future
        finally:
            timer.cancel()
        if result is not OVERDUE or flight.reply is not None:
            return [flight]
        flight.future = loop.create_future()
        return []
    await asyncio.wait([flight.future for flight in flights], timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    return [flight for flight in flights if flight.future.done()]


def _time_up(future: asyncio.Future[pb.LeaseResult]) -> None:
    if not future.done():
        future.set_result(OVERDUE)


def _hand_to_late(flight: Flight, late: Callable[[pb.LeaseResult], None]) -> None:
    """A flight nobody waits for any more: its reply, now or when it comes, goes to ``late``."""
    if flight.reply is not None:
        late(flight.reply)
        return
    flight.late = late
    if not flight.future.done():
        flight.future.cancel()  # the stream's reader then hands the reply to ``late``


def _send(
    remaining: list[LeaseStream], make_call: Callable[[], pb.LeaseCall], flights: dict[Flight, LeaseStream],
    hedging: bool,
) -> LeaseStream | None:  # fmt: skip
    """Send the call to the first of ``remaining`` that takes it (a hedge: only a healthy one), taken out of
    ``remaining``; that replica, or None."""
    for index, replica in enumerate(remaining):
        if hedging and not replica.usable:
            continue
        try:
            flights[replica.submit(make_call())] = replica
        except KeyringUnavailable:
            continue  # down, no reconnect due yet: only as a last resort (it stays in ``remaining``)
        del remaining[index]
        return replica
    return None
