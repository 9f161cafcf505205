"""Credits: leases asked ahead of need, so a plain call finds its lease here instead of asking keyring.

A credit is an ordinary lease (``AcquireRequest.credit``): keyring granted it
after every check a call's acquire passes (the token's rate and budgets, the
key's cooldowns and caps, the project's pacing) and counted it as a call.
The edge keeps a few per (token, model, service class) on a shelf; a plain
call (no resources named, nothing to bind, no session) of that token and
model takes one, and the shelf is refilled behind it, all the credits it lacks
asked in one call (``AcquireRequest.credits``: keyring grants what it can, up
to the first refusal, in one reply), so most calls cost keyring no round trip
and no acquire of their own.

A shelf holds what its calls can use before a credit's idle time is over:
twice the calls it had in the last idle time (this one aside), at most
``per_shelf``. A token that calls a model less often than once an idle time
asks for none (its credits would all go back unused: a grant and a refund
each, for nothing); one that calls more often ramps up within a few calls.

Keyring grants none for a client token with a rate limit or budgets, nor
in a pool with an in-flight cap (those promises stay exact: no tenant's
shelf holds the slots another's calls need); a shelf refused (none granted)
is not asked again for a while; one granted fewer than it asked is not held
back (the next refill asks again).

What it relaxes, each to a bound (docs/configuration.md, ``EDGE_KEYRING_CREDITS``):
- A credit unused for ``idle_s`` goes back as ``TRANSPORT_UNUSED``: keyring
  refunds every count its grant made. Until then it holds its key's slot and
  a place in the token's and the project's counts (at most ``per_shelf``
  per shelf, each at most ``idle_s``), never in the last half of a
  per-minute limit: near one, keyring refuses credits and calls are leased
  for themselves (the shelf is then not asked for a while).
- A key cooled after its credits were granted: the edge that sees the failure
  gives back its own credits of that key at once, and the replica that
  granted another edge's credits there revokes them as it learns the outcome
  (``LeaseStreamResponse.revoked_credits``); a call that took one in the
  moment between fails over as any call on a cooling key does.
- A token revoked or edited, a pool edited: keyring revokes their credits as
  its view learns of it (a call that took one in that moment goes upstream).
- A call's input estimate must fit what the credit reserved for it (the
  tokens-per-minute pacing never reserves less than a call needs).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from .lease import LeaseRequest

# What a credit was asked for: the client token's hash, the model, the service class.
Shelf = tuple[str, str, str]
# A shelf keyring refused credits (none granted) is not asked again for this long (at least four idle times).
REFUSED_BACKOFF_S = 1.0


# Shelves whose calls are remembered at most (a long-running edge sees many tokens and models): beyond it,
# those not called within the last idle time are forgotten.
MAX_DEMANDS = 4096


@dataclass(frozen=True, slots=True)
class Credit:
    """A granted lease not yet used, and what it was granted for."""

    lease: pb.Lease
    allowed_models: tuple[str, ...]
    replica: str
    model: str
    service_tier: str
    input_tokens: int  # reserved by keyring for the call that takes it (``LeaseRequest.input_tokens``)
    expires_at: float  # on the client's clock: unused by then, it goes back


def shelf_of(wanted: LeaseRequest) -> Shelf | None:
    """The shelf a call may take a credit from; None for a call that must be leased for itself."""
    if wanted.affinity or wanted.exclude_projects or wanted.binds or wanted.session or wanted.session_grant:
        return None
    return wanted.token_hash, wanted.model, wanted.service_tier


class Credits:
    """The shelves of one edge: at most ``per_shelf`` credits each, each kept at most ``idle_s``."""

    def __init__(self, per_shelf: int, idle_s: float, clock: Callable[[], float]) -> None:
        self.per_shelf = per_shelf
        self.idle_s = idle_s
        self._clock = clock
        self._shelves: dict[Shelf, deque[Credit]] = {}
        self._asked: dict[Shelf, int] = {}  # credits asked for and not answered yet
        # Each shelf's last plain calls (their times), as many as make a full shelf wanted (``_target``).
        self._calls: dict[Shelf, deque[float]] = {}
        # Shelves keyring refused credits (none granted: a token with a rate limit or budgets, none free...): not
        # asked again before this time (the client's clock), so their calls cost no extra message each.
        self._refused_until: dict[Shelf, float] = {}

    def __len__(self) -> int:
        return sum(len(shelf) for shelf in self._shelves.values())

    @property
    def asking(self) -> int:
        """Credits asked for and not answered yet."""
        return sum(self._asked.values())

    def take(self, shelf: Shelf, input_tokens: int, exclude: Collection[str]) -> Credit | None:
        """The oldest live credit of ``shelf`` for a call of ``input_tokens`` not on an ``exclude``d key."""
        credits = self._shelves.get(shelf)
        if not credits:
            return None
        now = self._clock()
        for credit in credits:
            if credit.expires_at > now and credit.lease.key_id not in exclude and input_tokens <= credit.input_tokens:
                credits.remove(credit)
                return credit
        return None

    def wanted(self, shelf: Shelf) -> int:
        """How many credits to ask for now to fill ``shelf``, told once per plain call of it (counted as asked
        until ``answered``)."""
        now = self._clock()
        target = self._target(shelf, now)
        if not target or (self._refused_until and self._refused_until.get(shelf, 0.0) > now):
            return 0
        asked = self._asked.get(shelf, 0)
        held = len(self._shelves.get(shelf, ()))
        # Refilled when half or more is gone: one call asks for them all.
        missing = target - held - asked
        if missing < max(1, target // 2):
            return 0
        self._asked[shelf] = asked + missing
        return missing

    def _target(self, shelf: Shelf, now: float) -> int:
        """Note this call of ``shelf``; the credits it should hold: twice its other calls of the last idle time."""
        since = now - self.idle_s
        calls = self._calls.get(shelf)
        if calls is None:
            if len(self._calls) >= MAX_DEMANDS:
                self._calls = {s: times for s, times in self._calls.items() if times[-1] > since}
            calls = self._calls[shelf] = deque(maxlen=(self.per_shelf + 1) // 2)
        recent = 0
        for at in reversed(calls):
            if at <= since:
                break
            recent += 1
        calls.append(now)
        return min(self.per_shelf, 2 * recent)

    def answered(self, shelf: Shelf, asked: int, granted: Sequence[Credit]) -> None:
        """A call asking ``asked`` credits answered: those ``granted`` shelved (fewer than asked is no refusal;
        a keyring that predates ``AcquireRequest.credits`` grants one); none granted: refused, not asked again
        for a while."""
        left = self._asked.get(shelf, 0) - asked
        if left > 0:
            self._asked[shelf] = left
        else:
            self._asked.pop(shelf, None)
        if granted:
            self._shelves.setdefault(shelf, deque()).extend(granted)
            self._refused_until.pop(shelf, None)
        else:
            now = self._clock()
            self._refused_until = {shelf: until for shelf, until in self._refused_until.items() if until > now}
            self._refused_until[shelf] = now + max(REFUSED_BACKOFF_S, 4 * self.idle_s)

    def held(self) -> list[Credit]:
        """Every credit on a shelf, left there."""
        return [credit for credits in self._shelves.values() for credit in credits]

    def expired(self) -> list[Credit]:
        """The credits past their time, taken off their shelves (to go back unused)."""
        now = self._clock()
        return list(self._remove(lambda credit: credit.expires_at <= now))

    def of_key(self, key_id: str) -> list[Credit]:
        """The credits of ``key_id``, taken off their shelves (its answer was news: it may be cooling)."""
        return list(self._remove(lambda credit: credit.lease.key_id == key_id))

    def of_leases(self, lease_ids: Collection[str]) -> list[Credit]:
        """The credits of ``lease_ids`` still on a shelf, taken off (keyring revoked them)."""
        return list(self._remove(lambda credit: credit.lease.lease_id in lease_ids))

    def all(self) -> list[Credit]:
        """Every credit, taken off (the edge is closing)."""
        return list(self._remove(lambda credit: True))

    def _remove(self, matches: Callable[[Credit], bool]) -> Iterator[Credit]:
        for shelf, credits in list(self._shelves.items()):
            kept: deque[Credit] = deque()
            for credit in credits:
                if matches(credit):
                    yield credit
                else:
                    kept.append(credit)
            if kept:
                self._shelves[shelf] = kept
            else:
                del self._shelves[shelf]
