"""One key, held for one upstream call, and the attempts of a call that may move to another key.

A ``Lease`` is an async context manager: entering acquires a key from keyring, leaving releases it with
what was reported (``report``, ``report_transport_failure``). Leaving without a report (the block raised,
was cancelled or simply returned) releases it as cancelled, which says nothing of the key: a lease is
never kept past its block, whatever happens in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from keyring_lease._proto.keyring.v1 import keyring_pb2 as pb
from keyring_lease.answers import AnswerKind, Transport
from keyring_lease.errors import LeaseError
from keyring_lease.outcomes import Report, answer_report, cancelled_report, transport_report

if TYPE_CHECKING:
    from keyring_lease.pool import LeasePool

__all__ = ["Attempts", "Lease"]

log = logging.getLogger("keyring_lease")

Release = Callable[[pb.ReleaseRequest], Awaitable[object]]


class Lease:
    """An upstream key for one call (``key``), released when the ``async with`` block ends."""

    def __init__(self, pool: LeasePool, model: str, exclude_key_ids: list[str] | None = None) -> None:
        self._pool = pool
        self.model = model.removeprefix("models/")
        self._exclude = exclude_key_ids if exclude_key_ids is not None else []
        self._granted: pb.Lease | None = None
        self._release: Release | None = None
        self._started = 0.0
        self._report: Report | None = None
        self.released = False

    # -- what the caller uses -------------------------------------------------

    @property
    def key(self) -> str:
        """The upstream API key, for this call only: send it as ``x-goog-api-key``; never log or keep it."""
        return self._lease.secret

    @property
    def key_id(self) -> str:
        """keyring's id of the key (safe to log)."""
        return self._lease.key_id

    @property
    def project(self) -> str:
        return self._lease.project

    @property
    def pool(self) -> str:
        return self._lease.pool

    @property
    def kind(self) -> AnswerKind | None:
        """What the reported answer meant (the edge's classifier); None before a report."""
        return self._report.kind if self._report else None

    @property
    def tries_another_key(self) -> bool:
        """Whether another key may answer better: the reported failure was the key's (or its project's)."""
        return self._report is not None and self._report.kind.tries_another_key

    def report(
        self, status: int, body: bytes | str = b"", *, input_tokens: int | None = None, output_tokens: int | None = None
    ) -> AnswerKind:
        """Google's answer (HTTP status and body): classified now, told to keyring at the release.

        Token counts are read from the body's ``usageMetadata`` (or OpenAI ``usage``) unless given.
        """
        self._report = answer_report(status, body, self._elapsed_ms(), (input_tokens, output_tokens), self.model)
        return self._report.kind

    def report_transport_failure(self, *, timeout: bool = False) -> AnswerKind:
        """The call got no HTTP answer: a timeout, or a refused or broken connection."""
        transport = Transport.TIMEOUT if timeout else Transport.CONNECTION
        self._report = transport_report(transport, self._elapsed_ms())
        return self._report.kind

    # -- the context manager -----------------------------------------------------

    async def __aenter__(self) -> Lease:
        if self._granted is not None or self.released:
            raise RuntimeError("a Lease is entered once; ask the pool for another")
        self._granted, self._release = await self._pool._acquire(self.model, self._exclude)
        self._exclude.append(self._granted.key_id)
        self._started = time.monotonic()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        report = self._report or cancelled_report(self._elapsed_ms())
        if error is not None and self._report is None:
            log.info("lease of key %s released after %s: outcome cancelled", self.key_id, type(error).__name__)
        await self._settle(report)

    async def _settle(self, report: Report) -> None:
        """Release once; a release that fails is logged, never raised (keyring reclaims the lease at expiry)."""
        if self.released or self._granted is None or self._release is None:
            return
        self.released = True
        request = pb.ReleaseRequest(
            lease_id=self._granted.lease_id, outcome=report.outcome, key_id=self._granted.key_id, model=self.model
        )
        try:
            await self._release(request)
        except grpc.aio.AioRpcError as error:
            log.warning("release of key %s failed (%s): keyring reclaims it", self.key_id, error.code().name)

    @property
    def _lease(self) -> pb.Lease:
        if self._granted is None:
            raise LeaseError("no key yet: use the lease as `async with pool.lease(model) as lease:`")
        return self._granted

    def _elapsed_ms(self) -> int:
        return round((time.monotonic() - self._started) * 1000) if self._started else 0


class Attempts:
    """Up to ``max_attempts`` leases for one call, each on a key not tried before.

    Iterate and enter each attempt; the next one comes only when the reported answer blames the key or
    its project (``Lease.tries_another_key``: a 429, an invalid or forbidden key, a 5xx, a timeout)::

        async for attempt in pool.attempts("gemini-3.5-flash", max_attempts=3):
            async with attempt as lease:
                status, body = await call_google(lease.key)
                lease.report(status, body)

    The last lease stays readable after the loop (``lease.kind``).
    """

    def __init__(self, pool: LeasePool, model: str, max_attempts: int) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._pool = pool
        self._model = model
        self._max = max_attempts
        self._tried: list[str] = []
        self._last: Lease | None = None
        self.count = 0

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Lease:
        last = self._last
        if last is not None and not (last.released and last.tries_another_key):
            raise StopAsyncIteration
        if self.count >= self._max:
            raise StopAsyncIteration
        self.count += 1
        self._last = Lease(self._pool, self._model, self._tried)
        return self._last
