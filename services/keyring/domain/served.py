"""The model that really answered (issue 21): a requested name and the model Google served under it.

Google retires a model by serving another under its name (gemini-2.5-flash
answered by gemini-3.5-flash-lite since 2026-12-01, billed and limited as the
new model) and serves ``-latest`` aliases; the only signals are an answer's
``modelVersion`` and a QuotaFailure's ``model`` dimension. Cooldowns and
learnt limits are keyed by the served model; this map lets the allocator find
them for a request that names the alias. Learnt from every outcome a replica
sees (its own releases and its peers' reports, which carry every 429), so each
replica that applies a cooldown keyed by a served model knows the alias too.
Plain Python, bounded, in memory.
"""

from __future__ import annotations

from .models import Outcome

# More names than any catalogue has: a flood of made-up names cannot grow it without end.
MAX_ALIASES = 1000


def served_model(outcome: Outcome, asked: str) -> str:
    """The model that answered: the outcome's modelVersion, else its QuotaFailure's model, else the name asked."""
    served = outcome.served_model or outcome.quota_model()
    return served.removeprefix("models/") if served else asked


class ServedModels:
    """Asked name -> the model last seen answering it (only where they differ)."""

    def __init__(self) -> None:
        self._served: dict[str, str] = {}

    def learn(self, asked: str, served: str) -> None:
        if not asked or not served or asked == served:
            return
        if asked not in self._served and len(self._served) >= MAX_ALIASES:
            return
        self._served[asked] = served

    def served_of(self, asked: str) -> str:
        """The model that answers ``asked`` (``asked`` itself when no other was seen)."""
        return self._served.get(asked, asked)

    def names(self, asked: str) -> tuple[str, ...]:
        """Every name a cooldown of a call for ``asked`` may be keyed by: the name, then the served model."""
        served = self._served.get(asked)
        return (asked, served) if served else (asked,)

    def aliases(self) -> dict[str, str]:
        return dict(self._served)
