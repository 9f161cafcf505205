"""Every keyringctl command the docs show (README.md, docs/*.md) is one keyringctl parses: a subcommand or an
option renamed in the CLI fails here, not in an operator's shell. What each does is tests/admin/test_keyringctl.py."""

from __future__ import annotations

import re
import shlex

from services.cli.__main__ import build_parser
from tests.docs import DOCS, ROOT


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, argv) of every shell line of a bash block that starts with keyringctl (comments dropped)."""
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.splitlines():
                if line.startswith("keyringctl "):
                    found.append((path.name, shlex.split(line, comments=True)[1:]))
    return found


def test_every_documented_command_parses() -> None:
    commands = documented_commands()
    assert len(commands) >= 15, "the operator guide shows the routine tasks"
    parser = build_parser()
    for name, argv in commands:
        args, extra = parser.parse_known_args(argv)
        assert not extra, (name, argv, extra)
        assert callable(args.run), (name, argv)
    shown = {argv[0] for _, argv in commands}
    assert {"pools", "keys", "tokens", "usage", "quotas", "export", "import", "audit"} <= shown
