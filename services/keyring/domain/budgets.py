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

Requests count when a lease is granted; tokens (input + output of the
outcome) when the call is released: a request is admitted while a budget is
not yet spent, so the last one may overshoot it by its own size. A spent
budget refuses the call before any key is chosen: no key's state changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .leasing import share
from .models import TokenBudget

MINUTE_S = 60.0
DAY_S = 86400.0


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


class BudgetMeter:
    """This replica's spending per (token, model scope, window span)."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, float], _Window] = {}

    def _window(self, token_id: str, scope: str, span: float, now: float) -> _Window:
        key = (token_id, scope, span)
        window = self._windows.get(key)
        start = _start(now, span)
        if window is None or window.start != start:
            window = self._windows[key] = _Window(start)
        return window

    @staticmethod
    def _scopes(model: str) -> tuple[str, ...]:
        return ("", model) if model else ("",)

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
                for kind, limit, used in (("requests", requests, window.requests), ("tokens", tokens, window.tokens)):
                    mine = share(limit, replicas)
                    if mine and used >= mine:
                        scope = f" for model {budget.model!r}" if budget.model else ""
                        resets_at = window.start + span
                        if worst is None or resets_at > worst.resets_at:
                            worst = Spent(f"{kind} per {unit}{scope}", resets_at)
        return worst

    def add_request(self, token_id: str, model: str, now: float) -> None:
        for scope in self._scopes(model):
            for span in (MINUTE_S, DAY_S):
                self._window(token_id, scope, span, now).requests += 1

    def add_tokens(self, token_id: str, model: str, tokens: int, now: float) -> None:
        if tokens <= 0:
            return
        for scope in self._scopes(model):
            for span in (MINUTE_S, DAY_S):
                self._window(token_id, scope, span, now).tokens += tokens

    def forget_old(self, now: float) -> None:
        """Drop windows that have ended (called now and then)."""
        for key in [key for key, window in self._windows.items() if window.start + key[2] <= now]:
            del self._windows[key]
