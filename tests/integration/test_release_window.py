"""A finished request's release shares the next call's message (``EDGE_KEYRING_RELEASE_WINDOW_S``, issue 23).

Through a real replica on a real etcd over mutual TLS: a routine release waits at most its window for the next
call to the same replica and goes out in that call's message (one gRPC message each way per request instead of
two) while other leases are held (more calls are coming); with no call after it, it goes alone when the window
ends; the last lease held is released at once (an idle edge's next acquire does not carry it on its own
path); a stream that breaks inside the window loses nothing (the release is kept and re-sent on the next
stream, as any release sent and not answered).
"""

from __future__ import annotations

import contextlib

import pytest

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.keyring import KeyringClient, LeaseRequest
from tests.pki import session_pki

from .conftest import StartReplica, make_pool, record_lease_messages
from .test_keyring_service import MODEL, add_keys
from .test_lease_stream_faults import TcpProxy, held, until

OK = pb.Outcome(http_status=200)


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The kinds of call ("acquire", "release"...) of every message the edge's lease streams send."""
    return record_lease_messages(monkeypatch)


async def test_a_release_rides_with_the_next_call_while_others_are_held_and_the_last_goes_at_once(
    start_replica: StartReplica, batch_sizes: list[list[str]]
) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 3)
    client = KeyringClient([replica.address], tls=session_pki().edge.files, release_window_s=5.0)
    try:
        first, second = [await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) for _ in range(2)]
        assert first.release(OK, confirm=False) is None  # a finished request, another still held: it waits
        third = await client.acquire(LeaseRequest(token_hash=token, model=MODEL))
        assert ["release", "acquire"] in batch_sizes, batch_sizes  # one message carried both
        await until(lambda: held(replica) == 2, within_s=2, message="the first lease not released")

        assert second.release(OK, confirm=False) is None  # the third still held: waits for a companion
        sent_before = len(batch_sizes)
        assert third.release(OK, confirm=False) is None  # the last one held: goes at once, taking the second
        # Well inside the 5 s window: neither waited for it.
        await until(lambda: held(replica) == 0, within_s=2.5, message="the last release waited")
        assert batch_sizes[sent_before:] == [["release", "release"]]
        assert client.owed_releases() == 0
    finally:
        await client.close()


async def test_a_release_with_no_call_after_it_goes_alone_at_its_window_end(
    start_replica: StartReplica, batch_sizes: list[list[str]]
) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    client = KeyringClient([replica.address], tls=session_pki().edge.files, release_window_s=0.3)
    try:
        first, second = [await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) for _ in range(2)]
        sent_before = len(batch_sizes)
        assert first.release(OK, confirm=False) is None  # the second still held: it waits, then goes alone
        await until(lambda: held(replica) == 1, within_s=3, message="a lone release not sent at its window's end")
        assert batch_sizes[sent_before:] == [["release"]]
        assert await second.release(OK)  # confirmed: sent at once, and answered
        assert held(replica) == 0
    finally:
        await client.close()


async def test_a_release_waiting_in_its_window_when_the_stream_breaks_is_kept_and_re_sent(
    start_replica: StartReplica,
) -> None:
    replica = await start_replica("replica-a", stream_lease_grace_s=120)  # slots return by release, not reclaim
    token = await make_pool(replica)
    await add_keys(replica, 2)
    proxy = TcpProxy(replica.server.port)
    await proxy.start()
    client = KeyringClient([proxy.address], timeout_s=1, tls=session_pki().edge.files, release_window_s=30)
    try:
        lease, other = [await client.acquire(LeaseRequest(token_hash=token, model=MODEL)) for _ in range(2)]
        assert lease.release(OK, confirm=False) is None  # held back (another lease held): its window is long
        assert held(replica) == 2
        await proxy.cut()
        await until(lambda: client.owed_releases() == 1, within_s=5, message="the held-back release not kept")
        await proxy.start()  # back on the same port
        await until(lambda: held(replica) == 1, within_s=8, message="the kept release not re-sent")
        assert client.owed_releases() == 0
        assert other.lease.lease_id
    finally:
        await client.close()
        with contextlib.suppress(AssertionError):
            await proxy.cut()
