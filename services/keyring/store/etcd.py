"""``EtcdStore``: the store contract on etcd v3, through aetcd.

Every aetcd/gRPC failure is translated once, in ``_operation``: a compacted
watch revision becomes ``WatchCompacted``, everything else ``StoreUnavailable``
(like patroni's ``catch_etcd_errors``), so callers see only the contract's
exceptions. The same place times each etcd call and reports it to optional
callbacks, so metrics can be attached without this module importing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any

import aetcd
import grpc
from aetcd import rpc as aetcd_rpc
from aetcd import rtypes
from aetcd import watcher as aetcd_watcher
from aetcd.utils import prefix_range_end

from services.common.tls import TLSFiles, channel_credentials
from services.keyring.store.base import (
    Entry,
    Event,
    Registration,
    Snapshot,
    Store,
    StoreError,
    StoreUnavailable,
    WatchCompacted,
    Write,
    await_cancelled,
    validate_writes,
)
from services.keyring.store.etcd_registration import EtcdRegistration

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
_CANCEL_TIMEOUT_S = 1.0
# What a failing etcd call can raise: aetcd's own errors, raw gRPC errors that
# slip past aetcd's wrappers (watch setup, channel use after close), timeouts.
_ETCD_ERRORS: tuple[type[BaseException], ...] = (
    aetcd.ClientError,
    grpc.RpcError,
    grpc.aio.BaseError,
    TimeoutError,
    OSError,
)
_TRANSLATED: tuple[type[BaseException], ...] = (*_ETCD_ERRORS, StoreError)
# Dead connections must surface (watches would hang otherwise) and a restarted
# etcd must be found again within seconds, not gRPC's default 120-s backoff.
DEFAULT_GRPC_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 10_000,  # etcd's --grpc-keepalive-min-time is 5 s
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2_000,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,  # big snapshots
}
# Entries per range read of a snapshot: a few MB of key records, far below the receive limit above.
SNAPSHOT_PAGE = 5_000

OperationCallback = Callable[[str, float, bool], None]
ErrorCallback = Callable[[str, BaseException], None]


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port``, ``http://host:port`` or ``[v6]:port`` -> (host, port)."""
    rest = endpoint.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"etcd endpoint must be host:port, got {endpoint!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _range_end(key: bytes) -> bytes:
    """Range end covering every key under ``key``; the empty prefix means all keys."""
    return prefix_range_end(key) if key else b"\0"


def _translate(error: BaseException, what: str) -> StoreError:
    """The single mapping from aetcd/gRPC failures to the contract's exceptions."""
    if isinstance(error, StoreError):
        return error
    if isinstance(error, aetcd.RevisionCompactedError):
        return WatchCompacted(f"etcd {what}: {error}")
    return StoreUnavailable(f"etcd {what} failed: {type(error).__name__}: {error}")


