"""Secrets at rest through real keyring replicas on a real etcd (issue 11).

Probes: a client-token hash read from the store (a range read, or an export)
presented to Acquire gets no lease; a token id reveals nothing of the hash a
client presents; every sealed secret names its KEK; secrets sealed before KEK
ids keep working, client tokens from before keyed hashes only under the
upgrade's switch (KEYRING_ACCEPT_UNKEYED_TOKENS, issue 18), and the reseal
command moves both; a KEK rotation while two replicas lease loses no lease.

Names from the issue-11 code are imported inside the tests that need them,
so the probes fail on their assertions (not on an import) against older code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from pathlib import Path

import grpc
import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.proto.keyring.v1 import keyring_pb2 as pb
from services.devstack.fake_keys import fake_gemini_key
from services.keyring.domain.identity import key_id_for
from services.keyring.sealing import generate_kek
from services.keyring.store import EtcdStore, Write

from .conftest import Replica, StartReplica, make_pool, token_hash
from .test_keyring_service import MODEL, acquire, add_keys, eventually, release

SEALED = re.compile(r"v2:(kek-[0-9a-f]{12}):[A-Za-z0-9+/=]+")


async def stored(store: EtcdStore, prefix: str, kind: str) -> list[dict[str, object]]:
    """The records of one kind as etcd holds them (one range read, as a snapshot thief would)."""
    snapshot = await store.snapshot(prefix)
    return [orjson.loads(entry.value) for entry in snapshot.entries if entry.key.startswith(f"{prefix}{kind}/")]


async def no_lease_for(replica: Replica, presented: str) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await acquire(replica, presented)
    return refused.value.code()


async def test_a_token_hash_read_from_etcd_gets_no_lease(
    start_replica: StartReplica, etcd_store: EtcdStore, store_prefix: str
) -> None:
    replica = await start_replica()
    presented = await make_pool(replica)
    await add_keys(replica, 1)
    [record] = await stored(etcd_store, store_prefix, "tokens")
    assert await no_lease_for(replica, str(record["token_hash"])) is grpc.StatusCode.UNAUTHENTICATED
    assert record["token_hash"] != presented
    assert (await acquire(replica, presented)).secret.startswith("AIza")  # the client's own hash still works


async def test_a_token_hash_from_an_export_gets_no_lease(start_replica: StartReplica) -> None:
    replica = await start_replica()
    presented = await make_pool(replica)
    await add_keys(replica, 1)
    document = orjson.loads((await replica.admin.ExportConfig(pb.ExportConfigRequest())).document)
    [token] = document["tokens"]
    assert await no_lease_for(replica, token["token_hash"]) is grpc.StatusCode.UNAUTHENTICATED
    assert presented not in orjson.dumps(document).decode()
    assert (await acquire(replica, presented)).key_id


async def test_a_token_id_reveals_nothing_of_the_hash_a_client_presents(start_replica: StartReplica) -> None:
    replica = await start_replica()
    presented = await make_pool(replica)
    created = await replica.admin.CreateToken(pb.CreateTokenRequest(pool="main", name="second"))
    rotated = await replica.admin.RotateToken(pb.RotateTokenRequest(token_id=created.info.token_id))
    for token_id, clear in ((created.info.token_id, created.token), (rotated.info.token_id, rotated.token)):
        assert token_id.startswith("t-") and token_hash(clear)[:12] != token_id[2:]
    listed = await replica.admin.ListTokens(pb.ListTokensRequest())
    assert all(not presented.startswith(token.token_id[2:]) for token in listed.tokens)


async def test_every_sealed_secret_names_its_kek(
    start_replica: StartReplica, etcd_store: EtcdStore, store_prefix: str
) -> None:
    replica = await start_replica()
    await make_pool(replica)
    await add_keys(replica, 3)
    keys = await stored(etcd_store, store_prefix, "keys")
    tokens = await stored(etcd_store, store_prefix, "tokens")
    sealed = [str(key["sealed_secret"]) for key in keys] + [str(token.get("sealed_hash", "")) for token in tokens]
    assert len(sealed) == 4 and all(SEALED.fullmatch(value) for value in sealed), sealed
    assert len({SEALED.fullmatch(value).group(1) for value in sealed}) == 1  # type: ignore[union-attr]
    assert {token.get("hash_key") for token in tokens} == {SEALED.fullmatch(sealed[0]).group(1)}  # type: ignore[union-attr]


def legacy_seal(kek: str, secret: str, key_id: str) -> str:
    """A secret as keyring sealed it before KEK ids: base64(nonce + ciphertext), the key id as associated data."""
    nonce = os.urandom(12)
    sealed = AESGCM(base64.b64decode(kek)).encrypt(nonce, secret.encode(), key_id.encode())
    return base64.b64encode(nonce + sealed).decode()


async def test_records_from_before_keyed_hashes_work_under_the_switch_until_reseal_moves_them(
    start_replica: StartReplica, etcd_store: EtcdStore, store_prefix: str, kek: str
) -> None:
    """An unkeyed token record (what a writer of etcd could forge) gets no lease unless the upgrade's switch is on."""
    from services.keyring.codec import Layout
    from services.keyring.reseal import reseal
    from services.keyring.sealing import SecretBox

    replica = await start_replica()
    migrating = await start_replica("replica-b", accept_unkeyed_tokens=True)
    await replica.admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="main")))
    presented = token_hash("kr-a-token-from-an-older-keyring")
    secret = fake_gemini_key("legacy")
    key_id = key_id_for(secret)
    legacy_token = {"token_id": "t-" + presented[:12], "token_hash": presented, "pool": "main", "name": "old"}
    legacy_key = {
        "key_id": key_id,
        "pool": "main",
        "sealed_secret": legacy_seal(kek, secret, key_id),
        "mask": "AIza..x",
    }
    written = await etcd_store.commit(
        [
            Write(f"{store_prefix}tokens/{legacy_token['token_id']}", orjson.dumps(legacy_token), 0),
            Write(f"{store_prefix}keys/{key_id}", orjson.dumps(legacy_key), 0),
        ]
    )
    assert written is not None

    async def leased() -> bool:
        try:
            return (await acquire(migrating, presented)).secret == secret
        except grpc.aio.AioRpcError:
            return False

    await eventually(leased, within_s=3)  # under the switch, an upgrade keeps old tokens and secrets working

    async def in_view() -> bool:
        return presented in replica.keyring.cache.view.tokens_by_hash

    await eventually(in_view, within_s=3)
    assert await no_lease_for(replica, presented) is grpc.StatusCode.UNAUTHENTICATED  # refused by default

    box = SecretBox.from_base64(kek)
    check = await reseal(etcd_store, Layout(store_prefix), box, check_only=True)
    assert (check.unkeyed_tokens, check.tokens_left, check.done) == (1, 1, False)
    report = await reseal(etcd_store, Layout(store_prefix), box)
    assert (report.keys_resealed, report.tokens_rekeyed, report.done) == (1, 1, True)
    assert (await reseal(etcd_store, Layout(store_prefix), box, check_only=True)).unkeyed_tokens == 0
    [token] = await stored(etcd_store, store_prefix, "tokens")
    [key] = await stored(etcd_store, store_prefix, "keys")
    assert token["token_id"] == legacy_token["token_id"]  # ids survive
    assert token["token_hash"] != presented and token["hash_key"] == box.kek_id
    assert SEALED.fullmatch(str(key["sealed_secret"])) and SEALED.fullmatch(str(token["sealed_hash"]))

    async def keyed_in_view() -> bool:
        found = replica.keyring.desk.allocator.find_token(presented)
        return found is not None and found.keyed

    await eventually(keyed_in_view, within_s=3)
    assert (await acquire(replica, presented)).secret == secret
    assert await no_lease_for(replica, str(token["token_hash"])) is grpc.StatusCode.UNAUTHENTICATED
    again = await reseal(etcd_store, Layout(store_prefix), box)
    assert (again.keys_resealed, again.tokens_rekeyed, again.done) == (0, 0, True)


