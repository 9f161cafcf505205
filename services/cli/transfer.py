"""``keyringctl export`` and ``import``: pools, keys and tokens as one JSON document, for backups and moves.

An export holds keys sealed under keyring's KEK (or in clear with
``--include-secrets``, for an operator token with ``+export``): it is
written with mode 0600, never to a terminal unless asked with ``-f -``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .commands import Context, Subparsers, leaf
from .errors import USAGE, CliError


def register(groups: Subparsers, common: argparse.ArgumentParser) -> None:
    export = leaf(groups, "export", "write pools, keys and tokens to a JSON file (a backup)",
                  "keyringctl export -f backup.json\nkeyringctl export --include-secrets -f move.json\n"
                  "keyringctl export -f - | gzip > backup.json.gz", export_config, common,
                  "Keys stay sealed under keyring's KEK unless --include-secrets (needs an operator token with "
                  "+export). The file is created with mode 0600 and never overwritten.")
    export.add_argument("-f", "--file", required=True, help="the file to create, or - for standard output")
    export.add_argument("--include-secrets", action="store_true", help="keys in clear (operator+export only)")
    load = leaf(groups, "import", "import pools, keys and tokens from an export",
                "keyringctl import backup.json\nkeyringctl import backup.json --keep-client-tokens", import_config,
                common, "Keyring checks every record as its normal routes do; client tokens only with "
                "--keep-client-tokens.")
    load.add_argument("file", help="an export, or - for standard input")
    load.add_argument("--keep-client-tokens", action="store_true", help="import the client tokens too")


def export_config(args: argparse.Namespace, ctx: Context) -> int:
    document = ctx.client.call_raw("GET", "/export", query={"include_secrets": args.include_secrets})
    if args.file == "-":
        ctx.output.out.write(document.decode())
        ctx.output.out.write("\n")
        return 0
    try:
        descriptor = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(USAGE, f"{args.file} exists already: nothing was written") from None
    except OSError as error:
        raise CliError(USAGE, f"{args.file} cannot be created ({error.strerror})") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(document)
    counts = {name: len(value) for name, value in json.loads(document).items() if isinstance(value, list)}
    if ctx.output.json:
        ctx.output.document({"file": args.file, **counts})
    else:
        shown = ", ".join(f"{count} {name}" for name, count in counts.items())
        ctx.output.line(f"wrote {args.file}" + (f" ({shown})" if shown else ""))
    return 0


def import_config(args: argparse.Namespace, ctx: Context) -> int:
    try:
        raw = ctx.stdin.read().encode() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as error:
        raise CliError(USAGE, f"{args.file} cannot be read ({error.strerror})") from None
    try:
        json.loads(raw)
    except ValueError as error:
        raise CliError(USAGE, f"{args.file} is not JSON ({error})") from None
    answer = ctx.client.call_raw("POST", "/import", raw, {"keep_client_tokens": args.keep_client_tokens})
    counts = json.loads(answer)
    if ctx.output.json:
        ctx.output.document(counts)
    else:
        ctx.output.line(f"imported {counts['pools']} pools, {counts['keys']} keys, {counts['tokens']} tokens")
    return 0
