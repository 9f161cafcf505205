"""Shared fixtures: one real etcd per test session, an isolated key prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import aetcd
import pytest

from services.devstack.etcd_server import EtcdServer
from services.keyring.store import EtcdStore


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd for the whole run (started lazily, stopped at session end)."""
    server = EtcdServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_prefix() -> str:
    """A key prefix no other test uses, so tests can share the session's etcd."""
    return f"/test/{uuid.uuid4().hex}/"


@pytest.fixture
async def etcd_store(etcd_server: EtcdServer, store_prefix: str) -> AsyncIterator[EtcdStore]:
    """An EtcdStore on the session etcd; the test's prefix is wiped afterwards."""
    store = await EtcdStore.open(etcd_server.endpoint)
    try:
        yield store
    finally:
        await store.close()
        async with aetcd.Client(host=etcd_server.host, port=etcd_server.port, timeout=5) as client:
            await client.delete_prefix(store_prefix.encode())
