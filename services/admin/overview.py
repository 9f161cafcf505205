"""One pool at a glance (the console's Overview): built from keyring's answers, no state of its own.

The last hour's series comes from keyring's usage buckets (every replica's counts, five minutes each,
kept in etcd), so every admin replica shows the same figures and a restarted admin loses nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Final

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from . import schemas as s

WINDOW_S: Final = 3600
BUSIEST_TOKENS: Final = 5
# What cools a whole billing account (a 402, a spend limit; issue 21): with no account given, the key's project.
BILLING_CAUSES: Final = frozenset({"billing_depleted", "spend_limit"})


def series_json(reply: pb.GetUsageResponse, pool: str, now_ms: int) -> list[dict[str, Any]]:
    """Every bucket of the window, oldest first, the empty ones as zeros (a chart needs the gaps)."""
    bucket_ms = (reply.bucket_s or 300) * 1000
    points = {point.start_ms: point.figures for point in reply.series if point.pool == pool}
    kinds = {point.start_ms: dict(point.errors_by_kind) for point in reply.series if point.pool == pool}
    tiers = {point.start_ms: dict(point.requests_by_tier) for point in reply.series if point.pool == pool}
    last = now_ms // bucket_ms * bucket_ms
    first = (now_ms - WINDOW_S * 1000) // bucket_ms * bucket_ms  # the bucket keyring's window starts in
    rows = []
    for start in range(first, last + 1, bucket_ms):
        figures = points.get(start)
        rows.append(
            {
                "start": s.iso_utc(start),
                "requests": figures.requests if figures else 0,
                "errors": figures.errors if figures else 0,
                "errors_by_kind": _kinds(figures.errors, kinds.get(start, {})) if figures else {},
                "requests_by_tier": dict(sorted(tiers.get(start, {}).items())),
            }
        )
    return rows


def _kinds(errors: int, kinds: dict[str, int]) -> dict[str, int]:
    """Failed calls by kind, the most first; those counted before kinds were recorded as ``other``."""
    unkinded = errors - sum(kinds.values())
    shown = {**kinds, "other": kinds.get("other", 0) + unkinded} if unkinded > 0 else kinds
    return dict(sorted(shown.items(), key=lambda item: (-item[1], item[0])))


def keys_json(keys: list[pb.KeyInfo]) -> dict[str, Any]:
    """Keys by state, and the cooldowns in force by cause (a key cooling for two models counts twice)."""
    states = Counter(s.key_json(key, 0)["state"] for key in keys)
    causes = Counter(cooldown.reason or "unknown" for key in keys for cooldown in key.cooldowns)
    return {
        "keys_by_state": {state.value: states.get(state.value, 0) for state in s.KeyStateName},
        "keys_cooling": sum(1 for key in keys if key.cooldowns),
        "cooldowns_by_cause": dict(sorted(causes.items(), key=lambda item: (-item[1], item[0]))),
    }


def headroom_json(rows: Any) -> list[dict[str, Any]]:
    """Each known limit's use and what is left of this replica's share, the tightest first."""
    quotas = []
    for row in s.quota_rows_json(rows):
        share = row["replica_share"] or row["limit"]
        row["headroom_pct"] = round(100 * row["remaining"] / share, 1) if share else 0.0
        quotas.append(row)
    return sorted(quotas, key=lambda row: (row["headroom_pct"], row["project"], row["model"], row["metric"]))


def busiest_tokens_json(usage: pb.GetUsageResponse, tokens: list[pb.TokenInfo]) -> list[dict[str, Any]]:
    """The client tokens with the most requests in the window (names, never the tokens themselves)."""
    names = {token.token_id: token.name for token in tokens}
    rows = sorted(usage.tokens, key=lambda row: (-row.figures.requests, row.id))[:BUSIEST_TOKENS]
    return [
        {"token_id": row.id, "name": names.get(row.id, ""), "requests": row.figures.requests,
         "errors": row.figures.errors}
        for row in rows
        if row.figures.requests
    ]


def billing_json(keys: list[pb.KeyInfo], now_ms: int) -> list[dict[str, Any]]:
    """The pool's billing accounts (the operator's, given per key), each serving or cooling.

    A 402 (prepaid credits spent) or a spend limit cools every project of the account at once (keyring's
    ``account`` cooldowns): its cause and until when. Keys whose account was not given are one row (account
    ""), cooling only where a billing cause cooled their project: ``cooling_projects`` names which.
    """
    groups: dict[str, list[pb.KeyInfo]] = defaultdict(list)
    for key in keys:
        groups[key.billing_account].append(key)
    rows = []
    for account, own in sorted(groups.items(), key=lambda item: (not item[0], item[0])):
        cooling: dict[str, tuple[int, str]] = {}  # project -> (until, cause)
        for key in own:
            for cooldown in key.cooldowns:
                billing = cooldown.scope == "account" or (
                    not account and cooldown.scope == "project" and cooldown.reason in BILLING_CAUSES
                )
                if billing and cooldown.until_ms > now_ms:
                    cooling[key.project] = max(cooling.get(key.project, (0, "")), (cooldown.until_ms, cooldown.reason))
        until, cause = max(cooling.values(), default=(0, ""))
        rows.append(
            {
                "account": account,
                "tier": max((key.billing_tier for key in own), default=0),
                "projects": sorted({key.project for key in own if key.project}),
                "keys": len(own),
                "state": "cooling" if cooling else "serving",
                "cause": cause,
                "until": s.iso_utc(until),
                "cooling_projects": sorted(project for project in cooling if project),
            }
        )
    return rows
