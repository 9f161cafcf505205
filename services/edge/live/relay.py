"""One Live session on one leased key: the upstream socket opened, frames relayed both ways, the lease kept.

``Relay.run`` is what the attempt loop (``forwarding.attempts``) runs with
each key it leases::

    open the upstream socket with the key (x-goog-api-key, the one credential)
      -> send the client's setup frame, wait for the first upstream frame
      -> a close before setupComplete: an ``UpstreamError`` (another key when
         its kind says so: a bad key, a project at its session cap, trouble)
      -> setupComplete: committed; relay until either side closes, renewing
         the lease every ``renew_every_ms``; ``attempt.outcome`` the session's

Frames keep their type (text stays text, binary binary). The upstream's
frames are scrubbed of the leased key before the client sees them (of every
key shape too, unless the frame carries media: base64 audio can look like a
key, and a mask would corrupt it); its close code and reason are passed on
verbatim; a cut upstream cuts the client (it sees 1006 as from Google).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import WSMsgType, web
from opentelemetry import trace
from prometheus_client import Counter

from services.common.answers import Transport, UpstreamError
from services.common.masking import mask, scrub
from services.common.proto.keyring.v1 import keyring_pb2 as pb

from ..keyring import CANCELLED
from ..upstream import Attempt, error_outcome, ok_outcome, transport_failure
from .metrics import LiveMetrics
from .protocol import ABNORMAL, GOING_AWAY, INTERNAL, NORMAL, UNAVAILABLE, FrameReader, Seen, close_error, cut_reason

log = logging.getLogger(__name__)

NO_STATUS: Final = 1005
_UNSENDABLE: Final = frozenset({NO_STATUS, 1006, 1015})  # reserved: never in a close frame
_CLOSED: Final = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})


@dataclass(frozen=True, slots=True)
class Limits:
    setup_timeout_s: float
    idle_timeout_s: float
    max_duration_s: float
    max_frame_bytes: int
    connect_timeout_s: float


@dataclass(slots=True)
class Ending:
    """How a session ended: the cause (a metric label), the close the client got, and whether it was cut."""

    cause: str
    code: int
    reason: str = ""


class Relay:
    """The client's socket (accepted, its setup frame read) and what each attempt needs to serve it."""

    def __init__(
        self,
        client: web.WebSocketResponse,
        request: web.Request,
        setup_frame: str | bytes,
        model: str,
        url: str,
        headers: dict[str, str],
        limits: Limits,
        metrics: LiveMetrics,
        open_relays: set[Relay],
        seen: FrameReader | None = None,
        *,
        hold_close: bool = False,
    ) -> None:
        self.client = client
        self.request = request
        self.setup_frame = setup_frame
        self.model = model
        self.url = url
        self.headers = headers
        self.limits = limits
        self.metrics = metrics
        self.open_relays = open_relays  # the edge's sessions past setupComplete (told to go away at shutdown)
        self.seen: FrameReader = seen if seen is not None else Seen()
        # The client's close is left to the caller (after the lease's release committed what it binds).
        self.hold_close = hold_close
        # The last close an upstream gave before setupComplete: what the client gets if no key does better.
        self.refused: Ending | None = None
        self.ending: Ending | None = None
        self.started = 0.0
        self.last_frame = 0.0
        self.leave_at: float | None = None  # set by go_away
        self._woken = asyncio.Event()

    async def run(self, attempt: Attempt, request: web.Request) -> Ending | UpstreamError:
        """One key's try (``forwarding.Run``): the session's end, or the error that lets another key try."""
        attempt.started = time.monotonic()
        key = attempt.held.lease.secret
        headers = {**self.headers, "x-goog-api-key": key}
        session = attempt.upstream.session
        try:
            async with asyncio.timeout(self.limits.connect_timeout_s):
                upstream = await session.ws_connect(
                    self.url,
                    headers=headers,
                    proxy=attempt.upstream.proxy_for(attempt.held.lease),
                    max_msg_size=self.limits.max_frame_bytes,
                    autoping=True,
                    autoclose=True,
                    compress=0,
                )
        except aiohttp.WSServerHandshakeError as refused:
            return self._before_setup(
                attempt, _refused_upgrade(refused.status), Ending("upstream", INTERNAL, UNAVAILABLE)
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as failed:
            return self._before_setup(attempt, transport_failure(failed), Ending("upstream", INTERNAL, UNAVAILABLE))
        try:
            return await self._serve(attempt, upstream, key)
        finally:
            if not upstream.closed:
                with contextlib.suppress(Exception):
                    await upstream.close()

    def _before_setup(self, attempt: Attempt, error: UpstreamError, ending: Ending) -> UpstreamError:
        attempt.outcome = error_outcome(error, _ms(attempt.started))
        if error.transport is not Transport.OK:
            attempt.outcome.transport = pb.Outcome.TRANSPORT_CONNECTION
        self.refused = ending
        return error

    async def _serve(
        self, attempt: Attempt, upstream: aiohttp.ClientWebSocketResponse, key: str
    ) -> Ending | UpstreamError:
        frame = self.setup_frame
        await (upstream.send_str(frame) if isinstance(frame, str) else upstream.send_bytes(frame))
        try:
            first = await upstream.receive(timeout=self.limits.setup_timeout_s + self.limits.connect_timeout_s)
        except TimeoutError as late:
            return self._before_setup(attempt, transport_failure(late), Ending("upstream", INTERNAL, UNAVAILABLE))
        if first.type in _CLOSED or first.type is WSMsgType.ERROR:
            return self._closed_before_setup(attempt, upstream, first, key)
        self.started = time.monotonic()
        self.metrics.open.inc()
        self.open_relays.add(self)
        try:
            if not await self._down(first, key):
                return self._end(attempt)
            await self._relay(attempt, upstream, key)
            return self._end(attempt)
        finally:
            if attempt.outcome is CANCELLED:  # cancelled (the client cut the connection): the session still counts
                self._ended(Ending("client", ABNORMAL))
                self._end(attempt)
            self.open_relays.discard(self)
            self.metrics.open.dec()
            self.metrics.duration.observe(time.monotonic() - self.started)

    def _closed_before_setup(
        self, attempt: Attempt, upstream: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage, key: str
    ) -> UpstreamError:
        code = upstream.close_code
        if code is None or message.type is WSMsgType.ERROR or code == ABNORMAL:
            return self._before_setup(
                attempt,
                UpstreamError(502, "UNAVAILABLE", "the upstream cut the session", transport=Transport.CONNECTION),
                Ending("upstream_cut", INTERNAL, UNAVAILABLE),
            )
        reason = _scrubbed_reason(message, key)
        error = close_error(code, reason, self.model) or UpstreamError(400, "INVALID_ARGUMENT", reason)
        return self._before_setup(attempt, error, Ending("upstream", code, reason))

    async def _relay(self, attempt: Attempt, upstream: aiohttp.ClientWebSocketResponse, key: str) -> None:
        """Both directions until one side closes or a limit is reached (``self.ending`` says which)."""
        self.last_frame = time.monotonic()
        up = asyncio.ensure_future(self._pump_up(upstream))
        down = asyncio.ensure_future(self._pump_down(upstream, key))
        watch = asyncio.ensure_future(self._watch(attempt, upstream))
        tasks = (up, down, watch)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not self.hold_close:
            await close_client(self.client, self.ending)

    async def _pump_up(self, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """Client to upstream, each frame with its type; the client's close closes the upstream."""
        while True:
            message = await self.client.receive()
            if message.type is WSMsgType.TEXT:
                self._count(self.metrics.up_frames, self.metrics.up_bytes, len(message.data))
                await upstream.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                self._count(self.metrics.up_frames, self.metrics.up_bytes, len(message.data))
                await upstream.send_bytes(message.data)
            elif message.type is WSMsgType.ERROR:  # a frame over the limit: aiohttp closed the client with 1009
                self._ended(Ending("bad_input", self.client.close_code or 1009))
                await upstream.close(code=NORMAL)
                return
            elif message.type in _CLOSED:
                code = self.client.close_code or NORMAL
                self._ended(Ending("client", code))
                await upstream.close(code=code if code not in _UNSENDABLE else NORMAL)
                return

    async def _pump_down(self, upstream: aiohttp.ClientWebSocketResponse, key: str) -> None:
        """Upstream to client until the upstream closes (its code and reason passed on) or is cut."""
        while True:
            message = await upstream.receive()
            if message.type in _CLOSED or message.type is WSMsgType.ERROR:
                if self.ending is not None:  # the edge closed it (the client left, a limit): not a cut
                    return
                code = upstream.close_code
                if code is None or code == ABNORMAL or message.type is WSMsgType.ERROR:
                    self._ended(Ending("upstream_cut", ABNORMAL))
                    if self.request.transport is not None:
                        self.request.transport.abort()  # no close frame: the client sees 1006, as from Google
                    return
                code = NORMAL if code == NO_STATUS else code  # a close without a code: a normal one for the client
                self._ended(Ending("upstream", code, _scrubbed_reason(message, key)))
                return
            if not await self._down(message, key):
                return

    async def _down(self, message: aiohttp.WSMessage, key: str) -> bool:
        """Relay one upstream frame with its type (read for usage and handles first); False when the client is gone."""
        if message.type is not WSMsgType.BINARY and message.type is not WSMsgType.TEXT:
            return True
        binary = message.type is WSMsgType.BINARY
        raw: bytes = message.data if binary else message.data.encode()
        self.seen.read(raw)
        out = _scrubbed(raw, key, self.seen.carries_media(raw))
        self._count(self.metrics.down_frames, self.metrics.down_bytes, len(out))
        try:
            await (self.client.send_bytes(out) if binary else self.client.send_str(out.decode()))
        except ConnectionError:
            self._ended(Ending("client", ABNORMAL))
            return False
        return True

    async def _watch(self, attempt: Attempt, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """The lease renewed while the session lives; the idle and maximum-duration limits."""
        held = attempt.held
        renew_every = held.lease.renew_every_ms / 1000 or None
        next_renew = time.monotonic() + renew_every if renew_every else None
        end_at = self.started + self.limits.max_duration_s
        while True:
            now = time.monotonic()
            idle_at = self.last_frame + self.limits.idle_timeout_s
            wake = min(t for t in (next_renew, end_at, idle_at, self.leave_at) if t is not None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - now)):
                    await self._woken.wait()  # go_away: the edge is leaving
            self._woken.clear()
            now = time.monotonic()
            if self.leave_at is not None and now >= self.leave_at:
                ending = Ending("shutdown", GOING_AWAY, "The edge is shutting down: resume the session.")
            elif now >= end_at:
                ending = Ending("max_duration", 1008, "The session reached its maximum duration.")
            elif now >= self.last_frame + self.limits.idle_timeout_s:
                ending = Ending("idle", 1008, "The session was idle for too long.")
            elif next_renew is not None and now >= next_renew:
                next_renew = now + (renew_every or 0)
                if await _renewed(held.renew):
                    continue
                ending = Ending("lease_lost", INTERNAL, UNAVAILABLE)
            else:
                continue
            self._ended(ending)
            await upstream.close(code=NORMAL)
            return

    def go_away(self, time_left_s: float) -> None:
        """The edge is shutting down: tell the client (Live: Google's ``goAway``, so it resumes elsewhere; the
        interactions socket has no such event), end before the drain does (1001)."""
        message = self.seen.go_away(time_left_s)
        self.leave_at = time.monotonic() + max(0.0, time_left_s - 1.0)  # before the drain's cut
        self._woken.set()
        if message is not None and not self.client.closed:
            task = asyncio.ensure_future(self.client.send_bytes(message))
            task.add_done_callback(_ignore_failure)

    def _count(self, frames: Counter, size: Counter, length: int) -> None:
        self.last_frame = time.monotonic()
        frames.inc()
        size.inc(length)

    def _ended(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending

    def _end(self, attempt: Attempt) -> Ending:
        """The session's outcome for keyring (the keyring proto's "Live sessions", 3) and its ending."""
        ending = self.ending or Ending("client", ABNORMAL)
        self.ending = ending
        tokens = (self.seen.input_tokens, self.seen.output_tokens)
        elapsed = _ms(attempt.started)
        error = close_error(ending.code, ending.reason, self.model) if ending.cause == "upstream" else None
        if error is not None and error.http_status != 404:
            outcome = error_outcome(error, elapsed)
            outcome.input_tokens, outcome.output_tokens = tokens
        elif ending.cause == "upstream_cut":
            outcome = error_outcome(UpstreamError(500, "INTERNAL", "the upstream cut the session"), elapsed)
            outcome.input_tokens, outcome.output_tokens = tokens
        else:
            outcome = ok_outcome(200, elapsed, tokens)
        attempt.outcome = outcome
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "keyring.key_id": attempt.held.lease.key_id,
                    "live.close_code": ending.code,
                    "live.close_cause": ending.cause,
                    "gen_ai.usage.input_tokens": tokens[0],
                    "gen_ai.usage.output_tokens": tokens[1],
                }
            )
        return ending


async def close_client(client: web.WebSocketResponse, ending: Ending | None) -> None:
    """Close the client's socket with the session's ending (unless it is closed, or the ending unsendable)."""
    if ending is not None and not client.closed and ending.code not in _UNSENDABLE:
        with contextlib.suppress(Exception):
            await client.close(code=ending.code, message=ending.reason.encode())


async def _renewed(renew: Callable[[], Awaitable[bool]]) -> bool:
    """Whether keyring still holds the lease; a renewal that got no answer is tried again at the next tick."""
    try:
        return await renew()
    except Exception as failed:  # keyring unreachable for now: the lease lives until its TTL
        log.info(
            "a Live session's lease renewal got no answer (%s): tried again at the next tick", type(failed).__name__
        )
        return True


def _refused_upgrade(status: int) -> UpstreamError:
    """An upgrade the upstream answered with an HTTP status: a 429 or 404 means what it says; any other (no body,
    no reason: Google's refusal of a key at the handshake, LIVE_API_NOTES.md 3.1) tries another key, blaming none."""
    message = f"the upstream refused the upgrade (HTTP {status})"
    if status in (404, 429):
        return UpstreamError(status, "NOT_FOUND" if status == 404 else "RESOURCE_EXHAUSTED", message)
    return UpstreamError(status, "UNAVAILABLE", message, transport=Transport.CONNECTION)


def _ignore_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a client gone meanwhile: its session ends anyway


def _scrubbed(data: bytes, key: str, media: bool) -> bytes:
    """``data`` without the leased key; without any key shape unless it carries media (base64 can look like one)."""
    if media:
        return data.replace(key.encode(), mask(key).encode()) if key.encode() in data else data
    return scrub(data, key)


def _scrubbed_reason(message: aiohttp.WSMessage, key: str) -> str:
    reason = message.extra if message.type is WSMsgType.CLOSE and isinstance(message.extra, str) else ""
    return cut_reason(scrub(reason.encode(), key).decode(errors="replace"))


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
