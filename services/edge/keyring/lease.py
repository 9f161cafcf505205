"""A lease as the edge holds it: what keyring granted, and the resources a call binds to its key."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.proto.keyring.v1 import keyring_pb2 as pb


@dataclass(frozen=True, slots=True)
class Binding:
    """A resource a call created under its lease's key, and how long keyring routes to that key (its lifetime)."""

    name: str  # e.g. "files/abc": the spelling later acquires name in ``affinity``
    ttl_s: float


@dataclass(frozen=True, slots=True)
class GrantedLease:
    lease: pb.Lease
    allowed_models: tuple[str, ...]
    replica: str  # the address of the replica that granted it
