"""``keyringctl keys``: add from a key file, list with state and why a key cools, verify, disable, enable, revive.

Adding reads the file of ``scripts/start.sh --keys`` (``key_file``): the
whole file is checked before anything is sent, and keys are shown only as
masks. Admin adds what it can and reports each key; a re-run with the same
file reports them as duplicates, so adding is safe to repeat.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from .client import segment
from .commands import Context, Subparsers, group, leaf
from .errors import FAILED, USAGE, CliError
from .key_file import KeyFileError, parse_key_text, read_key_file

STATES: Final = ("active", "suspended", "invalid", "disabled")
BATCH: Final = 5000  # the most keys admin takes in one request (schemas.KeysAdd)
PAGE: Final = 1000


def register(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    keys = group(groups, "keys", "add, list, check and switch upstream keys",
                 "Upstream Gemini keys, shown by id and mask only: admin never shows a key in full.")
    add = leaf(keys, "add", "add keys from a key file to a pool",
               "keyringctl keys add main keys.txt\nkeyringctl keys add main - < keys.txt",
               add_keys, common,
               "One key per line, optionally followed by its Google Cloud project and then its billing account "
               "after whitespace or a comma; "
               "'#' starts a comment (the format of scripts/start.sh --keys). Every line is checked first: a bad "
               "line sends nothing. Keys already in the pool are reported as duplicates (exit 0).")
    add.add_argument("pool")
    add.add_argument("file", help="the key file, or - for standard input")
    listing = leaf(keys, "list", "list keys with their state and cooldowns",
                   "keyringctl keys list --pool main\nkeyringctl keys list --state suspended\n"
                   "keyringctl keys list --cooling gemini-3.5-flash -o json", list_keys, common,
                   "Every key with its state and, per model it is cooling for, the reason and the time left.")
    listing.add_argument("--pool")
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--cooling", metavar="MODEL", help="only keys cooling for this model")
    listing.add_argument("--project")
    show = leaf(keys, "show", "show one key's health: state, cooldowns, last error",
                "keyringctl keys show k-17b5162680f13bf9", show_key, common)
    show.add_argument("key_id")
    verify = leaf(keys, "verify", "check keys against the upstream now",
                  "keyringctl keys verify k-17b5162680f13bf9 k-83615058a9b93e5a", verify_keys, common,
                  "Makes one cheap upstream call per key and updates its state; exit 1 when a key failed.")
    verify.add_argument("key_ids", nargs="+", metavar="KEY_ID")
    for action, summary in (("disable", "take keys out of rotation"), ("enable", "put disabled keys back"),
                            ("revive", "clear keys' cooldowns and failures, as active")):
        command = leaf(keys, action, summary, f"keyringctl keys {action} k-17b5162680f13bf9", set_state, common)
        command.add_argument("key_ids", nargs="+", metavar="KEY_ID")
        command.set_defaults(action=action)


def add_keys(args: argparse.Namespace, ctx: Context) -> int:
    try:
        lines = parse_key_text(ctx.stdin.read(), "stdin") if args.file == "-" else read_key_file(args.file)
    except KeyFileError as error:
        problems = error.problems
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise CliError(USAGE, f"nothing added: {'; '.join(problems[:5])}{more}") from None
    results: list[dict[str, Any]] = []
    for start in range(0, len(lines), BATCH):
        batch = lines[start:start + BATCH]
        items = [
            {
                "secret": line.secret,
                **({"project": line.project} if line.project else {}),
                **({"billing_account": line.billing_account} if line.billing_account else {}),
            }
            for line in batch
        ]
        answer = ctx.client.post(f"/pools/{segment(args.pool)}/keys", {"keys": items})
        for result in answer["results"]:
            results.append({**result, "line": batch[result["index"]].line})
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("added", "duplicate")}
    refused = len(results) - counts["added"] - counts["duplicate"]
    if ctx.output.json:
        ctx.output.document({**counts, "refused": refused, "results": results})
    else:
        ctx.output.table(results, [("LINE", "line"), ("STATUS", "status"), ("KEY", "key_id"), ("MASK", "mask"),
                                   ("MESSAGE", "message")])
        ctx.output.line(f"{counts['added']} added, {counts['duplicate']} already there, {refused} refused")
    return FAILED if refused else 0


def all_keys(ctx: Context, query: dict[str, object]) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = []
    page = ""
    while True:
        answer = ctx.client.get("/keys", {**query, "page_size": PAGE, "page_token": page})
        keys.extend(answer["keys"])
        page = answer.get("next_page_token") or ""
        if not page:
            return keys


def list_keys(args: argparse.Namespace, ctx: Context) -> int:
    keys = all_keys(ctx, {"pool": args.pool, "state": args.state, "cooling_model": args.cooling,
                          "project": args.project})
    if ctx.output.json:
        ctx.output.document({"keys": keys, "total": len(keys)})
        return 0
    ctx.output.table(keys, [("KEY", "key_id"), ("MASK", "mask"), ("POOL", "pool"), ("PROJECT", "project"),
                            ("STATE", "state"), ("COOLING", cooling), ("LAST ERROR", last_error)], "(no keys)")
    return 0


def cooling(key: dict[str, Any]) -> str:
    """``model: reason (42s left)`` per cooldown; the scope when it is not the key alone."""
    shown = []
    for cooldown in key["cooldowns"]:
        scope = f" [{cooldown['scope']}]" if cooldown.get("scope") not in (None, "", "key") else ""
        asked = f" (asked as {cooldown['asked_model']})" if cooldown.get("asked_model") else ""
        shown.append(f"{cooldown['model'] or '*'}{asked}: {cooldown['reason'] or 'cooling'}{scope} "
                     f"({cooldown['seconds_left']:g}s left)")
    return "; ".join(shown)


def last_error(key: dict[str, Any]) -> str:
    error = key.get("last_error")
    if not error:
        return ""
    return " ".join(str(part) for part in (error["http_status"], error["status"], error["reason"]) if part)


def show_key(args: argparse.Namespace, ctx: Context) -> int:
    key = ctx.client.get(f"/keys/{segment(args.key_id)}")
    if ctx.output.json:
        ctx.output.document(key)
        return 0
    ctx.output.fields([("key", key["key_id"]), ("mask", key["mask"]), ("kind", key["kind"]), ("pool", key["pool"]),
                       ("project", key["project"]), ("billing account", key.get("billing_account", "")),
                       ("billing tier", key.get("billing_tier") or "unknown"),
                       ("project number", key.get("project_number", "")),
                       ("warning", key.get("project_warning", "")),
                       ("tier", key["tier"]), ("weight", key["weight"]),
                       ("tags", key["tags"]), ("state", key["state"]), ("state until", key["state_until"]),
                       ("cooling", cooling(key)), ("failures", key["consecutive_failures"]),
                       ("last error", last_error(key)), ("last used", key["last_used"]),
                       ("created", key["created_at"])])
    return 0


def verify_keys(args: argparse.Namespace, ctx: Context) -> int:
    results = [ctx.client.post(f"/keys/{segment(key_id)}/verify") for key_id in dict.fromkeys(args.key_ids)]
    if ctx.output.json:
        ctx.output.document({"results": results})
    else:
        ctx.output.table(results, [("KEY", "key_id"), ("OK", "ok"), ("STATE", "state"), ("HTTP", "http_status"),
                                   ("ERROR", _verify_error)])
    return 0 if all(result["ok"] for result in results) else FAILED


def _verify_error(result: dict[str, Any]) -> str:
    return " ".join(part for part in (result["error_status"], result["error_reason"]) if part)


def set_state(args: argparse.Namespace, ctx: Context) -> int:
    keys = [ctx.client.post(f"/keys/{segment(key_id)}/{args.action}") for key_id in dict.fromkeys(args.key_ids)]
    if ctx.output.json:
        ctx.output.document({"keys": keys})
    else:
        ctx.output.table(keys, [("KEY", "key_id"), ("MASK", "mask"), ("STATE", "state"), ("COOLING", cooling)])
    return 0
