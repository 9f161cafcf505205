"""Project-bound resources (affinity) through keyring's rooms on the in-memory store under a fake clock."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import orjson
import pytest

from services.common.naming import token_hash
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.administration import Administration, KeyInput
from services.keyring.core import Keyring
from services.keyring.domain.affinity import MAX_BINDS, AffinityMiss, BindingCaps, BindingsFull, project_label
from services.keyring.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NoKeyAvailable,
    NotFound,
    Unauthenticated,
)
from services.keyring.domain.identity import GEMINI_KEY_PATTERN
from services.keyring.domain.models import KeyState, Outcome, Policy, Pool
from services.keyring.sealing import SecretBox, generate_kek
from services.keyring.store import MemoryStore
from services.keyring.transfer import export_document, import_document

from .builders import FakeChecker, FakeClock

MODEL = "gemini-3.5-flash"
RATE_LIMITED = Outcome(429, error_status="RESOURCE_EXHAUSTED", retry_delay_s=30)
DAY = 24 * 3600.0


@dataclass
class World:
    store: MemoryStore
    clock: FakeClock
    box: SecretBox
    keyring: Keyring
    token: str  # pool "main"
    other_token: str  # pool "other"
    keys: dict[str, str]  # "a1", "a2" (proj-a), "b1" (proj-b), "n" (no project), "o" (pool other, proj-o) -> key id
    admin: Administration

    async def replica(self, replica_id: str) -> Keyring:
        other = Keyring(
            self.store, self.box, FakeChecker(), replica_id=replica_id, janitor_interval_s=3600, clock=self.clock
        )
        await other.start(timeout_s=2)
        return other


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store, clock, box = MemoryStore(), FakeClock(1_800_000_000.0), SecretBox.from_base64(generate_kek())
    keyring = Keyring(store, box, FakeChecker(), replica_id="r1", janitor_interval_s=3600, clock=clock)
    await keyring.start(timeout_s=2)
    admin = Administration(keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=10)
    await admin.pools.create_pool(Pool("main", policy=Policy(max_in_flight=0)))
    await admin.pools.create_pool(Pool("other"))
    inputs = [("a1", "proj-a"), ("a2", "proj-a"), ("b1", "proj-b"), ("n", "")]
    added = await admin.keys.add_keys("main", [KeyInput(secret=fake_gemini_key(n), project=p) for n, p in inputs])
    [other_key] = await admin.keys.add_keys("other", [KeyInput(secret=fake_gemini_key("o"), project="proj-o")])
    keys = {name: key.key_id for (name, _), key in zip(inputs, added, strict=True)} | {"o": other_key.key_id}
    _, token = await admin.tokens.create_token("main", "tests")
    _, other_token = await admin.tokens.create_token("other", "tests")
    yield World(store, clock, box, keyring, token_hash(token), token_hash(other_token), keys, admin)
    await keyring.stop()
    await store.close()


async def bind(
    keyring: Keyring, token: str, key_id: str, names: list[str], ttl_s: float = 2 * DAY, unbind: Sequence[str] = ()
) -> None:
    """Lease ``key_id`` (excluding every other key) and release it binding ``names``."""
    desk = keyring.desk
    others = frozenset(k for k in keyring.cache.view.keys if k != key_id)
    grant, _ = desk.acquire(token, MODEL, others)
    assert grant.key.key_id == key_id
    known = await desk.release(
        grant.lease.lease_id, key_id, MODEL, Outcome(200), [(name, ttl_s) for name in names], unbind
    )
    assert known


def leased(keyring: Keyring, token: str, names: list[str], exclude: frozenset[str] = frozenset()) -> str:
    grant, _ = keyring.desk.acquire(token, MODEL, exclude, tuple(names))
    keyring.desk.allocator.release(grant.lease.lease_id)
    return grant.key.key_id


async def test_a_release_binds_a_resource_in_the_store_and_the_view(world: World) -> None:
    await bind(world.keyring, world.token, world.keys["a1"], ["files/abc", "models/veo-3.1/operations/w"])
    layout = world.keyring.cache.layout
    stored = await world.store.get(layout.affinity("main", "models/veo-3.1/operations/w"))
    assert stored is not None
    assert stored.key == "/keyring/v1/affinity/main/models%2Fveo-3.1%2Foperations%2Fw"  # one path segment
    value = orjson.loads(stored.value)
    assert value["pool"] == "main" and value["key_id"] == world.keys["a1"] and value["project"] == "proj-a"
    assert value["expires_at"] == world.clock.now + 2 * DAY
    record = world.keyring.cache.view.affinity[("main", "files/abc")]
    assert (record.key_id, record.project) == (world.keys["a1"], "proj-a")


async def test_an_acquire_naming_a_resource_gets_its_owner_every_time(world: World) -> None:
    await bind(world.keyring, world.token, world.keys["a2"], ["files/abc"])
    assert {leased(world.keyring, world.token, ["files/abc"]) for _ in range(10)} == {world.keys["a2"]}
    # Without affinity the pool's strategy spreads calls over every key.
    spread = {world.keyring.desk.acquire(world.token, MODEL)[0].key.key_id for _ in range(8)}
    assert len(spread) == 4


async def test_an_unusable_owner_falls_back_to_its_project_never_another(world: World) -> None:
    keys = world.keys
    await bind(world.keyring, world.token, keys["a1"], ["cachedContents/c1"])
    assert leased(world.keyring, world.token, ["cachedContents/c1"], frozenset({keys["a1"]})) == keys["a2"]
    # The owner disabled: the project's other key.
    view = world.keyring.cache.view
    view.put_key(dataclasses.replace(view.keys[keys["a1"]], state=KeyState.DISABLED))
    assert {leased(world.keyring, world.token, ["cachedContents/c1"]) for _ in range(5)} == {keys["a2"]}
    with pytest.raises(NoKeyAvailable):
        leased(world.keyring, world.token, ["cachedContents/c1"], frozenset({keys["a2"]}))


async def test_a_cooling_project_is_resource_exhausted_with_its_retry_time(world: World) -> None:
    desk = world.keyring.desk
    await bind(world.keyring, world.token, world.keys["a1"], ["batches/b1"])
    grant, _ = desk.acquire(world.token, MODEL, frozenset(), ("batches/b1",))
    await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, RATE_LIMITED)  # cools proj-a for MODEL
    with pytest.raises(NoKeyAvailable) as refused:
        desk.acquire(world.token, MODEL, frozenset(), ("batches/b1",))
    assert refused.value.retry_after_s == pytest.approx(30)
    # Other calls still get the other projects' keys.
    assert project_label(desk.acquire(world.token, MODEL)[0].key) in ("proj-b", f"key:{world.keys['n']}")
    world.clock.now += 31
    assert leased(world.keyring, world.token, ["batches/b1"]) in (world.keys["a1"], world.keys["a2"])


async def test_an_unknown_resource_or_one_of_another_pool_is_not_found(world: World) -> None:
    await bind(world.keyring, world.other_token, world.keys["o"], ["files/theirs"])
    with pytest.raises(NotFound):
        world.keyring.desk.acquire(world.token, MODEL, frozenset(), ("files/nobody",))
    with pytest.raises(NotFound):  # another pool: tenants do not share resources
        world.keyring.desk.acquire(world.token, MODEL, frozenset(), ("files/theirs",))
    assert leased(world.keyring, world.other_token, ["files/theirs"]) == world.keys["o"]


async def test_resources_of_different_projects_in_one_call_are_invalid(world: World) -> None:
    await bind(world.keyring, world.token, world.keys["a1"], ["files/a"])
    await bind(world.keyring, world.token, world.keys["a2"], ["cachedContents/a"])
    await bind(world.keyring, world.token, world.keys["b1"], ["files/b"])
    await bind(world.keyring, world.token, world.keys["n"], ["files/n"])
    assert leased(world.keyring, world.token, ["files/a", "cachedContents/a"]) in (world.keys["a1"], world.keys["a2"])
    for names in (["files/a", "files/b"], ["files/n", "files/a"], ["files/b", "files/n"]):
        with pytest.raises(InvalidArgument):
            world.keyring.desk.acquire(world.token, MODEL, frozenset(), tuple(names))


async def test_a_key_without_a_project_serves_its_resources_alone(world: World) -> None:
    key = world.keys["n"]
    await bind(world.keyring, world.token, key, ["interactions/i1"])
    assert {leased(world.keyring, world.token, ["interactions/i1"]) for _ in range(5)} == {key}
    with pytest.raises(NoKeyAvailable):
        leased(world.keyring, world.token, ["interactions/i1"], frozenset({key}))


async def test_bindings_expire_are_ignored_then_collected_and_can_be_renewed(world: World) -> None:
    housekeeping = world.keyring.housekeeping
    await bind(world.keyring, world.token, world.keys["b1"], ["files/short"], ttl_s=60)
    await bind(world.keyring, world.token, world.keys["b1"], ["files/long"], ttl_s=DAY)
    world.clock.now += 61
    with pytest.raises(NotFound):
        world.keyring.desk.acquire(world.token, MODEL, frozenset(), ("files/short",))
    assert await housekeeping.collect_affinity(world.clock.now) == 1
    assert await world.store.get(world.keyring.cache.layout.affinity("main", "files/short")) is None
    assert ("main", "files/long") in world.keyring.cache.view.affinity
    await bind(world.keyring, world.token, world.keys["b1"], ["files/long"], ttl_s=2 * DAY)  # renewed
    world.clock.now += DAY + 1
    assert await housekeeping.collect_affinity(world.clock.now) == 0
    assert leased(world.keyring, world.token, ["files/long"]) == world.keys["b1"]


async def test_unbind_forgets_a_deleted_resource(world: World) -> None:
    await bind(world.keyring, world.token, world.keys["a1"], ["files/gone", "files/kept"])
    await bind(world.keyring, world.token, world.keys["a2"], [], unbind=["files/gone"])
    with pytest.raises(NotFound):
        world.keyring.desk.acquire(world.token, MODEL, frozenset(), ("files/gone",))
    assert leased(world.keyring, world.token, ["files/kept"]) == world.keys["a1"]
    assert await world.store.get(world.keyring.cache.layout.affinity("main", "files/gone")) is None


async def test_exclude_projects_skips_covered_projects(world: World) -> None:
    desk, keys = world.keyring.desk, world.keys
    seen = {desk.acquire(world.token, MODEL, frozenset(), (), frozenset({"proj-a"}))[0].key.key_id for _ in range(6)}
    assert seen == {keys["b1"], keys["n"]}
    only_keyless = desk.acquire(world.token, MODEL, frozenset(), (), frozenset({"proj-a", "proj-b"}))
    assert only_keyless[0].key.key_id == keys["n"]
    with pytest.raises(NoKeyAvailable):
        desk.acquire(world.token, MODEL, frozenset(), (), frozenset({"proj-a", "proj-b", f"key:{keys['n']}"}))


async def test_a_replica_reads_a_binding_its_watch_has_not_brought_yet(world: World) -> None:
    second = await world.replica("r2")
    try:
        view = second.cache.view
        await bind(world.keyring, world.token, world.keys["b1"], ["files/fresh"])  # no await yields: r2's watch waits
        assert ("main", "files/fresh") not in view.affinity
        with pytest.raises(AffinityMiss) as miss:
            second.desk.acquire(world.token, MODEL, frozenset(), ("files/fresh",), final=False)
        await second.desk.read_affinity(miss.value)
        assert second.desk.acquire(world.token, MODEL, frozenset(), ("files/fresh",))[0].key.key_id == world.keys["b1"]
    finally:
        await second.stop()


async def test_bad_bindings_are_refused_after_the_slot_is_given_back(world: World) -> None:
    desk = world.keyring.desk
    for bind_list, unbind in (
        ([("files/x", 0.0)], []),
        ([("files/x", 10.0)], ["files/x"]),
        ([("", 10.0)], []),
        ([("files/has space", 10.0)], []),
        ([(f"files/{n}", 10.0) for n in range(65)], []),
    ):
        grant, _ = desk.acquire(world.token, MODEL)
        with pytest.raises(InvalidArgument):
            await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200), bind_list, unbind)
        assert desk.leases_in_flight == 0
    with pytest.raises(FailedPrecondition):  # a lease nobody vouches for binds nothing
        await desk.release("forged.1.2", world.keys["a1"], MODEL, Outcome(200), [("files/x", 10.0)])
    assert not world.keyring.cache.view.affinity


async def test_a_google_project_belongs_to_one_pool(world: World) -> None:
    """Issue 18, finding 7: a key whose project another pool uses is refused, added, moved or imported."""
    keys = world.admin.keys
    before = dict(world.keyring.cache.view.keys)
    with pytest.raises(FailedPrecondition, match="project 'proj-a' is used by pool 'main'"):
        await keys.add_keys("other", [KeyInput(secret=fake_gemini_key("o2"), project="proj-o"),
                                      KeyInput(secret=fake_gemini_key("o3"), project="proj-a")])  # fmt: skip
    with pytest.raises(FailedPrecondition, match="used by pool 'other'"):
        await keys.update_key(world.keys["a1"], KeyInput(project="proj-o"), ["project"])
    document = orjson.loads(export_document(world.keyring.cache.view, world.box, world.clock.now, False))
    moved = {"pool": "other", "secret": fake_gemini_key("o4"), "project": "proj-b"}
    imported = orjson.dumps({**document, "tokens": [], "keys": [moved]})
    with pytest.raises(FailedPrecondition, match="project 'proj-b' is used by pool 'main'"):
        await import_document(
            world.keyring.cache.view, world.keyring.writer, world.box, imported,
            key_pattern=GEMINI_KEY_PATTERN, keep_client_tokens=False, now=world.clock.now,
        )  # fmt: skip
    assert world.keyring.cache.view.keys == before  # nothing changed
    # Keys of the pool's own projects, or of none, still join; a key may take a project no other pool uses.
    added = await keys.add_keys("main", [KeyInput(secret=fake_gemini_key("a3"), project="proj-a"),
                                         KeyInput(secret=fake_gemini_key("n2"))])  # fmt: skip
    assert [result.status for result in added] == ["added", "added"]
    assert (await keys.update_key(world.keys["a1"], KeyInput(project="proj-c"), ["project"])).project == "proj-c"


async def test_an_affinity_miss_reads_nothing_for_a_token_over_its_rate(world: World) -> None:
    """Issue 18, finding 11: a name the view lacks costs a store read only within the token's rate, and counts."""
    _, token = await world.admin.tokens.create_token("main", "paced", requests_per_minute=2)
    hashed, desk = token_hash(token), world.keyring.desk
    for name in ("files/nobody1", "files/nobody2"):
        with pytest.raises(AffinityMiss) as miss:  # within its rate: the caller reads the store, then asks again
            desk.acquire(hashed, MODEL, frozenset(), (name,), final=False)
        await desk.read_affinity(miss.value)
        with pytest.raises(NotFound):
            desk.acquire(hashed, MODEL, frozenset(), (name,))  # the final refusal counts against the rate
    with pytest.raises(NoKeyAvailable, match="rate limit"):  # over its rate: refused before any read
        desk.acquire(hashed, MODEL, frozenset(), ("files/nobody3",), final=False)


