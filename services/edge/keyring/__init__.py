"""The edge's client of keyring, and its only gRPC code: leases over one multiplexed stream per replica.

Its rooms, one concern each::

    client.py     KeyringClient: acquire, check_token, release (and report), bound_names, ready
    lease.py      what the edge holds of a lease (GrantedLease, Binding)
    replicas.py   the replica set: resolution, one stream per replica, the turn
    transport.py  one replica's channel and LeaseStream (batched calls, replies by id, reconnects)
    kept.py       releases a replica is owed: kept until answered and until their usage is durable
    refusals.py   keyring's refusals as edge exceptions (the one translation of a gRPC status)
"""

from .client import KeyringClient
from .lease import Binding, GrantedLease
from .replicas import resolve_all

__all__ = ["Binding", "GrantedLease", "KeyringClient", "resolve_all"]
