"""Credits (``EDGE_KEYRING_CREDITS``, issue 23): leases asked ahead of need, through a real replica over mutual TLS.

A plain call takes a credit the shelf holds (no acquire of its own); the shelf is refilled behind it, all the
credits it lacks asked in one call, to twice its calls of the last idle time (a shelf called once asks for none);
fewer granted than asked are shelved and hold nothing back; a credit
unused for its idle time goes back and keyring refunds its grant (the keys' minutes are whole again); a release
whose outcome is news gives back the credits of that key at once, and keyring revokes another edge's; a call
naming resources never takes one; a token with a rate limit gets none, and its shelf is not asked again at
every call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from services.common.naming import token_hash
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.edge.errors import NoKeyFree, TokenRejected
from services.edge.keyring import KeyringClient, LeaseRequest
from tests.pki import session_pki

from .conftest import Replica, StartReplica, make_pool, record_lease_messages
from .test_keyring_service import MODEL, add_keys
from .test_lease_stream_faults import held, until

OK = pb.Outcome(http_status=200)
QUOTA = pb.Outcome(http_status=429, error_status="RESOURCE_EXHAUSTED", retry_delay_ms=30_000)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each message the edge's lease streams send, as its calls' kinds ("acquire", "credit", "release"...)."""
    return record_lease_messages(monkeypatch)


def calls(sent: list[list[str]], kind: str) -> int:
    return sum(message.count(kind) for message in sent)


def shelved(client: KeyringClient) -> int:
    assert client.credits is not None
    return len(client.credits)


def asking(client: KeyringClient) -> int:
    assert client.credits is not None
    return client.credits.asking


async def stocked(client: KeyringClient, wanted: LeaseRequest) -> None:
    """Plain calls, each released as a success, until the shelf holds its four credits (it fills as it is called:
    none after one call, two after the second, four after the third)."""
    await stocked_to(client, wanted, 4)


async def stocked_to(client: KeyringClient, wanted: LeaseRequest, credits: int) -> None:
    """Plain calls, each released as a success, until the shelf holds ``credits``."""
    for _ in range(credits):
        (await client.acquire(wanted)).release(OK, confirm=False)
        await until(lambda: asking(client) == 0, within_s=2, message="credits asked and never answered")
        if shelved(client) == credits:
            return
    raise AssertionError(f"the shelf holds {shelved(client)} credits after {credits} calls")


@contextlib.asynccontextmanager
async def credit_client(
    replica: Replica, idle_s: float, credits: int = 4, **settings: Any
) -> AsyncIterator[KeyringClient]:
    """An edge's keyring client keeping ``credits`` a shelf; closed after, and then no lease is left held."""
    client = KeyringClient(
        [replica.address], tls=session_pki().edge.files, credits=credits, credit_idle_s=idle_s, **settings
    )
    try:
        yield client
    finally:
        await client.close()
    await until(lambda: held(replica) == 0, within_s=2, message="credits not given back at close")


async def rated_token(replica: Replica, requests_per_minute: int) -> str:
    created = await replica.admin.CreateToken(
        pb.CreateTokenRequest(pool="main", name="rated", requests_per_minute=requests_per_minute)
    )
    return token_hash(created.token)