class TLSClient(aetcd.Client):  # type: ignore[misc]  # aetcd ships no types
    """aetcd's client over TLS with a client certificate (aetcd itself only opens plaintext channels).

    Same connection steps as ``aetcd.Client.connect``, on a secure channel; the
    optional user/password authentication happens over that channel.
    """

    def __init__(self, *args: Any, credentials: grpc.ChannelCredentials, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        connecting = bool(getattr(self, "_is_connecting", False))
        if connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            self.channel = aetcd_rpc.secure_channel(target, self._credentials, options=self._options.items())
            if self._username is not None and self._password is not None:
                self.auth_stub = aetcd_rpc.AuthStub(self.channel)
                request = aetcd_rpc.AuthenticateRequest(name=self._username, password=self._password)
                response = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.metadata = (("token", response.token),)
            self.kvstub = aetcd_rpc.KVStub(self.channel)
            self.clusterstub = aetcd_rpc.ClusterStub(self.channel)
            self.leasestub = aetcd_rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd_rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd_watcher.Watcher(
                aetcd_rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


def etcd_client(
    host: str,
    port: int,
    *,
    tls: TLSFiles | None = None,
    credentials: tuple[str, str] | None = None,
    timeout_s: float | None = None,
    options: dict[str, Any] | None = None,
) -> aetcd.Client:
    """An aetcd client, over mutual TLS when ``tls`` is given, authenticated as a user when ``credentials`` are."""
    user, password = credentials if credentials is not None else (None, None)
    common: dict[str, Any] = {"username": user, "password": password, "timeout": timeout_s, "options": options}
    if tls is None:
        return aetcd.Client(host=host, port=port, **common)
    return TLSClient(host=host, port=port, credentials=channel_credentials(tls), **common)


class EtcdStore(Store):
    """The store contract on one etcd endpoint.

    ``timeout_s`` bounds every unary call (and watch creation): without it a
    blackholed etcd would hang callers forever. ``on_operation(name, seconds,
    ok)`` and ``on_error(name, error)`` are called after each etcd call.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_operation: OperationCallback | None = None,
        on_error: ErrorCallback | None = None,
        grpc_options: dict[str, Any] | None = None,
        tls: TLSFiles | None = None,
        credentials: tuple[str, str] | None = None,
        snapshot_page: int = SNAPSHOT_PAGE,
    ) -> None:
        if endpoint is not None:
            host, port = parse_endpoint(endpoint)
        self.host = host or "127.0.0.1"
        self.port = port or 2379
        self.timeout_s = timeout_s
        self.snapshot_page = snapshot_page
        self.tls = tls
        self._on_operation = on_operation
        self._on_error = on_error
        self._client = etcd_client(
            self.host,
            self.port,
            tls=tls,
            credentials=credentials,
            timeout_s=timeout_s,
            options={**DEFAULT_GRPC_OPTIONS, **(grpc_options or {})},
        )
        self._registrations: set[EtcdRegistration] = set()

    @classmethod
    async def open(cls, endpoint: str, **kwargs: Any) -> EtcdStore:
        """Construct and connect in one step."""
        store = cls(endpoint, **kwargs)
        await store.connect()
        return store

    def observe_operations(self, on_operation: OperationCallback) -> None:
        """Attach the latency callback after construction (the server owns the metrics)."""
        self._on_operation = on_operation

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def client(self) -> aetcd.Client:
        """The raw aetcd client, for tests and tools (compaction, lease inspection)."""
        return self._client

    async def connect(self, *, verify: bool = False) -> None:
        """Open the gRPC channel (no I/O); with ``verify`` also prove etcd answers."""
        with self._operation("connect"):
            await self._client.connect()
        if verify:
            await self.get("\0")

    # ----------------------------------------------------------- the boundary
    @contextlib.contextmanager
    def _operation(self, name: str) -> Iterator[None]:
        """Time one etcd call and translate its failure (the only place that does)."""
        started = time.perf_counter()
        try:
            yield
        except asyncio.CancelledError:
            raise
        except _TRANSLATED as error:
            self._report(name, started, error)
            raise _translate(error, name) from error
        self._report(name, started, None)

    def _report(self, name: str, started: float, error: BaseException | None) -> None:
        """Feed the callbacks; a broken metrics hook must not break the store."""
        seconds = time.perf_counter() - started
        try:
            if self._on_operation is not None:
                self._on_operation(name, seconds, error is None)
            if error is not None and self._on_error is not None:
                self._on_error(name, error)
        except Exception:
            log.exception("store metrics callback failed for %s", name)

    # ------------------------------------------------------------------ reads
    async def snapshot(self, prefix: str) -> Snapshot:
        """Read in pages of ``snapshot_page`` entries, each at the first page's revision: one consistent snapshot.

        One range read of everything would hold the whole reply in one gRPC
        message (a pool of 100,000 keys is about 50 MB, near the receive limit)
        and the reply and its entries in memory at once. A revision compacted
        between pages fails the read (``StoreUnavailable``): the caller reads again.
        """
        start = prefix.encode() or b"\0"
        end = _range_end(prefix.encode())
        entries: list[Entry] = []
        revision = 0
        with self._operation("snapshot"):
            await self._client.connect()
            while True:
                request = aetcd_rpc.RangeRequest(key=start, range_end=end, limit=self.snapshot_page, revision=revision)
                reply = await self._client.kvstub.Range(request, timeout=self.timeout_s, metadata=self._client.metadata)
                revision = revision or reply.header.revision
                entries.extend(Entry(kv.key.decode(), kv.value, kv.mod_revision) for kv in reply.kvs)
                if not reply.more or not reply.kvs:
                    return Snapshot(revision, entries)
                start = reply.kvs[-1].key + b"\0"  # the next key after the last one read

    async def get(self, key: str) -> Entry | None:
        with self._operation("get"):
            result = await self._client.get(key.encode())
        if result is None:
            return None
        return Entry(key, result.value, result.mod_revision)

    # ----------------------------------------------------------------- writes
    async def commit(self, writes: Sequence[Write]) -> int | None:
        validate_writes(writes)
        if not writes:
            return (await self.snapshot("\0")).revision
        tx = self._client.transactions
        compare = [self._guard(w) for w in writes if w.expected_revision is not None]
        success = [
            tx.put(w.key.encode(), w.value) if w.value is not None else tx.delete(w.key.encode()) for w in writes
        ]
        try:
            with self._operation("commit"):
                succeeded, responses = await self._client.transaction(compare=compare, success=success, failure=[])
        except StoreUnavailable as error:
            if "too large" in str(error):  # past etcd's --max-request-bytes: no retry can succeed, say so loudly
                size = sum(len(w.key) + len(w.value or b"") for w in writes)
                log.error("etcd refused a commit of %d writes (%d bytes) as too large: %s", len(writes), size, error)
            raise
        if not succeeded:
            return None
        revision: int = max(getattr(r, r.WhichOneof("response")).header.revision for r in responses)
        return revision

    def _guard(self, write: Write) -> Any:
        """0 = key absent (create_revision == 0), n = the key's mod_revision is n."""
        tx = self._client.transactions
        if write.expected_revision == 0:
            return tx.create(write.key.encode()) == 0
        return tx.mod(write.key.encode()) == write.expected_revision

    # ------------------------------------------------------------------ watch
    async def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[list[Event], None]:
        """Batches of one revision each; iterate under ``contextlib.aclosing``.

        aetcd hands events one by one; a pump task moves them into a queue so
        that all events of one watch response are queued before we run, and we
        can group them by revision. Leaving the loop cancels the etcd watch.
        """
        key = prefix.encode()
        with self._operation("watch"):
            handle = await self._client.watch(key, range_end=_range_end(key), start_revision=start_revision or None)
        queue: asyncio.Queue[rtypes.Event | BaseException | None] = asyncio.Queue()
        pump = asyncio.get_running_loop().create_task(_pump(handle, queue), name=f"etcd watch {prefix}")
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                for batch in self._batches(items):
                    yield batch
        finally:
            await _cancel_watch(handle, pump)

    def _batches(self, items: list[rtypes.Event | BaseException | None]) -> Iterator[list[Event]]:
        """Group events by revision; a trailing error or end-of-stream is raised after them."""
        batch: list[Event] = []
        for item in items:
            if not isinstance(item, rtypes.Event):
                if batch:
                    yield batch
                error = item or StoreUnavailable("etcd watch stream ended (client closed?)")
                self._report("watch", time.perf_counter(), error)
                translated = _translate(error, "watch")
                raise translated from (None if translated is error else error)
            event = _event(item)
            if batch and batch[-1].mod_revision != event.mod_revision:
                yield batch
                batch = []
            batch.append(event)
        if batch:
            yield batch

    # ------------------------------------------------------------- membership
    async def register(self, key: str, value: bytes, ttl_s: int) -> Registration:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        registration = EtcdRegistration(self._client, self._operation, key, value, ttl_s, self._registrations.discard)
        await registration.start()
        self._registrations.add(registration)
        return registration

    # ------------------------------------------------------------------- life
    async def close(self) -> None:
        """Close registrations (best effort: else their leases expire) and the channel."""
        for registration in list(self._registrations):
            try:
                await registration.close()
            except StoreUnavailable:
                registration.abandon()
        with contextlib.suppress(Exception):
            await self._client.close()


def _event(item: rtypes.Event) -> Event:
    value = item.kv.value if item.kind == rtypes.EventKind.PUT else None
    return Event(item.kv.key.decode(), value, item.kv.mod_revision)


async def _pump(handle: rtypes.Watch, queue: asyncio.Queue[rtypes.Event | BaseException | None]) -> None:
    """Move aetcd's events into our queue; an error or the stream's end goes in last."""
    try:
        async for item in handle:
            queue.put_nowait(item)
    except Exception as error:
        queue.put_nowait(error)
    else:
        queue.put_nowait(None)


async def _cancel_watch(handle: rtypes.Watch, pump: asyncio.Task[None]) -> None:
    """Cancel the server-side watch and the pump; never hang or raise while unwinding."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(handle.cancel(), _CANCEL_TIMEOUT_S)
    await await_cancelled(pump)
