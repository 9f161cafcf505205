"""Live sessions (issue 20) in keyring's domain and rooms: held leases, renewals, caps, browser tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import orjson
import pytest

from services.admin import schemas
from services.common.naming import token_hash
from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key
from services.keyring import convert
from services.keyring.administration import Administration, KeyInput
from services.keyring.codec import decode_pool, encode
from services.keyring.core import Keyring
from services.keyring.domain.allocator import SESSIONS_FULL, SESSIONS_PER_TOKEN
from services.keyring.domain.blames import BlameBudget
from services.keyring.domain.demand import LeaseRequest
from services.keyring.domain.errors import InvalidArgument, NoKeyAvailable, PermissionDenied, Unauthenticated
from services.keyring.domain.identity import GEMINI_KEY_PATTERN, new_client_token
from services.keyring.domain.lease_ids import LeaseSigner
from services.keyring.domain.leasing import LeaseBook
from services.keyring.domain.live_tokens import PREFIX, Grants, LiveToken, mint_terms, redeemed
from services.keyring.domain.models import CooldownId, CooldownReason, CooldownScope, Outcome, Policy, Pool
from services.keyring.domain.policy import judge
from services.keyring.domain.usage import summarise
from services.keyring.sealing import SecretBox, generate_kek
from services.keyring.store import MemoryStore

from .builders import TOKEN_HASH, FakeChecker, FakeClock, World, key

NOW = 1000.0
MODEL = "gemini-3.8-live"
OTHER = "gemini-3.1-pro-preview"


def session(world: World, now: float = NOW, exclude: frozenset[str] = frozenset()) -> str:
    grant = world.allocator.grant(LeaseRequest(TOKEN_HASH, MODEL, exclude, session=True), now)
    assert grant.lease.session
    return grant.key.key_id


# -- held leases -------------------------------------------------------------


def test_a_session_lease_is_renewed_past_its_ttl_and_reclaimed_a_ttl_after_the_last_renew() -> None:
    book = LeaseBook("r1")
    lease = book.grant("k", "p", MODEL, 30.0, NOW, "t-1", session=True, project="proj")
    assert book.in_flight("k") == 0  # a session does not hold the key's in-flight slots
    assert book.sessions("project:proj") == book.sessions("key:k") == book.sessions("token:t-1") == 1
    renewed = book.renew(lease.lease_id, NOW + 20 + 30)
    assert renewed is not None and renewed.expires_at == NOW + 50
    assert book.reclaim_expired(NOW + 31) == []  # the first expiry passed: renewed, still held
    assert [gone.lease_id for gone in book.reclaim_expired(NOW + 50)] == [lease.lease_id]
    assert book.sessions("project:proj") == 0 and book.renew(lease.lease_id, NOW + 90) is None


def test_only_a_held_session_lease_is_renewed() -> None:
    book = LeaseBook("r1")
    call = book.grant("k", "p", MODEL, 600.0, NOW)
    assert book.renew(call.lease_id, NOW + 30) is None  # an ordinary call's lease is never renewed
    assert book.renew("r1.99", NOW + 30) is None
    held = book.grant("k", "p", MODEL, 30.0, NOW, session=True)
    book.release(held.lease_id)
    assert book.renew(held.lease_id, NOW + 30) is None and book.sessions("key:k") == 0


def test_the_allocator_grants_a_session_the_session_ttl_and_renews_by_it() -> None:
    world = World([key("a", project="p1")])
    world.allocator.session_ttl_s = 12.0
    grant = world.allocator.grant(LeaseRequest(TOKEN_HASH, MODEL, session=True), NOW)
    assert grant.lease.expires_at == NOW + 12
    renewed = world.allocator.renew(grant.lease.lease_id, NOW + 8)
    assert renewed is not None and renewed.expires_at == NOW + 20


# -- caps --------------------------------------------------------------------


def test_a_project_at_its_session_cap_is_passed_over_for_another_then_refused_clearly() -> None:
    policy = Policy(live_sessions_per_project=2)
    world = World([key("a1", project="p1"), key("a2", project="p1"), key("b1", project="p2")], policy=policy)
    projects = [world.view.keys[session(world)].project for _ in range(4)]
    assert sorted(projects) == ["p1", "p1", "p2", "p2"]
    with pytest.raises(NoKeyAvailable) as refused:
        session(world)
    assert refused.value.reason == SESSIONS_FULL and "Live sessions" in str(refused.value)
    assert len(str(refused.value).encode()) <= 123  # fits a WebSocket close reason
    world.lease()  # ordinary calls are not capped by sessions


def test_the_session_caps_are_split_across_live_replicas() -> None:
    world = World([key("a", project="p1"), key("b", project="p2")], policy=Policy(live_sessions_per_project=2))
    world.replicas = 2  # this replica holds one session per project: the other holds the other one
    assert {session(world), session(world)} == {"a", "b"}
    with pytest.raises(NoKeyAvailable) as refused:
        session(world)
    assert refused.value.reason == SESSIONS_FULL


def test_a_key_at_its_session_cap_is_passed_over_within_its_project() -> None:
    world = World([key("a", project="p1"), key("b", project="p1")], policy=Policy(live_sessions_per_key=1))
    assert {session(world), session(world)} == {"a", "b"}
    with pytest.raises(NoKeyAvailable):
        session(world)


def test_a_token_at_its_session_cap_is_refused_with_its_own_reason() -> None:
    world = World([key("a", project="p1"), key("b", project="p2")], policy=Policy(live_sessions_per_token=1))
    session(world)
    with pytest.raises(NoKeyAvailable) as refused:
        session(world)
    assert refused.value.reason == SESSIONS_PER_TOKEN


def test_a_released_session_frees_its_place_under_the_cap() -> None:
    world = World([key("a", project="p1")], policy=Policy(live_sessions_per_project=1))
    grant = world.allocator.grant(LeaseRequest(TOKEN_HASH, MODEL, session=True), NOW)
    with pytest.raises(NoKeyAvailable):
        session(world)
    world.allocator.release(grant.lease.lease_id)
    assert session(world) == "a"


def test_a_cooling_pool_is_refused_as_cooling_not_as_capped() -> None:
    world = World([key("a", project="p1")], policy=Policy(live_sessions_per_project=1))
    with pytest.raises(NoKeyAvailable) as refused:
        session(world, exclude=frozenset({"a"}))
    assert refused.value.reason == ""


# -- a quota close -------------------------------------------------------------


def test_a_quota_close_reported_as_a_429_cools_the_project_for_the_model() -> None:
    """The edge reports 1011 "You exceeded your current quota..." after setupComplete as a 429 (the proto)."""
    closed = Outcome(
        429,
        error_status="RESOURCE_EXHAUSTED",
        error_message="You exceeded your current quota, please check your plan and billing details. For more inf",
    )
    upstream = key("a", project="p1")
    verdict = judge(closed, upstream, MODEL, Policy(), NOW, {})
    assert verdict.cooldown is not None
    assert verdict.cooldown.id == CooldownId(CooldownScope.PROJECT, "p1", MODEL)
    assert verdict.cooldown.reason is CooldownReason.RATE_LIMIT and verdict.cooldown.until > NOW


# -- browser tokens ------------------------------------------------------------


def test_client_tokens_never_look_like_browser_tokens() -> None:
    assert not any(new_client_token().startswith(PREFIX) for _ in range(100))


def test_mint_terms_default_and_bounds() -> None:
    assert mint_terms(0, 0) == (60.0, 1)
    for ttl_s, uses in ((1801, 1), (-1, 1), (60, 11), (60, -1)):
        with pytest.raises(InvalidArgument):
            mint_terms(ttl_s, uses)


def test_a_browser_token_redeems_once_for_its_model_before_its_expiry() -> None:
    record = LiveToken("p", "t-1", MODEL, NOW + 60, uses=1)
    spent = redeemed(record, MODEL, NOW, resumption=False)
    assert spent.used == 1
    with pytest.raises(Unauthenticated):
        redeemed(spent, MODEL, NOW, resumption=False)
    assert redeemed(spent, MODEL, NOW, resumption=True) is spent  # a resumption spends nothing
    with pytest.raises(Unauthenticated):
        redeemed(record, MODEL, NOW, resumption=True)  # nothing to resume yet
    with pytest.raises(PermissionDenied):
        redeemed(record, OTHER, NOW, resumption=False)
    with pytest.raises(Unauthenticated):
        redeemed(record, MODEL, NOW + 60, resumption=False)


def test_a_grant_holds_for_its_model_until_it_expires_and_cannot_be_forged() -> None:
    grants = Grants(LeaseSigner(b"k" * 32))
    grant = grants.issue("t-1", MODEL, NOW + 60)
    assert grants.check(grant, MODEL, NOW) == "t-1"
    forged = grant.replace("t-1", "t-2", 1)
    for bad, model, now in ((grant, OTHER, NOW), (grant, MODEL, NOW + 60), (forged, MODEL, NOW)):
        with pytest.raises(Unauthenticated):
            grants.check(bad, model, now)
    with pytest.raises(Unauthenticated):
        Grants(LeaseSigner(b"x" * 32)).check(grant, MODEL, NOW)


# -- through the rooms (memory store, fake clock) ------------------------------


@pytest.fixture
async def rooms() -> AsyncIterator[tuple[Keyring, Keyring, FakeClock, str]]:
    store, clock, box = MemoryStore(), FakeClock(), SecretBox.from_base64(generate_kek())
    signer = b"s" * 32

    async def replica(name: str) -> Keyring:
        keyring = Keyring(
            store, box, FakeChecker(), replica_id=name, janitor_interval_s=3600, clock=clock, lease_key=signer
        )
        await keyring.start(timeout_s=2)
        return keyring

    first = await replica("r1")
    admin = Administration(first, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=5)
    await admin.pools.create_pool(Pool("main"))
    await admin.keys.add_keys("main", [KeyInput(secret=fake_gemini_key("k0"), project="proj-a")])
    _, token = await admin.tokens.create_token("main", "backend")
    second = await replica("r2")
    yield first, second, clock, token_hash(token)
    await first.stop()
    await second.stop()
    await store.close()


async def test_a_minted_token_is_redeemed_once_on_any_replica_and_grants_a_session(
    rooms: tuple[Keyring, Keyring, FakeClock, str],
) -> None:
    first, second, clock, client = rooms
    minted = await first.desk.live_tokens.mint(client, MODEL, 30, 1)
    assert minted.token.startswith(PREFIX)
    stored = b"".join(value for value, _ in first.cache.view.live_tokens.values())
    assert minted.token.encode() not in stored and token_hash(minted.token).encode() not in stored
    with pytest.raises(PermissionDenied):
        await second.desk.live_tokens.redeem(minted.token, OTHER, False)
    done = await second.desk.live_tokens.redeem(minted.token, f"models/{MODEL}", False)
    with pytest.raises(Unauthenticated):
        await first.desk.live_tokens.redeem(minted.token, MODEL, False)  # spent, whichever replica is asked
    holder = first.desk.live_tokens.grant_holder(done.grant, MODEL)
    grant, _ = first.desk.lease(LeaseRequest("", MODEL, session=True, grant_token_id=holder))
    assert grant.lease.session and grant.pool.name == "main"
    late = await first.desk.live_tokens.mint(client, MODEL, 1, 1)
    clock.now += 1.5
    with pytest.raises(Unauthenticated):
        await second.desk.live_tokens.redeem(late.token, MODEL, False)


async def test_a_long_session_counts_once_with_its_tokens_and_an_unrenewed_one_is_reclaimed(
    rooms: tuple[Keyring, Keyring, FakeClock, str],
) -> None:
    first, _, clock, client = rooms
    desk = first.desk
    grant, _ = desk.lease(LeaseRequest(client, MODEL, session=True))
    for _ in range(20):  # ten minutes of renewals
        clock.now += 30
        assert desk.renew(grant.lease.lease_id) is not None
        desk.reclaim_expired(clock.now)
    ended = Outcome(200, input_tokens=900, output_tokens=70)  # the session's cumulative usageMetadata
    released = desk.settle(grant.lease.lease_id, grant.key.key_id, MODEL, ended)
    again = desk.settle(grant.lease.lease_id, grant.key.key_id, MODEL, ended)  # a release delivered twice
    assert released.known and not again.known
    orphan, _ = desk.lease(LeaseRequest(client, MODEL, session=True))
    clock.now += 29
    desk.reclaim_expired(clock.now)
    assert desk.renew(orphan.lease.lease_id) is not None  # within its TTL: still held
    clock.now += 30
    desk.reclaim_expired(clock.now)  # an edge that died renews nothing: reclaimed within the TTL
    assert desk.renew(orphan.lease.lease_id) is None
    totals = summarise(list(desk.ledger.usage.buckets.values()), 0).pools["main"]
    assert (totals.requests, totals.input_tokens, totals.output_tokens, totals.unknown) == (2, 900, 70, 1)


async def test_mints_count_against_the_client_tokens_rate_limit(rooms: tuple[Keyring, Keyring, FakeClock, str]) -> None:
    first, _, _, client = rooms
    token = first.desk.allocator.find_token(client)
    assert token is not None
    first.cache.view.put_token(dataclasses.replace(token, requests_per_minute=4))  # two replicas: two each
    await first.desk.live_tokens.mint(client, MODEL, 0, 0)
    await first.desk.live_tokens.mint(client, MODEL, 0, 0)
    with pytest.raises(NoKeyAvailable):
        await first.desk.live_tokens.mint(client, MODEL, 0, 0)
    with pytest.raises(PermissionDenied):
        await first.desk.live_tokens.mint(client, "", 0, 0)


def test_the_session_caps_travel_between_the_admin_api_keyring_and_the_store() -> None:
    caps = {"live_sessions_per_project": 3, "live_sessions_per_key": 2, "live_sessions_per_token": 1}
    assert schemas.policy_pb(schemas.PolicyInput(**caps)) == pb.Policy(**caps)
    policy = Policy().with_overrides(**convert.policy_overrides(pb.Policy(**caps)))
    assert (policy.live_sessions_per_project, policy.live_sessions_per_key, policy.live_sessions_per_token) == (3, 2, 1)
    assert {name: schemas.policy_json(convert.policy_to_pb(policy))[name] for name in caps} == caps
    assert decode_pool(orjson.loads(encode(Pool("p", policy=policy))), 1).policy == policy


async def test_a_restarted_replica_adopts_a_session_lease_its_id_vouches_for(
    rooms: tuple[Keyring, Keyring, FakeClock, str],
) -> None:
    """The edge renews where the lease was granted: a new instance there takes the session over, caps included."""
    old, restarted, clock, client = rooms
    grant, _ = old.desk.lease(LeaseRequest(client, MODEL, session=True))
    lease = grant.lease
    assert restarted.desk.renew(lease.lease_id) is None  # without the key and model nothing vouches
    assert restarted.desk.renew(lease.lease_id, grant.key.key_id, OTHER) is None  # not its model
    clock.now += 20 * 60  # a long session: its id still vouches, however long ago its first expiry was
    adopted = restarted.desk.renew(lease.lease_id, grant.key.key_id, MODEL)
    assert adopted is not None and adopted.session and adopted.expires_at == clock.now + 30
    assert restarted.desk.book.sessions("project:proj-a") == 1
    released = restarted.desk.settle(lease.lease_id, grant.key.key_id, MODEL, Outcome(200, input_tokens=5))
    assert released.known  # released where it lives now, counted there once
    assert restarted.desk.book.sessions("project:proj-a") == 0
    old.desk.settle(lease.lease_id, grant.key.key_id, MODEL, Outcome(200))
    assert old.desk.renew(lease.lease_id, grant.key.key_id, MODEL) is None  # its own ended lease: never adopted


async def test_made_up_browser_tokens_cost_store_reads_only_within_a_budget(
    rooms: tuple[Keyring, Keyring, FakeClock, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = rooms[0].desk.live_tokens
    reads: list[list[str]] = []

    async def refresh(paths: list[str]) -> None:
        reads.append(paths)

    monkeypatch.setattr(tokens, "_miss_reads", BlameBudget(2))
    monkeypatch.setattr(tokens._writer, "refresh", refresh)
    for attempt in range(5):
        with pytest.raises(Unauthenticated):
            await tokens.redeem(f"{PREFIX}made-up-{attempt}", MODEL, False)
    assert len(reads) == 2
    with pytest.raises(Unauthenticated):
        await tokens.redeem("kr-not-a-browser-token", MODEL, False)
    assert len(reads) == 2
