"""etcd answers keyring only (issue 18, finding 1), on the session's real etcd.

etcd trusts a CA of its own (``tests/pki.py``, as deployed: components/cert-manager, compose, the devstack) whose
client certificates only keyring holds. The edge's and admin's certificates, signed by the services' CA, are
refused at the TLS handshake even by a client that trusts etcd's server certificate: they read nothing and
write nothing, so a stolen edge certificate can no longer forge a token record or read the pools.
"""

from __future__ import annotations

import pytest

from services.common.tls import TLSFiles
from services.devstack.etcd_server import EtcdServer
from services.keyring.store import EtcdStore, StoreUnavailable, Write
from tests.pki import Pki

pytestmark = pytest.mark.etcd


async def test_the_edges_and_admins_certificates_read_and_write_nothing_in_etcd(
    etcd_server: EtcdServer, pki: Pki, etcd_store: EtcdStore, store_prefix: str
) -> None:
    pool, forged = f"{store_prefix}pools/main", f"{store_prefix}tokens/t-forged"
    assert await etcd_store.commit([Write(pool, b'{"name": "main"}', 0)]) is not None  # keyring writes
    for cert in (pki.edge, pki.admin):
        # The client trusts etcd's server certificate, so only etcd can be the one refusing.
        intruder = EtcdStore(
            etcd_server.endpoint, timeout_s=2, tls=TLSFiles(cert.cert_file, cert.key_file, pki.etcd.ca_file)
        )
        try:
            with pytest.raises(StoreUnavailable):
                await intruder.snapshot(store_prefix)
            with pytest.raises(StoreUnavailable):
                await intruder.commit([Write(forged, b'{"token_hash": "x", "pool": "main"}', 0)])
        finally:
            await intruder.close()
    assert await etcd_store.get(forged) is None
    entry = await etcd_store.get(pool)
    assert entry is not None and entry.value == b'{"name": "main"}'  # keyring reads
