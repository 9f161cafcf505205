"""Health decisions and their idempotent merges: what lets a decision be applied anywhere, any number of times.

A decision is a record the outcome policy produced (``policy.judge``),
stamped by the deciding replica with an id (the lease id of the outcome that
led to it) and a time (strictly increasing on that replica):

- a ``Cooldown`` (``decision``, ``decided_at``);
- an ``UpstreamKey`` whose health fields (``state``, ``state_until``,
  ``consecutive_failures``, ``forbidden_strikes``, ``last_error``) are the
  decision (``health_id``, ``health_at``); its other fields are the
  operator's and are never taken from a decision.

``merge(current, decided)`` folds a decision into a record (the stored one,
the view's, or a pending one); it keeps ``current``'s store revision, so a
guarded write of the result expects what the store holds:

- cooldown: the later ``until`` (and its reason); the strike count of the
  later decision (a decision was taken on a view that already held the
  earlier ones: it never adds a strike on top of them, and a success's decay
  sticks); a record already carrying the same decision id stays as it is (the
  same outcome judged by two replicas is one decision);
- key: the health fields of the later decision, unless the record already
  carries this decision or a later one; an operator's ``disabled`` stays.

Both are idempotent and order-insensitive: replaying a decision, or merging
the same decisions in another order, changes nothing. A decision is
*covered* by a record when merging it changes nothing: the record already
says it (``covers``).

``PendingDecisions`` holds this replica's decisions the store has not
confirmed yet, one merged record per subject (a cooldown id, a key id), with
when each may be written (``due``). The state cache folds them into every
record it applies from the store (``overlay``), so a watch event, a re-read
or a rebuilt view never loses a decision the store has not seen; an entry
leaves once a record from the store covers it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .models import Cooldown, CooldownId, KeyState, LimitId, QuotaLimit, UpstreamKey

Decision = Cooldown | UpstreamKey | QuotaLimit
Subject = CooldownId | LimitId | str  # a cooldown's id, a learnt limit's id, a key's id


def subject_of(record: Decision) -> Subject:
    return record.key_id if isinstance(record, UpstreamKey) else record.id


def merge_limit(current: QuotaLimit | None, decided: QuotaLimit) -> QuotaLimit:
    """A learnt limit: the later learnt wins (ties: the later decision); the same decision stays."""
    if current is None:
        return decided
    if current.decision and current.decision == decided.decision:
        return current
    if (decided.learnt_at, decided.decided_at) <= (current.learnt_at, current.decided_at):
        return current
    return QuotaLimit(
        current.id, decided.limit, decided.learnt_at, decided.quota_id, current.revision, decided.decision,
        decided.decided_at,
    )  # fmt: skip


def merge_cooldown(current: Cooldown | None, decided: Cooldown) -> Cooldown:
    if current is None:
        return decided
    if current.decision and current.decision == decided.decision:
        return current
    later = decided if decided.decided_at > current.decided_at else current
    longer = decided if decided.until > current.until else current
    merged = dataclasses.replace(
        current,
        reason=longer.reason,
        until=longer.until,
        strikes=later.strikes,
        decision=later.decision,
        decided_at=later.decided_at,
        asked=later.asked or current.asked,
    )
    return current if merged == current else merged


def merge_health(current: UpstreamKey, decided: UpstreamKey) -> UpstreamKey:
    if decided.health_id == current.health_id or decided.health_at <= current.health_at:
        return current
    state = current.state if current.state is KeyState.DISABLED else decided.state
    return dataclasses.replace(
        current,
        state=state,
        state_until=decided.state_until,
        consecutive_failures=decided.consecutive_failures,
        forbidden_strikes=decided.forbidden_strikes,
        last_error=decided.last_error,
        project_number=decided.project_number or current.project_number,
        health_id=decided.health_id,
        health_at=decided.health_at,
    )


def merge(current: Decision | None, decided: Decision) -> Decision:
    """``decided`` folded into ``current`` (None: nothing there yet), keeping ``current``'s revision."""
    if isinstance(decided, Cooldown):
        assert current is None or isinstance(current, Cooldown)
        return merge_cooldown(current, decided)
    if isinstance(decided, QuotaLimit):
        assert current is None or isinstance(current, QuotaLimit)
        return merge_limit(current, decided)
    if current is None:
        return decided
    assert isinstance(current, UpstreamKey)
    return merge_health(current, decided)


def covers(record: Decision, decided: Decision) -> bool:
    """Whether ``record`` already says everything ``decided`` says."""
    return merge(record, decided) is record


@dataclass(slots=True)
class Pending:
    record: Decision  # every pending decision of the subject, merged (revision 0: not the store's)
    due: float  # when it may be written (a monotonic clock's reading)


class PendingDecisions:
    """Decisions not confirmed by the store yet, merged per subject."""

    def __init__(self) -> None:
        self.entries: dict[Subject, Pending] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, decided: Decision, due: float) -> None:
        subject = subject_of(decided)
        entry = self.entries.get(subject)
        if entry is None:
            self.entries[subject] = Pending(dataclasses.replace(decided, revision=0), due)
        else:
            entry.record = merge(entry.record, decided)
            entry.due = min(entry.due, due)

    def overlay(self, stored: Decision) -> Decision:
        """A record from the store with this replica's pending decision folded in; a covered entry leaves."""
        entry = self.entries.get(subject_of(stored))
        if entry is None:
            return stored
        merged = merge(stored, entry.record)
        if merged is stored:
            del self.entries[subject_of(stored)]
        return merged

    def get(self, subject: Subject) -> Decision | None:
        entry = self.entries.get(subject)
        return entry.record if entry is not None else None

    def discard(self, subject: Subject) -> None:
        self.entries.pop(subject, None)

    def due(self, now: float, limit: int) -> list[Subject]:
        """Subjects whose decision may be written now (at most ``limit``)."""
        ready = [subject for subject, entry in self.entries.items() if entry.due <= now]
        return ready[:limit]

    def next_due(self) -> float | None:
        return min((entry.due for entry in self.entries.values()), default=None)

    def orphan_cooldowns(self) -> list[Cooldown]:
        """Pending cooldowns, to put back in a view rebuilt from a store that has none of them yet."""
        return [entry.record for entry in self.entries.values() if isinstance(entry.record, Cooldown)]

    def orphan_limits(self) -> list[QuotaLimit]:
        """Pending learnt limits, likewise."""
        return [entry.record for entry in self.entries.values() if isinstance(entry.record, QuotaLimit)]