async def test_bindings_are_capped_per_token_and_per_pool(world: World) -> None:
    """Issue 18, finding 6: a call that would bind past a cap is refused before it is leased, a release too."""
    desk, view, keys = world.keyring.desk, world.keyring.cache.view, world.keys
    desk.allocator.binding_caps = BindingCaps(per_pool=3, per_token=2)
    _, second = await world.admin.tokens.create_token("main", "second")
    await bind(world.keyring, world.token, keys["a1"], ["files/one", "files/two"])
    with pytest.raises(BindingsFull, match="KEYRING_AFFINITY_MAX_PER_TOKEN") as full:
        desk.acquire(world.token, MODEL, binds=True)  # an upload start, a cache create...: refused up front
    assert full.value.retry_after_s > 0 and desk.leases_in_flight == 0
    grant, _ = desk.acquire(world.token, MODEL)  # a race: leased before the cap was reached, binding after it
    with pytest.raises(BindingsFull):
        await desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200), [("files/three", DAY)])
    assert ("main", "files/three") not in view.affinity and desk.leases_in_flight == 0  # no record, no slot
    await bind(world.keyring, world.token, keys["a1"], ["files/one"], ttl_s=3 * DAY)  # bound again: no room taken
    await bind(world.keyring, world.token, keys["a1"], ["files/done"], unbind=["files/two"])  # an upload's end: net 0
    await bind(world.keyring, token_hash(second), keys["b1"], ["files/theirs"])  # the pool's third
    with pytest.raises(BindingsFull, match="KEYRING_AFFINITY_MAX_PER_POOL"):
        desk.acquire(token_hash(second), MODEL, binds=True)
    mine, theirs = _token_id(world, world.token), _token_id(world, token_hash(second))
    assert view.bound == {"pool:main": 3, f"token:{mine}": 2, f"token:{theirs}": 1}
    await bind(world.keyring, world.token, keys["a2"], [], unbind=["files/done"])  # a delete frees room
    desk.allocator.release(desk.acquire(world.token, MODEL, binds=True)[0].lease.lease_id)
    assert view.bound["pool:main"] == 2
    stored = await world.store.get(world.keyring.cache.layout.affinity("main", "files/theirs"))
    assert stored is not None and orjson.loads(stored.value)["token_id"] == _token_id(world, token_hash(second))


