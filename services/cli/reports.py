"""``keyringctl usage``, ``quotas`` and ``audit``: what the pool did, how much quota is left, who changed what."""

from __future__ import annotations

import argparse
from typing import Any

from .commands import Context, Subparsers, leaf
from .output import Column

USAGE_COLUMNS: list[Column] = [("REQUESTS", "requests"), ("ERRORS", "errors"), ("INPUT TOKENS", "input_tokens"),
                               ("OUTPUT TOKENS", "output_tokens"), ("UNKNOWN", "unknown")]


def register(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    usage = leaf(groups, "usage", "requests, errors and tokens per pool, key and client token",
                 "keyringctl usage\nkeyringctl usage --pool main --window day -o json", show_usage, common,
                 "Summed over every keyring replica, for the last hour or day. UNKNOWN counts calls whose lease "
                 "was reclaimed unreleased (they are in REQUESTS too).")
    usage.add_argument("--pool")
    usage.add_argument("--window", choices=("hour", "day"), default="hour")
    quotas = leaf(groups, "quotas", "quota limits per project and model: used, remaining, next reset",
                  "keyringctl quotas\nkeyringctl quotas --pool main --project my-project-1 --json", show_quotas,
                  common, "Each limit is learnt from Google's 429s or set by the pool's policy (SOURCE); USED is "
                  "this replica's count in the current window, SHARE its part of the limit.")
    quotas.add_argument("--pool")
    quotas.add_argument("--project")
    audit = leaf(groups, "audit", "the newest audit entries: who changed what",
                 "keyringctl audit\nkeyringctl audit --limit 20 -o json", show_audit, common)
    audit.add_argument("--limit", type=int, default=100, help="how many entries, 1-1000 (default 100)")


def show_usage(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.get("/usage", {"pool": args.pool, "window": args.window})
    if ctx.output.json:
        ctx.output.document(answer)
        return 0
    ctx.output.line(f"last {answer['window']}")
    for title, rows, first in (("pools", answer["pools"], ("POOL", "id")),
                               ("keys", answer["keys"], ("KEY", "id")),
                               ("tokens", answer["tokens"], ("TOKEN ID", "id"))):
        ctx.output.line()
        ctx.output.line(f"{title}:")
        columns: list[Column] = [first] if title == "pools" else [first, ("POOL", "pool")]
        ctx.output.table(rows, columns + USAGE_COLUMNS)
    return 0


def show_quotas(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.get("/quotas", {"pool": args.pool, "project": args.project})
    if ctx.output.json:
        ctx.output.document(answer)
        return 0
    ctx.output.table(answer["quotas"], [("POOL", "pool"), ("PROJECT", "project"), ("MODEL", "model"),
                                        ("METRIC", "metric"), ("LIMIT", "limit"), ("SOURCE", "source"),
                                        ("USED", "used"), ("SHARE", "replica_share"), ("REMAINING", "remaining"),
                                        ("RESETS", "resets_at")],
                     "(no quota limits known yet: they are learnt from 429s or set in a pool's policy)")
    return 0


def show_audit(args: argparse.Namespace, ctx: Context) -> int:
    answer: dict[str, Any] = ctx.client.get("/audit", {"limit": args.limit})
    if ctx.output.json:
        ctx.output.document(answer)
        return 0
    ctx.output.table(answer["entries"], [("AT", "at"), ("ACTOR", "actor"), ("ACTION", "action"),
                                         ("TARGET", "target"), ("DETAIL", "detail")], "(no entries)")
    return 0
