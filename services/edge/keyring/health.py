"""One replica's health as the edge sees it: healthy, slow or down, and when to try it again.

A replica that does not answer must be routed around at once, not queued
behind (issue 19, finding 1: a frozen replica is silent, not closed). The rules:

- **healthy** (0): answers come; calls go to it in its turn;
- **slow** (1): a call went unanswered past the hedge delay (``hedge_delay_s``:
  a few times its recent latency, at least ``min_hedge_s``, at most
  ``max_hedge_s``) while nothing else came from it either; the call was also
  sent to another replica, and this one gets no calls of its own (it is asked
  last) until its backoff has passed, then one probe (``claim``: a call, or
  one owed release); the backoff doubles with each probe left unanswered and
  each failed reconnect, up to ``max_backoff_s``; any answer makes it healthy
  again, an answer within the hedge delay also resets the backoff;
- **down** (2): its stream broke or could not be opened; no call opens a new
  stream before the backoff has passed (reconnects back off the same way).

Why hedging plus a backoff, and no cap on outstanding calls: a replica is
marked slow by the first call it leaves overdue, so what piles up on it is
at most one hedge delay's worth of calls, and each of those moves to another
replica after that delay; a cap would have to be tuned against bursts, and
would still let the first calls wait the full timeout.

The latency estimate is TCP's (RFC 6298: a smoothed mean and mean deviation),
two multiplications per answer: no samples kept, nothing sorted on the hot path.
A state change is returned to the caller (the transport logs it, once).
Plain Python, no I/O: the clock is a parameter.
"""

from __future__ import annotations

from enum import IntEnum


class State(IntEnum):
    """The value of ``edge_keyring_replica_state``."""

    HEALTHY = 0
    SLOW = 1
    DOWN = 2


class ReplicaHealth:
    """The rules in the module docstring, for one replica."""

    __slots__ = (
        "_backoff_s",
        "_deviation_s",
        "_max_backoff_s",
        "_max_hedge_s",
        "_mean_s",
        "_min_backoff_s",
        "_min_hedge_s",
        "_probing",
        "retry_at",
        "since",
        "state",
    )

    def __init__(
        self,
        min_hedge_s: float = 0.05,
        max_hedge_s: float = 0.25,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._min_hedge_s = min_hedge_s
        self._max_hedge_s = max(max_hedge_s, min_hedge_s)
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max(max_backoff_s, min_backoff_s)
        self._mean_s = 0.0
        self._deviation_s = 0.0
        self._backoff_s = 0.0  # 0: no spell in a row yet
        self._probing = False  # a slow replica was given one call to see whether it answers again
        self.state = State.HEALTHY
        self.since = 0.0  # when the state began (clock seconds)
        self.retry_at = 0.0  # not slow or down: 0; else when the next probe or reconnect may go

    @property
    def max_backoff_s(self) -> float:
        return self._max_backoff_s

    @property
    def hedge_delay_s(self) -> float:
        """How long a call waits for this replica before it is also sent to another: ~3x its p99, bounded."""
        estimate = 3 * (self._mean_s + 4 * self._deviation_s)
        return min(max(estimate, self._min_hedge_s), self._max_hedge_s)

    def claim(self, now: float) -> bool:
        """Whether to ask it now: healthy, or its backoff passed (then this caller's call is the one probe, or
        the one reconnect, until the backoff passes again)."""
        if self.state is State.HEALTHY:
            return True
        if now < self.retry_at:
            return False
        self.retry_at = now + self._backoff_s
        self._probing = True
        return True

    @property
    def probing(self) -> bool:
        """A probe (or reconnect) was claimed and has not failed yet: a down replica's stream may be opened."""
        return self._probing

    def answered(self, latency_s: float, now: float) -> State | None:
        """An answer came ``latency_s`` after its call was sent; the new state when it changed."""
        if latency_s < self.hedge_delay_s:
            self._backoff_s = 0.0
        error = latency_s - self._mean_s
        if self._mean_s == 0.0:
            self._mean_s = latency_s  # no deviation yet: a stream's first answer includes its handshake
        elif latency_s <= self._max_hedge_s:  # a freeze's late answers would teach nothing but a long delay
            self._mean_s += error / 8
            self._deviation_s += (abs(error) - self._deviation_s) / 4
        return self._enter(State.HEALTHY, now)

    def heard(self, now: float) -> State | None:
        """A reply came (to a call nobody timed): healthy again, nothing learnt of its latency."""
        return self._enter(State.HEALTHY, now)

    def overdue(self, now: float) -> State | None:
        """A call went unanswered past the hedge delay: slow (unless down), asked last until the backoff passed."""
        if self.state is State.HEALTHY:
            self._back_off(now)
            return self._enter(State.SLOW, now)
        if self._probing:  # the probe went unanswered too (calls left over from before count once)
            self._probing = False
            self._back_off(now)
        return None

    def broke(self, now: float) -> State | None:
        """The stream broke or could not be opened: down, no reconnect before the backoff has passed."""
        self._probing = False
        self._back_off(now)
        return self._enter(State.DOWN, now)

    def _back_off(self, now: float) -> None:
        self._backoff_s = min(max(self._backoff_s * 2, self._min_backoff_s), self._max_backoff_s)
        self.retry_at = now + self._backoff_s

    def _enter(self, state: State, now: float) -> State | None:
        if state is self.state:
            return None
        self.state, self.since = state, now
        if state is State.HEALTHY:
            self.retry_at, self._probing = 0.0, False
        return state
