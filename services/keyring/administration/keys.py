"""Operator actions on upstream keys: bulk import, listing, settings and state.

Secrets are sealed here, the moment they arrive, and no answer ever carries
one back. A key's kind (auth ``AQ.`` or standard ``AIza``) is told from its
secret here too and stored with it, so operators see it without the secret.

A Google project belongs to one pool (``check_projects``): the pool is the
isolation unit (SECURITY.md), and a project's files, caches and batches are
visible to every key of the project, so a key whose project another pool
uses is refused when added, imported or given that project.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from ..domain.allocator import require_pool
from ..domain.errors import FailedPrecondition, InvalidArgument, NotFound
from ..domain.identity import is_key_string, key_id_for, key_kind, malformed_key_message, mask
from ..domain.models import Cooldown, CooldownReason, CooldownScope, KeyState, Pool, UpstreamKey
from ..domain.view import KeyringView
from ..sealing import SecretBox
from ..store import MAX_WRITES_PER_COMMIT
from ..writer import Change, StateWriter
from .inputs import AddResult, AddStatus, KeyFilter, KeyInput, KeyPage, chunks, normalise_model, valid_key_fields

KEY_FIELDS = frozenset({"project", "tier", "weight", "tags", "note", "billing_account", "billing_tier"})

# Project cooldowns that are facts, not backoffs: a key's revive ends them (the operator's word).
_OPERATOR_ENDS = frozenset(
    {CooldownReason.NOT_ON_TIER, CooldownReason.SPEND_LIMIT, CooldownReason.BILLING_DEPLETED, CooldownReason.MODEL_GONE}
)


def check_projects(view: KeyringView, keys: Iterable[UpstreamKey]) -> None:
    """Refuse keys whose project another pool's keys use (``FailedPrecondition``, naming both).

    Keys without a project cannot be told apart: each is its own project to
    keyring (lists are filtered to what the pool bound, at the edge, for them).
    """
    checked = {key.key_id: key for key in keys if key.project}
    owners: dict[str, str] = {}
    for key in view.keys.values():
        if key.project and key.key_id not in checked:
            owners.setdefault(key.project, key.pool)
    for key in checked.values():
        owner = owners.setdefault(key.project, key.pool)
        if owner != key.pool:
            raise FailedPrecondition(
                f"project {key.project!r} is used by pool {owner!r}: a Google project belongs to one pool "
                f"(its keys see each other's files, caches and batches), so key {key.mask} cannot join pool "
                f"{key.pool!r}; nothing was changed"
            )


class Keys:
    def __init__(
        self,
        view: KeyringView,
        writer: StateWriter,
        box: SecretBox,
        clock: Callable[[], float],
        *,
        key_pattern: str,
        max_keys_per_import: int,
    ) -> None:
        self._view = view
        self._writer = writer
        self._box = box
        self._clock = clock
        self._key_pattern = key_pattern
        self._max_keys_per_import = max_keys_per_import

    @property
    def key_pattern(self) -> str:
        """What an upstream key string must match (imports check it too)."""
        return self._key_pattern

    async def add_keys(self, pool_name: str, inputs: Sequence[KeyInput]) -> list[AddResult]:
        """Add many keys at once; malformed and duplicate ones are reported per item."""
        pool = require_pool(self._view, pool_name)
        if not inputs:
            raise InvalidArgument("no keys given")
        if len(inputs) > self._max_keys_per_import:
            raise InvalidArgument(f"at most {self._max_keys_per_import} keys per call")
        prepared = [self._prepare_key(pool, index, item) for index, item in enumerate(inputs)]
        check_projects(self._view, (key for key in prepared if isinstance(key, UpstreamKey)))
        results: dict[int, AddResult] = {}
        candidates: list[tuple[int, UpstreamKey]] = []
        seen: set[str] = set()
        for index, outcome in enumerate(prepared):
            if isinstance(outcome, AddResult):
                results[index] = outcome
            elif outcome.key_id in seen:
                results[index] = AddResult(
                    index, AddStatus.DUPLICATE, outcome.key_id, outcome.mask, "repeated in this request"
                )
            else:
                seen.add(outcome.key_id)
                candidates.append((index, outcome))
        for chunk in chunks(candidates, MAX_WRITES_PER_COMMIT):
            results.update(await self._add_chunk(chunk))
        return [results[index] for index in range(len(inputs))]

    async def _add_chunk(self, chunk: Sequence[tuple[int, UpstreamKey]]) -> dict[int, AddResult]:
        results: dict[int, AddResult] = {}

        def decide() -> list[Change]:
            results.clear()
            changes = []
            check_projects(self._view, (key for _, key in chunk if key.key_id not in self._view.keys))
            for index, key in chunk:
                existing = self._view.keys.get(key.key_id)
                if existing is not None:
                    where = f"already in pool {existing.pool!r}"
                    results[index] = AddResult(index, AddStatus.DUPLICATE, key.key_id, key.mask, where)
                    continue
                key = dataclasses.replace(key, created_at=self._clock())
                results[index] = AddResult(index, AddStatus.ADDED, key.key_id, key.mask)
                changes.append(self._writer.put(key))
            return changes

        await self._writer.transact(decide)
        return results

    def _prepare_key(self, pool: Pool, index: int, item: KeyInput) -> UpstreamKey | AddResult:
        secret = item.secret.strip()
        if not is_key_string(secret, self._key_pattern):
            shown = mask(secret) if secret else "(empty)"
            return AddResult(index, AddStatus.MALFORMED, "", shown, malformed_key_message(shown))
        try:
            fields = valid_key_fields(item)
        except InvalidArgument as error:
            return AddResult(index, AddStatus.MALFORMED, "", mask(secret), str(error))
        key_id = key_id_for(secret)
        return UpstreamKey(
            key_id=key_id,
            pool=pool.name,
            sealed_secret=self._box.seal(secret, key_id),
            mask=mask(secret),
            kind=key_kind(secret),
            **fields,
        )

    def list_keys(self, query: KeyFilter) -> KeyPage:
        now = self._clock()
        if query.pool:
            require_pool(self._view, query.pool)
        page_size = min(max(query.page_size or 100, 1), 1000)
        try:
            offset = int(query.page_token or 0)
        except ValueError as error:
            raise InvalidArgument("malformed page token") from error
        matching = [
            key for key in sorted(self._view.keys.values(), key=lambda k: k.key_id) if self._matches(key, query, now)
        ]
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
            # The served model or the name asked for it (a retired name, an alias: issue 21).
            if not any(model in (c.id.model, c.asked) for c in self.cooldowns_of(key, now)):
                return False
        if query.text:
            needle = query.text.lower()
            haystack = " ".join([key.key_id, key.mask, key.note, key.project, *key.tags]).lower()
            return needle in haystack
        return True

    def cooldowns_of(self, key: UpstreamKey, now: float | None = None) -> list[Cooldown]:
        return self._view.cooldowns_of(key, self._clock() if now is None else now)

    def get_key(self, key_id: str) -> UpstreamKey:
        key = self._view.keys.get(key_id)
        if key is None:
            raise NotFound(f"key {key_id!r} does not exist")
        return key

    async def update_key(self, key_id: str, changes: KeyInput, fields: Iterable[str]) -> UpstreamKey:
        wanted = set(fields) or set(KEY_FIELDS)
        unknown = wanted - KEY_FIELDS
        if unknown:
            raise InvalidArgument(f"unknown fields: {', '.join(sorted(unknown))}")
        values = {name: value for name, value in valid_key_fields(changes).items() if name in wanted}

        def decide() -> list[Change]:
            current = self.get_key(key_id)
            updated = dataclasses.replace(current, **values)
            if updated.project != current.project:
                check_projects(self._view, [updated])
            return [] if updated == current else [self._writer.put(updated)]

        await self._writer.transact(decide)
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
            changes = [self._writer.put(updated)] if updated != current else []
            if action == "revive":
                # The key's own cooldowns, and the facts learnt about its project (a model not on its
                # tier, a spend limit): an operator's revive is the word that ends them before their time.
                own = [
                    c
                    for c in self._view.cooldowns.values()
                    if (c.id.scope is CooldownScope.KEY and c.id.subject == key_id)
                    or (
                        c.id.scope is CooldownScope.PROJECT
                        and current.project
                        and c.id.subject == current.project
                        and c.reason in _OPERATOR_ENDS
                    )
                    or (
                        c.id.scope is CooldownScope.ACCOUNT
                        and current.billing_account
                        and c.id.subject == current.billing_account
                        and c.reason in _OPERATOR_ENDS
                    )
                ]
                changes += [self._writer.delete(cooldown) for cooldown in own[: MAX_WRITES_PER_COMMIT - 1]]
            return changes

        await self._writer.transact(decide)
        return self.get_key(key_id)

    async def delete_key(self, key_id: str) -> None:
        def decide() -> list[Change]:
            return [self._writer.delete(self.get_key(key_id))]

        await self._writer.transact(decide)