async def test_a_kek_rotation_while_two_replicas_lease_loses_no_lease(
    start_replica: StartReplica, etcd_store: EtcdStore, store_prefix: str, kek: str, tmp_path: Path
) -> None:
    """docs/deployment.md "Rotating the KEK": the next KEK opens everywhere, then seals, then reseal, then the old
    one goes."""
    from services.keyring.codec import Layout
    from services.keyring.reseal import reseal
    from services.keyring.sealing import SealingError, SecretBox

    new_kek = generate_kek()
    new_kek_file = tmp_path / "kek.next"
    new_kek_file.write_text(new_kek)
    old_box, new_box = SecretBox.from_base64(kek), SecretBox.from_base64(new_kek)
    # Step 1 done on replica a: it seals with the old KEK and opens with the next one too.
    replica_a = await start_replica("replica-a", open_keks=new_kek)
    presented = await make_pool(replica_a)
    secrets = {key_id: fake_gemini_key(f"r{i}") for i, key_id in enumerate(await add_keys(replica_a, 4, seed="r"))}
    # Step 2 done on replica b: it seals with the next KEK and opens with the old one.
    replica_b = await start_replica("replica-b", kek_file=str(new_kek_file), open_keks=kek)
    await eventually(lambda: _knows(replica_b, presented), within_s=3)

    leases: list[tuple[str, str, str]] = []  # (replica, key id, secret)
    failures: list[str] = []
    stop = asyncio.Event()

    async def lease_on(replica: Replica, name: str) -> None:
        while not stop.is_set():
            try:
                lease = await acquire(replica, presented)
                leases.append((name, lease.key_id, lease.secret))
                await release(replica, lease)
            except grpc.aio.AioRpcError as error:
                failures.append(f"{name}: {error.code().name} {error.details()}")
            await asyncio.sleep(0)

    leasing = [asyncio.create_task(lease_on(replica_a, "a")), asyncio.create_task(lease_on(replica_b, "b"))]
    try:
        await asyncio.sleep(0.2)
        # A key added during the rotation is sealed under the next KEK; replica a must open it.
        added = await replica_b.admin.AddKeys(
            pb.AddKeysRequest(pool="main", keys=[pb.KeyInput(secret=fake_gemini_key("during"))])
        )
        secrets[added.results[0].key_id] = fake_gemini_key("during")
        await asyncio.sleep(0.2)
        report = await reseal(etcd_store, Layout(store_prefix), SecretBox.from_base64(new_kek, [kek]))
        assert (report.keys_resealed, report.tokens_rekeyed, report.done) == (4, 1, True), report
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*leasing)
    assert failures == []
    assert len(leases) > 50 and {name for name, _, _ in leases} == {"a", "b"}
    assert all(secrets[key_id] == secret for _, key_id, secret in leases)
    assert {key_id for name, key_id, _ in leases if name == "a"} == set(secrets)  # a opened the new KEK's key

    keys = await stored(etcd_store, store_prefix, "keys")
    tokens = await stored(etcd_store, store_prefix, "tokens")
    assert {SEALED.fullmatch(str(key["sealed_secret"])).group(1) for key in keys} == {new_box.kek_id}  # type: ignore[union-attr]
    assert [token["hash_key"] for token in tokens] == [new_box.kek_id] != [old_box.kek_id]
    check = await reseal(etcd_store, Layout(store_prefix), SecretBox.from_base64(new_kek, [kek]), check_only=True)
    assert (check.keys_left, check.tokens_left, check.done) == (0, 0, True)

    # Step 4: the old KEK is gone; a replica that knows only the new one leases every key.
    await replica_a.stop()
    replica_c = await start_replica("replica-c", kek_file=str(new_kek_file))
    seen: dict[str, str] = {}
    for _ in range(len(secrets)):
        lease = await replica_c.lease.Acquire(
            pb.AcquireRequest(token_hash=presented, model=MODEL, exclude_key_ids=list(seen))
        )
        seen[lease.lease.key_id] = lease.lease.secret
    assert seen == secrets
    with pytest.raises(SealingError, match=new_box.kek_id):  # and an old-KEK-only box opens none of it
        old_box.open(str(keys[0]["sealed_secret"]), str(keys[0]["key_id"]))


