"""Operator actions on client tokens: a token is shown once, at creation, and only a keyed hash of it is kept.

The store keeps HMAC(token key, SHA-256(token)) (``SecretBox.key_token``):
what the edge presents is the SHA-256, so a stored value is no credential.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from services.common.naming import token_hash

from ..domain.allocator import require_pool
from ..domain.errors import NotFound
from ..domain.identity import new_client_token, token_id_for
from ..domain.models import ClientToken, TokenBudget
from ..domain.view import KeyringView
from ..sealing import SecretBox
from ..writer import Change, StateWriter
from .inputs import check_token_settings, valid_budgets


class Tokens:
    def __init__(self, view: KeyringView, writer: StateWriter, clock: Callable[[], float], box: SecretBox) -> None:
        self._view = view
        self._writer = writer
        self._clock = clock
        self._box = box

    def _keyed(self, token: ClientToken, clear_token: str) -> ClientToken:
        """The record keyed for ``clear_token``, with an id from its keyed hash."""
        keyed = self._box.key_token(token, token_hash(clear_token))
        return dataclasses.replace(keyed, token_id=token_id_for(keyed.token_hash))

    async def create_token(
        self,
        pool_name: str,
        name: str,
        expires_at: float = 0.0,
        requests_per_minute: int = 0,
        budgets: Iterable[TokenBudget] = (),
    ) -> tuple[ClientToken, str]:
        """A new client token; the token itself is returned this once and never stored."""
        require_pool(self._view, pool_name)
        check_token_settings(name, expires_at, requests_per_minute, self._clock())
        checked = valid_budgets(budgets)
        token = new_client_token()
        unkeyed = ClientToken(
            token_id="",
            token_hash="",
            pool=pool_name,
            name=name,
            created_at=self._clock(),
            expires_at=expires_at,
            requests_per_minute=requests_per_minute,
            prefix=token[:7],
            budgets=checked,
        )
        record = self._keyed(unkeyed, token)
        await self._writer.transact(lambda: [self._writer.put(record)])
        return self._view.tokens[record.token_id], token

    def list_tokens(self, pool_name: str = "") -> list[ClientToken]:
        if pool_name:
            require_pool(self._view, pool_name)
        tokens = self._view.tokens_of(pool_name) if pool_name else list(self._view.tokens.values())
        return sorted(tokens, key=lambda token: (token.pool, token.created_at, token.token_id))

    def get_token(self, token_id: str) -> ClientToken:
        token = self._view.tokens.get(token_id)
        if token is None:
            raise NotFound(f"token {token_id!r} does not exist")
        return token

    async def rotate_token(self, token_id: str) -> tuple[ClientToken, str]:
        """A new token with the same settings; the old one stops working in the same write."""
        new_token = new_client_token()
        new_id = ""

        def decide() -> list[Change]:
            nonlocal new_id
            old = self.get_token(token_id)
            replacement = self._keyed(
                dataclasses.replace(old, created_at=self._clock(), prefix=new_token[:7], revoked=False, revision=0),
                new_token,
            )
            new_id = replacement.token_id
            return [self._writer.delete(old), self._writer.put(replacement)]

        await self._writer.transact(decide)
        return self._view.tokens[new_id], new_token

    async def revoke_token(self, token_id: str) -> ClientToken:
        def decide() -> list[Change]:
            current = self.get_token(token_id)
            return [] if current.revoked else [self._writer.put(dataclasses.replace(current, revoked=True))]

        await self._writer.transact(decide)
        return self.get_token(token_id)

    async def update_token(
        self,
        token_id: str,
        name: str | None = None,
        requests_per_minute: int | None = None,
        budgets: Iterable[TokenBudget] | None = None,
    ) -> ClientToken:
        """Change a token's name, rate limit or budgets (None: unchanged; budgets replace all of them)."""
        checked = valid_budgets(budgets) if budgets is not None else None

        def decide() -> list[Change]:
            current = self.get_token(token_id)
            check_token_settings(
                current.name if name is None else name,
                0.0,
                current.requests_per_minute if requests_per_minute is None else requests_per_minute,
                self._clock(),
            )
            changes: dict[str, object] = {}
            if name is not None:
                changes["name"] = name
            if requests_per_minute is not None:
                changes["requests_per_minute"] = requests_per_minute
            if checked is not None:
                changes["budgets"] = checked
            if not changes:
                return []
            return [self._writer.put(dataclasses.replace(current, **changes))]  # type: ignore[arg-type]

        await self._writer.transact(decide)
        return self.get_token(token_id)
