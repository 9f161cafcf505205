"""The documentation as tests read it: README.md and the guides in docs/, by name, and one section of them.

Tests that run a command or an example from the docs take it from here, so a section that moves from one
file to another moves the test's reading with it (one place), and a section that disappears fails loudly.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def doc(name: str) -> str:
    """The text of README.md (``"README"``), SECURITY.md (``"SECURITY"``) or docs/<name>.md."""
    if name in {"README", "SECURITY"}:
        return (ROOT / f"{name}.md").read_text()
    return (DOCS / f"{name}.md").read_text()


def section(name: str, heading: str) -> str:
    """A section of a doc: from its heading line (``"## Kubernetes (Helm)"``, level included) to the next
    heading of the same or a higher level outside a code block."""
    text = doc(name)
    lines = text.split("\n")
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading) if heading in lines else None
    assert start is not None, f"{name} has no heading {heading!r}"
    fence = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        if line.startswith("```"):
            fence = not fence
        elif not fence and (found := re.match(r"^(#{1,6}) ", line)) and len(found.group(1)) <= level:
            return "\n".join(lines[start:end])
    return "\n".join(lines[start:])
