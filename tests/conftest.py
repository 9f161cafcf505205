"""Shared fixtures: one real etcd per test session (TLS, client certificates of etcd's own CA required), an
isolated key prefix per test, and the session's certificates (``tests/pki.py``) in every service's TLS variables."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import aetcd
import pytest

from services.devstack.etcd_server import EtcdServer
from services.keyring.store import EtcdStore
from services.keyring.store.etcd import etcd_client
from tests.e2e.chaos_run import NODE_PREFIX as CHAOS_NODE_PREFIX
from tests.e2e.chaos_run import STASH_KEY as CHAOS_RUN
from tests.e2e.chaos_run import ChaosRun
from tests.pki import Pki, remove_session_pki, session_pki

# Every etcd a test starts: a 0.5 s election timeout (etcd's default 1 s). One member elects itself sooner at each
# (re)start, and never holds an election after its first; etcd's shortest lease (1.5 election timeouts rounded up
# to whole seconds) is then 1 s, not 2, so tests may register for 1 s (tests/integration/test_store_contract.py).
ETCD_ARGS = ("--election-timeout", "500")


def pytest_configure(config: pytest.Config) -> None:
    """Every service built by a test uses mutual TLS unless the test says otherwise.

    Edge processes a test starts stop at once when it ends them (no 5 s of accepting for a load balancer
    that is not there); the shutdown tests and the chaos bench set their own delay.
    """
    for name, value in session_pki().environment().items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("EDGE_SHUTDOWN_DELAY_S", "0")
    # Required while uploads are on: edges a test starts on port 0 answer upload URLs here unless the test
    # names their own address (tests/e2e/conftest.py make_stack does).
    os.environ.setdefault("EDGE_PUBLIC_BASE_URL", "http://127.0.0.1")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The chaos bench's minute of faults runs beside the first tests (tests/e2e/chaos_run.py) when it is selected."""
    if any(item.nodeid.startswith(CHAOS_NODE_PREFIX) for item in items):
        config.stash[CHAOS_RUN] = ChaosRun()


def pytest_unconfigure(config: pytest.Config) -> None:
    chaos = config.stash.get(CHAOS_RUN, None)
    if chaos is not None:
        chaos.stop()
    remove_session_pki()


@pytest.fixture(scope="session")
def pki() -> Pki:
    return session_pki()


@pytest.fixture(scope="session")
def etcd_server(pki: Pki) -> Iterator[EtcdServer]:
    """One real etcd for the whole run, over TLS; only etcd's CA's client certificates (keyring's) are accepted."""
    server = EtcdServer(tls=pki.etcd.files, extra_args=list(ETCD_ARGS))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def etcd_admin_client(etcd_server: EtcdServer) -> aetcd.Client:
    """A raw aetcd client of the session etcd (keyring's etcd client certificate)."""
    return etcd_client(etcd_server.host, etcd_server.port, tls=session_pki().etcd_client.files, timeout_s=5)


async def open_store(etcd_server: EtcdServer, **kwargs: object) -> EtcdStore:
    """An EtcdStore on the session etcd, with keyring's etcd client certificate."""
    return await EtcdStore.open(etcd_server.endpoint, tls=session_pki().etcd_client.files, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def store_prefix() -> str:
    """A key prefix no other test uses, so tests can share the session's etcd."""
    return f"/test/{uuid.uuid4().hex}/"


@pytest.fixture
async def etcd_store(etcd_server: EtcdServer, store_prefix: str) -> AsyncIterator[EtcdStore]:
    """An EtcdStore on the session etcd; the test's prefix is wiped afterwards."""
    store = await open_store(etcd_server)
    try:
        yield store
    finally:
        await store.close()
        async with etcd_admin_client(etcd_server) as client:
            await client.delete_prefix(store_prefix.encode())
