"""Client-token budgets: requests and tokens per minute and per day, optionally per model.

Counted by each replica in fixed windows (the epoch minute, the UTC day) and
split across the live replicas like per-key budgets (``leasing.share``): each
replica admits its share of a budget. Why not the shared usage counters: they
are flushed every few seconds in five-minute buckets, so a per-minute budget
read from them would lag by about its own length and every Acquire would cost
a look at all replicas' figures; a split costs nothing per call and holds
exactly under an even spread of calls over replicas (edges spread their
streams). The price: with an uneven spread a token may be refused by a
replica whose share is spent while another still has room, and a change in
the number of replicas changes the shares mid-window.

Across a replica's death (``admissions.py``): each replica publishes its
windows with its usage flush (``windows``, every few seconds); the live ones
split what the instances no longer in the membership had not admitted
(``account_departed``), so the survivors do not admit the dead one's share a
second time. What a dead instance admitted after its last publish is not
seen: the budget may be exceeded by that much, at most what one replica
admits in one usage flush interval (5 s; about 3 % of a per-minute budget
spread evenly over three replicas). Its share is given to the living as soon
as its membership record is gone (``KEYRING_MEMBERSHIP_TTL_S`` after a
SIGKILL, at once on a graceful stop).

Requests count when a lease is granted; tokens (input + output of the
outcome) when the call is released: a request is admitted while a budget is
not yet spent, so the last one may overshoot it by its own size. A spent
budget refuses the call before any key is chosen: no key's state changes.

Windows are kept per model only for the models a token's budgets name; a
call for any other model counts in the token's all-models windows alone, so
client-chosen model ids cost no memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .admissions import Published, WindowKey
from .leasing import share
from .models import TokenBudget

MINUTE_S = 60.0
DAY_S = 86400.0
SPANS = (MINUTE_S, DAY_S)


@dataclass(slots=True)
class _Window:
    start: float = 0.0
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Spent:
    """Which budget is spent and when it frees."""

    what: str  # e.g. "tokens per day for model 'gemini-x'"
    resets_at: float


def _start(now: float, span: float) -> float:
    return (now // span) * span


def _mine(limit: int, departed: int, replicas: int) -> int:
    """This replica's part of what departed instances left of ``limit`` (0: no limit; -1: nothing left)."""
    if not departed or limit <= 0:
        return share(limit, replicas)
    return share(limit - departed, replicas) if limit > departed else -1


class BudgetMeter:
    """This replica's spending per (token, model scope, window span), and what departed instances spent."""

    def __init__(self) -> None:
        self._windows: dict[WindowKey, _Window] = {}
        self.changed = False  # since the last ``windows``
        self._departed: dict[WindowKey, tuple[float, int, int]] = {}  # summed over departed instances

    def __len__(self) -> int:
        """Windows held."""
        return len(self._windows)

    def _window(self, token_id: str, scope: str, span: float, now: float) -> _Window:
        key = (token_id, scope, span)
        window = self._windows.get(key)
        start = _start(now, span)
        if window is None or window.start != start:
            window = self._windows[key] = _Window(start)
        return window

    @staticmethod
    def _scopes(budgets: Iterable[TokenBudget], model: str) -> tuple[str, ...]:
        """The windows a call for ``model`` counts in: every model's, and its own only if a budget names it."""
        if model:
            for budget in budgets:
                if budget.model == model:
                    return ("", model)
        return ("",)

    def spent(
        self, token_id: str, budgets: Iterable[TokenBudget], model: str, replicas: int, now: float
    ) -> Spent | None:
        """The spent budget that frees last among those that apply to a call for ``model``, or None."""
        worst: Spent | None = None
        for budget in budgets:
            if budget.model and budget.model != model:
                continue
            for span, unit, requests, tokens in (
                (MINUTE_S, "minute", budget.requests_per_minute, budget.tokens_per_minute),
                (DAY_S, "day", budget.requests_per_day, budget.tokens_per_day),
            ):
                if not requests and not tokens:
                    continue
                window = self._window(token_id, budget.model, span, now)
                gone_requests = gone_tokens = 0
                if self._departed:
                    gone = self._departed.get((token_id, budget.model, span))
                    if gone is not None and gone[0] == window.start:
                        gone_requests, gone_tokens = gone[1], gone[2]
                for kind, limit, used, gone_used in (
                    ("requests", requests, window.requests, gone_requests),
                    ("tokens", tokens, window.tokens, gone_tokens),
                ):
                    mine = _mine(limit, gone_used, replicas) if gone_used else share(limit, replicas)
                    if mine and used >= mine:
                        scope = f" for model {budget.model!r}" if budget.model else ""
                        resets_at = window.start + span
                        if worst is None or resets_at > worst.resets_at:
                            worst = Spent(f"{kind} per {unit}{scope}", resets_at)
        return worst

    def add_request(self, token_id: str, budgets: Iterable[TokenBudget], model: str, now: float) -> None:
        for scope in self._scopes(budgets, model):
            for span in SPANS:
                self._window(token_id, scope, span, now).requests += 1
        self.changed = True

    def add_tokens(self, token_id: str, budgets: Iterable[TokenBudget], model: str, tokens: int, now: float) -> None:
        if tokens <= 0:
            return
        for scope in self._scopes(budgets, model):
            for span in SPANS:
                self._window(token_id, scope, span, now).tokens += tokens
        self.changed = True

    def forget_old(self, now: float) -> None:
        """Drop windows that have ended (called with each usage flush)."""
        for key in [key for key, window in self._windows.items() if window.start + key[2] <= now]:
            del self._windows[key]

    # -- across replicas ------------------------------------------------

    def windows(self, now: float) -> dict[WindowKey, tuple[float, int, int]]:
        """This replica's running windows with something in them, to publish (``admissions.Published``)."""
        self.changed = False
        return {
            key: (window.start, window.requests, window.tokens)
            for key, window in self._windows.items()
            if window.start + key[2] > now and (window.requests or window.tokens)
        }

    def account_departed(self, departed: Iterable[Published]) -> None:
        """What the instances no longer in the membership published, summed per window."""
        summed: dict[WindowKey, tuple[float, int, int]] = {}
        for record in departed:
            for key, (start, requests, tokens) in record.windows.items():
                known = summed.get(key)
                if known is None or known[0] < start:
                    summed[key] = (start, requests, tokens)
                elif known[0] == start:
                    summed[key] = (start, known[1] + requests, known[2] + tokens)
        self._departed = summed
