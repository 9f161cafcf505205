"""``keyringctl tokens``: list, create, rotate, revoke client tokens and set their budgets.

A new or rotated token is printed once (admin keeps only its hash): in a
table as ``token: kr-...``, in JSON as ``"token"``. Budgets are written
``model=M,rpm=N,rpd=N,tpm=N,tpd=N`` (every part optional; no model: every
model) and replace all of the token's budgets.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from .client import segment
from .commands import Context, Subparsers, group, leaf
from .errors import USAGE, CliError

BUDGET_FIELDS: Final = {"model": "model", "rpm": "requests_per_minute", "rpd": "requests_per_day",
                        "tpm": "tokens_per_minute", "tpd": "tokens_per_day"}
BUDGET_HELP: Final = ("a budget as model=M,rpm=N,rpd=N,tpm=N,tpd=N (requests and tokens per minute and per UTC "
                      "day; every part optional, no model: every model); repeatable")


def register(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    tokens = group(groups, "tokens", "create, rotate, revoke client tokens and set their budgets",
                   "Client tokens (kr-...) let applications call the edge for one pool.")
    listing = leaf(tokens, "list", "list client tokens (never the tokens themselves)",
                   "keyringctl tokens list --pool main", list_tokens, common)
    listing.add_argument("--pool")
    create = leaf(tokens, "create", "create a client token for a pool (printed once)",
                  "keyringctl tokens create main --name ci\n"
                  "keyringctl tokens create main --name batch --expires 2027-01-31T00:00:00Z --budget rpd=10000\n"
                  "TOKEN=$(keyringctl tokens create main --name app -o json | jq -r .token)",
                  create_token, common)
    create.add_argument("pool")
    create.add_argument("--name", default="")
    create.add_argument("--expires", metavar="RFC3339", help="when it stops working, e.g. 2027-01-31T00:00:00Z")
    create.add_argument("--rpm", type=int, metavar="N", help="requests per minute for this token")
    create.add_argument("--budget", action="append", metavar="SPEC", help=BUDGET_HELP)
    rotate = leaf(tokens, "rotate", "replace a token's secret (printed once); the old one stops working",
                  "keyringctl tokens rotate t-635cd1d44d03", token_action, common)
    rotate.add_argument("token_id")
    rotate.set_defaults(action="rotate")
    revoke = leaf(tokens, "revoke", "revoke a token for good", "keyringctl tokens revoke t-635cd1d44d03", token_action,
                  common)
    revoke.add_argument("token_id")
    revoke.set_defaults(action="revoke")
    budgets = leaf(tokens, "budgets", "replace a token's budgets (--clear removes them)",
                   "keyringctl tokens budgets t-635cd1d44d03 --budget rpm=60,tpd=2000000\n"
                   "keyringctl tokens budgets t-635cd1d44d03 --budget model=gemini-3.1-pro-preview,rpd=100 "
                   "--budget rpd=5000\n"
                   "keyringctl tokens budgets t-635cd1d44d03 --clear", set_budgets, common,
                   "A spent budget answers the token's calls 429 until its window ends; keys are not touched.")
    budgets.add_argument("token_id")
    budgets.add_argument("--budget", action="append", metavar="SPEC", help=BUDGET_HELP)
    budgets.add_argument("--clear", action="store_true", help="remove every budget of the token")


def parse_budget(spec: str) -> dict[str, Any]:
    """``model=gemini-3.1-pro-preview,rpm=60`` -> admin's budget object."""
    budget: dict[str, Any] = {}
    for part in (part.strip() for part in spec.split(",")):
        name, sep, value = part.partition("=")
        field = BUDGET_FIELDS.get(name.strip())
        if not sep or field is None:
            raise CliError(USAGE, f"budget part {part!r} is not one of {', '.join(BUDGET_FIELDS)} as NAME=VALUE")
        if field in budget:
            raise CliError(USAGE, f"budget {spec!r} names {name} twice")
        if field == "model":
            budget[field] = value.strip()
        elif value.strip().isdigit():
            budget[field] = int(value)
        else:
            raise CliError(USAGE, f"budget {name} must be a whole number, not {value!r}")
    return budget


def list_tokens(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.get("/tokens", {"pool": args.pool})
    if ctx.output.json:
        ctx.output.document(answer)
        return 0
    ctx.output.table(answer["tokens"], [("TOKEN ID", "token_id"), ("NAME", "name"), ("POOL", "pool"),
                                        ("PREFIX", "prefix"), ("REVOKED", "revoked"), ("EXPIRES", "expires_at"),
                                        ("LAST USED", "last_used"), ("BUDGETS", budgets_text)], "(no tokens)")
    return 0


def budgets_text(token: dict[str, Any]) -> str:
    shown = []
    for budget in token.get("budgets") or []:
        parts = [f"{short}={budget[field]}" for short, field in BUDGET_FIELDS.items()
                 if field != "model" and budget.get(field)]
        shown.append(f"{budget['model'] or '*'}: {' '.join(parts) or 'no limit'}")
    return "; ".join(shown)


def create_token(args: argparse.Namespace, ctx: Context) -> int:
    body: dict[str, Any] = {"pool": args.pool, "name": args.name,
                            "budgets": [parse_budget(spec) for spec in args.budget or []]}
    if args.expires:
        body["expires_at"] = args.expires
    if args.rpm is not None:
        body["requests_per_minute"] = args.rpm
    return _secret(ctx, ctx.client.post("/tokens", body))


def token_action(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.post(f"/tokens/{segment(args.token_id)}/{args.action}")
    return _secret(ctx, answer) if args.action == "rotate" else _info(ctx, answer)


def set_budgets(args: argparse.Namespace, ctx: Context) -> int:
    if bool(args.clear) == bool(args.budget):
        raise CliError(USAGE, "give --budget SPEC (repeatable) or --clear")
    budgets = [] if args.clear else [parse_budget(spec) for spec in args.budget]
    return _info(ctx, ctx.client.patch(f"/tokens/{segment(args.token_id)}", {"budgets": budgets}))


def _secret(ctx: Context, answer: dict[str, Any]) -> int:
    if ctx.output.json:
        ctx.output.document(answer)
        return 0
    _info(ctx, answer["info"])
    ctx.output.line(f"token:    {answer['token']}")
    ctx.output.line("(shown once: store it now; keyring keeps only its hash)")
    return 0


def _info(ctx: Context, info: dict[str, Any]) -> int:
    if ctx.output.json:
        ctx.output.document(info)
        return 0
    ctx.output.fields([("token id", info["token_id"]), ("name", info["name"]), ("pool", info["pool"]),
                       ("prefix", info["prefix"]), ("revoked", info["revoked"]), ("expires", info["expires_at"]),
                       ("rpm", info["requests_per_minute"] or "no limit"), ("budgets", budgets_text(info))])
    return 0
