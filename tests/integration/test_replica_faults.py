"""The edge's keyring client when a replica is frozen or gone for good (issue 19, findings 1 and 2), through real
replicas on the session's etcd over mutual TLS.

- Finding 1: a replica that stops answering without closing (frozen: the proxy in front of it relays nothing)
  is routed around within its hedge delay: acquires go to the healthy replica, none waits anywhere near the
  timeout, the replica is marked slow once (metric state and one log line), a grant it makes late is released
  at once, and it is healthy again when it answers.
- Finding 2: releases owed to a replica killed for good at a static address are handed over to a live replica
  once its membership is gone, counted there exactly once; nothing stays owed, and the edge says the replica
  is down once, not once per reconnect attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.errors import NoKeyFree
from services.edge.keyring import HeldLease, KeyringClient, LeaseRequest, replicas
from tests.pki import session_pki

from .conftest import StartReplica, make_pool, token_hash
from .test_keyring_service import MODEL, add_keys
from .test_lease_stream_faults import TcpProxy, _JsonLines, held, until
from .test_replica_death import counted, counted_token, kill, two_replicas

OK = pb.Outcome(http_status=200, input_tokens=7, output_tokens=3)
SLOW, DOWN = 1, 2


def lines_naming(caplog: pytest.LogCaptureFixture, address: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level and address in r.getMessage()]


async def test_a_frozen_replica_is_routed_around_within_its_hedge_delay(
    start_replica: StartReplica, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, token = await two_replicas(start_replica)
    proxy = TcpProxy(a.server.port)
    await proxy.start()
    client = KeyringClient([proxy.address, b.address], timeout_s=3, tls=session_pki().edge.files)
    caplog.set_level(logging.INFO, logger="services.edge")
    wanted = LeaseRequest(token_hash=token, model=MODEL)

    async def worker(latencies: list[float], rounds: int) -> None:
        for _ in range(rounds):
            started = time.monotonic()
            lease = await client.acquire(wanted)
            latencies.append(time.monotonic() - started)
            lease.release(OK, confirm=False)

    try:
        await worker([], 6)  # both streams open, both replicas answering
        proxy.freeze()
        latencies: list[float] = []
        lines = _JsonLines()
        logging.getLogger("services.edge").addHandler(lines)
        try:
            with TracerProvider(sampler=ALWAYS_ON).get_tracer("test").start_as_current_span("client requests"):
                await asyncio.gather(*(worker(latencies, 10) for _ in range(8)))
        finally:
            logging.getLogger("services.edge").removeHandler(lines)
        # Those that asked a first waited its hedge delay (50-250 ms), then b answered; none queued behind a.
        assert max(latencies) < 0.4, sorted(latencies)[-5:]
        slow = [line for line in lines.lines if "slow" in str(line["message"])]
        assert len(slow) == 1 and "trace_id" not in slow[0], slow  # the replica's news, in no request's trace
        assert client.replica_states() == {proxy.address: SLOW, b.address: 0}
        assert client.hedged >= 1
        assert len([line for line in lines_naming(caplog, proxy.address) if "slow" in line]) == 1
        await until(lambda: held(b) == 0, within_s=2, message="b's grants not released")

        late_grants: list[str] = []
        observer = a.keyring.desk.observer
        granted = observer.lease_granted
        monkeypatch.setattr(observer, "lease_granted", lambda pool: (late_grants.append(pool), granted(pool))[1])
        proxy.thaw()  # a answers what it was sent: its grants came too late and are released, as cancelled
        await until(lambda: client.replica_states()[proxy.address] == 0, within_s=3, message="a not healthy again")
        await until(lambda: bool(late_grants) and held(a) == 0, within_s=3, message="a late grant was kept (leaked)")
        assert len([line for line in lines_naming(caplog, proxy.address, logging.INFO) if "again" in line]) == 1
    finally:
        await client.close()
        with contextlib.suppress(AssertionError):
            await proxy.cut()


async def test_a_grant_whose_caller_left_is_released_when_it_comes(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client went away while its acquire waited on a frozen replica: the grant that comes later is not kept."""
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    proxy = TcpProxy(replica.server.port)
    await proxy.start()
    client = KeyringClient([proxy.address], tls=session_pki().edge.files)
    try:
        (await client.acquire(LeaseRequest(token_hash=token, model=MODEL))).release(OK, confirm=False)
        await until(lambda: held(replica) == 0, within_s=2, message="the first lease not released")
        proxy.freeze()
        waiting = asyncio.create_task(client.acquire(LeaseRequest(token_hash=token, model=MODEL)))
        await asyncio.sleep(0.1)
        waiting.cancel()  # the client hung up
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        grants: list[str] = []
        observer = replica.keyring.desk.observer
        granted = observer.lease_granted
        monkeypatch.setattr(observer, "lease_granted", lambda pool: (grants.append(pool), granted(pool))[1])
        proxy.thaw()  # the replica grants it now, to nobody
        await until(lambda: bool(grants), within_s=3, message="the acquire never reached the replica")
        await until(lambda: held(replica) == 0, within_s=3, message="a grant nobody waited for was kept")
    finally:
        await client.close()
        with contextlib.suppress(AssertionError):
            await proxy.cut()


