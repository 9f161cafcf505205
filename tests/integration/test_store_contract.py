"""One contract suite for both stores: MemoryStore and EtcdStore on a real etcd.

Everything here is what ``services/keyring/store/base.py`` promises; if the
two implementations disagree, one of them is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.devstack.etcd_server import EtcdServer, free_port
from services.keyring.store import (
    MAX_WRITES_PER_COMMIT,
    Entry,
    EtcdStore,
    Event,
    MemoryStore,
    Registration,
    Snapshot,
    Store,
    StoreUnavailable,
    WatchCompacted,
    Write,
)
from tests.conftest import ETCD_ARGS
from tests.pki import session_pki

DEADLINE_S = 10.0
POLL_S = 0.05
TTL_S = 1  # etcd's shortest lease on the session's etcd (tests/conftest.py)


# ---------------------------------------------------------------- fixtures
@pytest.fixture
async def memory_store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


@pytest.fixture(params=["memory", "etcd"])
def store(request: pytest.FixtureRequest) -> Store:
    """The same test against both implementations."""
    if request.param == "etcd":
        request.applymarker(pytest.mark.etcd)
    return request.getfixturevalue(f"{request.param}_store")


# ------------------------------------------------------------------ helpers
async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll ``check`` until it holds or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def next_events(watch: AsyncIterator[list[Event]], count: int) -> list[list[Event]]:
    """Read batches until ``count`` events arrived (bounded by the deadline)."""
    batches: list[list[Event]] = []
    async with asyncio.timeout(DEADLINE_S):
        while sum(len(b) for b in batches) < count:
            batches.append(await anext(watch))
    return batches


async def compact(store: Store, revision: int) -> None:
    if isinstance(store, MemoryStore):
        store.compact(revision)
    else:
        assert isinstance(store, EtcdStore)
        await store.client.compact(revision)


async def forget_lease(store: Store, registration: Registration) -> None:
    """Make the store lose the registration's lease, as an expiry during an outage would."""
    lease_id = registration.lease_id  # type: ignore[attr-defined]
    if isinstance(store, MemoryStore):
        store.revoke_lease(lease_id)
    else:
        assert isinstance(store, EtcdStore)
        await store.client.revoke_lease(lease_id)


async def granted_ttl_s(store: Store, registration: Registration) -> int:
    """The TTL the store really gave the registration's lease (etcd raises one below its minimum silently)."""
    if isinstance(store, MemoryStore):
        return registration.ttl_s  # type: ignore[attr-defined, no-any-return]
    assert isinstance(store, EtcdStore)
    info = await store.client.get_lease_info(registration.lease_id)  # type: ignore[attr-defined]
    return int(info.grantedTTL)


async def put(store: Store, key: str, value: bytes) -> int:
    revision = await store.commit([Write(key, value)])
    assert revision is not None
    return revision


# -------------------------------------------------------------------- reads
async def test_snapshot_is_one_revision_of_the_prefix(store: Store, store_prefix: str) -> None:
    p = store_prefix
    first = await store.commit([Write(f"{p}a/1", b"one"), Write(f"{p}a/2", b"two")])
    second = await put(store, f"{p}a/1", b"uno")
    await put(store, f"{p}b/1", b"other prefix")

    snap = await store.snapshot(f"{p}a/")

    assert isinstance(snap, Snapshot)
    assert first is not None and second > first
    assert snap.revision >= second + 1
    assert snap.entries == [Entry(f"{p}a/1", b"uno", second), Entry(f"{p}a/2", b"two", first)]
    assert (await store.snapshot(f"{p}none/")).entries == []


async def test_get(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}k"
    assert await store.get(key) is None
    revision = await put(store, key, b"v")
    assert await store.get(key) == Entry(key, b"v", revision)


# ------------------------------------------------------------------- commit
async def test_commit_returns_increasing_revisions(store: Store, store_prefix: str) -> None:
    r1 = await put(store, f"{store_prefix}a", b"1")
    r2 = await put(store, f"{store_prefix}a", b"2")
    assert r2 > r1
    assert (await store.get(f"{store_prefix}a")) == Entry(f"{store_prefix}a", b"2", r2)


