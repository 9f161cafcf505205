"""Export and import of the whole configuration, for backup and migration.

The document is JSON: pools, client tokens (hashes only: a token cannot be
exported in clear because it is never stored), and keys with their secrets
sealed under the current key-encryption key or, only when asked, in clear.
Import checks the whole document before it writes anything, with the
validators the admin RPCs use (``administration.inputs``): pool names,
allow-list entries, policy numbers, key strings and key settings, token
settings. Ids are recomputed, never taken from the document: a key's from
its secret (a sealed secret is opened and sealed again), a token's from its
hash (keyed again under this deployment's token key). Only what an operator
sets is imported: key health starts afresh (a disabled key stays disabled). Client tokens are refused unless the caller
asks to keep them (``keep_client_tokens``): a token hash in a document lets
its author choose a working credential. Records that already exist are left
as they are.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from .administration.inputs import (
    KeyInput,
    check_token_settings,
    valid_budgets,
    valid_key_fields,
    valid_policy,
    valid_pool,
)
from .administration.keys import check_projects
from .codec import encode
from .domain.errors import InvalidArgument
from .domain.identity import is_key_string, key_id_for, key_kind, malformed_key_message, mask, token_id_for
from .domain.models import ClientToken, KeyState, Pool, Strategy, TokenBudget, UpstreamKey
from .domain.view import KeyringView
from .sealing import SealingError, SecretBox
from .store import MAX_WRITES_PER_COMMIT
from .writer import Change, StateWriter

FORMAT = "keyring-export/v1"
TOKEN_HASH = re.compile(r"[0-9a-f]{64}")
T = TypeVar("T")
R = TypeVar("R")


def export_document(view: KeyringView, box: SecretBox, now: float, include_secrets_in_clear: bool) -> bytes:
    keys = []
    for key in sorted(view.keys.values(), key=lambda k: k.key_id):
        record = orjson.loads(encode(key))
        if include_secrets_in_clear:
            record["secret"] = box.open(key.sealed_secret, key.key_id)
            del record["sealed_secret"]
        keys.append(record)
    document = {
        "format": FORMAT,
        "exported_at": now,
        "secrets": "clear" if include_secrets_in_clear else "sealed",
        "pools": [orjson.loads(encode(pool)) for pool in sorted(view.pools.values(), key=lambda p: p.name)],
        "tokens": [orjson.loads(encode(token)) for token in sorted(view.tokens.values(), key=lambda t: t.token_id)],
        "keys": keys,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


async def import_document(
    view: KeyringView,
    writer: StateWriter,
    box: SecretBox,
    document: bytes,
    *,
    key_pattern: str,
    keep_client_tokens: bool,
    now: float,
) -> tuple[int, int, int]:
    """Create every pool, token and key of the document that does not exist yet."""
    pools, tokens, keys = _parse(box, document, key_pattern, keep_client_tokens, now)
    known_pools = {pool.name for pool in pools} | set(view.pools)
    members: list[ClientToken | UpstreamKey] = [*tokens, *keys]
    for record in members:
        if record.pool not in known_pools:
            raise InvalidArgument(f"a record refers to pool {record.pool!r}, which the document does not define")
    new_pools = [pool for pool in pools if pool.name not in view.pools]
    new_tokens = [token for token in tokens if token.token_id not in view.tokens]
    new_keys = [key for key in keys if key.key_id not in view.keys]
    check_projects(view, new_keys)  # a Google project belongs to one pool: nothing imported when one would not
    batches: tuple[list[Pool], list[ClientToken], list[UpstreamKey]] = (new_pools, new_tokens, new_keys)
    for batch in batches:
        for start in range(0, len(batch), MAX_WRITES_PER_COMMIT):
            changes = [writer.put(record) for record in batch[start : start + MAX_WRITES_PER_COMMIT]]
            await writer.transact(_always(changes))
    return len(new_pools), len(new_keys), len(new_tokens)


def _always(changes: list[Change]) -> Callable[[], list[Change]]:
    """The same creations on every attempt: each is guarded by "must not exist yet"."""
    return lambda: changes


def _parse(
    box: SecretBox, document: bytes, key_pattern: str, keep_client_tokens: bool, now: float
) -> tuple[list[Pool], list[ClientToken], list[UpstreamKey]]:
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError as error:
        raise InvalidArgument("the document is not valid JSON") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InvalidArgument(f"not a {FORMAT} document")
    sections = {name: _records(data, name) for name in ("pools", "tokens", "keys")}
    if sections["tokens"] and not keep_client_tokens:
        raise InvalidArgument(
            f"the document holds {len(sections['tokens'])} client tokens; importing a token hash makes the token "
            "its author chose a working credential, so tokens are refused unless keep_client_tokens is set "
            "(only for a document you made yourself): nothing was imported"
        )
    pools = _each(sections["pools"], "pools", lambda item: _pool(item, now))
    tokens = _each(sections["tokens"], "tokens", lambda item: _token(box, item, now))
    keys = _each(sections["keys"], "keys", lambda item: _key(box, item, key_pattern, now))
    for kind, ids in (
        ("pool", [pool.name for pool in pools]),
        ("token", [token.token_id for token in tokens]),
        ("key", [key.key_id for key in keys]),
    ):
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"the document holds a {kind} twice")
    return pools, tokens, keys


def _records(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    records = data.get(name, [])
    if not isinstance(records, list) or not all(isinstance(item, dict) for item in records):
        raise InvalidArgument(f"{name} must be a list of objects")
    return records


def _each(records: list[dict[str, Any]], name: str, build: Callable[[dict[str, Any]], R]) -> list[R]:
    """Build every record; the first refusal names the record (``keys[3]: ...``)."""
    built = []
    for index, item in enumerate(records):
        try:
            built.append(build(item))
        except InvalidArgument as error:
            raise InvalidArgument(f"{name}[{index}]: {error}") from None
    return built


def _field(item: dict[str, Any], name: str, kind: type[T], default: T | None = None) -> T:
    """``item[name]`` of exactly this JSON type (no bools for numbers); ``default`` when absent."""
    if name not in item:
        if default is None:
            raise InvalidArgument(f"{name} is missing")
        return default
    value = item[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidArgument(f"{name} must be a {_JSON_NAMES.get(kind, kind.__name__)}")
    return value


_JSON_NAMES: dict[type, str] = {
    str: "string",
    int: "whole number",
    float: "number",
    bool: "boolean",
    list: "list",
    dict: "object",
}


def _strings(item: dict[str, Any], name: str) -> tuple[str, ...]:
    values = _field(item, name, list, [])
    if not all(isinstance(value, str) for value in values):
        raise InvalidArgument(f"{name} must be a list of strings")
    return tuple(values)


def _created_at(item: dict[str, Any], now: float) -> float:
    created = _field(item, "created_at", float, now)
    return created if 0 < created <= now else now


def _pool(item: dict[str, Any], now: float) -> Pool:
    name = _field(item, "name", str)
    try:
        strategy = Strategy(_field(item, "strategy", str, Strategy.ROUND_ROBIN.value))
    except ValueError:
        raise InvalidArgument(f"strategy must be one of {', '.join(s.value for s in Strategy)}") from None
    base = Pool(name=name)
    policy = valid_policy(base, _field(item, "policy", dict, {}))
    pool = Pool(
        name=name,
        allowed_models=_strings(item, "allowed_models"),
        strategy=strategy,
        policy=policy,
        description=_field(item, "description", str, ""),
        created_at=_created_at(item, now),
    )
    return valid_pool(pool)


def _token(box: SecretBox, item: dict[str, Any], now: float) -> ClientToken:
    """Keyed again under this deployment's token key; the id follows from the keyed hash."""
    presented = _presented_hash(box, item)
    name = _field(item, "name", str, "")
    requests_per_minute = _field(item, "requests_per_minute", int, 0)
    expires_at = _field(item, "expires_at", float, 0.0)
    if expires_at < 0:
        raise InvalidArgument("expires_at must be >= 0")
    check_token_settings(name, 0.0, requests_per_minute, now)
    prefix = _field(item, "prefix", str, "")
    if len(prefix) > 16:
        raise InvalidArgument("prefix is longer than 16 characters")
    record = ClientToken(
        token_id="",
        token_hash="",
        pool=_field(item, "pool", str),
        name=name,
        created_at=_created_at(item, now),
        expires_at=expires_at,
        revoked=_field(item, "revoked", bool, False),
        requests_per_minute=requests_per_minute,
        prefix=prefix,
        budgets=_budgets(item),
    )
    keyed = box.key_token(record, presented)
    return dataclasses.replace(keyed, token_id=token_id_for(keyed.token_hash))


