"""How records are laid out in the store: paths under a versioned prefix, JSON values.

    {prefix}pools/{name}
    {prefix}keys/{key_id}
    {prefix}tokens/{token_id}
    {prefix}cooldowns/{scope}/{subject}/{model}
    {prefix}members/{replica_id}
    {prefix}usage/{replica_id}/{bucket_start}   one replica's usage counts (a large one: a head naming shards)
    {prefix}usage_keys/{replica_id}/{bucket_start}/{epoch}/{index}   a large bucket's per-key shard (domain/usage.py)
    {prefix}audit/{at_ms}-{random}              the audit log
    {prefix}sessions/{sha256 of a session id}  admin console sessions ended before their expiry
    {prefix}affinity/{pool}/{resource name}     who owns a project-bound resource (files/..., cachedContents/...)
    {prefix}limits/{project}/{model}/{metric}   a quota limit a 429 told of (domain/limits.py)
    {prefix}admitted/{instance}                 one instance's client-token budget windows (domain/budgets.py)
    {prefix}live_tokens/{keyed hash}            a minted browser token for Live sessions (domain/live_tokens.py)

Names that may hold a slash (pools, resource names, cooldown subjects and
models) are percent-encoded into one path segment.

JSON (not protobuf) so an operator can read the store with etcdctl; secrets
are sealed before they get here and tokens are only hashes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import orjson

from .domain.identity import kind_from_mask
from .domain.models import (
    Affinity,
    ClientToken,
    Cooldown,
    CooldownId,
    CooldownReason,
    CooldownScope,
    KeyState,
    LastError,
    LimitId,
    Policy,
    Pool,
    QuotaLimit,
    Strategy,
    TokenBudget,
    UpstreamKey,
)

DEFAULT_PREFIX = "/keyring/v1/"
Record = Pool | UpstreamKey | ClientToken | Cooldown | Affinity | QuotaLimit


class Layout:
    """Store paths of one deployment (its prefix)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"

    def pool(self, name: str) -> str:
        return f"{self.prefix}pools/{quote(name, safe='')}"

    def key(self, key_id: str) -> str:
        return f"{self.prefix}keys/{key_id}"

    def token(self, token_id: str) -> str:
        return f"{self.prefix}tokens/{token_id}"

    def cooldown(self, cooldown_id: CooldownId) -> str:
        subject = quote(cooldown_id.subject, safe="")
        return f"{self.prefix}cooldowns/{cooldown_id.scope.value}/{subject}/{quote(cooldown_id.model, safe='')}"

    def usage(self, replica_id: str, bucket_start: int) -> str:
        return f"{self.prefix}usage/{replica_id}/{bucket_start}"

    def usage_shard(self, replica_id: str, bucket_start: int, epoch: int, index: int) -> str:
        return f"{self.prefix}usage_keys/{replica_id}/{bucket_start}/{epoch}/{index}"

    def audit(self, at_ms: int, suffix: str) -> str:
        return f"{self.prefix}audit/{at_ms:013d}-{suffix}"

    def session(self, session_hash: str) -> str:
        return f"{self.prefix}sessions/{session_hash}"

    def affinity(self, pool: str, name: str) -> str:
        return f"{self.prefix}affinity/{quote(pool, safe='')}/{quote(name, safe='')}"

    def limit(self, limit_id: LimitId) -> str:
        parts = (limit_id.project, limit_id.model, limit_id.metric)
        return f"{self.prefix}limits/" + "/".join(quote(part, safe="") for part in parts)

    def admitted(self, instance: str) -> str:
        return f"{self.prefix}admitted/{instance}"

    def live_token(self, stored_hash: str) -> str:
        return f"{self.prefix}live_tokens/{stored_hash}"

    def member(self, replica_id: str) -> str:
        return f"{self.prefix}members/{replica_id}"

    def path_of(self, record: Record) -> str:
        if isinstance(record, Pool):
            return self.pool(record.name)
        if isinstance(record, UpstreamKey):
            return self.key(record.key_id)
        if isinstance(record, ClientToken):
            return self.token(record.token_id)
        if isinstance(record, Affinity):
            return self.affinity(record.pool, record.name)
        if isinstance(record, QuotaLimit):
            return self.limit(record.id)
        return self.cooldown(record.id)

    def kind_of(self, path: str) -> tuple[str, list[str]]:
        """('pools', [name]) etc.; ('', []) for paths that are not ours."""
        if not path.startswith(self.prefix):
            return "", []
        kind, _, rest = path[len(self.prefix) :].partition("/")
        return kind, [unquote(part) for part in rest.split("/")]


