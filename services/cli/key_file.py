"""The key file of ``keyringctl keys add`` and ``scripts/start.sh --keys FILE``: one key per line, maybe a project.

::

    # comments and blank lines are ignored
    AQ.Ab...   my-project-1
    AQ.Ab...,  my-project-2
    AQ.Ab...   my-project-3  012345-6789AB-CDEF01
    AIzaSy...

A key is an auth key (``AQ.``) or a standard key (``AIza``), as keyring
accepts them (``KEYRING_KEY_PATTERN`` when set); the project, after
whitespace or a comma, is the Google Cloud project the key belongs to
(quotas are per project, so keyring cools a project's keys together), and
a third field its billing account (a 402 or a spend limit is the account's,
so keyring cools every project of it together; issue 21). The
whole file is checked before anything is created: every bad line is reported
with its number, and a key never appears in full in a message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from services.keyring.domain.identity import GEMINI_KEY_PATTERN, is_key_string, malformed_key_message, mask

PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
BILLING_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class KeyLine:
    line: int
    secret: str
    project: str = ""
    billing_account: str = ""


class KeyFileError(Exception):
    """The file cannot be used; ``problems`` are one message per bad line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def key_pattern() -> str:
    """What keyring will accept: its default, or KEYRING_KEY_PATTERN as the replica started here will read it."""
    return os.environ.get("KEYRING_KEY_PATTERN") or GEMINI_KEY_PATTERN


def parse_key_text(text: str, source: str = "keys", pattern: str | None = None) -> list[KeyLine]:
    """Every key of ``text``, or a ``KeyFileError`` naming every bad line of ``source``."""
    pattern = pattern or key_pattern()
    keys: list[KeyLine] = []
    problems: list[str] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()  # neither keys nor project ids contain '#'
        if not line:
            continue
        parts = [part for part in re.split(r"[\s,]+", line) if part]
        secret = parts[0]
        where = f"{source} line {number}"
        if len(parts) > 3:
            problems.append(
                f"{where}: expected a key and at most a project and a billing account, found {len(parts)} fields"
            )
            continue
        if not is_key_string(secret, pattern):
            problems.append(f"{where}: {malformed_key_message(mask(secret))}")
            continue
        project = parts[1] if len(parts) >= 2 else ""
        account = parts[2] if len(parts) == 3 else ""
        if account and not BILLING_ACCOUNT.fullmatch(account):
            problems.append(f"{where}: the billing account {account[:40]!r} is not 1-64 letters, digits, '.', '_', '-'")
            continue
        if project and not PROJECT.fullmatch(project):
            problems.append(
                f"{where}: the project {project[:40]!r} is not a project id (1-128 letters, digits, '.', '_', ':', '-')"
            )
            continue
        if secret in first_seen:
            problems.append(f"{where}: {mask(secret)} is the key of line {first_seen[secret]} again")
            continue
        first_seen[secret] = number
        keys.append(KeyLine(number, secret, project, account))
    if not keys and not problems:
        problems.append(f"{source}: no keys found (one key per line, optionally followed by its project)")
    if problems:
        raise KeyFileError(problems)
    return keys


def read_key_file(path: str | Path) -> list[KeyLine]:
    """``parse_key_text`` of a file; a file that cannot be read is a ``KeyFileError`` too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise KeyFileError([f"{path}: cannot be read ({reason})"]) from None
    return parse_key_text(text, str(path))