async def test_plain_calls_take_credits_and_unused_ones_go_back_refunded(
    start_replica: StartReplica, sent: list[list[str]]
) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica, policy=pb.Policy(requests_per_minute=4))  # per key: 12 calls a minute
    await add_keys(replica, 3)
    async with credit_client(replica, idle_s=0.5) as client:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        first = await client.acquire(wanted)  # leased for itself: a shelf called once asks for no credit
        await until(lambda: asking(client) == 0, within_s=2, message="credits asked")
        assert (calls(sent, "acquire"), calls(sent, "credit"), held(replica)) == (1, 0, 1)
        second = await client.acquire(wanted)  # called again within the idle time: two credits behind it
        await until(lambda: shelved(client) == 2, within_s=2, message="the shelf not filled")
        assert calls(sent, "acquire") == 2 and calls(sent, "credit") == 1  # asked together, in one call
        assert held(replica) == 4

        third = await client.acquire(wanted)  # from the shelf: no acquire of its own
        assert calls(sent, "acquire") == 2
        # The shelf now wants four: the three asked behind it (one call) got the minute's fifth and sixth places
        # (the keys' first halves: a credit never takes the last half of a key's minute), and no third.
        await until(lambda: asking(client) == 0, within_s=2, message="the refill not answered")
        assert calls(sent, "credit") == 2 and (shelved(client), held(replica)) == (3, 6)
        for lease in (first, second, third):
            lease.release(OK, confirm=False)
        # The three left go back unused.
        await until(lambda: held(replica) == 0, within_s=3, message="unused credits not given back")
        assert shelved(client) == 0

        # Refunded: the keys' minutes hold the three calls made, so nine more calls get a lease, and the
        # thirteenth of the minute is refused as the keys' cap says (a credit the shelf asks meanwhile is one of
        # the twelve places, taken by the next of these calls).
        more = [await client.acquire(wanted) for _ in range(9)]
        with pytest.raises(NoKeyFree):
            await client.acquire(wanted)
        for lease in more:
            lease.release(OK, confirm=False)


async def test_a_refill_is_one_call_and_fewer_granted_than_asked_hold_nothing_back(
    start_replica: StartReplica, sent: list[list[str]]
) -> None:
    """One key, 16 calls a minute: credits may fill its first 8 places. Each refill asks what the shelf lacks in
    one call; the one that finds only one place left shelves it and the next call still asks (before: one call a
    credit, and the first refusal held the shelf back), the one that finds none holds it back."""
    replica = await start_replica("replica-a")
    token = await make_pool(replica, policy=pb.Policy(requests_per_minute=16))
    await add_keys(replica, 1)
    async with credit_client(replica, idle_s=30, credits=8) as client:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        seen = []
        for _ in range(6):
            (await client.acquire(wanted)).release(OK, confirm=False)
            await until(lambda: asking(client) == 0, within_s=2, message="the refill not answered")
            await until(lambda: held(replica) == shelved(client), within_s=2, message="the call's lease held")
            seen.append((calls(sent, "acquire"), calls(sent, "credit"), shelved(client)))
        assert seen == [
            (1, 0, 0),  # called once: no credit
            (2, 1, 2),  # places 3-4: two credits in one call
            (2, 2, 4),  # took one; places 5-7: three in one call
            (2, 3, 4),  # took one; asked three, place 8 granted (the key's first half full): shelved, no refusal
            (2, 4, 3),  # took one; asked again and refused: none granted
            (2, 4, 2),  # took one; the refused shelf is not asked again for a while
        ]


