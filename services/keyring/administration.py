"""Operator actions on pools, keys and client tokens.

Every action validates all of its input before it writes anything, so bad
input changes no state; writes go through ``Keyring.transact`` (guarded,
re-decided on conflict). Secrets are sealed here, the moment they arrive,
and no answer ever carries one back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .core import Change, Keyring, delete, put
from .domain.allocator import require_pool
from .domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from .domain.identity import is_key_string, key_id_for, mask, new_client_token, token_hash, token_id_for
from .domain.models import ClientToken, Cooldown, KeyState, Pool, Strategy, UpstreamKey
from .store import MAX_WRITES_PER_COMMIT

POOL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MAX_TEXT = 500
MAX_TAGS = 32
MAX_WEIGHT = 1000
MAX_TIER = 100


@dataclass(frozen=True, slots=True)
class KeyInput:
    secret: str = ""
    project: str = ""
    tier: int = 0
    weight: int = 0
    tags: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class KeyFilter:
    pool: str = ""
    state: KeyState | None = None
    cooling_model: str = ""
    project: str = ""
    tier: int = 0
    tag: str = ""
    text: str = ""
    page_size: int = 100
    page_token: str = ""


class AddStatus:
    ADDED = "added"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class AddResult:
    index: int
    status: str
    key_id: str = ""
    mask: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[UpstreamKey]
    next_page_token: str
    total: int


@dataclass
class PoolChanges:
    """Fields of a pool to change; None leaves a field as it is."""

    allowed_models: Sequence[str] | None = None
    strategy: Strategy | None = None
    policy: dict[str, Any] | None = None
    description: str | None = None


def normalise_model(model: str) -> str:
    return model.removeprefix("models/").strip()


class Administration:
    def __init__(self, keyring: Keyring, *, key_pattern: str, max_keys_per_import: int) -> None:
        self._keyring = keyring
        self._view = keyring.view
        self._layout = keyring.layout
        self._key_pattern = key_pattern
        self._max_keys_per_import = max_keys_per_import

    # -- pools ----------------------------------------------------------

    async def create_pool(self, pool: Pool) -> Pool:
        pool = self._validated_pool(pool)

        def decide() -> list[Change]:
            if pool.name in self._view.pools:
                raise AlreadyExists(f"pool {pool.name!r} already exists")
            return [put(self._layout, dataclasses.replace(pool, created_at=self._keyring.clock(), revision=0))]

        await self._keyring.transact(decide)
        return self._view.pools[pool.name]

    def get_pool(self, name: str) -> Pool:
        return require_pool(self._view, name)

    def list_pools(self) -> list[Pool]:
        return sorted(self._view.pools.values(), key=lambda pool: pool.name)

    async def update_pool(self, name: str, changes: PoolChanges) -> Pool:
        def decide() -> list[Change]:
            current = require_pool(self._view, name)
            updated = current
            if changes.allowed_models is not None:
                updated = dataclasses.replace(updated, allowed_models=_models(changes.allowed_models))
            if changes.strategy is not None:
                updated = dataclasses.replace(updated, strategy=changes.strategy)
            if changes.policy is not None:
                updated = dataclasses.replace(updated, policy=_policy(current, changes.policy))
            if changes.description is not None:
                updated = dataclasses.replace(updated, description=_text(changes.description, "description"))
            return [] if updated == current else [put(self._layout, updated)]

        await self._keyring.transact(decide)
        return require_pool(self._view, name)

    async def delete_pool(self, name: str, force: bool) -> tuple[int, int]:
        """Delete a pool; refused while keys or tokens belong to it unless forced."""
        require_pool(self._view, name)
        keys, tokens = self._view.keys_of(name), self._view.tokens_of(name)
        if (keys or tokens) and not force:
            raise FailedPrecondition(
                f"pool {name!r} still has {len(keys)} keys and {len(tokens)} tokens; delete them or force"
            )
        members: list[UpstreamKey | ClientToken] = [*keys, *tokens]
        for chunk in _chunks(members, MAX_WRITES_PER_COMMIT):
            await self._delete_all(chunk)

        def decide() -> list[Change]:
            pool = self._view.pools.get(name)
            return [delete(self._layout, pool)] if pool else []

        await self._keyring.transact(decide)
        return len(keys), len(tokens)

    async def _delete_all(self, records: Sequence[UpstreamKey | ClientToken]) -> None:
        def decide() -> list[Change]:
            current = [self._current(record) for record in records]
            return [delete(self._layout, record) for record in current if record is not None]

        await self._keyring.transact(decide)

    def _current(self, record: UpstreamKey | ClientToken) -> UpstreamKey | ClientToken | None:
        if isinstance(record, UpstreamKey):
            return self._view.keys.get(record.key_id)
        return self._view.tokens.get(record.token_id)

    def _validated_pool(self, pool: Pool) -> Pool:
        if not POOL_NAME.fullmatch(pool.name):
            raise InvalidArgument("a pool name is 1-63 characters of a-z, 0-9, '.', '_' and '-', starting alphanumeric")
        return dataclasses.replace(
            pool,
            allowed_models=_models(pool.allowed_models),
            policy=_policy(pool, dataclasses.asdict(pool.policy)),
            description=_text(pool.description, "description"),
        )

    # -- keys -----------------------------------------------------------

    async def add_keys(self, pool_name: str, inputs: Sequence[KeyInput]) -> list[AddResult]:
        """Add many keys at once; malformed and duplicate ones are reported per item."""
        pool = require_pool(self._view, pool_name)
        if not inputs:
            raise InvalidArgument("no keys given")
        if len(inputs) > self._max_keys_per_import:
            raise InvalidArgument(f"at most {self._max_keys_per_import} keys per call")
        prepared = [self._prepare_key(pool, index, item) for index, item in enumerate(inputs)]
        results: dict[int, AddResult] = {}
        candidates: list[tuple[int, UpstreamKey]] = []
        seen: set[str] = set()
        for index, outcome in enumerate(prepared):
            if isinstance(outcome, AddResult):
                results[index] = outcome
            elif outcome.key_id in seen:
                results[index] = AddResult(index, AddStatus.DUPLICATE, outcome.key_id, outcome.mask, "repeated in this request")
            else:
                seen.add(outcome.key_id)
                candidates.append((index, outcome))
        for chunk in _chunks(candidates, MAX_WRITES_PER_COMMIT):
            results.update(await self._add_chunk(chunk))
        return [results[index] for index in range(len(inputs))]

    async def _add_chunk(self, chunk: Sequence[tuple[int, UpstreamKey]]) -> dict[int, AddResult]:
        results: dict[int, AddResult] = {}

        def decide() -> list[Change]:
            results.clear()
            changes = []
            for index, key in chunk:
                existing = self._view.keys.get(key.key_id)
                if existing is not None:
                    where = f"already in pool {existing.pool!r}"
                    results[index] = AddResult(index, AddStatus.DUPLICATE, key.key_id, key.mask, where)
                    continue
                key = dataclasses.replace(key, created_at=self._keyring.clock())
                results[index] = AddResult(index, AddStatus.ADDED, key.key_id, key.mask)
                changes.append(put(self._layout, key))
            return changes

        await self._keyring.transact(decide)
        return results

    def _prepare_key(self, pool: Pool, index: int, item: KeyInput) -> UpstreamKey | AddResult:
        secret = item.secret.strip()
        if not is_key_string(secret, self._key_pattern):
            shown = mask(secret) if secret else "(empty)"
            return AddResult(index, AddStatus.MALFORMED, "", shown, "not a Gemini API key (expected AIza followed by 35 characters)")
        try:
            fields = _key_fields(item)
        except InvalidArgument as error:
            return AddResult(index, AddStatus.MALFORMED, "", mask(secret), str(error))
        key_id = key_id_for(secret)
        return UpstreamKey(
            key_id=key_id,
            pool=pool.name,
            sealed_secret=self._keyring.box.seal(secret, key_id),
            mask=mask(secret),
            **fields,
        )

    def list_keys(self, query: KeyFilter) -> KeyPage:
        now = self._keyring.clock()
        if query.pool:
            require_pool(self._view, query.pool)
        page_size = min(max(query.page_size or 100, 1), 1000)
        try:
            offset = int(query.page_token or 0)
        except ValueError as error:
            raise InvalidArgument("malformed page token") from error
        matching = [key for key in sorted(self._view.keys.values(), key=lambda k: k.key_id) if self._matches(key, query, now)]
        page = matching[offset : offset + page_size]
        following = offset + page_size
        return KeyPage(page, str(following) if following < len(matching) else "", len(matching))

    def _matches(self, key: UpstreamKey, query: KeyFilter, now: float) -> bool:
        if query.pool and key.pool != query.pool:
            return False
        if query.state is not None and key.state is not query.state:
            return False
        if query.project and key.project != query.project:
            return False
        if query.tier and key.tier != query.tier:
            return False
        if query.tag and query.tag not in key.tags:
            return False
        if query.cooling_model:
            model = normalise_model(query.cooling_model)
            if not any(c.id.model == model for c in self.cooldowns_of(key, now)):
                return False
        if query.text:
            needle = query.text.lower()
            haystack = " ".join([key.key_id, key.mask, key.note, key.project, *key.tags]).lower()
            return needle in haystack
        return True

    def cooldowns_of(self, key: UpstreamKey, now: float | None = None) -> list[Cooldown]:
        return self._view.cooldowns_of(key, self._keyring.clock() if now is None else now)

    def get_key(self, key_id: str) -> UpstreamKey:
        key = self._view.keys.get(key_id)
        if key is None:
            raise NotFound(f"key {key_id!r} does not exist")
        return key

    async def update_key(self, key_id: str, changes: KeyInput, fields: Iterable[str]) -> UpstreamKey:
        wanted = set(fields) or {"project", "tier", "weight", "tags", "note"}
        unknown = wanted - {"project", "tier", "weight", "tags", "note"}
        if unknown:
            raise InvalidArgument(f"unknown fields: {', '.join(sorted(unknown))}")
        values = {name: value for name, value in _key_fields(changes).items() if name in wanted}

        def decide() -> list[Change]:
            current = self.get_key(key_id)
            updated = dataclasses.replace(current, **values)
            return [] if updated == current else [put(self._layout, updated)]

        await self._keyring.transact(decide)
        return self.get_key(key_id)

    async def set_key_state(self, key_id: str, action: str) -> UpstreamKey:
        """enable (disabled -> active), disable, revive (invalid/suspended -> active, slate cleared)."""
        if action not in {"enable", "disable", "revive"}:
            raise InvalidArgument("action must be enable, disable or revive")

        def decide() -> list[Change]:
            current = self.get_key(key_id)
            if action == "disable":
                updated = dataclasses.replace(current, state=KeyState.DISABLED)
            elif action == "enable":
                if current.state is not KeyState.DISABLED:
                    return []
                updated = dataclasses.replace(current, state=KeyState.ACTIVE, state_until=0.0)
            else:
                if current.state is KeyState.DISABLED:
                    raise FailedPrecondition("the key is disabled; enable it instead")
                updated = dataclasses.replace(
                    current, state=KeyState.ACTIVE, state_until=0.0, consecutive_failures=0, forbidden_strikes=0
                )
            changes = [put(self._layout, updated)] if updated != current else []
            if action == "revive":
                own = [c for c in self._view.cooldowns.values() if c.id.scope.value == "key" and c.id.subject == key_id]
                changes += [delete(self._layout, cooldown) for cooldown in own[: MAX_WRITES_PER_COMMIT - 1]]
            return changes

        await self._keyring.transact(decide)
        return self.get_key(key_id)

    async def delete_key(self, key_id: str) -> None:
        def decide() -> list[Change]:
            return [delete(self._layout, self.get_key(key_id))]

        await self._keyring.transact(decide)

    # -- client tokens --------------------------------------------------

    async def create_token(
        self, pool_name: str, name: str, expires_at: float = 0.0, requests_per_minute: int = 0
    ) -> tuple[ClientToken, str]:
        """A new client token; the token itself is returned this once and never stored."""
        require_pool(self._view, pool_name)
        _check_token_settings(name, expires_at, requests_per_minute, self._keyring.clock())
        token = new_client_token()
        hashed = token_hash(token)
        record = ClientToken(
            token_id=token_id_for(hashed),
            token_hash=hashed,
            pool=pool_name,
            name=name,
            created_at=self._keyring.clock(),
            expires_at=expires_at,
            requests_per_minute=requests_per_minute,
            prefix=token[:7],
        )
        await self._keyring.transact(lambda: [put(self._layout, record)])
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
        hashed = token_hash(new_token)

        def decide() -> list[Change]:
            old = self.get_token(token_id)
            replacement = dataclasses.replace(
                old, token_id=token_id_for(hashed), token_hash=hashed, created_at=self._keyring.clock(),
                prefix=new_token[:7], revoked=False, revision=0,
            )
            return [delete(self._layout, old), put(self._layout, replacement)]

        await self._keyring.transact(decide)
        return self._view.tokens[token_id_for(hashed)], new_token

    async def revoke_token(self, token_id: str) -> ClientToken:
        def decide() -> list[Change]:
            current = self.get_token(token_id)
            return [] if current.revoked else [put(self._layout, dataclasses.replace(current, revoked=True))]

        await self._keyring.transact(decide)
        return self.get_token(token_id)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _models(models: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(normalise_model(model) for model in models if model.strip()))
    if any(not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", model) for model in cleaned):
        raise InvalidArgument("a model name is 1-100 characters of letters, digits, '.', '_' and '-'")
    return cleaned


def _policy(pool: Pool, overrides: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(pool.policy)}
    unknown = set(overrides) - known
    if unknown:
        raise InvalidArgument(f"unknown policy fields: {', '.join(sorted(unknown))}")
    for name, value in overrides.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"policy field {name} must be a number >= 0")
    return pool.policy.with_overrides(**overrides)


def _text(value: str, name: str) -> str:
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{name} is longer than {MAX_TEXT} characters")
    return value


def _key_fields(item: KeyInput) -> dict[str, Any]:
    if not 0 <= item.tier <= MAX_TIER:
        raise InvalidArgument(f"tier must be between 1 and {MAX_TIER}")
    if not 0 <= item.weight <= MAX_WEIGHT:
        raise InvalidArgument(f"weight must be between 1 and {MAX_WEIGHT}")
    if len(item.tags) > MAX_TAGS or any(len(tag) > 64 or not tag.strip() for tag in item.tags):
        raise InvalidArgument(f"at most {MAX_TAGS} non-empty tags of up to 64 characters")
    if len(item.project) > 128:
        raise InvalidArgument("project is longer than 128 characters")
    return {
        "project": item.project.strip(),
        "tier": item.tier or 1,
        "weight": item.weight or 1,
        "tags": tuple(dict.fromkeys(tag.strip() for tag in item.tags)),
        "note": _text(item.note, "note"),
    }


def _check_token_settings(name: str, expires_at: float, requests_per_minute: int, now: float) -> None:
    if len(name) > 100:
        raise InvalidArgument("a token name is at most 100 characters")
    if expires_at and expires_at <= now:
        raise InvalidArgument("the expiry lies in the past")
    if requests_per_minute < 0:
        raise InvalidArgument("requests_per_minute must be >= 0")
