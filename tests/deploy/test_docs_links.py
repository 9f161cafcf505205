"""Every relative link of the docs (README.md, SECURITY.md, docs/*.md) reaches a file that exists and, for a
``#anchor``, a heading of that file, as GitHub names its anchors. Links inside code blocks are not links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs import DOCS, ROOT

DOC_FILES = sorted([ROOT / "README.md", ROOT / "SECURITY.md", *DOCS.glob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    kept, fence = [], False
    for line in text.split("\n"):
        if line.startswith("```"):
            fence = not fence
        elif not fence:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but - and _ dropped, spaces as dashes."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file (a repeated one gets -1, -2..., as on GitHub)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose(path.read_text()).split("\n"):
        if heading := re.match(r"^#{1,6} (.*)$", line):
            name = anchor(heading.group(1))
            count = seen.get(name, 0)
            seen[name] = count + 1
            found.add(name if count == 0 else f"{name}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    links = [a or b for a, b in LINK.findall(prose(path.read_text()))]
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]


def test_the_docs_are_there() -> None:
    names = {path.name for path in DOCS.glob("*.md")}
    assert {"README.md", "operator-guide.md", "configuration.md", "api.md", "deployment.md", "security.md"} <= names
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300, "README.md: a newcomer's five minutes"
    contents = {link.partition("#")[0] for link in relative_links(DOCS / "README.md")}
    assert names - {"README.md"} <= contents, "docs/README.md (the table of contents) links every guide"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for link in relative_links(path):
        target, _, fragment = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{link}: no heading with anchor #{fragment} in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_github_anchors() -> None:
    assert anchor("Kubernetes (Helm)") == "kubernetes-helm"
    assert anchor("Other languages: the proto and grpcurl") == "other-languages-the-proto-and-grpcurl"
    assert anchor("Operating it with `keyringctl`") == "operating-it-with-keyringctl"
    assert anchor("Files, caches, batches, operations and interactions") == (
        "files-caches-batches-operations-and-interactions"
    )