async def test_every_credit_of_a_grant_that_lost_its_hedge_race_goes_back(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each credit call is answered twice, the first grant handed to ``late`` as if another replica's had won:
    every lease of it (``lease`` and ``more_credits``) goes back unused, none is left held."""
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    async with credit_client(replica, idle_s=30) as client:
        ask = client._asker.ask
        lost: list[int] = []

        async def raced(
            make_call: Callable[[], pb.LeaseCall], names: Sequence[str] = (), late: Any = None, hedge: bool = True
        ) -> tuple[pb.LeaseResult, str]:
            if late is not None and make_call().acquire.credit:
                reply, address = await ask(make_call, names, None, hedge)
                lost.append(1 + len(reply.acquire.more_credits))
                late(next(s for s in await client.replicas.rotation() if s.address == address), reply)
            return await ask(make_call, names, late, hedge)

        monkeypatch.setattr(client._asker, "ask", raced)
        await stocked(client, LeaseRequest(token_hash=token, model=MODEL))
        assert lost and max(lost) >= 2, lost  # a lost grant of several credits
        await until(lambda: held(replica) == shelved(client), within_s=2, message="a lost grant's credits kept")


async def test_a_token_with_a_rate_limit_gets_no_credit_and_its_shelf_is_not_asked_again(
    start_replica: StartReplica, sent: list[list[str]]
) -> None:
    replica = await start_replica("replica-a")
    await make_pool(replica)
    await add_keys(replica, 2)
    token = await rated_token(replica, 100)
    async with credit_client(replica, idle_s=0.5) as client:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        for _ in range(4):
            lease = await client.acquire(wanted)
            await until(lambda: asking(client) == 0, within_s=2, message="credits asked and never answered")
            lease.release(OK, confirm=False)
        assert calls(sent, "acquire") == 4 and calls(sent, "credit") == 1  # refused once: asked no more
        assert shelved(client) == 0


async def test_news_of_a_key_gives_its_credits_back_and_resource_calls_take_none(
    start_replica: StartReplica, sent: list[list[str]]
) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    async with credit_client(replica, idle_s=30) as client:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        await stocked(client, wanted)
        first = await client.acquire(wanted)  # a credit: the shelf keeps three (refilled when half is gone)
        assert client.credits is not None
        cooled = first.lease.key_id
        first.release(QUOTA, confirm=False)  # news: that key may be cooling
        assert all(credit.lease.key_id != cooled for credit in client.credits.held())
        await until(lambda: held(replica) == shelved(client), within_s=2, message="the key's credits kept")

        before = calls(sent, "acquire")
        bound = await client.acquire(LeaseRequest(token_hash=token, model=MODEL, binds=True))
        assert calls(sent, "acquire") == before + 1  # a call that binds is leased for itself
        assert bound.lease.key_id != cooled
        bound.release(OK, confirm=False)


async def test_a_cooling_key_revokes_the_credits_another_edge_holds_there(start_replica: StartReplica) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 1)
    seeing = KeyringClient([replica.address], tls=session_pki().edge.files, credits=2, credit_idle_s=30)
    holding = KeyringClient([replica.address], tls=session_pki().edge.files, credits=4, credit_idle_s=30)
    try:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        await stocked(holding, wanted)
        held_by_other = await holding.acquire(wanted)
        assert shelved(holding) == 3
        failing = await seeing.acquire(wanted)
        assert failing.lease.key_id == held_by_other.lease.key_id  # the pool's one key
        failing.release(QUOTA, confirm=False)  # keyring learns the key cools: it revokes the other edge's credits
        await until(lambda: shelved(holding) == 0, within_s=2, message="credits on a cooling key not revoked")
        held_by_other.release(OK, confirm=False)
        await until(lambda: held(replica) == shelved(seeing), within_s=2, message="revoked credits not given back")
    finally:
        await seeing.close()
        await holding.close()
    await until(lambda: held(replica) == 0, within_s=2, message="credits not given back at close")


async def test_credits_asked_as_the_edge_closes_go_back_at_once(
    start_replica: StartReplica, sent: list[list[str]]
) -> None:
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    client = KeyringClient([replica.address], tls=session_pki().edge.files, credits=4, credit_idle_s=30)
    for _ in range(2):  # the second call's refill is on its way
        (await client.acquire(LeaseRequest(token_hash=token, model=MODEL))).release(OK, confirm=False)
    assert asking(client) == 2
    await client.close()  # waits for the credits asked, and gives them back: none left for keyring to reclaim
    await until(lambda: held(replica) == 0, within_s=1, message="credits granted at close left held")


async def test_a_revoked_token_s_credits_are_revoked_at_once(start_replica: StartReplica) -> None:
    replica = await start_replica("replica-a")
    await make_pool(replica)
    await add_keys(replica, 2)
    created = await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="soon revoked"))
    wanted = LeaseRequest(token_hash=token_hash(created.token), model=MODEL)
    async with credit_client(replica, idle_s=30) as client:
        await stocked(client, wanted)
        await replica.admin.RevokeToken(pb.RevokeTokenRequest(token_id=created.info.token_id))
        # Not 30 s of credits for a revoked token: keyring revokes them as its view learns the revocation.
        await until(lambda: shelved(client) == 0, within_s=2, message="a revoked token's credits kept")
        with pytest.raises(TokenRejected):
            await client.acquire(wanted)


async def test_a_credit_granted_after_the_sweep_found_none_still_goes_back(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant slower than the idle time (a busy replica) lands on a shelf the sweep had found empty."""
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    async with credit_client(replica, idle_s=0.2) as client:
        granting = asyncio.Event()
        grant = client._grant

        async def slow_grant(wanted: LeaseRequest, exclude: Sequence[str], credits: int = 0) -> Any:
            if credits:
                await granting.wait()
            return await grant(wanted, exclude, credits)

        monkeypatch.setattr(client, "_grant", slow_grant)
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        for _ in range(2):  # the second call asks for two credits behind it
            (await client.acquire(wanted)).release(OK, confirm=False)
        assert asking(client) == 2
        await until(lambda: client._sweep is None, within_s=2, message="a sweep still due")
        granting.set()
        await until(lambda: shelved(client) == 2, within_s=2, message="the credits not granted")
        # Before: a sweep was due only from a call's refill, so these stayed held until the shelf's next call.
        await until(lambda: held(replica) == 0, within_s=2, message="credits granted late never went back")


async def test_a_call_refused_for_the_place_its_credits_hold_takes_one(
    start_replica: StartReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project's tokens a minute: the credits asked behind a call hold the place the next call's acquire lacks
    (another tenant's call took the minute's second half); that call takes one of them when they arrive instead
    of answering its client 429."""
    replica = await start_replica("replica-a")
    token = await make_pool(replica, policy=pb.Policy(quota_input_tokens_per_minute=1000))
    await add_keys(replica, 1, project="proj-paced")
    other = token_hash((await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="b"))).token)
    tenant_b = KeyringClient([replica.address], tls=session_pki().edge.files)  # no credits: its calls lease
    async with credit_client(replica, idle_s=5) as client:
        wanted = LeaseRequest(token_hash=token, model=MODEL, input_tokens=100)
        answering = asyncio.Event()
        grant = client._grant
        refused: list[NoKeyFree] = []

        async def late_answer(wanted: LeaseRequest, exclude: Sequence[str], credits: int = 0) -> Any:
            """Credits granted by keyring at once, their answers reaching the shelf when the test says."""
            try:
                granted = await grant(wanted, exclude, credits)
            except NoKeyFree as error:
                if not credits:
                    refused.append(error)
                raise
            if credits:
                await answering.wait()
            return granted

        monkeypatch.setattr(client, "_grant", late_answer)
        leases = [await client.acquire(wanted) for _ in range(2)]  # 200 of the minute's 1000; two credits asked
        await until(lambda: held(replica) == 4, within_s=2, message="the credits not granted")  # 400: within half
        leases.append(await tenant_b.acquire(LeaseRequest(token_hash=other, model=MODEL, input_tokens=600)))
        third = asyncio.create_task(client.acquire(wanted))  # 1,100 with tenant B's 600: refused
        await until(lambda: bool(refused), within_s=2, message="the third call's acquire not refused")
        answering.set()
        leases.append(await third)  # before 8cdd1f5: NoKeyFree (a 429 for its client)
        assert held(replica) == 5 and shelved(client) == 1
        for lease in leases:
            lease.release(OK, confirm=False)
        await tenant_b.close()


async def test_releases_of_calls_served_from_credits_share_messages(
    start_replica: StartReplica, sent: list[list[str]]
) -> None:
    """A call served from a credit holds no capped slot: its routine release waits the credit window (not the
    stream's 2 ms) for company, so calls a few milliseconds apart send their releases in a few messages."""
    replica = await start_replica("replica-a")
    token = await make_pool(replica)
    await add_keys(replica, 2)
    async with credit_client(
        replica, idle_s=2, credits=8, release_window_s=0.002, credit_release_window_s=0.5
    ) as client:
        wanted = LeaseRequest(token_hash=token, model=MODEL)
        await stocked_to(client, wanted, 8)
        before = len([message for message in sent if "release" in message])
        for _ in range(6):
            lease = await client.acquire(wanted)
            assert lease.credit
            await asyncio.sleep(0.005)  # the call upstream: longer than the stream's window
            lease.release(OK, confirm=False)
        await until(lambda: held(replica) == shelved(client), within_s=2, message="the releases not delivered")
        carrying = len([message for message in sent if "release" in message]) - before
        assert carrying <= 3, sent  # before: six messages, one a release
