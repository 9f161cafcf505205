"""What one instance admitted, published for the others: the split budgets across a replica's death.

Cluster-wide numbers (a client token's budgets and requests per minute, a
key's requests per minute) are split across the live replicas, each counting
its own admissions in memory. When an instance dies, its counts die with it,
and the survivors, taking its share, would admit it a second time. So each
instance publishes what it admitted with its usage flush (``Published``,
the store's ``admitted/{instance}`` record), and the survivors take off
what the instances no longer in the membership admitted in the window before
splitting the rest among themselves (``budgets.BudgetMeter``,
``leasing.SlidingWindow``). What an instance admitted after its last publish
is not seen: at most one flush interval's admissions (5 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

WindowKey = tuple[str, str, float]  # token id, model scope ("": every model), span
# A sliding window's events by subject, in publish buckets: (bucket end, events in the bucket).
Minutes = dict[str, tuple[tuple[float, int], ...]]


@dataclass(frozen=True, slots=True)
class Published:
    """One instance's admissions as it last published them."""

    at: float
    windows: dict[WindowKey, tuple[float, int, int]] = field(default_factory=dict)  # -> (start, requests, tokens)
    key_minutes: Minutes = field(default_factory=dict)  # per key: requests per minute (pool policy)
    token_minutes: Minutes = field(default_factory=dict)  # per client token: requests per minute

    def to_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "windows": [[*key, *counts] for key, counts in self.windows.items()],
            "key_minutes": {subject: [list(row) for row in rows] for subject, rows in self.key_minutes.items()},
            "token_minutes": {subject: [list(row) for row in rows] for subject, rows in self.token_minutes.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Published:
        windows: dict[WindowKey, tuple[float, int, int]] = {}
        for row in data.get("windows", ()):  # type: ignore[attr-defined]
            token_id, scope, span, start, requests, tokens = row
            windows[(str(token_id), str(scope), float(span))] = (float(start), int(requests), int(tokens))
        return cls(
            float(data.get("at", 0.0)),  # type: ignore[arg-type]
            windows,
            _minutes(data.get("key_minutes", {})),
            _minutes(data.get("token_minutes", {})),
        )


def _minutes(data: object) -> Minutes:
    return {
        str(subject): tuple((float(end), int(count)) for end, count in rows)
        for subject, rows in data.items()  # type: ignore[attr-defined]
    }
