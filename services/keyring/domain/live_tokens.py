"""Browser tokens for Live sessions (issue 20): minted by the pool, model-locked, short-lived, spent once.

A backend holding a client token asks for one (``MintSessionToken``); a
browser's unmodified ``@google/genai`` presents it on the Constrained path;
the edge redeems it (``RedeemSessionToken``) and opens a normal session on a
leased key. The token looks like Google's ephemeral tokens
(``auth_tokens/<random>``: the clients change path for that prefix, which is
why client tokens never have it, ``identity.TOKEN_PREFIX``). Only a keyed
hash of it is stored, with its expiry and uses; a redeem spends one use in a
guarded write, so a second redeem fails on every replica.

A redeem answers a grant: the client token's id, the model and an expiry
under a MAC every replica can check (``lease_ids.LeaseSigner.mac``), which the
edge's session acquires (the first and its failovers) present instead of a
token hash.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import InvalidArgument, PermissionDenied, Unauthenticated
from .lease_ids import LeaseSigner

PREFIX = "auth_tokens/"
DEFAULT_TTL_S = 60.0
MAX_TTL_S = 1800.0
MAX_USES = 10
GRANT_TTL_S = 60.0  # a grant covers a session's first acquire and its failovers, not the session
MAX_TOKEN_LENGTH = 200
_GRANT_PURPOSE = "live-session-grant"


@dataclass(frozen=True, slots=True)
class LiveToken:
    """A minted browser token as stored (under its keyed hash: never the token)."""

    pool: str
    token_id: str  # the minting client token: its pool, caps and budgets, and its revocation
    model: str
    expires_at: float
    uses: int
    used: int = 0
    hash_key: str = ""  # the KEK id whose token key made the stored hash ("": unkeyed, tests)
    minted_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiveToken:
        return cls(**data)


def new_live_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def mint_terms(ttl_s: float, uses: int) -> tuple[float, int]:
    """The token's life and uses (0: the defaults, 60 s and one), refused beyond the bounds."""
    ttl_s = ttl_s or DEFAULT_TTL_S
    uses = uses or 1
    if not 0 < ttl_s <= MAX_TTL_S:
        raise InvalidArgument(f"ttl_ms must lie between 1 and {int(MAX_TTL_S * 1000)}")
    if not 0 < uses <= MAX_USES:
        raise InvalidArgument(f"uses must lie between 1 and {MAX_USES}")
    return ttl_s, uses


def well_formed(token: str) -> bool:
    return token.startswith(PREFIX) and len(PREFIX) < len(token) <= MAX_TOKEN_LENGTH


def redeemed(record: LiveToken | None, model: str, now: float, resumption: bool) -> LiveToken:
    """The record after a redeem for ``model``: one more use, or none for a resumption; raises when refused."""
    if record is None or record.expires_at <= now:
        raise Unauthenticated("unknown or expired browser token")
    if model != record.model:
        raise PermissionDenied(f"this browser token is for model {record.model!r} only")
    if resumption:
        if not record.used:
            raise Unauthenticated("a browser token resumes only a session it opened")
        return record
    if record.used >= record.uses:
        raise Unauthenticated("this browser token was already used")
    return replace(record, used=record.used + 1)


class Grants:
    """Grants of redeemed browser tokens: ``<token id>.<expiry ms>.<mac>``, the model under the MAC."""

    def __init__(self, signer: LeaseSigner) -> None:
        self._signer = signer

    def issue(self, token_id: str, model: str, expires_at: float) -> str:
        expires_ms = str(int(expires_at * 1000))
        return f"{token_id}.{expires_ms}.{self._signer.mac(_GRANT_PURPOSE, token_id, model, expires_ms)}"

    def check(self, grant: str, model: str, now: float) -> str:
        """The client token id a grant names, when it holds for ``model`` and has not expired."""
        token_id, _, rest = grant.partition(".")
        expires_ms, _, mac = rest.partition(".")
        if not token_id or not expires_ms.isdigit() or len(expires_ms) > 15 or not mac:
            raise Unauthenticated("malformed session grant")
        expected = self._signer.mac(_GRANT_PURPOSE, token_id, model, expires_ms)
        if not secrets.compare_digest(mac, expected):
            raise Unauthenticated("the session grant does not hold for this model")
        if int(expires_ms) / 1000 <= now:
            raise Unauthenticated("the session grant expired: redeem a new browser token")
        return token_id
