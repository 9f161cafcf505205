"""Export and import of the whole configuration, for backup and migration.

The document is JSON: pools, client tokens (hashes only: a token cannot be
exported in clear because it is never stored), and keys with their secrets
sealed under the current key-encryption key or, only when asked, in clear.
Import checks the whole document before it writes anything; records that
already exist are left as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from .codec import decode_key, decode_pool, decode_token, encode
from .domain.errors import InvalidArgument
from .domain.identity import key_id_for, mask
from .domain.models import ClientToken, Pool, UpstreamKey
from .domain.view import KeyringView
from .sealing import SealingError, SecretBox
from .store import MAX_WRITES_PER_COMMIT
from .writer import Change, StateWriter

FORMAT = "keyring-export/v1"


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
    view: KeyringView, writer: StateWriter, box: SecretBox, document: bytes
) -> tuple[int, int, int]:
    """Create every pool, token and key of the document that does not exist yet."""
    pools, tokens, keys = _parse(box, document)
    known_pools = {pool.name for pool in pools} | set(view.pools)
    members: list[ClientToken | UpstreamKey] = [*tokens, *keys]
    for record in members:
        if record.pool not in known_pools:
            raise InvalidArgument(f"a record refers to pool {record.pool!r}, which the document does not define")
    new_pools = [pool for pool in pools if pool.name not in view.pools]
    new_tokens = [token for token in tokens if token.token_id not in view.tokens]
    new_keys = [key for key in keys if key.key_id not in view.keys]
    batches: tuple[list[Pool], list[ClientToken], list[UpstreamKey]] = (new_pools, new_tokens, new_keys)
    for batch in batches:
        for start in range(0, len(batch), MAX_WRITES_PER_COMMIT):
            changes = [writer.put(record) for record in batch[start : start + MAX_WRITES_PER_COMMIT]]
            await writer.transact(_always(changes))
    return len(new_pools), len(new_keys), len(new_tokens)


def _always(changes: list[Change]) -> Callable[[], list[Change]]:
    """The same creations on every attempt: each is guarded by "must not exist yet"."""
    return lambda: changes


def _parse(box: SecretBox, document: bytes) -> tuple[list[Pool], list[ClientToken], list[UpstreamKey]]:
    try:
        data = orjson.loads(document)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidArgument(f"not a {FORMAT} document")
        pools = [decode_pool(item, 0) for item in data.get("pools", [])]
        tokens = [decode_token(item, 0) for item in data.get("tokens", [])]
        keys = [_key(box, item) for item in data.get("keys", [])]
    except orjson.JSONDecodeError as error:
        raise InvalidArgument("the document is not valid JSON") from error
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InvalidArgument(f"the document has a malformed record: {type(error).__name__}") from error
    return pools, tokens, keys


def _key(box: SecretBox, item: dict[str, Any]) -> UpstreamKey:
    item = dict(item)
    secret = item.pop("secret", None)
    if secret is not None:
        key_id = key_id_for(secret)
        item.update(key_id=key_id, mask=mask(secret), sealed_secret=box.seal(secret, key_id))
    key = decode_key(item, 0)
    try:
        box.open(key.sealed_secret, key.key_id)
    except SealingError as error:
        raise InvalidArgument(
            f"key {key.key_id} was sealed with another key-encryption key; export it with secrets in clear"
        ) from error
    return dataclasses.replace(key, revision=0)