async def test_create_only_loses_when_the_key_exists(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}k"
    revision = await store.commit([Write(key, b"first", expected_revision=0)])
    assert revision is not None
    assert await store.commit([Write(key, b"second", expected_revision=0)]) is None
    assert await store.get(key) == Entry(key, b"first", revision)


async def test_mod_guard_loses_after_someone_else_wrote(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}k"
    mine = await put(store, key, b"mine")
    theirs = await put(store, key, b"theirs")

    assert await store.commit([Write(key, b"stale", expected_revision=mine)]) is None
    assert (await store.get(key)) == Entry(key, b"theirs", theirs)

    fresh = await store.commit([Write(key, b"fresh", expected_revision=theirs)])
    assert fresh is not None and fresh > theirs
    assert (await store.get(key)) == Entry(key, b"fresh", fresh)


async def test_mod_guard_on_a_missing_key_loses(store: Store, store_prefix: str) -> None:
    assert await store.commit([Write(f"{store_prefix}ghost", b"x", expected_revision=1)]) is None


async def test_a_losing_multi_write_commit_writes_nothing(store: Store, store_prefix: str) -> None:
    p = store_prefix
    taken = await put(store, f"{p}taken", b"old")
    before = await store.snapshot(p)

    result = await store.commit(
        [
            Write(f"{p}free", b"new"),
            Write(f"{p}taken", b"new", expected_revision=0),
            Write(f"{p}also", b"new", expected_revision=None),
        ]
    )

    assert result is None
    after = await store.snapshot(p)
    assert after.entries == before.entries == [Entry(f"{p}taken", b"old", taken)]


async def test_a_winning_multi_write_commit_is_one_revision(store: Store, store_prefix: str) -> None:
    p = store_prefix
    old = await put(store, f"{p}b", b"old")
    revision = await store.commit(
        [Write(f"{p}a", b"1", expected_revision=0), Write(f"{p}b", None, expected_revision=old), Write(f"{p}c", b"3")]
    )
    assert revision is not None
    snap = await store.snapshot(p)
    assert snap.entries == [Entry(f"{p}a", b"1", revision), Entry(f"{p}c", b"3", revision)]


async def test_deletes_guarded_and_not(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}k"
    first = await put(store, key, b"1")
    second = await put(store, key, b"2")

    assert await store.commit([Write(key, None, expected_revision=first)]) is None
    assert await store.get(key) is not None
    assert await store.commit([Write(key, None, expected_revision=0)]) is None
    assert await store.commit([Write(key, None, expected_revision=second)]) is not None
    assert await store.get(key) is None

    await put(store, key, b"3")
    assert await store.commit([Write(key, None)]) is not None
    assert await store.get(key) is None
    # Deleting what is not there is not an error, and "must be absent" holds.
    assert await store.commit([Write(key, None)]) is not None
    assert await store.commit([Write(key, None, expected_revision=0)]) is not None


async def test_commit_rejects_malformed_batches(store: Store, store_prefix: str) -> None:
    too_many = [Write(f"{store_prefix}{i}", b"x") for i in range(MAX_WRITES_PER_COMMIT + 1)]
    with pytest.raises(ValueError):
        await store.commit(too_many)
    with pytest.raises(ValueError):
        await store.commit([Write(f"{store_prefix}a", b"1"), Write(f"{store_prefix}a", None)])
    at_limit = too_many[:MAX_WRITES_PER_COMMIT]
    assert await store.commit(at_limit) is not None
    assert len((await store.snapshot(store_prefix)).entries) == MAX_WRITES_PER_COMMIT


