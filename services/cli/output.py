"""Aligned tables for people, JSON (``--json`` / ``-o json``) for scripts.

JSON output is admin's answer as admin gave it (the same fields the REST API
documents), so a script written against one works with the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

Cell = Callable[[dict[str, Any]], object]
Column = tuple[str, str | Cell]


@dataclass
class Output:
    out: TextIO
    json: bool = False

    def line(self, text: str = "") -> None:
        print(text, file=self.out)

    def document(self, value: object) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False), file=self.out)

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[Column], empty: str = "(none)") -> None:
        if not rows:
            self.line(empty)
            return
        cells = [[header for header, _ in columns]]
        cells += [[_text(pick(row) if callable(pick) else row.get(pick)) for _, pick in columns] for row in rows]
        widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
        for line in cells:
            self.line("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())

    def fields(self, pairs: Sequence[tuple[str, object]]) -> None:
        """One record as ``name: value`` lines, the names aligned."""
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            self.line(f"{name + ':':<{width + 1}} {_text(value)}")


def _text(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ",".join(_text(item) for item in value) or "-"
    return " ".join(str(value).split())
