"""The keyring replicas the configured addresses name: resolution, one ``LeaseStream`` each, and the turn.

An address may be a DNS name with several records (a Kubernetes headless
Service): it is resolved to every replica, one stream each, and resolved
again every ``resolve_every_s`` so replicas that come and go are followed.
A replica no longer named keeps its stream until the calls in flight on it
are done; what it was still owed is then handed over (``handover.py``), as
is what a replica down for ``handover_after_s`` is owed (a static address
that never comes back), checked every ``HANDOVER_EVERY_S`` in the background.

Calls rotate evenly over the replicas that may be asked now (client-side round
robin; ``health.py``: a slow replica is out of the turn, asked last, until a
probe is due; a down one is asked last, tried again in the background);
a release asks the replica that granted its lease first (``rotation(first=)``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any

import grpc

from .background import detached_task
from .handover import hand_over
from .health import ReplicaHealth, State
from .transport import LeaseStream

log = logging.getLogger(__name__)

Resolver = Callable[[str], Awaitable[list[str]]]
HANDOVER_EVERY_S = 1.0


def _host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


async def resolve_all(address: str) -> list[str]:
    """``host:port`` to ``ip:port`` for every A/AAAA record of host; [address] when it does not resolve."""
    host, _, port = address.rpartition(":")
    try:
        records = await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return [address]
    targets: list[str] = []
    for family, _, _, _, sockaddr in records:
        ip, port_number = sockaddr[0], sockaddr[1]
        if not isinstance(ip, str) or not isinstance(port_number, int):
            continue  # not an IP address family
        target = f"[{ip}]:{port_number}" if family == socket.AF_INET6 else f"{ip}:{port_number}"
        if target not in targets:
            targets.append(target)
    return targets or [address]


class ReplicaSet:
    """Every replica's stream, by target address (module docstring)."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        credentials: grpc.ChannelCredentials | None,
        server_name: str,
        keepalive: Sequence[tuple[str, int]],
        max_owed: int,
        timeout_s: float,
        resolve_every_s: float,
        resolver: Resolver,
        health: Callable[[], ReplicaHealth] = ReplicaHealth,
        handover_after_s: float = 1.0,
        release_window_s: float = 0.0,
    ) -> None:
        """``health``: a new replica's health (the hedge delay and backoff settings, ``health.py``);
        ``release_window_s``: how long a routine release may wait to share the next call's message."""
        self._addresses = list(addresses)
        self._credentials = credentials
        self._server_name = server_name
        self._keepalive = keepalive
        self._max_owed = max_owed
        self._timeout_s = timeout_s
        self._resolve_every_s = resolve_every_s
        self._resolver = resolver
        self._health = health
        self._handover_after_s = handover_after_s
        self._release_window_s = release_window_s
        self._watching = False
        # Told the credits a replica revoked (``credits.py``): set before the first call.
        self.on_revoked: Callable[[Sequence[str]], None] | None = None
        # Until the first resolution, the addresses as given (grpc resolves them itself).
        self.current = [self._stream(address, address) for address in addresses]
        self.by_target = {replica.address: replica for replica in self.current}
        self._retired: set[LeaseStream] = set()
        self._turn = itertools.count()
        self._next_resolution = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, target: str) -> LeaseStream | None:
        """The stream of a replica still named (None once it is retired)."""
        return self.by_target.get(target)

    def owed(self) -> int:
        """Releases waiting for their replica's stream to come back, or for a handover (all replicas)."""
        return sum(replica.kept.owed for replica in [*self.by_target.values(), *self._retired])

    def states(self) -> dict[str, int]:
        """Each named replica's state (``health.State``: 0 healthy, 1 slow, 2 down), by address."""
        return {replica.address: int(replica.health.state) for replica in self.current}

    def unconfirmed(self) -> int:
        """Releases counted in a usage epoch not yet written (all replicas): kept to be re-sent if one dies."""
        return sum(replica.kept.unconfirmed for replica in self.by_target.values())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        streams = [*self.by_target.values(), *self._retired]
        await asyncio.gather(*(replica.close() for replica in streams))

    def _stream(self, target: str, address: str) -> LeaseStream:
        host = _host(address)
        name = self._server_name or ("" if _is_ip(host) or _host(target) == host else host)
        if self._credentials is None:
            name = ""
        stream = LeaseStream(
            target,
            self._credentials,
            name,
            keepalive=self._keepalive,
            max_owed=self._max_owed,
            health=self._health(),
            release_window_s=self._release_window_s,
        )
        stream.on_revoked = self._revoked
        return stream

    def _revoked(self, lease_ids: Sequence[str]) -> None:
        if self.on_revoked is not None:
            self.on_revoked(lease_ids)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = detached_task(coroutine)  # resolution, retiring, handovers: no request's work
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def rotation(self, first: str | None = None) -> list[LeaseStream]:
        """Every replica once, from the next in turn (or from ``first``, the granting one): those to ask now
        first (healthy, or a probe due: ``ReplicaHealth.claim``), the others after, as a last resort."""
        now = time.monotonic()
        if now >= self._next_resolution:
            first_time = self._next_resolution == 0.0
            self._next_resolution = now + self._resolve_every_s
            if not self._watching:
                self._watching = True
                self._spawn(self._watch())
            if first_time:
                await self._resolve()  # the first call waits for it; later ones never do
            else:
                self._spawn(self._resolve())
        return self._turned(self.current, self._turn, first, now)

    @staticmethod
    def _turned(
        replicas: list[LeaseStream], turns: Iterator[int], first: str | None, now: float
    ) -> list[LeaseStream]:
        """``replicas`` in this call's turn: those to ask now (healthy, or a slow one's probe due), rotated by the
        next of ``turns`` (or from ``first``, which takes no turn) among themselves, then the others. A replica
        out of the turn is left out of the rotation, not put after it: with one of three down, each survivor
        comes first in every second call (issue 19's budget finding: a token's budget is split equally over
        the live replicas)."""
        if all(replica.health.state is State.HEALTHY for replica in replicas):
            now_ask, later = replicas, []  # the usual case: nothing to sort
        else:  # a down replica is tried again in the background (``LeaseStream._reprobe``): no call claims it
            now_ask = [r for r in replicas if r.health.state is not State.DOWN and r.health.claim(now)]
            later = [replica for replica in replicas if replica not in now_ask]
        if not now_ask:
            return later
        start = -1
        if first is not None:  # a release: the granting replica first when it may be asked
            start = next((index for index, replica in enumerate(now_ask) if replica.address == first), -1)
        if start < 0:
            start = next(turns)
        count = len(now_ask)
        return [now_ask[(start + i) % count] for i in range(count)] + later

    async def _resolve(self) -> None:
        """New replicas get a stream; a replica no longer named keeps its stream until its calls are done."""
        targets: list[str] = []
        origins: dict[str, str] = {}
        for address in self._addresses:
            for target in await self._resolver(address):
                if target not in targets:
                    targets.append(target)
                    origins[target] = address
        if targets == [replica.address for replica in self.current]:
            return
        for target in targets:
            if target not in self.by_target:
                self.by_target[target] = self._stream(target, origins[target])
        self.current = [self.by_target[target] for target in targets]
        for target in [t for t in self.by_target if t not in targets]:
            gone = self.by_target.pop(target)
            self._retired.add(gone)
            self._spawn(self._retire(gone))

    async def _retire(self, replica: LeaseStream) -> None:
        await asyncio.sleep(self._timeout_s * 2)  # calls in flight on it finish or time out first
        await replica.close()  # what it is still owed is handed over (``_watch``), then it is forgotten
        if not replica.kept.owed:
            self._retired.discard(replica)

    async def _watch(self) -> None:
        """Every ``HANDOVER_EVERY_S``: what gone replicas are owed, handed over to live ones (``handover.py``)."""
        while True:
            await asyncio.sleep(HANDOVER_EVERY_S)
            try:
                await self.hand_over_owed()
            except Exception:  # a round that failed must not end the rounds: what is owed stays owed
                log.exception("handing over releases owed to gone keyring replicas failed")

    async def hand_over_owed(self) -> None:
        """Hand over what replicas down for ``handover_after_s``, or no longer named, are owed."""
        now = time.monotonic()
        live = [replica for replica in self.current if replica.connected and replica.usable]
        if not live:
            return
        told = [replica.members for replica in live if replica.members is not None]
        members = {instance for listed in told for instance in listed} if told else None
        for owing in [*self.by_target.values(), *self._retired]:
            if not owing.kept.owed or owing in live:
                continue
            if owing in self.by_target.values():
                health = owing.health
                if health.state is not State.DOWN or now - health.since < self._handover_after_s:
                    continue
            target = live[next(self._turn) % len(live)]
            counted = await hand_over(owing, target, members, self._timeout_s)
            if counted:
                log.info("%d releases owed to keyring replica %s handed over to %s", counted, owing.address,
                         target.address)  # fmt: skip
            if owing in self._retired and not owing.kept.owed:
                self._retired.discard(owing)