# -------------------------------------------------------------------- watch
async def test_watch_replays_from_start_revision_then_follows(store: Store, store_prefix: str) -> None:
    p = store_prefix
    start = (await store.snapshot(p)).revision + 1
    r1 = await put(store, f"{p}a", b"1")
    r2 = await store.commit([Write(f"{p}b", b"2"), Write(f"{p}c", b"3")])
    await put(store, f"{p[:-1]}-elsewhere/x", b"not ours")  # sibling prefix: not watched

    async with contextlib.aclosing(store.watch(p, start)) as watch:
        replayed = await next_events(watch, 3)
        r3 = await store.commit([Write(f"{p}a", None)])
        r4 = await put(store, f"{p}b", b"22")
        live = await next_events(watch, 2)

    assert replayed == [
        [Event(f"{p}a", b"1", r1)],
        [Event(f"{p}b", b"2", r2), Event(f"{p}c", b"3", r2)],
    ]
    assert live == [[Event(f"{p}a", None, r3)], [Event(f"{p}b", b"22", r4)]]
    if isinstance(store, EtcdStore):
        await store.client.delete_prefix(f"{p[:-1]}-elsewhere/".encode())


async def test_watch_start_revision_is_inclusive(store: Store, store_prefix: str) -> None:
    p = store_prefix
    await put(store, f"{p}a", b"1")
    r2 = await put(store, f"{p}a", b"2")
    async with contextlib.aclosing(store.watch(p, r2)) as watch:
        assert await next_events(watch, 1) == [[Event(f"{p}a", b"2", r2)]]


async def test_watch_from_a_compacted_revision_raises(store: Store, store_prefix: str) -> None:
    p = store_prefix
    r1 = await put(store, f"{p}a", b"1")
    r2 = await put(store, f"{p}a", b"2")
    await compact(store, r2)

    with pytest.raises(WatchCompacted):
        async with contextlib.aclosing(store.watch(p, r1)) as watch:
            await next_events(watch, 1)

    # The compaction revision itself is still watchable.
    async with contextlib.aclosing(store.watch(p, r2)) as watch:
        assert await next_events(watch, 1) == [[Event(f"{p}a", b"2", r2)]]


async def test_watch_ends_cleanly_when_the_consumer_stops(store: Store, store_prefix: str) -> None:
    """Leaving the loop cancels the store-side watch; the store stays usable."""
    baseline = _etcd_watchers(store)
    r = await put(store, f"{store_prefix}a", b"1")
    watch = store.watch(store_prefix, r)
    assert await asyncio.wait_for(anext(watch), DEADLINE_S) == [Event(f"{store_prefix}a", b"1", r)]
    assert _etcd_watchers(store) == baseline + (1 if isinstance(store, EtcdStore) else 0)
    await watch.aclose()
    await eventually(lambda: _async(_etcd_watchers(store) == baseline), "the etcd watch to be cancelled")
    assert await store.get(f"{store_prefix}a") is not None


def _etcd_watchers(store: Store) -> int:
    """etcd's count of server-side watchers (always 0 for memory: nothing to leak there)."""
    if not isinstance(store, EtcdStore):
        return 0
    context = None
    if store.tls is not None:  # the session etcd requires a client certificate
        context = ssl.create_default_context(cafile=store.tls.ca_file)
        context.load_cert_chain(store.tls.cert_file, store.tls.key_file)
    scheme = "https" if context is not None else "http"
    with urllib.request.urlopen(f"{scheme}://{store.endpoint}/metrics", timeout=2, context=context) as resp:
        text = resp.read().decode()
    match = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
    assert match, "etcd metrics lack etcd_debugging_mvcc_watcher_total"
    return int(float(match.group(1)))


async def _async(value: bool) -> bool:
    return value


# --------------------------------------------------------------- membership
async def test_register_puts_the_key_and_close_deletes_it(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}members/me"
    registration = await store.register(key, b"addr", ttl_s=TTL_S)
    entry = await store.get(key)
    assert entry is not None and entry.value == b"addr"
    await registration.close()
    assert await store.get(key) is None


