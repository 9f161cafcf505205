"""Releases owed to a replica that is gone, handed to a live one: nothing owed is kept forever (issue 19, finding 2).

A release is owed to the replica that granted its lease (``kept.py``). When
that replica's stream has been down a while (``handover_after_s``) or its
address is no longer named (DNS, Kubernetes), what it is owed is sent to a
live replica as a handover (``ReleaseRequest.handover``), once the granting
instance (a lease id's first part) is no longer among the members the live
replicas tell (``LeaseStreamResponse.members``; none told: sent anyway, the
answer decides). One release whose granter they still name goes too, as a
probe: the members are told only on a reply, and its reply carries them when
they changed (an edge with no other traffic learns of the departure too).
Keyring's answer is final for that delivery:

- counted (``granter_alive`` false): the call was counted once there (the
  usage ledger's late counting), the release is forgotten;
- ``granter_alive``, an error, or no answer in time: still owed to the granter,
  re-sent to it when it is back, or handed over again later.

The same for static addresses, DNS and Kubernetes: what decides is the
membership keyring keeps, not whether an address still resolves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from services.common.proto.keyring.v1 import keyring_pb2 as pb

from ..errors import KeyringUnavailable
from .kept import plain
from .transport import GONE, LeaseStream


def granting_instance(lease_id: str) -> str:
    """The keyring instance that granted a lease: its id is ``<instance>.<sequence>.<expiry>.<mac>``."""
    return lease_id.rsplit(".", 3)[0]


async def hand_over(owing: LeaseStream, to: LeaseStream, members: Collection[str] | None, timeout_s: float) -> int:
    """``owing``'s owed releases whose granter is not among ``members`` (and one probe) handed to ``to``; how
    many were counted.

    ``members``: the live instances the live replicas told (None: none told, every release is handed over).
    """
    owed = owing.kept.take_owed()
    sent: list[tuple[pb.LeaseCall, asyncio.Future[pb.LeaseResult]]] = []
    probed = False
    for call in owed:
        if members is not None and granting_instance(call.release.lease_id) in members:
            if probed:
                owing.owe(call)  # its granter lives: it is re-sent there when the stream is back
                continue
            probed = True
        handover = plain(call)
        handover.release.handover = True
        try:
            sent.append((call, to.submit(handover).future))
        except KeyringUnavailable:
            owing.owe(call)
    if sent:
        await asyncio.wait([future for _, future in sent], timeout=timeout_s)
    counted = 0
    for call, future in sent:
        result = future.result() if future.done() else GONE
        if result.HasField("error") or result.release.granter_alive:
            owing.owe(call)
        else:
            counted += 1
    return counted
