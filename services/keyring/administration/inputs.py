"""What operators send: the records of their requests, and the checks every one must pass.

Every action validates all of its input before it writes anything, so bad
input changes no state.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.common.naming import model_id

from ..domain.errors import InvalidArgument
from ..domain.models import KeyState, Pool, Strategy, TokenBudget, UpstreamKey

POOL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MAX_TEXT = 500
MAX_TAGS = 32
MAX_WEIGHT = 1000
MAX_TIER = 100
# A billing account as the operator names it (Google's "0X0X0X-0X0X0X-0X0X0X", or any short label).
BILLING_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class KeyInput:
    secret: str = ""
    project: str = ""
    tier: int = 0
    weight: int = 0
    tags: tuple[str, ...] = ()
    note: str = ""
    billing_account: str = ""
    billing_tier: int = 0


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
    return model_id(model).strip()


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def valid_models(models: Iterable[str]) -> tuple[str, ...]:
    """Model ids, and agents as ``agents/{id}`` (an agent is allowed only by its own entry: ``Pool.allows``)."""
    cleaned = tuple(dict.fromkeys(normalise_model(model) for model in models if model.strip()))
    if any(not re.fullmatch(r"(?:agents/)?[A-Za-z0-9._-]{1,100}", model) for model in cleaned):
        raise InvalidArgument(
            "a model name is 1-100 characters of letters, digits, '.', '_' and '-' (an agent: agents/{name})"
        )
    return cleaned


def valid_policy(pool: Pool, overrides: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(pool.policy)}
    unknown = set(overrides) - known
    if unknown:
        raise InvalidArgument(f"unknown policy fields: {', '.join(sorted(unknown))}")
    for name, value in overrides.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"policy field {name} must be a number >= 0")
    return pool.policy.with_overrides(**overrides)


def valid_text(value: str, name: str) -> str:
    if len(value) > MAX_TEXT:
        raise InvalidArgument(f"{name} is longer than {MAX_TEXT} characters")
    return value


def valid_key_fields(item: KeyInput) -> dict[str, Any]:
    if not 0 <= item.tier <= MAX_TIER:
        raise InvalidArgument(f"tier must be between 1 and {MAX_TIER}")
    if not 0 <= item.weight <= MAX_WEIGHT:
        raise InvalidArgument(f"weight must be between 1 and {MAX_WEIGHT}")
    if len(item.tags) > MAX_TAGS or any(len(tag) > 64 or not tag.strip() for tag in item.tags):
        raise InvalidArgument(f"at most {MAX_TAGS} non-empty tags of up to 64 characters")
    if len(item.project) > 128:
        raise InvalidArgument("project is longer than 128 characters")
    if not 0 <= item.billing_tier <= 3:
        raise InvalidArgument("billing_tier must be 1, 2 or 3 (0: unknown)")
    account = item.billing_account.strip()
    if account and not BILLING_ACCOUNT.fullmatch(account):
        raise InvalidArgument("billing_account must be 1-64 letters, digits, '.', '_' or '-' (012345-6789AB-CDEF01)")
    return {
        "billing_account": account,
        "billing_tier": item.billing_tier,
        "project": item.project.strip(),
        "tier": item.tier or 1,
        "weight": item.weight or 1,
        "tags": tuple(dict.fromkeys(tag.strip() for tag in item.tags)),
        "note": valid_text(item.note, "note"),
    }


def check_token_settings(name: str, expires_at: float, requests_per_minute: int, now: float) -> None:
    if len(name) > 100:
        raise InvalidArgument("a token name is at most 100 characters")
    if expires_at and expires_at <= now:
        raise InvalidArgument("the expiry lies in the past")
    if requests_per_minute < 0:
        raise InvalidArgument("requests_per_minute must be >= 0")


MAX_BUDGETS = 64


def valid_budgets(budgets: Iterable[TokenBudget]) -> tuple[TokenBudget, ...]:
    """Models normalised; at most one budget per model ("" = all models), numbers >= 0, at least one of them set."""
    budgets = tuple(dataclasses.replace(budget, model=normalise_model(budget.model)) for budget in budgets)
    if len(budgets) > MAX_BUDGETS:
        raise InvalidArgument(f"a token has at most {MAX_BUDGETS} budgets")
    models = [budget.model for budget in budgets]
    if len(set(models)) != len(models):
        raise InvalidArgument("a token has at most one budget per model")
    for budget in budgets:
        if len(budget.model) > 200:
            raise InvalidArgument("a budget's model name is at most 200 characters")
        numbers = (budget.requests_per_minute, budget.requests_per_day, budget.tokens_per_minute, budget.tokens_per_day)
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 0 for n in numbers):
            raise InvalidArgument("budget numbers are whole numbers >= 0")
        if not any(numbers):
            raise InvalidArgument("a budget sets at least one of its numbers")
    return budgets


def valid_pool(pool: Pool) -> Pool:
    if not POOL_NAME.fullmatch(pool.name):
        raise InvalidArgument("a pool name is 1-63 characters of a-z, 0-9, '.', '_' and '-', starting alphanumeric")
    return dataclasses.replace(
        pool,
        allowed_models=valid_models(pool.allowed_models),
        policy=valid_policy(pool, dataclasses.asdict(pool.policy)),
        description=valid_text(pool.description, "description"),
    )
