"""Operator actions on pools, keys and client tokens, one module each.

Every action validates all of its input before it writes anything
(``inputs``), so bad input changes no state; writes go through the state
writer's ``transact`` (guarded, decided again on conflict).
"""

from __future__ import annotations

from ..core import Keyring
from .inputs import AddResult, AddStatus, KeyFilter, KeyInput, KeyPage, PoolChanges
from .keys import Keys
from .pools import Pools
from .sessions import Sessions
from .tokens import Tokens

__all__ = [
    "AddResult",
    "AddStatus",
    "Administration",
    "KeyFilter",
    "KeyInput",
    "KeyPage",
    "Keys",
    "PoolChanges",
    "Pools",
    "Sessions",
    "Tokens",
]


class Administration:
    """The operator's desks (pools, keys, tokens) and admin's ended sessions, over one replica's view and writer."""

    def __init__(self, keyring: Keyring, *, key_pattern: str, max_keys_per_import: int) -> None:
        view, writer, clock = keyring.cache.view, keyring.writer, keyring.clock
        self.pools = Pools(view, writer, clock)
        self.keys = Keys(
            view, writer, keyring.box, clock, key_pattern=key_pattern, max_keys_per_import=max_keys_per_import
        )
        self.tokens = Tokens(view, writer, clock, keyring.box)
        self.sessions = Sessions(view, keyring.cache.layout, writer, clock)
