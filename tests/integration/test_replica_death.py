"""A keyring replica that dies for good, and an edge that dies, through real replicas on the session's etcd (issue 19).

- Finding 2, keyring's side of the handover contract (``protos/keyring/v1/keyring.proto``,
  ``ReleaseRequest.handover``): a release owed to a granter the edge cannot reach, handed to another
  replica, is answered "granter alive, keep it" while the granting instance is a member and "counted"
  (once) when it has left; the lease stream tells the live instances (``LeaseStreamResponse.members``)
  on its first reply and when the membership changes.
- Finding 3: a client token's budget across a replica's death: the survivor takes off what the dead instance
  published it had admitted in the window, and has the dead one's unused share as soon as its membership is gone.
- Finding 4: a killed edge's calls are counted: a lease reclaimed unreleased (its stream cut, the grace
  passed) counts as a call of unknown outcome, in the usage records and admin's GetUsage; a release that
  comes later tells the outcome without counting the call twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.keyring.domain.usage import Figures

from .conftest import Replica, StartReplica, make_pool, token_hash
from .test_keyring_service import MODEL, add_keys
from .test_lease_stream_faults import until

OK = pb.Outcome(http_status=200, input_tokens=7, output_tokens=3)


class Stream:
    """A raw lease stream to one replica, as the edge holds it: calls in, replies out, one at a time."""

    def __init__(self, replica: Replica) -> None:
        self._calls: asyncio.Queue[pb.LeaseCall] = asyncio.Queue()
        self._call = replica.lease.LeaseStream(self._requests())
        self._next_id = 0

    async def _requests(self) -> AsyncIterator[pb.LeaseStreamRequest]:
        while True:
            yield pb.LeaseStreamRequest(calls=[await self._calls.get()])

    async def ask(self, **call: object) -> pb.LeaseStreamResponse:
        """One call (``acquire=...``, ``release=...``), and the reply that answers it."""
        self._next_id += 1
        self._calls.put_nowait(pb.LeaseCall(id=self._next_id, **call))  # type: ignore[arg-type]
        reply = await self._call.read()
        assert isinstance(reply, pb.LeaseStreamResponse)
        assert [result.id for result in reply.results] == [self._next_id]
        return reply

    def cut(self) -> None:
        self._call.cancel()


async def kill(replica: Replica) -> None:
    """What a SIGKILL leaves behind, minus the wait for the membership's TTL: no last flush, no leave, no drain.

    The membership record is revoked at once (what its expiry does ``KEYRING_MEMBERSHIP_TTL_S`` later).
    """
    replica.stopped = True
    keyring = replica.keyring
    keyring.desk.accepting = False
    for task in keyring._tasks:
        task.cancel()
    await asyncio.gather(*keyring._tasks, return_exceptions=True)
    await keyring._registration.close()
    await replica.server.server.stop(0)
    if replica.server._metrics_runner is not None:
        await replica.server._metrics_runner.cleanup()
    await keyring.housekeeping.close()
    await replica.channel.close()
    await replica.admin_channel.close()
    await replica.store.close()


def counted(replica: Replica, key_id: str) -> Figures:
    """What ``replica`` has counted for ``key_id`` (flushed or not)."""
    return _counted(replica, "keys", key_id)


def counted_token(replica: Replica, token_id: str) -> Figures:
    """What ``replica`` has counted for the client token ``token_id`` (flushed or not)."""
    return _counted(replica, "tokens", token_id)


def _counted(replica: Replica, kind: str, subject: str) -> Figures:
    total = Figures()
    for bucket in replica.keyring.desk.ledger.usage.buckets.values():
        of_kind: dict[str, Figures] = getattr(bucket, kind)
        if subject in of_kind:
            total.add(of_kind[subject])
    return total


async def two_replicas(start_replica: StartReplica, **settings: object) -> tuple[Replica, Replica, str]:
    """Replicas a and b, each seeing both members and the pool's token; the token's hash."""
    a = await start_replica("replica-a", **settings)
    b = await start_replica("replica-b", **settings)
    token = await make_pool(a)
    await add_keys(a, 2)
    both = {a.keyring.instance, b.keyring.instance}
    await until(
        lambda: (
            set(a.keyring.cache.instances()) == set(b.keyring.cache.instances()) == both
            and b.keyring.desk.allocator.find_token(token) is not None
        ),
        within_s=3,
        message="replicas see each other and the token",
    )
    return a, b, token


async def test_a_handover_is_kept_for_a_live_granter_and_counted_once_when_it_has_left(
    start_replica: StartReplica,
) -> None:
    a, b, token = await two_replicas(start_replica)
    on_a = Stream(a)
    first = await on_a.ask(acquire=pb.AcquireRequest(token_hash=token, model=MODEL))
    assert set(first.members) == {a.keyring.instance, b.keyring.instance}  # the first reply names the members
    lease = first.results[0].acquire.lease
    second = await on_a.ask(acquire=pb.AcquireRequest(token_hash=token, model=MODEL))
    assert not second.members  # unchanged: not told again
    handover = pb.ReleaseRequest(lease_id=lease.lease_id, key_id=lease.key_id, model=MODEL, outcome=OK, handover=True)

    # The granter lives: b counts nothing and says so; the edge keeps owing the release to a.
    on_b = Stream(b)
    kept = await on_b.ask(release=handover)
    assert set(kept.members) == {a.keyring.instance, b.keyring.instance}
    assert kept.results[0].release.granter_alive and not kept.results[0].release.known
    assert counted(b, lease.key_id).requests == 0
    assert (await b.lease.Release(handover)).granter_alive  # the unary path answers the same

    await kill(a)  # and it never comes back: its leases, held in its memory, are lost with it
    await until(lambda: b.keyring.cache.instances() == (b.keyring.instance,), within_s=3, message="a left")
    on_a.cut()
    answered = await on_b.ask(release=handover)
    assert list(answered.members) == [b.keyring.instance]  # the membership changed: told on the next reply
    assert not answered.results[0].release.granter_alive  # counted here
    again = await on_b.ask(release=handover)  # the answer lost, handed over again: counted once
    assert not again.results[0].release.granter_alive and not again.members
    assert (await b.lease.Release(handover)).granter_alive is False
    figures = counted(b, lease.key_id)
    assert (figures.requests, figures.input_tokens, figures.output_tokens) == (1, 7, 3)
    on_b.cut()


async def test_the_calls_of_a_killed_edge_count_as_unknown_outcomes(start_replica: StartReplica) -> None:
    replica = await start_replica("replica-a", stream_lease_grace_s=0.2)
    token = await make_pool(replica)
    await add_keys(replica, 2)
    edge = Stream(replica)
    leases = [
        (await edge.ask(acquire=pb.AcquireRequest(token_hash=token, model=MODEL))).results[0].acquire.lease
        for _ in range(3)
    ]
    released = await edge.ask(
        release=pb.ReleaseRequest(lease_id=leases[0].lease_id, key_id=leases[0].key_id, model=MODEL, outcome=OK)
    )
    assert released.results[0].release.known
    edge.cut()  # SIGKILL: two calls in flight, their releases never come
    await until(lambda: len(replica.keyring.desk.book) == 0, within_s=3, message="leases not reclaimed")

    usage = await replica.admin.GetUsage(pb.GetUsageRequest(pool="main"))
    [pool] = usage.pools
    assert (pool.figures.requests, pool.figures.unknown, pool.figures.errors) == (3, 2, 0)
    assert sum(row.figures.unknown for row in usage.tokens) == 2  # the token's usage says so too

    # One edge was only cut off: its release, re-sent after the reclaim, tells the outcome; the call counts once.
    late = pb.ReleaseRequest(lease_id=leases[1].lease_id, key_id=leases[1].key_id, model=MODEL, outcome=OK)
    assert not (await replica.lease.Release(late)).known
    await replica.lease.Release(late)  # and again: nothing more
    usage = await replica.admin.GetUsage(pb.GetUsageRequest(pool="main"))
    [pool] = usage.pools
    assert (pool.figures.requests, pool.figures.unknown, pool.figures.input_tokens) == (3, 1, 14)


@pytest.mark.parametrize(
    "limit",
    [
        # a day's budget (a fixed window: not a minute's, which could end under the test)
        {"budgets": [pb.TokenBudget(requests_per_day=10)]},
        {"requests_per_minute": 10},  # the token's rate (a sliding window)
    ],
    ids=["budget", "rate"],
)
async def test_a_token_budget_holds_when_a_replica_dies_in_its_window(
    start_replica: StartReplica, limit: dict[str, object]
) -> None:
    """Ten, split over two replicas; b dies having admitted two, published with its usage flush."""
    a = await start_replica("replica-a")
    b = await start_replica("replica-b")
    await a.admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
    await add_keys(a, 2)
    created = await a.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="limited", **limit))  # type: ignore[arg-type]
    token = token_hash(created.token)
    await until(
        lambda: len(a.keyring.cache.instances()) == 2 and b.keyring.desk.allocator.find_token(token) is not None,
        within_s=3,
        message="replicas see each other and the token",
    )

    async def admitted(replica: Replica, up_to: int) -> int:
        """Acquire on ``replica`` until refused or ``up_to`` granted; how many were granted."""
        for granted in range(up_to):
            try:
                await replica.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL))
            except grpc.aio.AioRpcError as refused:
                assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, refused
                return granted
        return up_to

    assert await admitted(b, 2) == 2
    await b.keyring.housekeeping.flush_usage()  # its periodic flush: what it admitted, published
    await until(lambda: b.keyring.instance in a.keyring.cache.view.admitted, within_s=3, message="b's windows")
    assert await admitted(a, 10) == 5  # its half
    await kill(b)
    await until(lambda: a.keyring.cache.instances() == (a.keyring.instance,), within_s=3, message="b left")
    # The whole budget is a's now, less what b published: 10 - 2 - 5 = 3 more (not 5: 12 in all).
    assert await admitted(a, 10) == 3