async def test_registration_stays_while_its_holder_lives(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}members/me"
    registration = await store.register(key, b"addr", ttl_s=TTL_S)
    try:
        assert await granted_ttl_s(store, registration) == TTL_S
        loop = asyncio.get_running_loop()
        until = loop.time() + 1.5 * TTL_S  # only the keep-alive explains the key still being there
        while loop.time() < until:
            assert await store.get(key) is not None
            await asyncio.sleep(0.2)
    finally:
        await registration.close()


async def test_registration_expires_after_its_holder_stops_refreshing(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}members/dead"
    registration = await store.register(key, b"addr", ttl_s=TTL_S)
    registration.abandon()  # type: ignore[attr-defined]  # the holder "crashes"
    assert await store.get(key) is not None

    async def gone() -> bool:
        return await store.get(key) is None

    await eventually(gone, "the registration to expire", timeout_s=2 * DEADLINE_S)


async def test_registration_is_recreated_when_the_store_forgot_its_lease(store: Store, store_prefix: str) -> None:
    key = f"{store_prefix}members/me"
    registration = await store.register(key, b"addr", ttl_s=TTL_S)
    try:
        old_lease = registration.lease_id  # type: ignore[attr-defined]
        await forget_lease(store, registration)
        assert await store.get(key) is None

        async def back() -> bool:
            return await store.get(key) is not None

        await eventually(back, "the registration to be re-created")
        assert registration.lease_id != old_lease  # type: ignore[attr-defined]
    finally:
        await registration.close()
    assert await store.get(key) is None


# ----------------------------------------------------------------- failures
@pytest.mark.etcd
async def test_unreachable_etcd_raises_store_unavailable(store_prefix: str) -> None:
    calls: list[tuple[str, bool]] = []
    store = EtcdStore(f"127.0.0.1:{free_port()}", timeout_s=1, on_operation=lambda n, s, ok: calls.append((n, ok)))
    try:
        with pytest.raises(StoreUnavailable):
            await store.snapshot(store_prefix)
        with pytest.raises(StoreUnavailable):
            await store.get(f"{store_prefix}k")
        with pytest.raises(StoreUnavailable):
            await store.commit([Write(f"{store_prefix}k", b"v")])
        with pytest.raises(StoreUnavailable):
            await store.register(f"{store_prefix}k", b"v", ttl_s=2)
        with pytest.raises(StoreUnavailable):
            async with contextlib.aclosing(store.watch(store_prefix, 0)) as watch:
                await anext(watch)
    finally:
        await store.close()
    assert ("snapshot", False) in calls and ("commit", False) in calls


async def test_unavailable_memory_store_raises_store_unavailable(memory_store: MemoryStore, store_prefix: str) -> None:
    r = await put(memory_store, f"{store_prefix}a", b"1")
    watch = memory_store.watch(store_prefix, r)
    await asyncio.wait_for(anext(watch), DEADLINE_S)
    memory_store.unavailable = True
    with pytest.raises(StoreUnavailable):
        await memory_store.snapshot(store_prefix)
    with pytest.raises(StoreUnavailable):
        await memory_store.commit([Write(f"{store_prefix}k", b"v")])
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(anext(watch), DEADLINE_S)
    memory_store.unavailable = False
    assert await memory_store.get(f"{store_prefix}a") is not None


@pytest.mark.etcd
async def test_operations_are_reported_to_the_callbacks(etcd_server: EtcdServer, store_prefix: str) -> None:
    calls: list[tuple[str, bool]] = []
    errors: list[str] = []
    store = EtcdStore(
        etcd_server.endpoint,
        tls=session_pki().etcd_client.files,
        on_operation=lambda name, seconds, ok: calls.append((name, ok and seconds >= 0)),
        on_error=lambda name, error: errors.append(name),
    )
    try:
        await store.snapshot(store_prefix)
        await store.commit([Write(f"{store_prefix}k", b"v")])
    finally:
        await store.client.delete_prefix(store_prefix.encode())
        await store.close()
    assert ("snapshot", True) in calls and ("commit", True) in calls
    assert errors == []