async def _knows(replica: Replica, presented: str) -> bool:
    return bool(replica.keyring.desk.allocator.find_token(presented))


async def test_the_reseal_command_reads_the_replicas_settings(
    start_replica: StartReplica,
    etcd_server: object,
    store_prefix: str,
    kek: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m services.keyring.reseal [--check]` with the KEYRING_* variables a replica runs with."""
    from services.keyring.reseal import main

    replica = await start_replica()
    await make_pool(replica)
    await add_keys(replica, 2)
    new_kek = generate_kek()
    monkeypatch.setenv("KEYRING_ETCD_ENDPOINT", etcd_server.endpoint)  # type: ignore[attr-defined]
    monkeypatch.setenv("KEYRING_PREFIX", store_prefix)
    monkeypatch.setenv("KEYRING_KEK", kek)
    assert await asyncio.to_thread(main, ["--check"]) == 0  # everything is under the current KEK
    monkeypatch.setenv("KEYRING_KEK", new_kek)
    assert await asyncio.to_thread(main, ["--check"]) == 1  # the old KEK is not configured: nothing opens
    assert orjson.loads(capsys.readouterr().out.splitlines()[-1])["unopenable"]
    monkeypatch.setenv("KEYRING_OPEN_KEKS", kek)
    assert await asyncio.to_thread(main, ["--check"]) == 1
    left = orjson.loads(capsys.readouterr().out.splitlines()[-1])
    assert (left["keys_left"], left["tokens_left"], left["unopenable"]) == (2, 1, [])
    assert await asyncio.to_thread(main, []) == 0
    done = orjson.loads(capsys.readouterr().out.splitlines()[-1])
    assert (done["keys_resealed"], done["tokens_rekeyed"], done["done"]) == (2, 1, True)
    assert await asyncio.to_thread(main, ["--check"]) == 0
