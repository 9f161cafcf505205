"""Secrets opened ahead of need (issue 23): once a replica serves, a background task opens every key's
sealed secret, so no first lease pays for it (with 100,000 keys that was 4 % of a fresh replica's
samples). On the in-memory store under a fake clock: no etcd, no server.

The pool is written by a replica that then stops, as a restarted replica finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from services.common.naming import token_hash
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.administration import Administration, KeyInput, Keys
from services.keyring.core import Keyring
from services.keyring.domain.identity import GEMINI_KEY_PATTERN
from services.keyring.domain.models import Pool
from services.keyring.sealing import SealingError, SecretBox, generate_kek
from services.keyring.store import MemoryStore

from .builders import FakeChecker, FakeClock

MODEL = "gemini-3.5-flash"


class SpyBox(SecretBox):
    """A box that records the key id of every secret it is asked to open."""

    opened: list[str]

    def open(self, sealed: str, key_id: str) -> str:
        self.opened.append(key_id)
        return super().open(sealed, key_id)


@dataclass
class Seeded:
    kek: str
    token: str  # the client token's hash, pool "main"
    keys: list[str]  # key ids of "main"'s keys
    stray_token: str  # pool "stray": keys sealed under a KEK the replica does not have
    stray: list[str]


async def seed(store: MemoryStore, clock: FakeClock, keys: int, stray: int = 0) -> Seeded:
    kek = generate_kek()
    writer = Keyring(store, SecretBox.from_base64(kek), FakeChecker(), replica_id="seed", clock=clock)
    await writer.start(timeout_s=2)
    admin = Administration(writer, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=100)
    await admin.pools.create_pool(Pool("main"))
    added = await admin.keys.add_keys("main", [KeyInput(fake_gemini_key(f"warm-{i}"), f"p-{i}") for i in range(keys)])
    _, token = await admin.tokens.create_token("main", "tests")
    elsewhere = Keys(
        writer.cache.view, writer.writer, SecretBox.from_base64(generate_kek()), clock,
        key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=100,
    )  # fmt: skip
    stray_added, stray_token = [], ""
    if stray:
        await admin.pools.create_pool(Pool("stray"))
        inputs = [KeyInput(fake_gemini_key(f"stray-{i}"), f"s-{i}") for i in range(stray)]
        stray_added = await elsewhere.add_keys("stray", inputs)
        stray_token = token_hash((await admin.tokens.create_token("stray", "tests"))[1])
    await writer.stop()
    return Seeded(kek, token_hash(token), [a.key_id for a in added], stray_token, [a.key_id for a in stray_added])


def replica(store: MemoryStore, clock: FakeClock, kek: str) -> tuple[Keyring, SpyBox]:
    box = SpyBox.from_base64(kek)
    assert isinstance(box, SpyBox)
    box.opened = []
    return Keyring(store, box, FakeChecker(), replica_id="r1", janitor_interval_s=3600, clock=clock), box


async def until(condition: Callable[[], bool], what: str, within_s: float = 2.0) -> None:
    try:
        async with asyncio.timeout(within_s):
            while not condition():
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"not within {within_s} s: {what}") from None


async def test_a_serving_replica_opens_every_secret_without_a_lease_and_a_lease_opens_none() -> None:
    store, clock = MemoryStore(), FakeClock()
    seeded = await seed(store, clock, keys=30)
    keyring, box = replica(store, clock, seeded.kek)
    await keyring.start(timeout_s=2)
    try:
        await until(lambda: set(box.opened) >= set(seeded.keys), "every key's secret opened")
        assert keyring.desk.leases_in_flight == 0
        assert sorted(box.opened) == sorted(seeded.keys)  # each once
        opened = len(box.opened)
        for _ in range(len(seeded.keys)):
            grant, secret = keyring.desk.acquire(seeded.token, MODEL)
            assert secret == SecretBox.from_base64(seeded.kek).open(grant.key.sealed_secret, grant.key.key_id)
        assert len(box.opened) == opened  # leases found every secret open
    finally:
        await keyring.stop()
        await store.close()


async def test_a_secret_that_does_not_open_is_skipped_and_told_once_by_key_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, clock = MemoryStore(), FakeClock()
    seeded = await seed(store, clock, keys=5, stray=2)
    keyring, box = replica(store, clock, seeded.kek)
    caplog.set_level(logging.WARNING, logger="services.keyring")
    await keyring.start(timeout_s=2)
    try:
        await until(lambda: set(box.opened) >= {*seeded.keys, *seeded.stray}, "every secret tried")
        await until(lambda: "do not open" in caplog.text, "the warning")
        [warning] = [r for r in caplog.records if "do not open" in r.getMessage()]
        told = warning.getMessage()
        assert told.startswith("2 key secrets") and all(key_id in told for key_id in seeded.stray)
        assert "AIza" not in caplog.text  # ids only, never a secret
        assert sorted(box.opened) == sorted([*seeded.keys, *seeded.stray])  # each once
        # The lease path is as it was: it tries the secret again and fails.
        tried = len(box.opened)
        with pytest.raises(SealingError):
            keyring.desk.acquire(seeded.stray_token, MODEL)
        assert len(box.opened) == tried + 1 and box.opened[-1] in seeded.stray
        grant, _ = keyring.desk.acquire(seeded.token, MODEL)
        assert len(box.opened) == tried + 1 and grant.key.key_id in seeded.keys
    finally:
        await keyring.stop()
        await store.close()


async def test_stopping_a_replica_mid_warm_up_leaves_no_task(monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = MemoryStore(), FakeClock()
    seeded = await seed(store, clock, keys=20)
    keyring, box = replica(store, clock, seeded.kek)
    real = keyring.desk.open_secrets
    monkeypatch.setattr(keyring.desk, "open_secrets", lambda: real(chunk=1))  # a yield after every key
    await keyring.start(timeout_s=2)
    for _ in range(1000):  # a turn of the loop at a time, not a timer: the warm-up goes one key a turn
        if box.opened:
            break
        await asyncio.sleep(0)
    await keyring.stop()
    stopped_at = len(box.opened)
    assert 0 < stopped_at < len(seeded.keys)
    names = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
    assert "keyring-open-secrets" not in names
    for _ in range(len(seeded.keys)):
        await asyncio.sleep(0)
    assert len(box.opened) == stopped_at  # nothing goes on opening
    await store.close()


async def test_keys_added_while_the_replica_serves_are_opened_without_a_lease() -> None:
    """An import while serving (AddKeys: up to 5,000 keys a call) brings as many first leases: the warm-up opens
    the new keys' secrets as the view learns of them, so none of those leases pays for it."""
    store, clock = MemoryStore(), FakeClock()
    seeded = await seed(store, clock, keys=3)
    keyring, box = replica(store, clock, seeded.kek)
    await keyring.start(timeout_s=2)
    try:
        await until(lambda: set(box.opened) >= set(seeded.keys), "the first keys opened")
        admin = Administration(keyring, key_pattern=GEMINI_KEY_PATTERN, max_keys_per_import=100)
        added = await admin.keys.add_keys("main", [KeyInput(fake_gemini_key(f"late-{i}"), f"l-{i}") for i in range(40)])
        late = [a.key_id for a in added]
        await until(lambda: set(box.opened) >= set(late), "the added keys' secrets opened")
        assert keyring.desk.leases_in_flight == 0
        assert sorted(box.opened) == sorted([*seeded.keys, *late])  # each once
        opened = len(box.opened)
        for _ in range(len(seeded.keys) + len(late)):
            keyring.desk.acquire(seeded.token, MODEL)
        assert len(box.opened) == opened  # no lease opened a secret
    finally:
        await keyring.stop()
        await store.close()