async def test_a_release_binds_a_bounded_number_of_names(world: World) -> None:
    """Issue 18, finding 10: a lease is trusted with at most MAX_BINDS new records."""
    grant, _ = world.keyring.desk.acquire(world.token, MODEL)
    names = [(f"files/f{n}", DAY) for n in range(MAX_BINDS + 1)]
    with pytest.raises(InvalidArgument, match=f"at most {MAX_BINDS} bindings"):
        await world.keyring.desk.release(grant.lease.lease_id, grant.key.key_id, MODEL, Outcome(200), names)
    assert not world.keyring.cache.view.affinity


def _token_id(world: World, hashed: str) -> str:
    token = world.keyring.desk.allocator.find_token(hashed)
    assert token is not None
    return token.token_id


async def test_a_list_shows_only_the_names_its_pool_bound(world: World) -> None:
    """Issue 18, finding 7: the names of a project's list a pool may show are those it bound (live)."""
    desk = world.keyring.desk
    await bind(world.keyring, world.token, world.keys["a1"], ["files/mine", "cachedContents/c"])
    await bind(world.keyring, world.token, world.keys["a1"], ["files/short"], ttl_s=60)
    await bind(world.keyring, world.other_token, world.keys["o"], ["files/theirs"])
    world.clock.now += 61
    asked = ["files/theirs", "files/mine", "files/short", "files/nobody", "cachedContents/c"]
    assert desk.bound_names(world.token, asked) == ["files/mine", "cachedContents/c"]
    assert desk.bound_names(world.other_token, asked) == ["files/theirs"]
    with pytest.raises(InvalidArgument):
        desk.bound_names(world.token, [f"files/f{n}" for n in range(1001)])
    with pytest.raises(Unauthenticated):
        desk.bound_names("ab" * 32, asked)
