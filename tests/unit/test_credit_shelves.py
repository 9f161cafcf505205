"""The edge's credit shelves (``edge/keyring/credits.py``, issue 23): a shelf holds what its calls can use
before a credit's idle time is over, so a token that calls a model now and then asks for none (each would go
back unused: a grant and a refund for nothing), and a busy one ramps up to ``per_shelf`` within a few calls."""

from __future__ import annotations

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.keyring import credits as credits_module
from services.edge.keyring.credits import Credit, Credits, Shelf

SHELF: Shelf = ("token-hash", "gemini-3.5-flash", "")
IDLE_S = 0.25


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(credits: Credits, clock: Clock) -> tuple[bool, int]:
    """One plain call: it takes a credit if the shelf has one, then the shelf asks what it lacks (all granted).
    (Whether it found a credit, how many were asked behind it.)"""
    took = credits.take(SHELF, 0, ()) is not None
    asked = credits.wanted(SHELF)
    if asked:
        credits.answered(SHELF, asked, granted(asked, clock))
    return took, asked


def granted(count: int, clock: Clock) -> list[Credit]:
    return [
        Credit(pb.Lease(lease_id=f"l{index}", key_id="k"), (), "r", "m", "", 0, clock.now + IDLE_S)
        for index in range(count)
    ]


def test_a_shelf_called_less_often_than_its_idle_time_asks_for_none() -> None:
    clock = Clock()
    credits = Credits(16, IDLE_S, clock)
    for _ in range(5):
        assert call(credits, clock) == (False, 0)
        clock.now += IDLE_S * 1.5  # the next call comes after any credit would have gone back unused


def test_a_busy_shelf_ramps_up_to_its_size_and_a_quiet_one_back_to_none() -> None:
    clock = Clock()
    credits = Credits(16, IDLE_S, clock)
    calls = []
    for _ in range(12):  # twelve calls 10 ms apart
        calls.append(call(credits, clock))
        clock.now += 0.01
    # Twice the other calls of the idle time, asked when half or more is missing: 0, 2, 4 (one held), 6 (three)...
    assert calls[:4] == [(False, 0), (False, 2), (True, 3), (True, 3)]
    assert all(took for took, _ in calls[2:])  # from the third call on, each finds a credit
    assert 8 <= len(credits) <= 16  # ramped up to its size, refilled when half is gone
    held = len(credits)
    clock.now += IDLE_S * 3  # quiet for longer than the idle time: its credits go back, its calls are forgotten
    assert len(credits.expired()) == held and len(credits) == 0
    assert call(credits, clock) == (False, 0)


def test_the_calls_of_the_idle_time_before_keep_a_steady_shelf_asking() -> None:
    clock = Clock()
    credits = Credits(8, IDLE_S, clock)
    for _ in range(10):  # a steady 40 calls a second: ten an idle time
        call(credits, clock)
        clock.now += IDLE_S / 10
    credits.expired()
    for credit in credits.all():  # the shelf emptied (say, its key cooled)
        assert credit.model == "m"
    clock.now += 0.001  # a new idle time begins: its first call asks from the calls of the one before
    assert call(credits, clock) == (False, 8)


def test_the_shelves_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credits_module, "MAX_DEMANDS", 3)
    clock = Clock()
    credits = Credits(4, IDLE_S, clock)
    for index in range(10):
        credits.wanted(("token", f"model-{index}", ""))
        clock.now += IDLE_S  # each shelf called once, an idle time after the one before
    assert len(credits._calls) <= 3


def ramped(clock: Clock) -> Credits:
    """A shelf of 8 called every 10 ms until its next call asks for credits; nothing answered yet."""
    credits = Credits(8, IDLE_S, clock)
    for _ in range(10):
        clock.now += 0.01
        if credits.wanted(SHELF):
            return credits
    raise AssertionError("the shelf never asked")


def test_a_refill_asks_its_credits_as_one_count_and_its_answer_settles_it() -> None:
    clock = Clock()
    credits = ramped(clock)
    asked = credits.asking
    assert asked >= 2  # one call of the refill asks them all (``AcquireRequest.credits``)
    credits.answered(SHELF, asked, granted(asked, clock))
    assert (credits.asking, len(credits)) == (0, asked)


def test_fewer_credits_than_asked_are_shelved_and_the_shelf_is_asked_again() -> None:
    """An older keyring grants one whatever the count; a pool near its limits grants a few: neither is a refusal."""
    clock = Clock()
    credits = ramped(clock)
    asked = credits.asking
    credits.answered(SHELF, asked, granted(1, clock))
    assert (credits.asking, len(credits)) == (0, 1)
    for _ in range(3):  # the next calls take the one credit and find the shelf wanting more: asked again
        credits.take(SHELF, 0, ())
        clock.now += 0.01
        if credits.wanted(SHELF):
            break
    else:
        raise AssertionError("a shelf granted fewer than it asked was held back like a refused one")


def test_a_refused_refill_holds_the_shelf_back_for_a_while() -> None:
    clock = Clock()
    credits = ramped(clock)
    credits.answered(SHELF, credits.asking, [])
    assert (credits.asking, len(credits)) == (0, 0)
    for _ in range(20):  # called on, every 10 ms: not asked again within the back-off
        clock.now += 0.01
        assert credits.wanted(SHELF) == 0
    clock.now += credits_module.REFUSED_BACKOFF_S
    assert any(credits.wanted(SHELF) for _ in range(3))  # past it, the busy shelf asks again
