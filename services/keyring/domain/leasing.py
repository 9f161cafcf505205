"""Lease accounting of one replica: leases in flight, their expiry, per-minute windows.

Leases live only in the memory of the replica that granted them: granting
and releasing never touch the store, which is what makes leasing fast. The
budgets they enforce (in-flight cap, requests per minute) are cluster-wide
numbers divided among the live replicas (``share``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .admissions import Minutes
from .lease_ids import LeaseSigner


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    lease_id: str
    key_id: str
    pool: str
    model: str
    granted_at: float
    expires_at: float
    token_id: str = ""
    # A Live session (issue 20): held until released, renewed (``LeaseBook.renew``), counted against the
    # session caps of its key, project and token (``session_subjects``) instead of the key's in-flight count.
    session: bool = False
    project: str = ""
    # A credit (``LeaseRequest.credit``): released unused (``Transport.UNUSED``), its grant is refunded.
    credit: bool = False


def session_subjects(key_id: str, project: str, token_id: str) -> tuple[str, str, str]:
    """What a session lease counts against: its key, its project (the key itself without one), its token."""
    return f"key:{key_id}", f"project:{project}" if project else f"project-of-key:{key_id}", f"token:{token_id}"


def share(total: int, replicas: int) -> int:
    """This replica's part of a cluster-wide budget (0 = unlimited stays unlimited).

    Rounded down but never below one, so a small budget still lets every
    replica lease: with more replicas than budget, the cluster may exceed it
    by at most ``replicas - total``.
    """
    if total <= 0:
        return 0
    return max(1, total // max(1, replicas))


def credit_room(limit: int) -> int:
    """What of a per-minute limit (this replica's) a credit may fill (issue 23): half, never the last places.

    Near a limit, calls are leased for themselves: one tenant's credits, idle on its shelf, cannot hold the
    places another tenant's call needs. 0 (no limit) stays unlimited; a limit with no half (1) or nothing
    left (negative: ``SlidingWindow.limit_for``) leaves credits none (-1: ``SlidingWindow.allows`` says no).
    """
    if limit == 0:
        return 0
    return limit // 2 if limit > 1 else -1


# A session lease's id vouches (``lease_ids.py``) this long after its grant, however often it was renewed:
# its late release, its reports and its adoption by a restarted replica (``LeaseBook.adopt``) are honoured.
SESSION_VOUCH_S = 3600.0
PUBLISH_BUCKET_S = 5.0  # a sliding window's events are published in buckets this long (``published``)


class SlidingWindow:
    """Counts events in the last ``span_s`` seconds, per subject; and what departed instances counted.

    A limit passed to ``allows`` and ``frees_at`` is this replica's: 0 means
    none, a negative one that nothing is left (``limit_for``).
    """

    def __init__(self, span_s: float = 60.0) -> None:
        self._span_s = span_s
        self._events: dict[str, deque[float]] = {}
        # Departed instances' events by subject, as they published them: (bucket end, events), oldest first.
        self._departed: dict[str, list[tuple[float, int]]] = {}
        self.has_departed = False  # any: then a limit is this replica's share of what they left (``limit_for``)

    def count(self, subject: str, now: float) -> int:
        events = self._events.get(subject)
        if not events:
            return 0
        horizon = now - self._span_s
        while events and events[0] <= horizon:
            events.popleft()
        return len(events)

    def allows(self, subject: str, limit: int, now: float) -> bool:
        return limit == 0 or (limit > 0 and self.count(subject, now) < limit)

    def add(self, subject: str, now: float) -> None:
        """One event; the subject's events out of the window go (a subject nobody limits is never counted)."""
        events = self._events.get(subject)
        if events is None:
            events = self._events[subject] = deque()
        horizon = now - self._span_s
        while events and events[0] <= horizon:
            events.popleft()
        events.append(now)

    def remove(self, subject: str, at: float) -> None:
        """Take back the event counted at ``at`` (a credit's refund), if it is still in the window."""
        events = self._events.get(subject)
        if events:
            with contextlib.suppress(ValueError):
                events.remove(at)

    def frees_at(self, subject: str, limit: int, now: float) -> float:
        """When the window will next allow an event (``now`` if it already does)."""
        if self.allows(subject, limit, now):
            return now
        if limit < 0:  # departed instances used it all: until their oldest events leave the window
            return min((end for end, _ in self._departed.get(subject, ())), default=now) + self._span_s
        events = self._events[subject]
        return events[len(events) - limit] + self._span_s

    # -- across replicas (admissions.py) --------------------------------

    def limit_for(self, subject: str, limit: int, replicas: int, now: float) -> int:
        """This replica's part of a cluster-wide ``limit`` less what departed instances counted in the window."""
        if limit <= 0:
            return 0
        horizon = now - self._span_s
        gone = sum(count for end, count in self._departed.get(subject, ()) if end > horizon)
        return share(limit - gone, replicas) if gone < limit else -1

    def published(self, now: float, limited: Callable[[str], bool]) -> Minutes:
        """Events in the window of the subjects ``limited`` says have a limit, in buckets (an event counts to its end).

        Subjects with no event left are dropped here: the window stays as small as the traffic of one span.
        """
        horizon = now - self._span_s
        minutes: Minutes = {}
        for subject in list(self._events):
            if not self.count(subject, now):
                del self._events[subject]
                continue
            if not limited(subject):
                continue
            buckets: dict[float, int] = {}
            for at in self._events[subject]:
                if at > horizon:
                    end = (at // PUBLISH_BUCKET_S + 1) * PUBLISH_BUCKET_S
                    buckets[end] = buckets.get(end, 0) + 1
            minutes[subject] = tuple(buckets.items())
        return minutes

    def account_departed(self, departed: Iterable[Minutes]) -> None:
        """What the instances no longer in the membership published, by subject."""
        summed: dict[str, list[tuple[float, int]]] = {}
        for minutes in departed:
            for subject, rows in minutes.items():
                summed.setdefault(subject, []).extend(rows)
        self._departed = summed
        self.has_departed = bool(summed)


class LeaseBook:
    """Leases granted by this replica and not yet released or expired."""

    def __init__(self, replica_id: str, signer: LeaseSigner | None = None) -> None:
        self._prefix = replica_id
        # Without a signer ids are not signed and no replica vouches for a lease it does not hold.
        self.signer = signer
        self._sequence = itertools.count(1)
        self._leases: dict[str, LeaseRecord] = {}
        self._in_flight: dict[str, int] = {}
        self._sessions: dict[str, int] = {}  # session leases held per ``session_subjects`` subject
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._leases)

    @property
    def instance(self) -> str:
        """The instance granting these leases: their ids' prefix."""
        return self._prefix

    def in_flight(self, key_id: str) -> int:
        return self._in_flight.get(key_id, 0)

    def sessions(self, subject: str) -> int:
        """Session leases held here against a ``session_subjects`` subject."""
        return self._sessions.get(subject, 0)

    def grant(
        self,
        key_id: str,
        pool: str,
        model: str,
        ttl_s: float,
        now: float,
        token_id: str = "",
        *,
        session: bool = False,
        project: str = "",
        credit: bool = False,
    ) -> LeaseRecord:
        lease_id = f"{self._prefix}.{next(self._sequence)}"
        if self.signer is not None:
            vouched_s = max(ttl_s, SESSION_VOUCH_S) if session else ttl_s
            lease_id = self.signer.sign(lease_id, key_id, model, now + vouched_s)
        lease = LeaseRecord(lease_id, key_id, pool, model, now, now + ttl_s, token_id, session, project, credit)
        self._hold(lease)
        return lease

    def adopt(
        self, lease_id: str, key_id: str, pool: str, model: str, ttl_s: float, now: float, project: str
    ) -> LeaseRecord:
        """Hold a session lease another instance granted and lost (it restarted): renewed and released here now.

        The caller checked that the id vouches for the key and model. Its client token is unknown here: the
        adopted session counts against its key's and project's caps only.
        """
        lease = LeaseRecord(lease_id, key_id, pool, model, now, now + ttl_s, "", True, project)
        self._hold(lease)
        return lease

    def _hold(self, lease: LeaseRecord) -> None:
        key_id, session = lease.key_id, lease.session
        self._leases[lease.lease_id] = lease
        if session:
            for subject in session_subjects(key_id, lease.project, lease.token_id):
                self._sessions[subject] = self._sessions.get(subject, 0) + 1
        else:
            self._in_flight[key_id] = self._in_flight.get(key_id, 0) + 1
        heapq.heappush(self._expiry, (lease.expires_at, lease.lease_id))

    def holder(self, lease_id: str) -> str:
        """The client token id of a lease held here ("": unknown, or granted without one)."""
        lease = self._leases.get(lease_id)
        return lease.token_id if lease is not None else ""

    def release(self, lease_id: str) -> LeaseRecord | None:
        """Give the slot back; None when the lease is unknown or already gone."""
        lease = self._leases.pop(lease_id, None)
        if lease is not None:
            if lease.session:
                self._end_session(lease)
            else:
                self._return_slot(lease.key_id)
            self._prune_expiry_heap()
        return lease

    def renew(self, lease_id: str, expires_at: float) -> LeaseRecord | None:
        """A held session lease now expires at ``expires_at`` (later or sooner); None: not a session lease held here.

        A lease its stream's end shortened (``shorten``) is held again: the edge renewed it on a new stream.
        """
        lease = self._leases.get(lease_id)
        if lease is None or not lease.session:
            return None
        lease = self._leases[lease_id] = dataclasses.replace(lease, expires_at=expires_at)
        heapq.heappush(self._expiry, (expires_at, lease_id))  # the earlier entry is skipped (``reclaim_expired``)
        return lease

    def shorten(self, lease_ids: Iterable[str], expires_at: float) -> int:
        """Bring forward to ``expires_at`` the expiry of those leases still held (never postponed); how many.

        For leases whose holder is known to be gone or cut off (their lease stream
        ended): ``reclaim_expired`` takes them back then, unless released first.
        """
        shortened = 0
        for lease_id in lease_ids:
            lease = self._leases.get(lease_id)
            if lease is None or lease.expires_at <= expires_at:
                continue
            self._leases[lease_id] = dataclasses.replace(lease, expires_at=expires_at)
            heapq.heappush(self._expiry, (expires_at, lease_id))  # the later entry finds the lease gone
            shortened += 1
        return shortened

    def vouches(self, lease_id: str, key_id: str, model: str, now: float) -> bool:
        """Whether a lease this book does not hold was granted by a replica sharing the signing key."""
        return self.signer is not None and self.signer.vouches(lease_id, key_id, model, now)

    def token_tag(self, lease: LeaseRecord) -> str:
        """The tag binding the lease's client token to its id (``LeaseSigner.token_tag``); "" when ids are unsigned."""
        return self.signer.token_tag(lease.lease_id, lease.token_id) if self.signer and lease.token_id else ""

    def vouched_token(self, lease_id: str, token_id: str, tag: str) -> str:
        """The client token a release names for a lease this book does not hold, when its tag holds; else ""."""
        return self.signer.vouched_token(lease_id, token_id, tag) if self.signer is not None else ""

    def reclaim_expired(self, now: float) -> list[LeaseRecord]:
        """Release every lease whose TTL passed (its edge died or forgot it)."""
        reclaimed = []
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, lease_id = heapq.heappop(self._expiry)
            held = self._leases.get(lease_id)
            if held is None or held.expires_at > expires_at:  # released, or renewed since this entry
                continue
            lease = self.release(lease_id)
            if lease is not None:
                reclaimed.append(lease)
        return reclaimed

    def _prune_expiry_heap(self) -> None:
        """Drop released leases from the expiry heap once they dominate it (bounded memory)."""
        if len(self._expiry) > 2 * len(self._leases) + 1024:
            self._expiry = [(lease.expires_at, lease.lease_id) for lease in self._leases.values()]
            heapq.heapify(self._expiry)

    def _end_session(self, lease: LeaseRecord) -> None:
        for subject in session_subjects(lease.key_id, lease.project, lease.token_id):
            remaining = self._sessions[subject] - 1
            if remaining:
                self._sessions[subject] = remaining
            else:
                del self._sessions[subject]

    def _return_slot(self, key_id: str) -> None:
        remaining = self._in_flight[key_id] - 1
        if remaining:
            self._in_flight[key_id] = remaining
        else:
            del self._in_flight[key_id]