@pytest.mark.parametrize("addressing", ["static", "dns"])
async def test_releases_owed_to_a_replica_gone_for_good_are_handed_over_and_counted_once(
    start_replica: StartReplica, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, addressing: str
) -> None:
    """Static: a's address stays configured, dead. DNS (a headless Service): a's record goes with it.

    Handover rounds every 0.3 s for a replica down 0.3 s (1 s and 1 s by default): the same rounds, sooner; a's
    reconnect attempts 0.5 s apart at most, so the wait below still sees two or more."""
    monkeypatch.setattr(replicas, "HANDOVER_EVERY_S", 0.3)
    sooner = {"handover_after_s": 0.3, "max_reconnect_backoff_s": 0.5}
    a, b, token = await two_replicas(start_replica)
    targets = [a.address, b.address]

    async def resolver(address: str) -> list[str]:
        return list(targets)

    if addressing == "static":
        client = KeyringClient(targets, tls=session_pki().edge.files, **sooner)
    else:  # a replica no longer named is retired after twice the timeout
        client = KeyringClient(["keyring:50051"], 0.5, 0.05, resolver, tls=session_pki().edge.files, **sooner)
    caplog.set_level(logging.INFO, logger="services.edge")
    try:
        leases: list[HeldLease] = [await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) for _ in range(6)]
        on_a = [lease for lease in leases if lease.replica == a.address]
        assert on_a and len(on_a) < len(leases)
        await kill(a)  # SIGKILL, never restarted; its membership gone with it
        if addressing == "dns":
            targets.remove(a.address)
        for lease in leases:
            lease.release(OK, confirm=False)  # the calls were made: each must be counted once, somewhere
        await until(lambda: held(b) == 0, within_s=3, message="b's own leases not released")

        def calls_counted() -> dict[str, int]:
            return {key_id: counted(b, key_id).requests for key_id in {lease.lease.key_id for lease in leases}}

        calls = {key_id: sum(lease.lease.key_id == key_id for lease in leases) for key_id in calls_counted()}
        # What a was owed (its leases' releases) is handed over to b once a has left the membership.
        await until(lambda: calls_counted() == calls, within_s=5, message="a's calls not counted")
        assert client.owed_releases() == 0
        await asyncio.sleep(1.1)  # another handover round and a reconnect attempt or two: nothing counted twice
        assert client.owed_releases() == 0
        assert calls_counted() == calls
        # For the client token too: each lease names it with a tag only a replica can make (Lease.token_tag).
        token_id = leases[0].lease.token_id
        assert token_id and {lease.lease.token_id for lease in leases} == {token_id}
        assert counted_token(b, token_id).requests == len(leases)
        assert sum(counted(b, key_id).input_tokens for key_id in calls) == 7 * len(leases)
        # The replica's death said once (down), not once per reconnect attempt.
        assert len(lines_naming(caplog, a.address)) == 1, lines_naming(caplog, a.address)
        assert client.replica_states().get(a.address, DOWN) == DOWN
    finally:
        await client.close()


async def test_an_acquire_refused_for_a_replicas_spent_share_of_a_token_rate_asks_another(
    start_replica: StartReplica,
) -> None:
    """A token's rate is split over the live replicas: a's share spent, the edge asks b before answering 429."""
    a, b, _ = await two_replicas(start_replica)
    created = await a.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="rate", requests_per_minute=4))
    token = token_hash(created.token)
    await until(lambda: b.keyring.desk.allocator.find_token(token) is not None, within_s=3, message="b's token")
    for _ in range(2):  # a's share (2 of 4), spent by another edge
        await a.lease.Acquire(pb.AcquireRequest(token_hash=token, model=MODEL))
    client = KeyringClient([a.address, b.address], tls=session_pki().edge.files)
    try:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        granted = [await client.acquire(wanted) for _ in range(2)]  # a asked first in one of the two turns
        assert [lease.replica for lease in granted] == [b.address, b.address]
        with pytest.raises(NoKeyFree):  # both shares spent: the client's 429, after each replica was asked once
            await client.acquire(wanted)
    finally:
        await client.close()


async def test_a_down_replica_owed_nothing_is_reconnected_in_the_background_and_used_again(
    start_replica: StartReplica, caplog: pytest.LogCaptureFixture
) -> None:
    """No call asks a down replica and nothing is owed to it: the edge still goes back once it answers."""
    a, b, token = await two_replicas(start_replica)
    proxy = TcpProxy(a.server.port)
    await proxy.start()
    client = KeyringClient(
        [proxy.address, b.address], timeout_s=1, tls=session_pki().edge.files, max_reconnect_backoff_s=0.5
    )
    caplog.set_level(logging.INFO, logger="services.edge")
    try:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        for _ in range(2):  # both streams open
            assert await (await client.acquire(wanted)).release(OK)
        for replica in (a, b):  # the releases' usage written: nothing kept to re-send when a stream breaks
            await replica.keyring.housekeeping.flush_usage()
        held_on: list[HeldLease] = []
        deadline = time.monotonic() + 3
        while client.unconfirmed_releases() and time.monotonic() < deadline:  # replies say what is durable
            held_on.append(await client.acquire(wanted))
        assert client.unconfirmed_releases() == 0
        stream = client.replicas.by_target[proxy.address]
        await proxy.cut()
        await until(lambda: client.replica_states()[proxy.address] == DOWN, within_s=3, message="a not down")
        await until(lambda: stream.opened >= 3, within_s=3, message="no reconnect attempt without a call")
        assert client.owed_releases() == 0
        await proxy.start()  # back on the same port; still no call, nothing owed
        await until(lambda: client.replica_states()[proxy.address] == 0, within_s=3, message="a never used again")
        granted = [await client.acquire(wanted) for _ in range(2)]
        assert {lease.replica for lease in granted} == {proxy.address, b.address}
        for lease in [*granted, *held_on]:
            lease.release(OK, confirm=False)
        # One line per change of state (down, answers again), not one per reconnect attempt.
        assert len(lines_naming(caplog, proxy.address, logging.INFO)) == 2, lines_naming(caplog, proxy.address)
    finally:
        await client.close()
        with contextlib.suppress(AssertionError):
            await proxy.cut()
