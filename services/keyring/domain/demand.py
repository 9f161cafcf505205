"""What one acquire asks for, as one value: built once from the wire, read by the desk and the allocator.

Each feature of leasing (failover exclusions, resource affinity, list
fan-out, input-token pacing, binding caps) is a field here, not another
parameter threaded through every function between the servicer and the
key search.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    token_hash: str  # SHA-256 (hex) of the client token
    model: str  # without the "models/" prefix; "" for calls about no one model
    exclude: frozenset[str] = frozenset()  # key ids already tried for this client request
    affinity: tuple[str, ...] = ()  # resources the call names: leased their owner's key or project
    exclude_projects: frozenset[str] = frozenset()  # projects a list call has already covered
    input_tokens: int = 0  # the edge's estimate of the call's input (0: unknown), already clamped
    binds: bool = False  # the call creates a resource its release will bind (refused when bindings are full)
    session: bool = False  # a Live session: a held, renewed lease under the pool's session caps (allocator.py)
    # A redeemed browser token's client token (its grant checked by the servicer): leased instead of token_hash.
    grant_token_id: str = ""
    service_tier: str = ""  # "", "standard", "flex" or "priority" (issue 21): priority only on Tier 2/3 keys
    # Asked ahead of need (the edge's credits, issue 23): granted as any lease, refunded if released unused.
    credit: bool = False