@pytest.mark.etcd
async def test_a_snapshot_larger_than_one_grpc_message_is_read_in_pages_of_one_revision(
    etcd_server: EtcdServer, store_prefix: str
) -> None:
    """Records past gRPC's receive limit (100,000 keys: ~50 MB) are read in pages, all at the first one's revision."""
    limit = 64 * 1024
    tls = session_pki().etcd_client.files
    store = EtcdStore(etcd_server.endpoint, tls=tls, grpc_options={"grpc.max_receive_message_length": limit})
    store.snapshot_page = 20  # 20 KB a page
    paths = [f"{store_prefix}keys/{i:04d}" for i in range(200)]  # 200 KB: three times the limit
    pages = 0
    try:
        for first in range(0, len(paths), MAX_WRITES_PER_COMMIT):
            chunk = paths[first : first + MAX_WRITES_PER_COMMIT]
            written = await store.commit([Write(path, b"x" * 1000) for path in chunk])
        await store.connect()
        reads = store.client.kvstub.Range

        async def write_between_pages(*args: object, **kwargs: object) -> object:
            nonlocal pages
            reply = await reads(*args, **kwargs)
            pages += 1
            if pages == 1:  # after the first page: changes the snapshot must not show
                await store.commit([Write(paths[-1], b"changed"), Write(f"{store_prefix}keys/9999", b"new")])
            return reply

        store.client.kvstub.Range = write_between_pages
        snap = await store.snapshot(store_prefix)
    finally:
        await store.client.delete_prefix(store_prefix.encode())
        await store.close()
    assert pages == 10
    assert [entry.key for entry in snap.entries] == paths
    assert {entry.value for entry in snap.entries} == {b"x" * 1000}
    assert written is not None and snap.revision == written


@pytest.mark.etcd
async def test_a_commit_past_etcds_request_limit_is_refused_loudly(
    etcd_store: EtcdStore, store_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """etcd refuses a request over --max-request-bytes (1.5 MiB by default) for ever: an error says so, with the size.

    A replica's usage bucket grows with the keys it leased in five minutes (~100 bytes each): a pool of 100,000 keys
    reaches the limit, and a flush retried silently every few seconds would never be durable (issue 23).
    """
    with pytest.raises(StoreUnavailable):
        await etcd_store.commit([Write(f"{store_prefix}usage/big", b"x" * 1_600_000)])
    refused = [record for record in caplog.records if record.levelname == "ERROR" and "too large" in record.message]
    assert refused and "1600" in refused[0].message


@pytest.mark.etcd
async def test_etcd_restarted_on_the_same_data_dir_keeps_data(tmp_path: object, store_prefix: str) -> None:
    """Data survives a restart; a live store and watch see the outage, the store recovers."""
    data_dir = f"{tmp_path}/etcd"
    key = f"{store_prefix}k"
    async with EtcdServer(data_dir=data_dir, keep_data=True, extra_args=list(ETCD_ARGS)) as first:
        store = await EtcdStore.open(first.endpoint, timeout_s=1)
        revision = await put(store, key, b"durable")
        watch = store.watch(store_prefix, revision + 1)
        pending = asyncio.ensure_future(anext(watch))
        await eventually(lambda: _async(_etcd_watchers(store) == 1), "the watch to be created")
    try:
        with pytest.raises(StoreUnavailable):
            await store.get(key)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(pending, DEADLINE_S)
        await watch.aclose()

        async with EtcdServer(data_dir=data_dir, port=first.port, keep_data=True, extra_args=list(ETCD_ARGS)):

            async def readable() -> bool:
                with contextlib.suppress(StoreUnavailable):
                    return await store.get(key) == Entry(key, b"durable", revision)
                return False

            await eventually(readable, "the same store to read the data back from the restarted etcd")
            async with contextlib.aclosing(store.watch(store_prefix, revision)) as again:
                assert await next_events(again, 1) == [[Event(key, b"durable", revision)]]
    finally:
        await store.close()
