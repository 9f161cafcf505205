"""What every command gets (the admin client, the output) and how a command is declared.

Each command group module has ``register(groups, common)``, adding its
commands with ``leaf``; a command is a function ``(args, ctx) -> exit code``.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO, TypeAlias

from .client import AdminClient
from .errors import USAGE, CliError
from .output import Output


@dataclass
class Context:
    client: AdminClient
    output: Output
    stdin: TextIO


Run = Callable[[argparse.Namespace, Context], int]
# argparse has no public name for it, and it is generic only to type checkers.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def leaf(groups: Subparsers, name: str, summary: str, examples: str, run: Run,
         common: argparse.ArgumentParser, description: str = "") -> argparse.ArgumentParser:
    """A command with its one-line summary, a description and examples in ``--help``."""
    parser: argparse.ArgumentParser = groups.add_parser(
        name, help=summary, description=textwrap.fill(description or summary, 78), parents=[common],
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


def group(groups: Subparsers, name: str, summary: str, description: str) -> Subparsers:
    """A command group (``keys``, ``tokens``...) whose commands are required."""
    parser = groups.add_parser(name, help=summary, description=description)
    commands: Subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    return commands


def assignments(items: list[str] | None, what: str) -> dict[str, str]:
    """``name=value`` arguments as a dict; anything else is a usage error."""
    found: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliError(USAGE, f"{what} {item!r} is not name=value")
        found[name.strip()] = value.strip()
    return found


def number(text: str, what: str) -> int | float:
    """An integer or a decimal given on the command line."""
    try:
        value = float(text)
    except ValueError:
        raise CliError(USAGE, f"{what} must be a number, not {text!r}") from None
    return int(value) if value.is_integer() else value
