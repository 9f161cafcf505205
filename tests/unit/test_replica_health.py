"""A keyring replica's health as the edge sees it (``services/edge/keyring/health.py``), on a fake clock."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from prometheus_client import generate_latest

from services.edge.keyring.asking import HEDGE_BURST, HEDGE_RATIO, Asker
from services.edge.keyring.handover import granting_instance
from services.edge.keyring.health import ReplicaHealth, State
from services.edge.keyring.replicas import ReplicaSet
from services.edge.observability import EdgeMetrics


def test_the_hedge_delay_follows_the_recent_latency_within_its_bounds() -> None:
    health = ReplicaHealth(min_hedge_s=0.05, max_hedge_s=0.25)
    assert health.hedge_delay_s == 0.05
    for _ in range(50):
        health.answered(0.002, now=1.0)
    assert health.hedge_delay_s == 0.05  # fast answers: the floor
    for _ in range(50):
        health.answered(0.04, now=2.0)
    assert 0.1 < health.hedge_delay_s <= 0.25  # a slower replica: a longer delay, capped
    health.answered(20.0, now=3.0)  # a freeze's late answer teaches nothing
    assert health.hedge_delay_s <= 0.25


def test_an_overdue_replica_is_slow_asked_last_then_probed_once_per_growing_backoff() -> None:
    health = ReplicaHealth(min_backoff_s=0.5, max_backoff_s=2.0)
    assert health.overdue(now=10.0) is State.SLOW
    assert health.overdue(now=10.01) is None  # other calls left over: the same spell, no second change
    assert not health.claim(now=10.4)  # asked last during its backoff
    assert health.claim(now=10.5) and not health.claim(now=10.6)  # one probe, the others wait for it
    health.overdue(now=10.6)  # the probe went unanswered: a longer backoff
    assert not health.claim(now=11.5) and health.claim(now=11.6)
    health.overdue(now=11.7)
    health.overdue(now=11.8)  # leftovers do not grow it again
    assert not health.claim(now=13.6) and health.claim(now=13.7)  # capped at 2 s
    assert health.answered(0.3, now=14.0) is State.HEALTHY  # it answers again
    assert health.claim(now=14.0) and health.retry_at == 0.0


def test_a_down_replica_reconnects_only_when_its_backoff_allows_up_to_the_cap() -> None:
    health = ReplicaHealth(min_backoff_s=0.5, max_backoff_s=4.0)
    assert health.broke(now=0.0) is State.DOWN
    assert not health.probing and not health.claim(now=0.4)
    attempts = []
    for step in range(1, 300):
        now = step / 10
        if health.claim(now):
            attempts.append(round(now, 1))
            assert health.broke(now) is None  # the reconnect failed: still down, nothing new to say
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(attempts)]
    assert attempts[0] == 0.5 and gaps[:3] == [1.0, 2.0, 4.0] and set(gaps[3:]) == {4.0}
    assert health.answered(0.01, now=30.0) is State.HEALTHY


def test_a_lease_id_names_its_granting_instance() -> None:
    assert granting_instance("replica-a.1f2e.17.1796543555251.774a7622") == "replica-a.1f2e"


def test_the_replica_metrics_are_read_when_scraped() -> None:
    states = {"10.0.0.1:50051": int(State.HEALTHY), "10.0.0.2:50051": int(State.SLOW)}
    metrics = EdgeMetrics()
    metrics.watch_replicas(lambda: states, lambda: 3)
    states["10.0.0.3:50051"] = int(State.DOWN)  # read at scrape time, not when watched
    text = generate_latest(metrics.registry).decode()
    assert 'edge_keyring_replica_state{replica="10.0.0.2:50051"} 1.0' in text
    assert 'edge_keyring_replica_state{replica="10.0.0.3:50051"} 2.0' in text
    assert "edge_keyring_hedged_calls_total 3.0" in text


def test_hedges_away_from_a_replica_still_answering_are_budgeted_and_a_slow_ones_are_not() -> None:
    asker = Asker(replicas=SimpleNamespace(), timeout_s=5.0)  # type: ignore[arg-type]  # only its budget is asked
    answering, slow = SimpleNamespace(usable=True), SimpleNamespace(usable=False)
    assert sum(asker._may_hedge([answering]) for _ in range(100)) == HEDGE_BURST  # a burst, then none
    assert all(asker._may_hedge([slow, answering]) for _ in range(100))  # calls on a slow replica always move
    asker._hedge_budget += 10 * HEDGE_RATIO  # what ten calls earn (``ask``)
    assert asker._may_hedge([answering]) and not asker._may_hedge([answering])


def test_with_one_replica_down_the_survivors_come_first_equally_often() -> None:
    """Issue 19's budget finding: a down replica moved after the turn gave one survivor two calls in three."""
    a, b, c = (SimpleNamespace(address=name, health=ReplicaHealth()) for name in "abc")
    c.health.broke(now=100.0)  # down, its backoff not passed
    turns = itertools.count()
    firsts = [ReplicaSet._turned([a, b, c], turns, None, 100.1)[0].address for _ in range(300)]
    assert firsts.count("a") == firsts.count("b") == 150
    assert [r.address for r in ReplicaSet._turned([a, b, c], turns, None, 100.1)][-1] == "c"  # asked last
    # A release asks its granter first and takes no turn: acquires still alternate between a and b.
    walk = [ReplicaSet._turned([a, b], turns, first, 100.1)[0].address for first in [None, "b", None, "a", None]]
    assert walk == ["b", "b", "a", "a", "b"]
