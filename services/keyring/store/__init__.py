"""Where keyring's state lives: the contract (``base``) and its two implementations."""

from services.keyring.store.base import (
    MAX_WRITES_PER_COMMIT,
    Entry,
    Event,
    Registration,
    Snapshot,
    Store,
    StoreError,
    StoreUnavailable,
    WatchCompacted,
    Write,
)
from services.keyring.store.etcd import EtcdStore
from services.keyring.store.memory import MemoryStore

__all__ = [
    "MAX_WRITES_PER_COMMIT",
    "Entry",
    "EtcdStore",
    "Event",
    "MemoryStore",
    "Registration",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "WatchCompacted",
    "Write",
]