def _presented_hash(box: SecretBox, item: dict[str, Any]) -> str:
    """The SHA-256 the edge presents the token by: sealed in a keyed record, bare in an unkeyed one."""
    if _field(item, "hash_key", str, ""):
        sealed = ClientToken(
            token_id="",
            token_hash="",
            pool="",
            hash_key=_field(item, "hash_key", str),
            sealed_hash=_field(item, "sealed_hash", str),
        )
        try:
            presented = box.presented_hash(sealed)
        except SealingError:
            raise InvalidArgument("the token was sealed with another key-encryption key (or altered)") from None
    else:
        presented = _field(item, "token_hash", str)
    if not TOKEN_HASH.fullmatch(presented):
        raise InvalidArgument("token_hash must be the token's SHA-256: 64 lowercase hex digits")
    return presented


def _key(box: SecretBox, item: dict[str, Any], key_pattern: str, now: float) -> UpstreamKey:
    if "secret" in item:
        secret = _field(item, "secret", str).strip()
    else:
        try:
            secret = box.open(_field(item, "sealed_secret", str), _field(item, "key_id", str))
        except SealingError:
            raise InvalidArgument(
                "the secret was sealed with another key-encryption key (or altered); export it with secrets in clear"
            ) from None
    if not is_key_string(secret, key_pattern):
        shown = mask(secret) if secret else "(empty)"
        raise InvalidArgument(malformed_key_message(shown))
    fields = valid_key_fields(
        KeyInput(
            secret=secret,
            project=_field(item, "project", str, ""),
            tier=_field(item, "tier", int, 0),
            weight=_field(item, "weight", int, 0),
            tags=_strings(item, "tags"),
            note=_field(item, "note", str, ""),
            billing_account=_field(item, "billing_account", str, ""),
            billing_tier=_field(item, "billing_tier", int, 0),
        )
    )
    disabled = _field(item, "state", str, KeyState.ACTIVE.value) == KeyState.DISABLED.value
    key_id = key_id_for(secret)
    return UpstreamKey(
        key_id=key_id,
        pool=_field(item, "pool", str),
        sealed_secret=box.seal(secret, key_id),
        mask=mask(secret),
        kind=key_kind(secret),
        state=KeyState.DISABLED if disabled else KeyState.ACTIVE,
        created_at=_created_at(item, now),
        **fields,
    )


def _budgets(item: dict[str, Any]) -> tuple[TokenBudget, ...]:
    raw = item.get("budgets", [])
    if not isinstance(raw, list) or not all(isinstance(budget, dict) for budget in raw):
        raise InvalidArgument("a token's budgets are a list of objects")
    budgets = []
    for budget in raw:
        unknown = set(budget) - {field.name for field in dataclasses.fields(TokenBudget)}
        if unknown:
            raise InvalidArgument(f"unknown budget fields: {', '.join(sorted(unknown))}")
        budgets.append(
            TokenBudget(
                model=_field(budget, "model", str, ""),
                requests_per_minute=_field(budget, "requests_per_minute", int, 0),
                requests_per_day=_field(budget, "requests_per_day", int, 0),
                tokens_per_minute=_field(budget, "tokens_per_minute", int, 0),
                tokens_per_day=_field(budget, "tokens_per_day", int, 0),
            )
        )
    return valid_budgets(budgets)
