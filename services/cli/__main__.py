"""keyringctl: run admin's routine tasks from a shell (``main``), one line on stderr and an exit code on failure."""

from __future__ import annotations

import argparse
import contextvars
import functools
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Final, NoReturn, TextIO

from services.common.masking import redact

from . import completion, keys, pools, reports, tokens, transfer
from .client import AdminClient
from .commands import Context
from .errors import EXIT_CODES_HELP, FAILED, OK, USAGE, CliError
from .output import Output
from .settings import resolve

PROG: Final = "keyringctl"
DESCRIPTION: Final = """Operate a Keyring pool from the shell: pools, upstream keys, client tokens,
usage and quotas, backups and the audit log, through the admin REST API."""
EPILOG: Final = f"""examples:
  export KEYRINGCTL_URL=http://127.0.0.1:8081 KEYRINGCTL_TOKEN=...   # admin and an admin token
  keyringctl keys add main keys.txt          # add keys from a file (one key [project] a line)
  keyringctl keys list --state suspended     # which keys are out, and why
  keyringctl tokens rotate t-635cd1d44d03    # a new secret for a client token
  keyringctl quotas -o json                  # quota headroom, for a script
  keyringctl export -f backup.json           # a backup

credentials (never an argument: it would show in ps and shell history):
  KEYRINGCTL_URL, KEYRINGCTL_TOKEN, KEYRINGCTL_CA_FILE, or the same as url, token, ca_file
  in ~/.config/keyringctl/config.toml (KEYRINGCTL_CONFIG; mode 0600). Plain http only to
  localhost; https is checked against the system CAs or --ca-file.

{EXIT_CODES_HELP}"""
_TOKEN_FLAGS: Final = ("--token", "--admin-token", "--password", "--api-key")
_STREAMS: contextvars.ContextVar[tuple[TextIO, TextIO]] = contextvars.ContextVar("streams")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (a ``CliError``) and whose help goes to this run's stdout."""

    def error(self, message: str) -> NoReturn:
        raise CliError(USAGE, f"{message} (see '{self.prog} --help')")

    def _print_message(self, message: str, file: object = None) -> None:
        if message:
            out, err = _STREAMS.get((sys.stdout, sys.stderr))
            (err if file is sys.stderr else out).write(message)


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (built once: argparse keeps no state between parses)."""
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    shown = common.add_argument_group("output and connection")
    shown.add_argument("-o", "--output", choices=("table", "json"), help="table (default) or json")
    shown.add_argument("--json", dest="output", action="store_const", const="json", help="the same as -o json")
    shown.add_argument("--url", help="admin's URL (KEYRINGCTL_URL; default http://127.0.0.1:8081)")
    shown.add_argument("--ca-file", help="CA certificate of admin's https (KEYRINGCTL_CA_FILE)")
    shown.add_argument("--timeout", type=float, metavar="SECONDS", help="per request (default 60)")
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, parents=[common],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in (pools, keys, tokens, reports, transfer, completion):
        module.register(groups, common)
    return parser


def run(argv: Sequence[str], out: TextIO, err: TextIO, env: Mapping[str, str], stdin: TextIO | None = None) -> int:
    """One invocation: the exit code; output on ``out``, one line on ``err`` on failure."""
    reset = _STREAMS.set((out, err))
    try:
        return _run(list(argv), out, env, stdin or sys.stdin)
    except CliError as error:
        message = redact(error.message)
        token = env.get("KEYRINGCTL_TOKEN", "").strip()
        if len(token) >= 4:  # typed as an argument by mistake, it comes back in argparse's message
            message = message.replace(token, "[the admin token]")
        print(f"{PROG}: {' '.join(message.split())}", file=err)
        return error.code
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else OK
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    except Exception as error:  # never a traceback: a bug here is still one line
        print(f"{PROG}: unexpected {type(error).__name__} (a bug in keyringctl; please report it)", file=err)
        return FAILED
    finally:
        _STREAMS.reset(reset)


def _run(argv: list[str], out: TextIO, env: Mapping[str, str], stdin: TextIO) -> int:
    refused = [arg.split("=", 1)[0] for arg in argv if arg.split("=", 1)[0] in _TOKEN_FLAGS]
    if refused:
        raise CliError(USAGE, f"there is no {refused[0]} option: a token on the command line ends up in ps and "
                              "shell history; set KEYRINGCTL_TOKEN or token in the config file (mode 0600)")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # only the option names: a stray value may be a secret
        names = [arg.split("=", 1)[0] for arg in extra if arg.startswith("-")]
        shown = f": {' '.join(names)}" if names else ""
        raise CliError(USAGE, f"unrecognized arguments{shown} (values not shown; see '{PROG} --help')")
    output = Output(out, json=getattr(args, "output", "table") == "json")
    if getattr(args, "offline", False):
        args.root_parser = parser
        return int(args.run(args, Context(None, output, stdin)))  # type: ignore[arg-type]
    settings = resolve(env, getattr(args, "url", None), getattr(args, "ca_file", None))
    client = AdminClient(settings, getattr(args, "timeout", 60.0))
    return int(args.run(args, Context(client, output, stdin)))


def main() -> NoReturn:
    """The console script ``keyringctl``."""
    sys.exit(run(sys.argv[1:], sys.stdout, sys.stderr, os.environ))


if __name__ == "__main__":
    main()
