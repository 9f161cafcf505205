"""The edge's client of keyring, and its only gRPC code: leases over one multiplexed stream per replica.

Its rooms, one concern each::

    client.py     KeyringClient: acquire (a LeaseRequest in, a HeldLease out), check_token, bound_names, ready
    lease.py      LeaseRequest, and HeldLease: the one owner of a lease's end (idempotent release, async with)
    credits.py    leases asked ahead of need (EDGE_KEYRING_CREDITS): the shelves a plain call takes one from
    releases.py   how a release reaches keyring: the granting replica, reports to the others, delivery
    replicas.py   the replica set: resolution, one stream per replica, the turn, handovers every second
    asking.py     one call asked of the replicas, hedged: the first answer wins, a silent replica passed by
    health.py     one replica's health (healthy, slow, down), its hedge delay and backoff (plain)
    transport.py  one replica's channel and LeaseStream (batched calls, replies by id, reconnects)
    kept.py       releases a replica is owed: kept until answered and until their usage is durable
    handover.py   what a gone replica is owed, handed to a live one (counted there once)
    refusals.py   keyring's refusals as edge exceptions (the one translation of a gRPC status)
    spans.py      client spans, for sampled requests only
"""

from .client import KeyringClient
from .lease import CANCELLED, Binding, HeldLease, LeaseRequest
from .replicas import resolve_all

__all__ = ["CANCELLED", "Binding", "HeldLease", "KeyringClient", "LeaseRequest", "resolve_all"]
