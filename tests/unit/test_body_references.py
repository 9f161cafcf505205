"""What a request body references, read by the kinds table's ``references`` column (issue 21).

Each row names the body fields that reference one of its resources; the
edge reads them (``wire.named_resources``) wherever a body goes, so the call
is leased in the project that owns the resource. One case per reference of
the table, then the shapes Google's bodies give them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from services.edge import wire
from services.edge.context import EDGE
from services.edge.resources import generic, kinds

GEN, ALL = kinds.GENERATE_REFERENCES, kinds.BODY_REFERENCES
# Top-level kinds no body names (only a path does), each for a reason: a row with neither fails below.
ONLY_BY_PATH = {
    "batches": "polled and cancelled by path; a batch's files are the files' references",
    "triggers": "run by path (their executions)",
    "webhooks": "a webhook_config names URIs, not webhooks",
    "decisions": "made and answered in one call",
    "tunedModels": "called by path (tunedModels/{id}:generateContent)",
}


def _names(body: dict[str, Any], refs: wire.References = ALL) -> tuple[str, ...]:
    raw = orjson.dumps(body)
    return wire.named_resources(raw, orjson.loads(raw), refs)


def test_every_top_level_kind_says_what_references_it() -> None:
    for kind in kinds.KINDS:
        if kind.parent:
            assert not kind.references, f"{kind.route}: a child is routed by its parent"
        else:
            assert bool(kind.references) != (kind.collection in ONLY_BY_PATH), kind.collection


def _each_reference() -> list[tuple[kinds.Kind, kinds.Ref]]:
    return [(kind, ref) for kind in kinds.KINDS for ref in kind.references]


@pytest.mark.parametrize(("kind", "ref"), _each_reference(), ids=lambda item: getattr(item, "field", ""))
def test_each_reference_of_the_table_is_read(kind: kinds.Kind, ref: kinds.Ref) -> None:
    name = f"{kind.collection}/x1"
    assert _names({ref.field: name}) == (name,)
    assert _names({ref.field: [name, f"{kind.collection}/y2"]}) == (name, f"{kind.collection}/y2")
    assert _names({ref.field: "x1"}) == ((name,) if ref.bare else ())  # a bare id, where the field takes one
    assert _names({ref.field: "Not An Id!"}) == ()
    nested = {"config": {ref.field: name}}
    assert _names(nested) == (() if ref.top else (name,))
    raw = b'{"config": {"%s": "%s", "%s": "%s"}}' % (ref.field.encode(), name.encode(), ref.field.encode(), b"x1")
    if not ref.top:  # given twice: both values count (orjson keeps the last one, Google maybe the first)
        got = wire.named_resources(raw, orjson.loads(raw), ALL)
        assert set(got) == ({name, f"{kind.collection}/x1"} if ref.bare else {name})


def test_an_interaction_names_its_environment_and_credentials_wherever_google_puts_them() -> None:
    remote = {"type": "remote", "environment_id": "env-1", "env": {"TOKEN": {"credential": "cred-1"}}}
    assert _names({"model": "m", "input": "hi", "environment": remote}) == ("environments/env-1", "credentials/cred-1")
    assert _names({"agent": "a", "input": "hi", "environment": "environments/env-2"}) == (
        "agents/a",
        "environments/env-2",
    )
    computer = {"model": "m", "tools": [{"type": "computer_use", "environment": "browser"}]}
    assert _names(computer) == ()  # a tool's environment is an enum, not an environment
    assert _names({"from_environment": "env-3"}) == ("environments/env-3",)
    assert _names({"schedule": "0 * * * *", "environment_id": "env-4"}) == ("environments/env-4",)


def test_a_generate_call_reads_its_files_cache_and_stores_only() -> None:
    tools = [{"fileSearch": {"fileSearchStoreNames": ["fileSearchStores/s1", "fileSearchStores/s2"]}}]
    body = {"contents": [{"parts": [{"fileData": {"fileUri": "files/f1"}}]}], "tools": tools}
    assert _names(body, GEN) == ("files/f1", "fileSearchStores/s1", "fileSearchStores/s2")
    assert _names({"environment_id": "env-1", "agent": "a"}, GEN) == ()  # not a generate call's references
    assert not wire.may_name_resources(b'{"contents": [{"parts": [{"text": "environment_id"}]}]}', GEN)
    escaped = rb'{"tools": [{"fileSearch": {"fileSearchStoreNames": ["fileSearch\u0053tores/s1"]}}]}'
    assert wire.named_resources(escaped, orjson.loads(escaped), GEN) == ("fileSearchStores/s1",)


class _Keyring:
    def __init__(self, bound: set[str]) -> None:
        self.bound, self.asked = bound, list[list[str]]()

    async def bound_names(self, token_hash: str, names: list[str]) -> set[str]:
        self.asked.append(names)
        return self.bound & set(names)


async def test_an_agent_or_voice_is_routed_only_when_the_pool_bound_it() -> None:
    """Google's own agents (deep-research...) and voices are nobody's: a soft reference needs a binding."""
    keyring = _Keyring({"agents/helper-1"})
    request: Any = SimpleNamespace(app={EDGE: SimpleNamespace(keyring=keyring)})
    names = ("agents/helper-1", "environments/env-1", "voices/puck-like", "agents/deep-research")
    assert await generic._referenced(request, "h", names) == ("agents/helper-1", "environments/env-1")
    assert keyring.asked == [["agents/helper-1", "voices/puck-like", "agents/deep-research"]]
    assert await generic._referenced(request, "h", ("environments/env-1",)) == ("environments/env-1",)
    assert len(keyring.asked) == 1  # nothing soft: keyring not asked
