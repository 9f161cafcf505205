"""The edge's body pieces with no server (issue 18): the depth bound and the fields given twice of a parsed
body (``dialects.json_body``), and the body-read slots per token within a memory budget (``body_reads``)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from services.edge.body_reads import BodyReads, TooManyReads, worst_cost
from services.edge.dialects.json_body import MAX_DEPTH, RefusedBody, parse_object


def nested(depth: int) -> bytes:
    """An object whose field ``x`` holds arrays and objects ``depth`` deep in all (the top object counted)."""
    inner = depth - 1
    return (
        b'{"model": "m", "x": '
        + b'[{"a": ' * (inner // 2)
        + b"[" * (inner % 2)
        + b"1"
        + b"]" * (inner % 2)
        + b"}]" * (inner // 2)
        + b"}"
    )


def test_depth_up_to_the_bound_is_parsed_and_deeper_is_refused() -> None:
    assert orjson.loads(nested(MAX_DEPTH)) == parse_object(nested(MAX_DEPTH))
    for depth in (MAX_DEPTH + 1, 600, 1024, 5000):
        with pytest.raises(RefusedBody, match=f"deeper than {MAX_DEPTH}"):
            parse_object(nested(depth))
    with pytest.raises(RefusedBody, match="deeper"):
        parse_object(b"[" * 600 + b"]" * 600)


def test_invalid_json_and_non_objects_are_refused_with_the_place_in_the_body() -> None:
    many_brackets = b'{"x": [' + b"[]," * 200 + b"nope]}"  # over MAX_DEPTH brackets: parsed inside the padding
    with pytest.raises(RefusedBody, match=r"not valid JSON: .*character 607"):
        parse_object(many_brackets)
    with pytest.raises(RefusedBody, match="not valid JSON"):
        parse_object(b'{"model": ')
    with pytest.raises(RefusedBody, match="must be a JSON object"):
        parse_object(b"[1, 2]")
    deep_but_fine = b'{"x": [' + b"[]," * 200 + b"1]}"
    assert parse_object(deep_but_fine)["x"] == [[]] * 200 + [1]


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "a", "messages": [], "model": "b"}',
        b'{"model": "a", "messages": [], "mod\\u0065l": "b"}',  # Google decodes the escape: the same field
        b'{"stream": false, "model": "a", "stream": true}',
        b'{"contents": [], "x": "\\u00e9", "contents": [{"parts": [{"text": "hi"}]}]}',
    ],
    ids=["plain", "escaped", "stream", "contents-with-an-escape-elsewhere"],
)
def test_a_decided_field_given_twice_is_refused(body: bytes) -> None:
    with pytest.raises(RefusedBody, match="more than once"):
        parse_object(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "a", "messages": [{"role": "model", "content": "model"}]}',  # the word as values
        b'{"model": "a", "tools": [{"model": "x"}, {"model": "y"}], "x": "\\u00e9"}',  # nested: not the top level
        b'{"other": 1, "other": 2, "model": "a"}',  # a field the edge does not read
        b'{"model": "a", "big": 123456789012345678901234567890123456789012345678901234567890}',
    ],
    ids=["values", "nested-with-an-escape", "undecided-field", "big-number"],
)
def test_a_decided_field_given_once_is_read(body: bytes) -> None:
    assert parse_object(body)["model"] == "a"


def test_worst_cost_follows_the_readme_arithmetic() -> None:
    assert worst_cost(0, 200_000) == 0
    assert worst_cost(1000, 200_000) == 3000 + 36_000
    assert worst_cost(20 * 2**20, 200_000) == 3 * 20 * 2**20 + 72 * 200_000


async def test_a_token_holds_at_most_its_reads_and_another_token_still_reads() -> None:
    reads = BodyReads(budget=1000, per_token=2)
    async with reads.reading("a", 100), reads.reading("a", 100):
        with pytest.raises(TooManyReads):
            async with reads.reading("a", 1):
                pass
        async with reads.reading("b", 100):
            assert reads.reading_for("a") == 2 and reads.free == 700
    assert reads.reading_for("a") == 0 and reads.free == 1000


async def test_a_read_waits_for_room_first_come_first_served_and_a_timeout_frees_its_place() -> None:
    reads = BodyReads(budget=1000, per_token=5)
    order: list[str] = []

    async def read(token: str, cost: int, hold: asyncio.Event) -> None:
        async with reads.reading(token, cost):
            order.append(token)
            await hold.wait()

    first, later = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(read("a", 900, first))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):  # no room: the wait ends at its deadline, holding nothing
        async with asyncio.timeout(0.05):
            await read("c", 500, later)
    big = asyncio.create_task(read("b", 500, later))
    small = asyncio.create_task(read("d", 50, later))  # would fit, but waits behind the earlier read
    await asyncio.sleep(0)
    assert order == ["a"] and reads.free == 100
    first.set()
    await holder
    later.set()
    await asyncio.gather(big, small)
    assert order == ["a", "b", "d"] and reads.free == 1000


async def test_one_read_larger_than_the_budget_still_fits_alone() -> None:
    reads = BodyReads(budget=100, per_token=1)
    async with reads.reading("a", 10_000):
        assert reads.free == 0
    assert reads.free == 100