def encode(record: Record) -> bytes:
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "revision"}
    if isinstance(record, Pool):
        fields["policy"] = dataclasses.asdict(record.policy)
    if isinstance(record, UpstreamKey) and record.last_error is not None:
        fields["last_error"] = dataclasses.asdict(record.last_error)
    if isinstance(record, QuotaLimit):
        fields["id"] = dataclasses.asdict(record.id)
    if isinstance(record, Cooldown):
        fields["id"] = {"scope": record.id.scope.value, "subject": record.id.subject, "model": record.id.model}
    return orjson.dumps(fields)


def decode_pool(data: dict[str, Any], revision: int) -> Pool:
    return Pool(
        name=data["name"],
        allowed_models=tuple(data.get("allowed_models", ())),
        strategy=Strategy(data.get("strategy", Strategy.ROUND_ROBIN)),
        policy=Policy(**data.get("policy", {})),
        description=data.get("description", ""),
        created_at=data.get("created_at", 0.0),
        revision=revision,
    )


def decode_key(data: dict[str, Any], revision: int) -> UpstreamKey:
    last_error = data.get("last_error")
    return UpstreamKey(
        key_id=data["key_id"],
        pool=data["pool"],
        sealed_secret=data["sealed_secret"],
        mask=data["mask"],
        project=data.get("project", ""),
        billing_account=data.get("billing_account", ""),
        billing_tier=data.get("billing_tier", 0),
        project_number=data.get("project_number", ""),
        tier=data.get("tier", 1),
        weight=data.get("weight", 1),
        tags=tuple(data.get("tags", ())),
        note=data.get("note", ""),
        kind=data.get("kind") or kind_from_mask(data["mask"]),  # records from before kinds: from the mask
        state=KeyState(data.get("state", KeyState.ACTIVE)),
        state_until=data.get("state_until", 0.0),
        consecutive_failures=data.get("consecutive_failures", 0),
        forbidden_strikes=data.get("forbidden_strikes", 0),
        last_error=LastError(**last_error) if last_error else None,
        created_at=data.get("created_at", 0.0),
        revision=revision,
        health_id=data.get("health_id", ""),
        health_at=data.get("health_at", 0.0),
    )


def decode_token(data: dict[str, Any], revision: int) -> ClientToken:
    budgets = tuple(TokenBudget(**budget) for budget in data.pop("budgets", ()))
    return ClientToken(**data, budgets=budgets, revision=revision)


def decode_cooldown(data: dict[str, Any], revision: int) -> Cooldown:
    ident = data["id"]
    return Cooldown(
        id=CooldownId(CooldownScope(ident["scope"]), ident["subject"], ident["model"]),
        reason=CooldownReason(data["reason"]),
        until=data["until"],
        strikes=data.get("strikes", 1),
        revision=revision,
        decision=data.get("decision", ""),
        decided_at=data.get("decided_at", 0.0),
        asked=data.get("asked", ""),
    )


def decode_limit(data: dict[str, Any], revision: int) -> QuotaLimit:
    return QuotaLimit(
        id=LimitId(**data["id"]),
        limit=int(data["limit"]),
        learnt_at=data.get("learnt_at", 0.0),
        quota_id=data.get("quota_id", ""),
        revision=revision,
        decision=data.get("decision", ""),
        decided_at=data.get("decided_at", 0.0),
    )


def decode_affinity(data: dict[str, Any], revision: int) -> Affinity:
    return Affinity(
        name=data["name"],
        pool=data["pool"],
        key_id=data["key_id"],
        project=data.get("project", ""),
        expires_at=data["expires_at"],
        created_at=data.get("created_at", 0.0),
        revision=revision,
        token_id=data.get("token_id", ""),
    )


DECODERS: dict[str, Callable[[dict[str, Any], int], Record]] = {
    "pools": decode_pool,
    "keys": decode_key,
    "tokens": decode_token,
    "cooldowns": decode_cooldown,
    "affinity": decode_affinity,
    "limits": decode_limit,
}


def decode(kind: str, value: bytes, revision: int) -> Record | None:
    decoder = DECODERS.get(kind)
    return decoder(orjson.loads(value), revision) if decoder else None
