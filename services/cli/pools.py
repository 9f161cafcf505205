"""``keyringctl pools``: list, show, create, update (description, models, strategy, policy numbers), delete."""

from __future__ import annotations

import argparse
from typing import Any

from .client import segment
from .commands import Context, Subparsers, assignments, group, leaf, number

STRATEGIES = ("round_robin", "random", "weighted", "least_loaded")
POLICY_HELP = ("a policy number as NAME=VALUE (repeatable; durations in seconds): rate_limit_cooldown_s, "
               "rate_limit_max_cooldown_s, server_error_cooldown_s, server_error_max_cooldown_s, "
               "forbidden_threshold, max_in_flight, requests_per_minute, lease_ttl_s, suspend_s, "
               "quota_requests_per_minute, quota_requests_per_day, quota_input_tokens_per_minute, "
               "live_sessions_per_project, live_sessions_per_key, live_sessions_per_token")


def register(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    pools = group(groups, "pools", "list, show, create and change pools",
                  "A pool is a set of upstream keys, the client tokens that may use them and the policy that "
                  "governs them.")
    leaf(pools, "list", "list pools", "keyringctl pools list\nkeyringctl pools list --json", list_pools, common)
    show = leaf(pools, "show", "show a pool and its policy", "keyringctl pools show main", show_pool, common)
    show.add_argument("name")
    create = leaf(pools, "create", "create a pool",
                  "keyringctl pools create main --models gemini-3.5-flash,gemini-3.1-pro-preview\n"
                  "keyringctl pools create batch --strategy least_loaded --policy max_in_flight=4",
                  create_pool, common)
    create.add_argument("name", help="lower-case letters, digits, '.', '_', '-'")
    _pool_fields(create)
    update = leaf(pools, "update", "change a pool's description, models, strategy or policy",
                  "keyringctl pools update main --policy rate_limit_cooldown_s=90 --policy requests_per_minute=600\n"
                  "keyringctl pools update main --models gemini-3.5-flash",
                  update_pool, common, "Only what is given changes; a policy number 0 keeps the current value.")
    update.add_argument("name")
    _pool_fields(update)
    delete = leaf(pools, "delete", "delete a pool (with --force: its keys and tokens too)",
                  "keyringctl pools delete old\nkeyringctl pools delete old --force", delete_pool, common,
                  "A pool that still has keys or tokens is kept (exit 5) unless --force deletes them with it.")
    delete.add_argument("name")
    delete.add_argument("--force", action="store_true", help="delete its keys and tokens too")


def _pool_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--description")
    parser.add_argument("--models", help="comma-separated model ids the pool's tokens may use (empty: any)")
    parser.add_argument("--strategy", choices=STRATEGIES)
    parser.add_argument("--policy", action="append", metavar="NAME=VALUE", help=POLICY_HELP)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.description is not None:
        body["description"] = args.description
    if args.models is not None:
        body["allowed_models"] = [model.strip() for model in args.models.split(",") if model.strip()]
    if args.strategy:
        body["strategy"] = args.strategy
    policy = {name: number(value, name) for name, value in assignments(args.policy, "policy").items()}
    if policy:
        body["policy"] = policy
    return body


def list_pools(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.get("/pools")
    if ctx.output.json:
        ctx.output.document(answer)
        return 0
    ctx.output.table(answer["pools"], [("NAME", "name"), ("STRATEGY", "strategy"), ("MODELS", "allowed_models"),
                                       ("CREATED", "created_at"), ("DESCRIPTION", "description")])
    return 0


def show_pool(args: argparse.Namespace, ctx: Context) -> int:
    return _show(ctx, ctx.client.get(f"/pools/{segment(args.name)}"))


def create_pool(args: argparse.Namespace, ctx: Context) -> int:
    return _show(ctx, ctx.client.post("/pools", {"name": args.name, **_body(args)}))


def update_pool(args: argparse.Namespace, ctx: Context) -> int:
    return _show(ctx, ctx.client.patch(f"/pools/{segment(args.name)}", _body(args)))


def delete_pool(args: argparse.Namespace, ctx: Context) -> int:
    answer = ctx.client.call("DELETE", f"/pools/{segment(args.name)}", query={"force": args.force})
    if ctx.output.json:
        ctx.output.document(answer)
    else:
        ctx.output.line(f"deleted pool {args.name} ({answer['keys_deleted']} keys, {answer['tokens_deleted']} tokens)")
    return 0


def _show(ctx: Context, pool: dict[str, Any]) -> int:
    if ctx.output.json:
        ctx.output.document(pool)
        return 0
    ctx.output.fields([("name", pool["name"]), ("description", pool["description"]),
                       ("strategy", pool["strategy"]), ("allowed models", pool["allowed_models"] or "any"),
                       ("created", pool["created_at"])])
    ctx.output.line("policy:")
    ctx.output.fields([(f"  {name}", value) for name, value in pool["policy"].items()])
    return 0
